"""Truncated BPTT for the LSTM LM: stream layout, carried memory, its checkpoint, and the clm recipe with
``model.architecture=lstm`` (resume exactness, a 2-process run) on the word-level PTB."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, default_collate
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import REPO, run_entry
from nlp_ssl.data.streams import StreamRows, StreamWindows, contiguous_stream_batches
from nlp_ssl.distributed import DistContext
from nlp_ssl.errors import UserError
from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMLMConfig, evaluate_stream
from nlp_ssl.objectives.recurrent_lm import TruncatedBPTTObjective

LSTM_DEBUG = "recipes/configs/clm/lstm_debug.yaml"


class _Tok:
    """Stands in for the tokenizer the objective saves on export (never called here)."""


def _model(softmax: str = "full", dropout: float = 0.0, seed: int = 0) -> LSTMForCausalLM:
    torch.manual_seed(seed)
    extra = dict(softmax="adaptive", adaptive_cutoffs=[10, 20], tie_word_embeddings=False) if softmax == "adaptive" else {}
    return LSTMForCausalLM(LSTMLMConfig(vocab_size=40, embedding_size=16, hidden_size=16, num_layers=2,
                                        dropout=dropout, init_range=0.3, **extra))


def _batches(stream: torch.Tensor, streams: int, bptt: int, batch: int) -> list[dict[str, torch.Tensor]]:
    loader = DataLoader(StreamWindows(stream, streams, bptt), batch_size=batch, collate_fn=default_collate)
    return list(loader)


def test_windows_come_in_stream_order_and_a_batch_is_one_window() -> None:
    stream = torch.arange(203)
    batches = _batches(stream, streams=4, bptt=5, batch=4)
    expected = contiguous_stream_batches(stream, 4, 5)
    assert len(batches) == expected.shape[0] == 9
    for k, batch in enumerate(batches):
        assert torch.equal(batch["input_ids"], expected[k]) and batch["window"].tolist() == [k] * 4
    # Two processes with batch 2: process p always reads the same two streams (rows 2p, 2p + 1).
    halves = _batches(stream, streams=4, bptt=5, batch=2)
    assert all(torch.equal(halves[2 * k + p]["input_ids"], expected[k, 2 * p:2 * p + 2]) for k in range(9) for p in (0, 1))


@pytest.mark.parametrize("softmax", ["full", "adaptive"])
def test_carried_memory_equals_one_pass_and_gradients_stop_at_the_window(softmax: str) -> None:
    model = _model(softmax)
    objective = TruncatedBPTTObjective(model, _Tok(), bptt=6).train()
    stream = torch.randint(0, 40, (3 * 18 + 3,), generator=torch.Generator().manual_seed(0))
    batches = _batches(stream, streams=3, bptt=6, batch=3)
    losses = [objective(batch).loss for batch in batches[:2]]
    rows = stream[: 3 * (stream.numel() // 3)].view(3, -1)
    # Naive reference: the whole prefix of each stream in one pass, scored position by position.
    with torch.no_grad():
        features, _, _ = model.features(rows[:, :12])
        nll = model.token_nll(features.flatten(0, 1), rows[:, 1:13].flatten()).view(3, 12)
    torch.testing.assert_close(losses[0].detach(), nll[:, :6].mean())
    torch.testing.assert_close(losses[1].detach(), nll[:, 6:].mean())
    # The second window's gradient is that of a loss whose initial state is a constant (detached).
    losses[1].backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with torch.no_grad():
        _, state, _ = model.features(rows[:, :6])
    features, _, _ = model.features(rows[:, 6:12], state)
    model.token_nll(features.flatten(0, 1), rows[:, 7:13].flatten()).mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(got[name], param.grad, msg=name)


def test_window_zero_resets_and_evaluation_leaves_the_memory_alone() -> None:
    model = _model(dropout=0.3)
    objective = TruncatedBPTTObjective(model, _Tok(), bptt=5).train()
    stream = torch.randint(0, 40, (2 * 31,), generator=torch.Generator().manual_seed(1))
    batches = _batches(stream, streams=2, bptt=5, batch=2)
    torch.manual_seed(3)
    first = objective(batches[0]).loss
    objective(batches[1])
    carried = tuple(s.clone() for s in objective.carried)
    held_out = torch.randint(0, 40, (2, 23), generator=torch.Generator().manual_seed(2))
    objective.eval()
    with torch.no_grad():
        out = objective.evaluate_batch({"input_ids": held_out})
    objective.train()
    assert all(torch.equal(a, b) for a, b in zip(carried, objective.carried))
    expected = sum(evaluate_stream(model, row, batch_size=1, bptt=5)[0] * 22 for row in held_out) / 44
    assert out.num_items == 44 and float(out.loss) == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(3)
    assert torch.equal(objective(batches[0]).loss, first)  # a new epoch starts from zero memory again


def test_checkpointed_memory_resumes_the_same_next_step_in_one_and_two_processes() -> None:
    model = _model()
    objective = TruncatedBPTTObjective(model, _Tok(), bptt=4).train()
    stream = torch.randint(0, 40, (4 * 25,), generator=torch.Generator().manual_seed(4))
    batches = _batches(stream, streams=4, bptt=4, batch=4)
    objective(batches[0])
    after_first = tuple(state.clone() for state in objective.carried)
    saved = objective.extra_state()
    expected = objective(batches[1]).loss
    fresh = TruncatedBPTTObjective(model, _Tok(), bptt=4).train()
    fresh.load_extra_state(saved)
    assert torch.equal(fresh(batches[1]).loss, expected)
    # Restored in a 2-process layout, process 1 continues streams 2 and 3.
    second = TruncatedBPTTObjective(model, _Tok(), bptt=4).train()
    second.setup_distributed(DistContext(rank=1, world_size=2))
    second.load_extra_state(saved)
    for restored, original in zip(second.carried, after_first):
        assert torch.equal(restored, original[:, 2:])
    assert TruncatedBPTTObjective(model, _Tok(), bptt=4).extra_state() == {}


def test_held_out_rows_are_contiguous_pieces() -> None:
    rows = StreamRows(torch.arange(23), 3)
    assert len(rows) == 3 and rows[2]["input_ids"].tolist() == list(range(14, 21)) and rows.num_tokens == 18
    with pytest.raises(UserError, match="too short"):
        StreamRows(torch.arange(5), 3)


# --- the recipe -------------------------------------------------------------------------------------------


def _losses(output_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_lstm_recipe_reports_word_level_test_perplexity(tmp_path: Path) -> None:
    out = tmp_path / "lstm"
    result = run_entry(["recipes/clm.py", "--config", LSTM_DEBUG, f"output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test perplexity" in result.stdout and "Sample:" in result.stdout
    # The Auto classes know the LSTM only once its module is imported: the summary and the card say so.
    assert "after `import nlp_ssl.models.lstm_lm`" in result.stdout
    assert "import nlp_ssl.models.lstm_lm" in (out / "final" / "README.md").read_text()
    sample = (out / "final" / "sample.txt").read_text().split()
    assert len(sample) > len("the company said".split())  # generation went past the prompt
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert isinstance(model, LSTMForCausalLM) and model.config.softmax == "adaptive"
    assert tokenizer.eos_token == "<eos>" and tokenizer("the <unk> rose")["input_ids"][1] == tokenizer.unk_token_id
    results = json.loads((out / "final" / "eval_results.json").read_text())
    # PTB's test split, every line and its <eos>, cut into per_device_eval_batch_size (2) rows.
    assert results["test/items"] == 2 * (82_430 // 2 - 1)
    assert 1 < results["test/perplexity"] < 1000 and results["eval/perplexity"] > 1


def test_lstm_refuses_streaming_and_the_masked_recipe(tmp_path: Path) -> None:
    from nlp_ssl.config import load_config
    from nlp_ssl.pipelines.language_model import CausalLMConfig, LanguageModelPipeline, MaskedLMConfig

    cfg = load_config(CausalLMConfig, REPO / LSTM_DEBUG, [f"output_dir={tmp_path / 'a'}", "data.streaming=true"])
    with pytest.raises(UserError, match="contiguous stream"):
        LanguageModelPipeline("causal").prepare_inputs(cfg)
    cfg = load_config(MaskedLMConfig, REPO / "recipes/configs/mlm/debug.yaml", ["model.architecture=lstm"])
    with pytest.raises(UserError, match="not a masked LM"):
        LanguageModelPipeline("masked").prepare_inputs(cfg)
    assert not (tmp_path / "a").exists()


@pytest.mark.slow
def test_lstm_resume_after_kill_reproduces_every_step(tmp_path: Path) -> None:
    """The carried memory is in the checkpoint: a killed and rerun run logs the losses of a straight one."""
    # 60 lines make about 24 windows per epoch: the run crosses an epoch boundary (the memory is reset) after
    # the kill.
    common = ["recipes/clm.py", "--config", LSTM_DEBUG, "max_steps=30", "logging_steps=1", "save_steps=7",
              "eval_steps=10", "save_total_limit=null", "test_split=null", "data.max_train_samples=60",
              "model.adaptive_cutoffs=[40,80]"]
    straight = tmp_path / "straight"
    assert run_entry([*common, f"output_dir={straight}"]).returncode == 0
    resumed = tmp_path / "resumed"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, *common, f"output_dir={resumed}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(30_000):
        if (resumed / "checkpoints" / "step_14").is_dir():
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before its step-14 checkpoint")
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("no step-14 checkpoint appeared")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "final").exists(), "the run finished before it could be killed"
    result = run_entry([*common, f"output_dir={resumed}"])
    assert result.returncode == 0 and "Resumed from" in result.stdout + result.stderr, result.stderr[-3000:]
    assert _losses(resumed) == _losses(straight)
    assert sorted(_losses(straight)) == list(range(1, 31))
