"""Sentence-embedding evaluation and the ``embed`` command.

For a frozen encoder (any transformers folder or hub id; a contrastive export records its pooling):

* **kNN accuracy**: each test sentence takes the majority label of its ``k`` nearest training sentences by
  cosine similarity (the protocol of Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric
  Instance Discrimination", for frozen features);
* **linear-probe accuracy**: the probes of :mod:`nlp_ssl.eval.probes` (standardised features, logistic
  regression), with optional label budgets;
* **Spearman correlation** between cosine similarity and gold scores on a file of scored sentence pairs
  in the STS-B layout (GLUE's ``STS-B/dev.tsv`` with its header, or the original ``sts-dev.csv`` columns
  genre, file, year, id, score, sentence 1, sentence 2 without one), as SentEval and SimCSE report it;
* **alignment and uniformity** (Wang & Isola 2020): on the STS pairs scored >= 4 (uniformity over all
  sentences), as in SimCSE, and on same-label pairs of each labelled set.

Labelled sets: ``trec`` (TREC-6 questions), ``bbc_news`` (topics) or any labelled TSV / CSV / JSONL file
(columns ``text`` and ``label``, split 80/10/10 per label by a salted hash). Scores are reported on
``validation`` (for choosing) and ``test``.

Command line (mounted as ``nlp-ssl eval sentence`` and ``nlp-ssl embed``)::

    nlp-ssl eval sentence runs/simcse/final --task trec bbc_news --pairs sts-dev.tsv --json sentence.json
    nlp-ssl embed runs/simcse/final questions.txt --out emb.npy
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nlp_ssl.errors import UserError

__all__ = ["LabelledSet", "add_embed_parser", "add_sentence_parser", "embed_file", "evaluate_sentence_encoder",
           "format_sentence_report", "knn_accuracy", "load_labelled_set", "read_sts_pairs"]


@dataclass
class LabelledSet:
    """Texts and integer labels per split (``train``, ``validation``, ``test``)."""

    name: str
    label_names: list[str]
    splits: dict[str, tuple[list[str], np.ndarray]]


def load_labelled_set(task: str, text_column: str = "text", label_column: str = "label") -> LabelledSet:
    """``trec``, ``bbc_news`` or a labelled file (split 80/10/10 per label, deterministically).

    Raises:
        UserError: an unknown name, a missing file or column, a single class.
    """
    key = task.strip().lower()
    if key in ("trec", "trec6", "trec-6", "bbc_news", "bbc"):
        from nlp_ssl.data.builtin import (BBC_NEWS_LABELS, TREC_LABELS, load_bbc_news_classification,
                                          load_trec_classification)

        trec = key.startswith("trec")
        dsd = load_trec_classification() if trec else load_bbc_news_classification()
        return LabelledSet("trec" if trec else "bbc_news", list(TREC_LABELS if trec else BBC_NEWS_LABELS),
                           {s: (list(dsd[s]["text"]), np.asarray(dsd[s]["label"], dtype=np.int64))
                            for s in ("train", "validation", "test")})
    if not Path(task).expanduser().is_file():
        raise UserError(f"unknown sentence task {task!r}; use trec, bbc_news or a labelled .tsv/.csv/.jsonl file "
                        "with 'text' and 'label' columns")
    from nlp_ssl.data.builtin import _hashed_split
    from nlp_ssl.data.sentences import read_labelled_file

    texts, labels, names = read_labelled_file(task, text_column, label_column)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "validation": [], "test": []}
    for label in range(len(names)):
        rows = [(t, y) for t, y in zip(texts, labels) if y == label]
        for split, part in _hashed_split(rows, key=lambda r: f"{Path(task).name}:{r[0]}", held_out_fraction=0.1).items():
            splits[split].extend(part)
    if not splits["train"] or not splits["test"]:
        raise UserError(f"{task} is too small to split into train and test (give at least 3 texts per label)")
    return LabelledSet(Path(task).stem, names, {s: ([t for t, _ in rows], np.asarray([y for _, y in rows], np.int64))
                                                for s, rows in splits.items() if rows})


def read_sts_pairs(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Scored sentence pairs in the STS-B layout: ``(sentences 1, sentences 2, scores)``.

    GLUE's ``STS-B/{train,dev}.tsv`` has a header with ``sentence1``, ``sentence2`` and ``score`` columns;
    the original STS benchmark files (``sts-dev.csv``) have none and hold genre, file, year, id, score,
    sentence 1, sentence 2 (sometimes followed by source columns). Quotes are not special in either.

    Raises:
        UserError: missing or empty file, missing columns, a score that is not a number.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"sentence-pair file not found: {path}")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise UserError(f"sentence-pair file is empty: {path}")
    rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = [c.strip().lower() for c in rows[0]]
    if {"sentence1", "sentence2", "score"} <= set(header):
        i1, i2, iscore = header.index("sentence1"), header.index("sentence2"), header.index("score")
        rows = rows[1:]
    else:
        i1, i2, iscore = 5, 6, 4
    s1, s2, scores = [], [], []
    for number, row in enumerate(rows, start=1):
        if len(row) <= max(i1, i2, iscore):
            raise UserError(f"{path}: row {number} has {len(row)} tab-separated fields; expected the STS-B layout "
                            "(a header with sentence1, sentence2, score, or genre/file/year/id/score/s1/s2)")
        try:
            scores.append(float(row[iscore]))
        except ValueError:
            raise UserError(f"{path}: row {number} has score {row[iscore]!r}, not a number") from None
        s1.append(row[i1])
        s2.append(row[i2])
    if len(scores) < 2:
        raise UserError(f"{path} holds fewer than 2 scored pairs")
    return s1, s2, np.asarray(scores, dtype=np.float64)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, k: int = 10
                 ) -> float:
    """Accuracy of a majority vote among the ``k`` most cosine-similar training examples (ties: the nearest).

    Shape: train_x ``[N, D]``, train_y ``[N]``, test_x ``[M, D]``, test_y ``[M]``.
    """
    if k < 1:
        raise UserError(f"--k must be >= 1, got {k}")
    k = min(k, len(train_x))
    sims = _normalise(test_x) @ _normalise(train_x).T  # [M, N]
    nearest = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # [M, k] most similar first
    votes = train_y[nearest]
    classes = int(max(train_y.max(), test_y.max())) + 1
    counts = np.zeros((len(test_x), classes))
    np.add.at(counts, (np.arange(len(test_x))[:, None], votes), 1.0)
    # Among the tied classes, the one whose member comes first in the neighbour list wins.
    first_rank = np.full((len(test_x), classes), k, dtype=np.float64)
    for r in range(k - 1, -1, -1):
        first_rank[np.arange(len(test_x)), votes[:, r]] = r
    pred = np.argmax(counts * (k + 1) - first_rank, axis=1)
    return float((pred == test_y).mean())


def _same_label_pairs(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """For every example with a same-label partner, one such partner drawn at random."""
    rng = np.random.default_rng(seed)
    left, right = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        if members.size < 2:
            continue
        partners = rng.permutation(members)
        clash = partners == members
        partners[clash] = np.roll(partners, 1)[clash]
        left.append(members)
        right.append(partners)
    return (np.concatenate(left), np.concatenate(right)) if left else (np.zeros(0, int), np.zeros(0, int))


def _align_uniform(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    import torch

    from nlp_ssl.eval.alignment_uniformity import alignment_uniformity

    return alignment_uniformity(torch.from_numpy(a), torch.from_numpy(b))


def evaluate_sentence_encoder(source: str, tasks: Sequence[str] = ("trec",), *, pairs_file: str | None = None,
                              labels_per_class: Sequence[int | None] = (None,), k: int = 10,
                              pooling: str | None = None, init: str = "pretrained", max_length: int = 128,
                              batch_size: int = 64, seed: int = 0, repeats: int = 3, c: float = 1.0
                              ) -> dict[str, Any]:
    """Evaluate ``source``'s sentence embeddings on labelled sets and scored pairs.

    Args:
        source: model folder or hub id.
        tasks: labelled sets (see :func:`load_labelled_set`).
        pairs_file: scored pairs in the STS-B layout (optional).
        labels_per_class: linear-probe label budgets (None: every training label).
        k: neighbours of the kNN classifier.
        pooling: ``mean`` or ``cls``; default what the export recorded, else mean.
        init: ``random`` evaluates the same architecture untrained.
        max_length, batch_size: encoding options.
        seed, repeats, c: label-budget draws and the probe's inverse regularisation.

    Returns:
        ``{"source", "pooling", "metrics": {name: value}, "validation": {name: value}, "seconds", ...}``:
        ``metrics`` on the test splits and the pairs file, ``validation`` the same accuracies on the
        validation splits (for choosing settings without looking at test). Names: ``<task>/knn_accuracy``,
        ``<task>/probe_accuracy``, ``<task>/probe_accuracy_<n>`` for label budgets, ``<task>/alignment``,
        ``<task>/uniformity`` (test), ``sts/spearman``, ``sts/alignment``, ``sts/uniformity``.
    """
    from scipy.stats import spearmanr

    from nlp_ssl.eval.probes import _fit_predict, encode_texts, load_encoder, sample_per_class
    from nlp_ssl.models.sentence_encoder import POOLINGS, read_pooling

    if not tasks and not pairs_file:
        raise UserError("nothing to evaluate: give --task and / or --pairs")
    pooling = pooling or read_pooling(source)
    if pooling not in POOLINGS:
        raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    started = time.perf_counter()
    sets = [load_labelled_set(t) for t in tasks]  # data errors before the model loads
    sts = read_sts_pairs(pairs_file) if pairs_file else None
    model, tokenizer = load_encoder(source, init)

    def encode(texts: list[str]) -> np.ndarray:
        return encode_texts(model, tokenizer, texts, None, max_length, batch_size, pooling)

    metrics: dict[str, float] = {}
    validation: dict[str, float] = {}
    sizes: dict[str, dict[str, int]] = {}
    for data in sets:
        x = {s: encode(texts) for s, (texts, _) in data.splits.items()}
        y = {s: labels for s, (_, labels) in data.splits.items()}
        sizes[data.name] = {s: len(v) for s, v in y.items()}
        scored = [(s, validation if s == "validation" else metrics) for s in ("validation", "test") if s in x]
        for split, out in scored:
            out[f"{data.name}/knn_accuracy"] = knn_accuracy(x["train"], y["train"], x[split], y[split], k)
        for budget in labels_per_class:
            draws = 1 if budget is None else repeats
            for split, out in scored:
                scores = []
                for draw in range(draws):
                    rows = (np.arange(len(y["train"])) if budget is None
                            else sample_per_class(y["train"], budget, np.random.default_rng([seed, draw, budget])))
                    pred = _fit_predict(x["train"][rows], y["train"][rows], [x[split]], False, c, seed)[0]
                    scores.append(float((pred == y[split]).mean()))
                name = "probe_accuracy" if budget is None else f"probe_accuracy_{budget}"
                out[f"{data.name}/{name}"] = float(np.mean(scores))
        left, right = _same_label_pairs(y["test"], seed)
        if left.size:
            align, uniform = _align_uniform(x["test"][left], x["test"][right])
            metrics[f"{data.name}/alignment"], metrics[f"{data.name}/uniformity"] = align, uniform
    if sts is not None:
        s1, s2, gold = sts
        e1, e2 = encode(s1), encode(s2)
        cosine = (_normalise(e1) * _normalise(e2)).sum(1)
        metrics["sts/spearman"] = float(spearmanr(cosine, gold).correlation)
        high = gold >= 4.0
        if high.sum() >= 2:
            metrics["sts/alignment"] = _align_uniform(e1[high], e2[high])[0]
        metrics["sts/uniformity"] = _align_uniform(e1, e2)[1]
        sizes["sts"] = {"pairs": len(gold)}
    return {"source": str(source), "pooling": pooling, "init": init, "k": k, "dim": int(model.config.hidden_size),
            "sizes": sizes, "metrics": metrics, "validation": validation,
            "seconds": round(time.perf_counter() - started, 1)}


def format_sentence_report(result: dict[str, Any]) -> str:
    """A two-column table of every metric, grouped by task."""
    lines = [f"Sentence embeddings of {result['source']} ({result['pooling']} pooling, {result['dim']}-d"
             f"{', init=random' if result.get('init') == 'random' else ''}; kNN k={result['k']})"]
    for task, sizes in result["sizes"].items():
        lines.append(f"  {task}: " + ", ".join(f"{s} {n:,}" for s, n in sizes.items()))
    validation = result.get("validation", {})
    width = max((len(n) for n in result["metrics"]), default=10)
    lines.append(f"  {'metric':<{width}}  {'test':>6}  {'valid.':>6}")
    for name, value in result["metrics"].items():
        val = f"{validation[name]:.4f}" if name in validation else ""
        lines.append(f"  {name:<{width}}  {value:.4f}  {val:>6}")
    lines.append(f"  ({result['seconds']:.0f} s)")
    return "\n".join(lines)


def add_sentence_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``sentence`` to an argparse ``subparsers`` object; its ``func`` is :func:`cmd_sentence`."""
    from nlp_ssl.eval.probes import _budget

    p = subparsers.add_parser(
        "sentence", help="sentence embeddings: kNN / linear-probe accuracy, STS Spearman, alignment / uniformity",
        description="Evaluate the pooled sentence embeddings of MODEL (a transformers folder or hub id) on labelled "
                    "sentence sets and scored sentence pairs.")
    p.add_argument("model", metavar="MODEL", help="model folder (e.g. a contrastive run's final/) or hub id")
    p.add_argument("--task", nargs="*", default=["trec"], metavar="TASK",
                   help="labelled sets: trec, bbc_news, or a .tsv/.csv/.jsonl file with text and label columns "
                        "(default trec; none with --task and no value)")
    p.add_argument("--pairs", metavar="STS_FILE", help="scored sentence pairs in the STS-B layout (e.g. STS-B/dev.tsv)")
    p.add_argument("--labels-per-class", nargs="+", type=_budget, default=[None], metavar="N",
                   help="linear-probe label budgets, e.g. 10 100 all (default all)")
    p.add_argument("--k", type=int, default=10, help="neighbours of the kNN classifier (default 10)")
    p.add_argument("--pooling", choices=["mean", "cls"], help="default: what the model recorded, else mean")
    p.add_argument("--init", default="pretrained", choices=["pretrained", "random"],
                   help="'random' evaluates the same architecture untrained (baseline)")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to N tokens (default 128)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.set_defaults(func=cmd_sentence)
    return p


