"""Data parallelism changes nothing: one process with batch 2B gives the per-step losses of two processes with
batch B, for every recipe's objective (dropout off, since dropout masks are drawn per process).

Per-example randomness (masks, subsampling, window radii, negatives, views) is drawn for the global batch from a
generator seeded by (seed, step) and sliced per process (``Objective.per_example``); gradients are summed over
processes and normalised by the global item count. The toy contrastive objective is checked the same way in
``tests/test_objective_contract.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

RECIPES = {
    "mlm": ("recipes/mlm.py", "recipes/configs/mlm/debug.yaml", 8,
            ["model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"]),
    "clm": ("recipes/clm.py", "recipes/configs/clm/debug.yaml", 8,
            ["model.hidden_dropout_prob=0", "model.attention_probs_dropout_prob=0"]),
    # The batched path: the fused kernel trains in place on one process and does not run on two.
    "word2vec": ("recipes/word2vec.py", "recipes/configs/word2vec/debug.yaml", 4,
                 ["evaluation.enabled=false", "word2vec.kernel=torch"]),
}


def _run(script: str, config: str, out: Path, batch: int, extra: list[str], processes: int, port: int) -> dict[int, float]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--config_file", "recipes/configs/accelerate/cpu_2proc.yaml",
                     "--main_process_port", str(port)]
    args = [script, "--config", config, f"output_dir={out}", f"per_device_train_batch_size={batch}",
            "logging_steps=1", "max_steps=12", "report_to=[]", *extra]
    result = subprocess.run(launcher + args, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_one_process_with_the_global_batch_equals_two_processes(recipe, tmp_path):
    script, config, batch, extra = RECIPES[recipe]
    port = 29600 + sorted(RECIPES).index(recipe)
    if recipe == "word2vec":
        extra = [*extra, "num_train_epochs=null"]  # max_steps, not epochs: the same steps in both runs
    single = _run(script, config, tmp_path / "one", 2 * batch, extra, 1, port)
    double = _run(script, config, tmp_path / "two", batch, extra, 2, port)
    assert sorted(single) == list(range(1, 13))
    assert double == pytest.approx(single, rel=2e-4, abs=1e-5)
