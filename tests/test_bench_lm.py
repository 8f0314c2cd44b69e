"""Smoke test of scripts/bench_lm.py: both sides train a tiny BERT for a few steps and the report is complete.

It runs the real script in a subprocess (as a user would), on a slice of PTB and a model small enough that
the whole run is dominated by start-up; the throughput figures themselves are not checked, only that they
were produced, that both runs learned something, and that the JSON file holds what the docs promise.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_lm.py"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["masked", "causal"])
def test_bench_lm_smoke(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--kind", kind, "--steps", "2", "--warmup-steps", "1", "--repeats", "2",
           "--batch-size", "4", "--block-size", "32", "--layers", "1", "--hidden", "32", "--vocab-size", "400",
           "--max-train-samples", "300", "--eval-blocks", "4", "--json", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ratio engine / Trainer" in proc.stdout

    report = json.loads(out.read_text())
    for side in ("engine", "trainer"):
        runs = report["runs"][side]
        assert len(runs) == 2  # --repeats 2: two alternating runs of each side
        for run in runs:
            assert run["tokens_per_sec"] > 0
            assert math.isfinite(run["final_train_loss"]) and math.isfinite(run["held_out_loss"])
            # Step 1 + 2 timed steps: one time stamp per optimizer step, so two step intervals.
            assert len(run["step_times"]) == 2
        assert report[side]["tokens_per_sec"]["min"] <= report[side]["tokens_per_sec"]["median"]
    assert report["ratio"]["median"] > 0
    assert report["model"]["layers"] == 1 and report["model"]["hidden"] == 32 and report["model"]["kind"] == kind
    assert report["peak_flops"] > 1e9 and report["model_flops_per_token"] > 0
    for side in ("engine", "trainer"):
        assert 0 < report[side]["mfu"] < 1 and report[side]["peak_memory_bytes"] > 2**20
    # Nothing is written outside the temp folder and the JSON file.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]