def cmd_sentence(args: argparse.Namespace) -> int:
    from nlp_ssl.atomic import atomic_write_text

    result = evaluate_sentence_encoder(args.model, args.task, pairs_file=args.pairs,
                                       labels_per_class=args.labels_per_class, k=args.k, pooling=args.pooling,
                                       init=args.init, max_length=args.max_length, batch_size=args.batch_size,
                                       seed=args.seed)
    print(format_sentence_report(result))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


# --- embed ------------------------------------------------------------------------------------------------


def embed_file(model_source: str, texts_file: str, out: str, pooling: str | None = None, max_length: int = 128,
               batch_size: int = 64) -> tuple[int, int]:
    """Embed every non-blank line of ``texts_file`` into ``out`` (``.npy``: ``[N, D]`` float32; ``.jsonl``: one
    ``{"text", "embedding"}`` object per line). Returns ``(N, D)``.

    Raises:
        UserError: missing or empty texts file, an unknown output suffix, a model that does not load.
    """
    from nlp_ssl.eval.probes import encode_texts, load_encoder
    from nlp_ssl.models.sentence_encoder import POOLINGS, read_pooling

    out_path = Path(out)
    if out_path.suffix not in (".npy", ".jsonl"):
        raise UserError(f"--out must end in .npy or .jsonl, got {out}")
    source = Path(texts_file).expanduser()
    if not source.is_file():
        raise UserError(f"texts file not found: {texts_file}")
    try:
        texts = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{texts_file} is not valid UTF-8 text") from None
    if not texts:
        raise UserError(f"texts file has no non-blank line: {texts_file}")
    pooling = pooling or read_pooling(model_source)
    if pooling not in POOLINGS:
        raise UserError(f"--pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    model, tokenizer = load_encoder(model_source)
    emb = encode_texts(model, tokenizer, texts, None, max_length, batch_size, pooling)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.suffix == ".npy":
        np.save(out_path, emb.astype(np.float32))
    else:
        with out_path.open("w", encoding="utf-8") as handle:
            for text, vector in zip(texts, emb):
                handle.write(json.dumps({"text": text, "embedding": [round(float(v), 7) for v in vector]}) + "\n")
    return emb.shape[0], emb.shape[1]


def add_embed_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``embed`` to an argparse ``subparsers`` object; its ``func`` is :func:`cmd_embed`."""
    p = subparsers.add_parser("embed", help="write sentence embeddings of a text file (one text a line)",
                              description="Embed each non-blank line of TEXTS_FILE with MODEL's pooled last layer.")
    p.add_argument("model", metavar="MODEL", help="model folder (e.g. a contrastive run's final/) or hub id")
    p.add_argument("texts", metavar="TEXTS_FILE", help="UTF-8 text file, one text a line")
    p.add_argument("--out", required=True, help="emb.npy ([N, D] float32) or emb.jsonl (text and embedding per line)")
    p.add_argument("--pooling", choices=["mean", "cls"], help="default: what the model recorded, else mean")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(func=cmd_embed)
    return p


def cmd_embed(args: argparse.Namespace) -> int:
    n, d = embed_file(args.model, args.texts, args.out, args.pooling, args.max_length, args.batch_size)
    print(f"wrote {n:,} embeddings of dimension {d} to {args.out}")
    return 0
