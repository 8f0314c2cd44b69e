"""Faults a long run meets on a shared, preemptible machine, each injected into a real run of the toy MoCo recipe
(``tests/test_objective_contract.py``): the run ends with the per-step losses and the final state of an
uninterrupted run, or with a clear refusal, and no checkpoint is lost.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_objective_contract import REPO, _launch, _losses, toy_command, toy_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The uninterrupted run every fault is compared with."""
    out = tmp_path_factory.mktemp("straight") / "run"
    result = _launch(out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _same_run(run: Path, straight: Path) -> None:
    assert _losses(run) == _losses(straight)
    a = load_file(str(straight / "final" / "toy.safetensors"))
    b = load_file(str(run / "final" / "toy.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name or ".old-" in p.name or p.name == ".lock"]
    assert not leftovers, leftovers


@pytest.mark.parametrize("fault", ["kill_in_checkpoint:20", "kill_in_export:0"])
def test_kill_during_a_write_then_rerun(tmp_path, straight, fault):
    run = tmp_path / "run"
    killed = _launch(run, fault=fault)
    assert killed.returncode == -signal.SIGKILL
    assert list(run.rglob(".step_20.tmp")) or list(run.glob(".final.tmp-*"))  # the write was cut short
    resumed = _launch(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_run(run, straight)


@pytest.mark.parametrize("sig", ["sigterm", "sigint"])
def test_signal_checkpoints_and_exits_resumable(tmp_path, straight, sig):
    run = tmp_path / "run"
    stopped = _launch(run, fault=f"{sig}:17")
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert "rerun the same command" in stopped.stdout
    assert (run / "checkpoints" / "step_17" / "engine_state.json").is_file()  # the step was finished and saved
    assert not (run / "final").exists()
    resumed = _launch(run)
    assert resumed.returncode == 0 and "Resumed from" in resumed.stdout, resumed.stderr[-3000:]
    _same_run(run, straight)


def test_sigterm_to_the_launcher_reaches_the_trainer(tmp_path, straight):
    run = tmp_path / "run"
    # The launcher is this interpreter's accelerate (found without the virtual environment on PATH).
    launcher = subprocess.Popen([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                                 *toy_command(run)[1:]], cwd=REPO, env=toy_env(fault="sleep:100"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lock = run / ".lock"
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").is_file() or len((run / "metrics.jsonl").read_text().splitlines()) < 5:
        assert time.time() < deadline and launcher.poll() is None, "the run did not start"
        time.sleep(0.2)
    trainer_pid = json.loads(lock.read_text())["pid"]
    launcher.send_signal(signal.SIGTERM)
    launcher.wait(timeout=60)
    for _ in range(300):  # the trainer checkpoints and exits on its own: no orphan keeps writing
        try:
            os.kill(trainer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(trainer_pid, signal.SIGKILL)
        pytest.fail("the trainer outlived its launcher")
    assert any((run / "checkpoints").glob("step_*/engine_state.json"))
    resumed = _launch(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _same_run(run, straight)


def test_broken_newest_checkpoint_is_named_and_skipped(tmp_path, straight):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "final")
    newest = run / "checkpoints" / "step_40" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncate -s 50%
    (run / "checkpoints" / "step_99").mkdir()  # an empty folder left by a kill
    resumed = _launch(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "skipping checkpoint" in resumed.stdout and "step_40" in resumed.stdout
    assert "Resumed from" in resumed.stdout and "step_30" in resumed.stdout
    _same_run(run, straight)


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path, straight):
    run = tmp_path / "run"
    # 0.4 s a step: the first run is still training when the second one (which takes seconds to start) checks.
    first = subprocess.Popen(toy_command(run), cwd=REPO, env=toy_env(fault="sleep:400"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / ".lock").is_file():
        assert time.time() < deadline and first.poll() is None, "the first run did not start"
        time.sleep(0.1)
    second = _launch(run)
    assert second.returncode == 2 and "in use by another run" in second.stderr, second.stderr[-2000:]
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    _same_run(run, straight)  # every metrics record written once


def test_divergence_stops_before_saving_the_bad_state(tmp_path):
    run = tmp_path / "run"
    result = _launch(run, fault="nan:23")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "diverged at step 23" in lines[0] and "learning_rate" in lines[0], result.stderr
    assert "checkpoints/step_20" in lines[0]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_10", "step_20"]  # nothing after
    assert not (run / "final").exists()
    losses = _losses(run)
    assert any(v != v for v in losses.values())  # the NaN is in the log, not hidden


def test_skip_mode_drops_bad_updates(tmp_path):
    run = tmp_path / "run"
    result = _launch(run, fault="nan:38", extra=["on_nonfinite=skip", "max_skipped_steps=5"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped step 38" in result.stdout and "skipped step 40" in result.stdout
    weights = load_file(str(run / "final" / "toy.safetensors"))
    assert all(torch.isfinite(v.float()).all() for v in weights.values())


def test_disk_full_is_one_line_and_keeps_earlier_checkpoints(tmp_path, straight):
    run = tmp_path / "small-disk"
    run.mkdir()
    step_size = sum(p.stat().st_size for p in (straight / "checkpoints" / "step_40").rglob("*") if p.is_file())
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(step_size * 1.6)}", "tmpfs", str(run)],
                             capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("cannot mount a small tmpfs here (needs root); the disk-full path is not exercised")
    try:
        result = _launch(run / "out", extra=["save_total_limit=null"])
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
        lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "no space left" in lines[0] and "intact" in lines[0], result.stderr[-2000:]
        assert (run / "out" / "checkpoints" / "step_10" / "engine_state.json").is_file()
        assert not list((run / "out" / "checkpoints").glob(".step_*"))
    finally:
        subprocess.run(["umount", str(run)], check=False)


class _Planted:
    """A pickle that would leave a file behind if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_unpickles_nothing_planted_in_a_checkpoint(tmp_path, straight):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    shutil.rmtree(run / "final")
    marker = tmp_path / "code-ran"
    newest = run / "checkpoints" / "step_40"
    for name in ("custom_checkpoint_0.pkl", "random_states_0.pkl"):
        torch.save(_Planted(marker), newest / name)  # torch.save pickles it, as a tampered file would be
    resumed = _launch(run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not marker.exists(), "a pickle planted in a checkpoint was executed on resume"


def test_a_diverging_learning_rate_is_one_line(tmp_path):
    """The literal report: the debug masked LM at learning_rate=1e8."""
    result = subprocess.run([sys.executable, "recipes/mlm.py", "--config", "recipes/configs/mlm/debug.yaml",
                             f"output_dir={tmp_path / 'run'}", "learning_rate=1e8", "max_steps=10", "logging_steps=2"],
                            cwd=REPO, env=toy_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "diverged at step" in lines[0] and "1e+08" in lines[0], result.stderr[-2000:]
    assert not (tmp_path / "run" / "final").exists()
