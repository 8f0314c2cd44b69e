"""``recipes/contrastive_text.py`` through its real entry point: a debug run with its export, card and evaluation;
two processes equal one process with the global batch; MoCo's queue survives kill -9 and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import AutoModel

from conftest import REPO, run_entry
from test_contrastive_text import _labelled_file, checkpoint  # noqa: F401 - the tiny checkpoint fixture

DEBUG = "recipes/configs/contrastive/debug.yaml"


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


@pytest.mark.slow
def test_debug_run_exports_an_encoder_with_pooling_card_and_evaluation(checkpoint, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    labelled = _labelled_file(tmp_path)
    result = run_entry(["recipes/contrastive_text.py", "--config", DEBUG, f"output_dir={out}",
                        f"model.name_or_path={checkpoint}", f"evaluation.tasks=[{labelled}]", "model.pooling=cls",
                        "views.crop_min=0.6", "contrastive.mlm_weight=0.1"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Exported sentence encoder" in result.stdout and "labelled/knn_accuracy" in result.stdout
    final = out / "final"
    model = AutoModel.from_pretrained(final)
    assert type(model).__name__ == "BertModel" and model.config.sentence_pooling == "cls"
    assert json.loads((final / "sentence_pooling.json").read_text())["pooling"] == "cls"
    assert not any(k.startswith(("head.", "cls.")) for k in load_file(str(final / "model.safetensors")))
    results = json.loads((final / "eval_results.json").read_text())
    assert {"eval/loss", "labelled/knn_accuracy", "labelled/probe_accuracy"} <= set(results)
    assert "labelled/knn_accuracy" in json.loads((final / "sentence_eval.json").read_text())["validation"]
    card = (final / "README.md").read_text()
    assert "labelled/knn_accuracy" in card and "span crop 60%-100%" in card and "sentence_pooling" in card
    assert "0.1 x masked-LM loss on 15% of the tokens" in card and "masked-LM head of the auxiliary loss" in card
    assert sorted(_losses(out)) == [5, 10]


def _launch(args: list[str], processes: int = 1, port: int = 29561) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--config_file",
                     str(REPO / "recipes/configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(port)]
    return subprocess.run(launcher + ["recipes/contrastive_text.py", "--config", DEBUG, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_two_processes_with_gathered_negatives_equal_one_process_with_the_global_batch(checkpoint, tmp_path):  # noqa: F811
    # No dropout: the views are then drawn only from the step generator, identical in both layouts.
    common = [f"model.name_or_path={checkpoint}", "model.dropout=0.0", "evaluation.enabled=false", "max_steps=6",
              "logging_steps=1", "save_steps=6", "eval_steps=100", "views.word_deletion=0.2", "views.crop_min=0.7",
              "data.max_train_samples=200"]
    ddp = _launch([*common, f"output_dir={tmp_path / 'ddp'}", "per_device_train_batch_size=4"], processes=2)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "ddp/checkpoints/step_6").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    single = _launch([*common, f"output_dir={tmp_path / 'single'}", "per_device_train_batch_size=8"])
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = _losses(tmp_path / "ddp"), _losses(tmp_path / "single")
    assert sorted(two) == list(range(1, 7))
    assert two == pytest.approx(one, rel=1e-4, abs=1e-5)  # negatives from both processes, every step
    a = load_file(str(tmp_path / "ddp/final/model.safetensors"))
    b = load_file(str(tmp_path / "single/final/model.safetensors"))
    assert all((a[k] - b[k]).abs().max() < 1e-4 for k in a)


@pytest.mark.slow
def test_moco_queue_survives_kill_and_resume_with_identical_losses(checkpoint, tmp_path):  # noqa: F811
    common = [f"model.name_or_path={checkpoint}", "evaluation.enabled=false", "contrastive.method=moco",
              "contrastive.queue_size=24", "max_steps=30", "logging_steps=1", "save_steps=8", "eval_steps=100",
              "save_total_limit=null"]
    straight = tmp_path / "straight"
    assert _launch([*common, f"output_dir={straight}"]).returncode == 0
    resumed = tmp_path / "resumed"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "recipes/contrastive_text.py", "--config", DEBUG, *common,
                             f"output_dir={resumed}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(30_000):  # poll for the step-16 checkpoint (the queue is full by then)
        if (resumed / "checkpoints" / "step_16").is_dir():
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before its step-16 checkpoint")
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("no step-16 checkpoint appeared")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "final").exists(), "the run finished before it could be killed"
    saved = load_file(str(resumed / "checkpoints/step_16/model.safetensors"))
    assert int(saved["queue.filled"]) == 24  # the queue is in the checkpoint, full
    result = _launch([*common, f"output_dir={resumed}"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resumed from" in result.stdout + result.stderr
    expected, got = _losses(straight), _losses(resumed)
    assert sorted(got) == list(range(1, 31)) and got == expected  # steps after the restart see the same queue
