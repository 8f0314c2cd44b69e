"""Smoke tests of scripts/bench_scaling.py and scripts/bench_data.py: the real scripts on tiny settings, as a user
runs them; the figures are not checked, only that they were produced and that the JSON holds what the README
table is made from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}


def _run(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(SCRIPTS / script), *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_bench_scaling_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = _run("bench_scaling.py", ["--hidden", "64", "128", "--seq", "32", "--tokens-per-step", "256",
                                     "--steps", "1", "--warmup-steps", "1", "--json", str(out)], tmp_path)
    report = json.loads(out.read_text())
    rows = report["cpu"]
    assert [(r["hidden"], r["seq"], r["batch"]) for r in rows] == [(64, 32, 8), (128, 32, 8)]
    assert rows[0]["params"] < rows[1]["params"]
    for row in rows:
        assert row["tokens_per_sec"] > 0 and 0 < row["mfu"] < 1 and row["peak_memory_mib"] > 1
    assert report["peak_flops"] > 1e9
    assert {r["config"] for r in report["gpu_on_paper"]} == {"bert_small_wikitext103.yaml",
                                                             "gpt2_small_wikitext103.yaml"}
    assert all(r["flops_per_token"] > 0 and r["tokens_per_sec"] > 0 for r in report["gpu_on_paper"])
    assert "tokens/s at 40% of 312 TFLOP/s" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scaling.json"]


@pytest.mark.slow
def test_bench_data_smoke(tmp_path: Path) -> None:
    from nlp_ssl.data.builtin import load_builtin_corpus

    # A slice of the real PTB text as a local file (the bench reads local files as users' corpora do).
    corpus = tmp_path / "ptb-slice.txt"
    corpus.write_text("\n".join(load_builtin_corpus("ptb")["train"][:4000]["text"]) + "\n", encoding="utf-8")
    out = tmp_path / "data.json"
    proc = _run("bench_data.py", ["--corpus", str(corpus), "--repeats", "1", "--vocab-size", "500",
                                  "--json", str(out)], tmp_path)
    assert "nlp_ssl / run_mlm tokens/s" in proc.stdout
    report = json.loads(out.read_text())
    ours, theirs = report["nlp_ssl"], report["run_mlm"]
    assert report["vocab"] == 500 and report["block_size"] == 128 and report["examples"] == 4000
    # group_texts drops each map batch's remainder; this toolkit pads the last block and keeps every token.
    assert ours["tokens"] > theirs["tokens"] > 0
    for side in (ours, theirs):
        assert side["tokens_per_sec"] > 0 and isinstance(side["second_run_seconds"], float)  # reported
    assert report["ratio"] == pytest.approx(ours["tokens_per_sec"] / theirs["tokens_per_sec"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json", "ptb-slice.txt"]
