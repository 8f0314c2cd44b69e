"""recipes/word2vec.py through its real entry points: bad input, both backends' debug configs, exact resume."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gensim.models import KeyedVectors

from nlp_ssl.config import load_config
from nlp_ssl.errors import UserError
from nlp_ssl.pipelines.word2vec import Word2VecConfig, Word2VecPipeline

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "word2vec.py"
CONFIGS = ROOT / "recipes" / "configs" / "word2vec"
# One thread per process: these runs are tiny, and OpenMP threads stall badly on a busy machine.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _recipe_main():
    spec = importlib.util.spec_from_file_location("word2vec_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("backend", ["torch", "gensim"])
def test_empty_vocabulary_is_a_one_line_error_and_writes_nothing(tmp_path, capsys, backend):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a b c\nd e f\n", encoding="utf-8")
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        _recipe_main()(["--config", str(CONFIGS / "debug.yaml"), f"output_dir={out}", f"data.corpus={corpus}",
                        "vocab.min_count=2", f"word2vec.backend={backend}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # datasets' progress bars aside
    assert len(errors) == 1 and errors[0].startswith("error: empty vocabulary") and "min_count=2" in errors[0]
    assert err.strip().splitlines()[-1] == errors[0]
    assert not out.exists()


def test_every_shipped_config_validates_and_names_its_run_command():
    for path in sorted(CONFIGS.glob("*.yaml")):
        header = path.read_text(encoding="utf-8").split("\n")
        comment = "\n".join(line for line in header if line.startswith("#"))
        assert "recipes/word2vec.py" in comment and f"configs/word2vec/{path.name}" in comment, path
        load_config(Word2VecConfig, path)


def test_bad_keys_are_user_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _recipe_main()(["--config", str(CONFIGS / "debug.yaml"), "word2vec.windw=3"])
    assert exit_info.value.code == 2 and "did you mean 'word2vec.window'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _recipe_main()(["--config", str(CONFIGS / "debug_gensim.yaml"), "num_train_epochs=1.5"])
    assert "whole epochs" in capsys.readouterr().err


def test_gensim_backend_refuses_several_processes(tmp_path, monkeypatch):
    cfg = load_config(Word2VecConfig, CONFIGS / "debug_gensim.yaml", [f"output_dir={tmp_path / 'run'}"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match=r"backend=gensim trains in one process .* 2 processes were launched.*"
                                        r"word2vec.backend=torch") as error:
        Word2VecPipeline().prepare_inputs(cfg)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "run").exists()


def _check_final(final: Path) -> dict:
    for name in ("vectors.kv", "vectors.txt", "vectors.bin", "vocab.tsv", "README.md", "eval_results.json"):
        assert (final / name).is_file(), name
    kv = KeyedVectors.load(str(final / "vectors.kv"))
    assert len(kv) == len((final / "vocab.tsv").read_text(encoding="utf-8").splitlines())
    results = json.loads((final / "eval_results.json").read_text())
    assert "wordsim353/spearman" in results and "questions-words/coverage" in results
    # the per-section analogy chart always exists; projections need the country/capital words in the vocabulary
    assert (final / "plots" / "analogy_questions-words.png").stat().st_size > 1000
    intrinsic = json.loads((final / "intrinsic.json").read_text())
    assert {p.get("path", "skipped") for p in intrinsic["plots"]} >= {"plots/analogy_questions-words.png"}
    return results


@pytest.mark.slow
def test_debug_recipe_torch_backend_with_accelerate_launch(tmp_path):
    out = tmp_path / "torch"
    proc = _run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", str(RECIPE),
                 "--config", str(CONFIGS / "debug.yaml"), f"output_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Word analogy: questions-words" in proc.stdout and "words/s" in proc.stdout
    _check_final(out / "final")
    assert (out / "metrics.jsonl").is_file() and list((out / "checkpoints").iterdir())


@pytest.mark.slow
def test_debug_recipe_gensim_backend_with_the_cli(tmp_path):
    out = tmp_path / "gensim"
    nlp_ssl = Path(sys.executable).parent / "nlp-ssl"
    proc = _run([str(nlp_ssl), "run", "word2vec", "--config", str(CONFIGS / "debug_gensim.yaml"), f"output_dir={out}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Word analogy: questions-words" in proc.stdout
    _check_final(out / "final")
    state = json.loads((out / "final" / "trainer_state.json").read_text())
    assert state["backend"] == "gensim" and state["complete"]
    # a finished run is reported, not overwritten, by a rerun
    before = (out / "final" / "vectors.kv").stat().st_mtime_ns
    again = _run([str(nlp_ssl), "run", "word2vec", "--config", str(CONFIGS / "debug_gensim.yaml"), f"output_dir={out}"])
    assert again.returncode == 0 and "already holds this finished run" in again.stdout
    assert "Word analogy: questions-words" in again.stdout
    assert (out / "final" / "vectors.kv").stat().st_mtime_ns == before


def _losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _checkpointed(run: Path, step: int) -> bool:
    return any(int(p.name.split("_")[1]) >= step for p in (run / "checkpoints").glob("step_*"))


@pytest.mark.slow
def test_resume_after_a_kill_reproduces_every_step_loss(tmp_path):
    args = ["--config", str(CONFIGS / "debug.yaml"), "logging_steps=1", "save_steps=8", "num_train_epochs=null",
            "max_steps=160", "per_device_train_batch_size=2"]
    straight = _run([sys.executable, str(RECIPE), *args, f"output_dir={tmp_path / 'a'}"])
    assert straight.returncode == 0, straight.stderr[-3000:]

    run = tmp_path / "b"
    cmd = [sys.executable, str(RECIPE), *args, f"output_dir={run}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # Any checkpoint from step 16 on: older ones are pruned within milliseconds at the fused kernel's speed.
    while not _checkpointed(run, 16) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "final").exists(), "the run finished before it could be killed"
    resumed = _run(cmd)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout

    expected, got = _losses(tmp_path / "a"), _losses(run)
    assert sorted(got) == list(range(1, 161)) == sorted(expected)
    assert all(got[s] == pytest.approx(expected[s], rel=1e-6, abs=1e-7) for s in expected), (expected, got)


@pytest.mark.slow
def test_two_process_data_parallel_run(tmp_path):
    out = tmp_path / "ddp"
    proc = _run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                 str(ROOT / "recipes" / "configs" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", "29533",
                 str(RECIPE), "--config", str(CONFIGS / "debug.yaml"), f"output_dir={out}", "save_steps=10"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in (out / "checkpoints" / "step_30").glob("random_states_*")) == [
        "random_states_0.pkl", "random_states_1.pkl"]
    _check_final(out / "final")
    # Each process takes its own chunks: an epoch is half the steps of one process, and the learning rate
    # decays over the whole run (not num_processes times faster).
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    by_step = {r["step"]: r for r in records if "train/loss" in r}
    assert by_step[15]["train/epoch"] == pytest.approx(1.0) and by_step[30]["train/epoch"] == pytest.approx(2.0)
    assert by_step[15]["train/lr"] == pytest.approx(0.025 / 2)
    assert by_step[30]["train/loss"] < by_step[5]["train/loss"] - 0.3
