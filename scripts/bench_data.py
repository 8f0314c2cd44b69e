"""Data pipeline throughput: tokenise + pack, this toolkit against transformers' ``run_mlm.py`` way, side by side.

Both sides start from the same text (a corpus written to a local ``.txt`` file, one example a line, so that
``datasets`` caches what it computes) and the same trained tokenizer, and end with blocks of ``--block-size``
tokens:

    (a) nlp_ssl:  ``tokenize_corpus`` (``datasets.map``, batched) then ``PackedBlocks.from_tokenized``: the
                  whole token stream is flattened in Arrow and cut once; the last block is padded, no token lost;
    (b) run_mlm:  ``datasets.map`` tokenisation then ``group_texts`` (transformers' examples): concatenate each
                  map batch of 1,000 examples and cut it, dropping each batch's remainder.

It reports tokens/s of each side (tokens in the produced blocks, per second of tokenise + pack), the ratio, the
tokens each side keeps, and the start-up of a second run over the same file (``datasets`` reuses its cache
for both sides' ``map`` calls; nlp_ssl's packing is recomputed, and its cost is part of that figure).

    python scripts/bench_data.py                     # PTB train, WordPiece 8k, blocks of 128
    python scripts/bench_data.py --corpus mixed --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from itertools import chain
from pathlib import Path
from typing import Any

import datasets

from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.packing import PackedBlocks, tokenize_corpus
from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.errors import exit_on_user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="ptb", help="embedded corpus or local files (default ptb)")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3, help="alternating (nlp_ssl, run_mlm) pairs, each on a fresh cache")
    p.add_argument("--num-proc", type=int, default=None, help="datasets.map processes for both sides")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def ours(path: Path, tokenizer: Any, block: int, cache: Path, num_proc: int | None) -> tuple[float, int]:
    """Seconds to tokenise and pack ``path``, and tokens kept."""
    start = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=str(cache))
    blocks = PackedBlocks.from_tokenized(tokenize_corpus(ds, tokenizer, append_eos=False, num_proc=num_proc),
                                         block, tokenizer.pad_token_id)
    return time.perf_counter() - start, blocks.num_tokens


def run_mlm_way(path: Path, tokenizer: Any, block: int, cache: Path, num_proc: int | None) -> tuple[float, int]:
    """transformers' examples/pytorch/language-modeling/run_mlm.py with line_by_line off: tokenise, group_texts."""
    start = time.perf_counter()
    ds = datasets.load_dataset("text", data_files=str(path), split="train", cache_dir=str(cache))

    def tokenize(examples: dict[str, list[str]]) -> dict[str, Any]:
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = ds.map(tokenize, batched=True, num_proc=num_proc, remove_columns=["text"], desc="tokenize (run_mlm)")

    def group_texts(examples: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
        concatenated = {k: list(chain(*examples[k])) for k in examples}
        total = (len(concatenated[next(iter(examples))]) // block) * block
        return {k: [t[i:i + block] for i in range(0, total, block)] for k, t in concatenated.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc, desc=f"group_texts in blocks of {block}")
    kept = len(grouped) * block
    return time.perf_counter() - start, kept


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    corpus = load_corpus(CorpusConfig(corpus=args.corpus, eval_fraction=0.0))
    texts = [t for t in corpus["train"]["text"] if t.strip()]
    tokenizer = train_tokenizer(texts, "wordpiece", TokenizerConfig(vocab_size=args.vocab_size))
    results: dict[str, list[dict[str, float]]] = {"nlp_ssl": [], "run_mlm": []}
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        path = Path(tmp) / "corpus.txt"
        path.write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
        for repeat in range(args.repeats):
            for name, fn in (("nlp_ssl", ours), ("run_mlm", run_mlm_way)):
                cache = Path(tmp) / f"cache-{name}-{repeat}"
                cold, tokens = fn(path, tokenizer, args.block_size, cache, args.num_proc)
                warm, _ = fn(path, tokenizer, args.block_size, cache, args.num_proc)  # the second run: from cache
                results[name].append({"seconds": cold, "tokens": tokens, "tokens_per_sec": tokens / cold,
                                      "second_run_seconds": warm})
                print(f"[{repeat + 1}/{args.repeats}] {name:<8} {tokens / cold:>10,.0f} tokens/s ({cold:.1f}s, "
                      f"{tokens:,} tokens kept); second run from cache {warm:.2f}s", flush=True)
    report: dict[str, Any] = {"corpus": args.corpus, "examples": len(texts), "block_size": args.block_size,
                              "vocab": len(tokenizer), "num_proc": args.num_proc, "cpus": os.cpu_count()}
    for name, runs in results.items():
        report[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    ratio = [a["tokens_per_sec"] / b["tokens_per_sec"] for a, b in zip(results["nlp_ssl"], results["run_mlm"])]
    report["ratio"] = statistics.median(ratio)
    lost = report["run_mlm"]["tokens"] - report["nlp_ssl"]["tokens"]
    print(f"\nnlp_ssl / run_mlm tokens/s: {report['ratio']:.2f}x (per pair {min(ratio):.2f}..{max(ratio):.2f}); "
          f"tokens kept: nlp_ssl {report['nlp_ssl']['tokens']:,.0f}, run_mlm {report['run_mlm']['tokens']:,.0f} "
          f"({-lost:,.0f} dropped by group_texts); second run: nlp_ssl {report['nlp_ssl']['second_run_seconds']:.2f}s, "
          f"run_mlm {report['run_mlm']['second_run_seconds']:.2f}s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
