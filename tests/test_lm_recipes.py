"""The masked- and causal-LM recipes through their real entry points, on tiny configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

from conftest import REPO, assert_user_error, run_entry

MLM_DEBUG = "recipes/configs/mlm/debug.yaml"
CLM_DEBUG = "recipes/configs/clm/debug.yaml"


def losses(output_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_mlm_debug_run_honours_the_output_contract(tmp_path):
    out = tmp_path / "mlm"
    result = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "masked-token accuracy" in result.stdout and "Exported model" in result.stdout
    assert (out / "config.yaml").is_file()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("step" in r for r in records)
    assert {"train/loss", "train/accuracy", "train/lr"} <= set(records[0])
    assert any("eval/loss" in r and "eval/perplexity" in r for r in records)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_10", "step_20"]
    model = AutoModelForMaskedLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.mask_token == "[MASK]"
    card = (out / "final" / "README.md").read_text()
    assert "model-index" in card and "eval/loss" in card
    eval_results = json.loads((out / "final" / "eval_results.json").read_text())
    assert eval_results["eval/perplexity"] > 1
    # Rerunning a finished run (a requeued job) reports it and succeeds without touching it.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert "already holds this finished run" in again.stdout and "masked-token accuracy" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before


def test_clm_debug_run_via_cli_writes_a_sample(tmp_path):
    out = tmp_path / "clm"
    result = run_entry(["-m", "nlp_ssl.cli", "run", "clm", "--config", CLM_DEBUG, f"output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Sample:" in result.stdout and "next-token accuracy" in result.stdout
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    tokenizer = AutoTokenizer.from_pretrained(out / "final")
    assert model.config.vocab_size == len(tokenizer)
    assert (out / "final" / "sample.txt").read_text().startswith("the company")


@pytest.mark.parametrize("corpus_setup, fragment", [
    ("missing", "corpus path not found"),
    ("empty", "empty"),
    ("latin1", "not valid UTF-8 (line 2)"),
    ("blank", "has no non-blank text"),
])
def test_bad_corpus_gives_one_line_and_no_output(tmp_path, corpus_setup, fragment):
    corpus = tmp_path / "corpus.txt"
    if corpus_setup == "empty":
        corpus.write_bytes(b"")
    elif corpus_setup == "latin1":
        corpus.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    elif corpus_setup == "blank":
        corpus.write_text("\n  \n\n")
    out = tmp_path / "out"
    result = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}", f"data.corpus={corpus}"])
    assert_user_error(result, fragment)
    assert not out.exists()


def test_local_text_files_and_unknown_tokenizer(tmp_path):
    corpus = tmp_path / "texts"
    corpus.mkdir()
    (corpus / "a.txt").write_text("\n".join(f"line {i} of the first file about cats and dogs" for i in range(300)))
    (corpus / "b.txt").write_text("\n".join(f"another line {i} about birds and fish" for i in range(300)))
    out = tmp_path / "out"
    result = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}", f"data.corpus={corpus}",
                        "max_steps=4", "save_steps=4", "eval_steps=4", "tokenizer.vocab_size=300"])
    assert result.returncode == 0, result.stderr[-3000:]
    bad = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={tmp_path / 'other'}",
                     f"tokenizer.name_or_path={tmp_path / 'no-such-tokenizer'}"])
    assert_user_error(bad, "could not load tokenizer")


def test_mismatched_tokenizer_and_checkpoint(tmp_path):
    big = tmp_path / "big"
    small = tmp_path / "small"
    for path, vocab in ((big, 1000), (small, 400)):
        result = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={path}", "max_steps=2",
                            "save_steps=2", "eval_steps=2", f"tokenizer.vocab_size={vocab}"])
        assert result.returncode == 0, result.stderr[-3000:]
    result = run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={tmp_path / 'continued'}",
                        f"model.init_from={small / 'final'}", f"tokenizer.name_or_path={big / 'final'}"])
    assert_user_error(result, "does not match the vocabulary", "use the checkpoint's own tokenizer")


def _start(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_resume_after_kill_reproduces_every_step(tmp_path):
    """Run 24 steps; separately run, kill -9 after a checkpoint, rerun the same command: same per-step losses."""
    common = ["recipes/mlm.py", "--config", MLM_DEBUG, "max_steps=24", "logging_steps=1", "save_steps=4",
              "eval_steps=8", "gradient_accumulation_steps=2", "save_total_limit=null"]
    straight = tmp_path / "straight"
    assert run_entry([*common, f"output_dir={straight}"]).returncode == 0
    resumed = tmp_path / "resumed"
    proc = _start([*common, f"output_dir={resumed}"])
    # Poll for the checkpoint (a guard against a hung run ends the wait after about 10 minutes).
    for _ in range(30_000):
        if (resumed / "checkpoints" / "step_8").is_dir():
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before its step-8 checkpoint")
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("no step-8 checkpoint appeared")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "final").exists(), "the run finished before it could be killed"
    result = run_entry([*common, f"output_dir={resumed}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout + result.stderr
    expected, got = losses(straight), losses(resumed)
    assert sorted(got) == list(range(1, 25))
    assert got == expected


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         "recipes/configs/accelerate/cpu_2proc.yaml", "--main_process_port", "29531",
         "recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}", "max_steps=10", "save_steps=5",
         "logging_steps=1", "warmup_steps=2", "lr_scheduler_type=linear"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # Each process saves its own RNG state: two processes really ran.
    assert sorted(p.name for p in (out / "checkpoints" / "step_10").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    assert result.stdout.count("Exported model") == 1  # printed by the main process only
    assert AutoModelForMaskedLM.from_pretrained(out / "final") is not None
    # The schedule advances once per optimizer step in every process: the same curve as one process.
    peak = float(yaml.safe_load((REPO / MLM_DEBUG).read_text())["learning_rate"])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["train/lr"] for r in logged if "train/lr" in r}
    expected = {s: peak * (s / 2 if s < 2 else (10 - s) / 8) for s in range(1, 11)}
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12), lrs


def test_push_checks_the_export_before_uploading(tmp_path):
    out = tmp_path / "mlm"
    assert run_entry(["recipes/mlm.py", "--config", MLM_DEBUG, f"output_dir={out}", "max_steps=2", "save_steps=2",
                      "eval_steps=2"]).returncode == 0
    ok = run_entry(["-m", "nlp_ssl.cli", "push", str(out / "final"), "me/tiny-bert", "--dry-run"])
    assert ok.returncode == 0 and "complete transformers export" in ok.stdout, ok.stderr
    (out / "final" / "README.md").unlink()
    broken = run_entry(["-m", "nlp_ssl.cli", "push", str(out / "final"), "me/tiny-bert", "--dry-run"])
    assert_user_error(broken, "missing README.md")
