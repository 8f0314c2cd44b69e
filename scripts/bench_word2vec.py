"""Benchmark the torch word2vec backend against gensim: same corpus, same hyper-parameters, same threads.

    python scripts/bench_word2vec.py                      # skip-gram, 2 threads, all embedded corpora, 5 epochs
    python scripts/bench_word2vec.py --arch both --repeats 2 --json bench_word2vec.json
    python scripts/bench_word2vec.py --sides gensim fused # leave the batched torch path out
    python scripts/bench_word2vec.py --corpus gcide.jsonl --epochs 3   # another corpus (scripts/gcide_corpus.py)

Sides: ``gensim``; ``fused``, the torch backend with the fused CPU kernel (``word2vec.kernel=fused``, what
``auto`` picks on one CPU process); ``batched``, the torch backend's batched steps (``word2vec.kernel=torch``,
the path for GPUs and several processes).

Corpus: the largest text that installs offline: every split of every embedded corpus (PTB, BBC News,
Shakespeare, the gensim Wikipedia sample and the Lee corpus; about 3.3M words), one document per example,
lower-cased white-space tokens, min_count 5; or any corpus the recipes read (``--corpus``).
Both backends train through ``recipes/word2vec.py``'s pipeline (same vocabulary, subsampling table and
noise distribution; the torch backend through the shared engine) with ``torch.set_num_threads(T)`` and
gensim ``workers=T``. Words/s counts raw corpus words (out-of-vocabulary tokens included, as gensim's
"raw words") over the training loop only: corpus loading, vocabulary and evaluation are excluded for both.
Quality: Google analogy accuracy (3CosAdd over covered questions, with coverage) and WordSim353 Spearman,
from :mod:`nlp_ssl.eval.intrinsic` on the exported vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # one line per run instead of progress bars

import torch  # noqa: E402

from nlp_ssl.config import load_config  # noqa: E402
from nlp_ssl.engine.memory import keep_freed_memory  # noqa: E402
from nlp_ssl.data.builtin import BUILTIN_CORPORA, load_builtin_corpus  # noqa: E402
from nlp_ssl.pipelines.word2vec import Word2VecConfig, Word2VecRunSummary, train_word2vec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LEARNING_RATE = {"skipgram": 0.025, "cbow": 0.05}  # word2vec.c's defaults, used by both backends


def write_corpus(folder: Path) -> Path:
    """Every split of every embedded corpus as JSON lines, one document per line."""
    path = folder / "offline_all.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for name in BUILTIN_CORPORA:
            if name == "mixed":  # a union of three of the others
                continue
            for split in load_builtin_corpus(name).values():
                for text in split[:]["text"]:
                    out.write(json.dumps({"text": text}) + "\n")
    return path


SIDES = {"gensim": ("gensim", None), "fused": ("torch", "fused"), "batched": ("torch", "torch")}
# The batched path's CBOW takes 8k-word steps (cbow.yaml's note: it loses analogy accuracy with larger ones).
BATCHED_CHUNKS_PER_STEP = {"cbow": 8}


def config(side: str, arch: str, corpus: Path | str, output: Path, args: argparse.Namespace) -> Word2VecConfig:
    backend, kernel = SIDES[side]
    overrides = [
        f"output_dir={output}", "overwrite_output_dir=true", f"data.corpus={corpus}", f"num_train_epochs={args.epochs}",
        f"learning_rate={LEARNING_RATE[arch]}", "report_to=[]", "logging_steps=100", "save_steps=1000000",
        f"word2vec.backend={backend}", f"word2vec.architecture={arch}", f"word2vec.workers={args.threads}",
        "evaluation.neighbours=[]",
    ] + ([f"word2vec.kernel={kernel}"] if kernel else [])
    if side == "batched" and arch in BATCHED_CHUNKS_PER_STEP:
        overrides.append(f"per_device_train_batch_size={BATCHED_CHUNKS_PER_STEP[arch]}")
    overrides += list(args.override)
    # The torch-only keys (step size, negative groups, row cap) come from the shipped config of each model.
    shipped = {"skipgram": "default.yaml", "cbow": "cbow.yaml"}[arch]
    return load_config(Word2VecConfig, ROOT / "recipes" / "configs" / "word2vec" / shipped, overrides)


def headline(summary: Word2VecRunSummary) -> dict[str, float | int | None]:
    intrinsic = summary.intrinsic or {}
    sim = {r["name"]: r for r in intrinsic.get("similarity", [])}
    analogy = next((a for a in intrinsic.get("analogy", []) if a["name"] == "questions-words"), None)
    overall = analogy["overall"] if analogy else {}
    return {
        "words_per_sec": summary.words_per_sec,
        "train_seconds": summary.train_seconds,
        "analogy_accuracy": overall.get("3cosadd", {}).get("accuracy") if overall else None,
        "analogy_covered": overall.get("covered"),
        "analogy_total": overall.get("total"),
        "wordsim353_spearman": sim.get("wordsim353", {}).get("spearman"),
        "simlex999_spearman": sim.get("simlex999", {}).get("spearman"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=["skipgram", "cbow", "both"], default="skipgram")
    parser.add_argument("--cbow", action="store_true", help="same as --arch cbow")
    parser.add_argument("--threads", type=int, default=2, help="torch threads = gensim workers (default 2)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1, help="alternate the backends this many times (median)")
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES),
                        help="what to run (default: all; gensim is always the reference)")
    parser.add_argument("--corpus", help="a corpus file or name instead of every embedded corpus")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("override", nargs="*", help="extra key=value config overrides for both backends")
    args = parser.parse_args()
    archs = ["skipgram", "cbow"] if args.arch == "both" else ["cbow" if args.cbow else args.arch]
    sides = ["gensim"] + [side for side in args.sides if side != "gensim"]
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # what every recipe process does; set up front so both backends run under it

    results: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench_w2v_") as tmp:
        tmp_path = Path(tmp)
        corpus = args.corpus or write_corpus(tmp_path)
        for arch in archs:
            results[arch] = {side: [] for side in sides}
            for repeat in range(args.repeats):
                for backend in sides:
                    cfg = config(backend, arch, corpus, tmp_path / f"{arch}-{backend}-{repeat}", args)
                    start = time.perf_counter()
                    summary = train_word2vec(cfg)
                    row = headline(summary)
                    row["wall_seconds"] = time.perf_counter() - start
                    row["raw_words"] = summary.raw_words
                    results[arch][backend].append(row)
                    print(f"[{arch} {backend} #{repeat + 1}] {row['words_per_sec']:,.0f} words/s, analogy "
                          f"{_pct(row['analogy_accuracy'])}, WS353 {_num(row['wordsim353_spearman'])}", flush=True)

    print()
    source = args.corpus or "all embedded corpora"
    print(f"word2vec benchmark: {source} ({results[archs[0]]['gensim'][0]['raw_words']:,} words), {args.epochs} "
          f"epochs, 100-d, window 5, 5 negatives, sample 1e-3, {args.threads} threads each, median of {args.repeats}")
    header = f"{'model':<10} {'backend':<7} {'words/s':>10} {'vs gensim':>9} {'analogy (covered)':>24} {'WS353':>7} {'SimLex':>7}"
    print(header)
    print("-" * len(header))
    summary_json = {}
    for arch in archs:
        med = {b: _median(results[arch][b]) for b in sides}
        for backend in sides:
            m = med[backend]
            ratio = m["words_per_sec"] / med["gensim"]["words_per_sec"]
            cover = f"{_pct(m['analogy_accuracy'])} ({m['analogy_covered']:.0f}/{m['analogy_total']:.0f})"
            print(f"{arch:<10} {backend:<7} {m['words_per_sec']:>10,.0f} {ratio:>8.2f}x {cover:>24} "
                  f"{_num(m['wordsim353_spearman']):>7} {_num(m['simlex999_spearman']):>7}")
        summary_json[arch] = {"median": med, "runs": results[arch], "speed_ratio": {
            side: med[side]["words_per_sec"] / med["gensim"]["words_per_sec"] for side in sides}}
    if args.json:
        Path(args.json).write_text(json.dumps(summary_json, indent=2) + "\n", encoding="utf-8")


def _median(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    return {k: (statistics.median([r[k] for r in rows]) if rows[0][k] is not None else None) for k in keys}


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
