"""Smoke test of scripts/bench_word2vec.py: gensim, the fused kernel and batched steps each train, and the
report holds every side's speed ratio and quality scores.

It runs the real script in a subprocess on a slice of the corpus (one epoch, a small vocabulary); the
figures themselves are not checked, only that they were produced.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_word2vec.py"


@pytest.mark.slow
def test_bench_word2vec_smoke(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(SCRIPT), "--arch", "both", "--threads", "1", "--epochs", "1", "--json", str(out),
           "data.max_train_samples=400", "vocab.min_count=3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = json.loads(out.read_text())
    for arch in ("skipgram", "cbow"):
        assert set(report[arch]["speed_ratio"]) == {"gensim", "fused", "batched"}
        assert report[arch]["speed_ratio"]["gensim"] == 1.0
        for side in ("gensim", "fused", "batched"):
            med = report[arch]["median"][side]
            assert med["words_per_sec"] > 0 and med["raw_words"] > 0
            assert med["wordsim353_spearman"] is not None
        assert f"{arch:<10} fused" in proc.stdout and f"{arch:<10} batched" in proc.stdout
