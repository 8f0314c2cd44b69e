"""What a task needs without any representation learning: sparse features and a logistic regression.

Beside every pretrained and randomly initialised encoder, these baselines show how much of a task a linear
model on surface features already solves:

* sentence tasks (``bbc_news``, ``trec``): TF-IDF of word uni- and bigrams (sublinear term frequency) and a
  multinomial logistic regression (the classic text-classification baseline; e.g. Wang & Manning 2012,
  "Baselines and Bigrams");
* NER (``wnut16``, CoNLL files): a per-word logistic regression on hand-made features of the word and its
  neighbours (lower-cased form, shape, affixes, capitalisation, Twitter markers), the feature set of
  feature-based taggers before neural ones (e.g. Ratinov & Roth 2009), without a CRF's transition scores.

The inverse regularisation strength ``C`` is picked on the validation split from a small grid, as the
fine-tuning runs pick their learning rate; the test split is scored once with the picked value.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from nlp_ssl.errors import UserError

__all__ = ["DEFAULT_C_GRID", "feature_tagger_baseline", "tfidf_baseline", "word_features"]

DEFAULT_C_GRID = (0.1, 1.0, 10.0, 100.0)


def _sentence_task(task: str) -> tuple[Any, list[str]]:
    from nlp_ssl.data import builtin

    key = task.strip().lower()
    if key in ("bbc_news", "bbc"):
        return builtin.load_bbc_news_classification(), list(builtin.BBC_NEWS_LABELS)
    if key in ("trec", "trec6", "trec-6"):
        return builtin.load_trec_classification(), list(builtin.TREC_LABELS)
    raise UserError(f"unknown sentence task {task!r} for the TF-IDF baseline; use bbc_news or trec")


def tfidf_baseline(task: str, c_grid: Sequence[float] = DEFAULT_C_GRID, seed: int = 0) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams) + logistic regression on ``task``, ``C`` picked on validation accuracy.

    Returns:
        ``{"task", "validation": {C: accuracy}, "C", "validation_accuracy", "test_accuracy", "seconds"}``.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    started = time.process_time()
    dsd, _ = _sentence_task(task)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)
    x_train = vectorizer.fit_transform(dsd["train"]["text"])  # the vocabulary and IDF come from train only
    x_val, x_test = (vectorizer.transform(dsd[s]["text"]) for s in ("validation", "test"))
    y_train, y_val, y_test = (np.asarray(dsd[s]["label"]) for s in ("train", "validation", "test"))
    scores, models = {}, {}
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        scores[c], models[c] = float((model.predict(x_val) == y_val).mean()), model
    best = max(c_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    test = float((models[best].predict(x_test) == y_test).mean())
    return {"task": task, "validation": {str(c): s for c, s in scores.items()}, "C": best,
            "validation_accuracy": scores[best], "test_accuracy": test,
            "seconds": round(time.process_time() - started, 1)}


def _shape(word: str) -> str:
    """``Xxxx`` style shape with runs collapsed: ``London`` -> ``Xx``, ``G20`` -> ``Xd``, ``@bob`` -> ``@x``."""
    out: list[str] = []
    for ch in word:
        kind = "X" if ch.isupper() else "x" if ch.islower() else "d" if ch.isdigit() else ch
        if not out or out[-1] != kind:
            out.append(kind)
    return "".join(out)


def word_features(tokens: Sequence[str], index: int) -> dict[str, float]:
    """Sparse features of ``tokens[index]`` and its neighbours (one dict per word, for ``DictVectorizer``)."""
    word = tokens[index]
    lower = word.lower()
    feats: dict[str, float] = {
        "bias": 1.0, f"w={lower}": 1.0, f"shape={_shape(word)}": 1.0, f"pre3={lower[:3]}": 1.0,
        f"suf3={lower[-3:]}": 1.0, f"suf2={lower[-2:]}": 1.0,
    }
    for flag, on in (("title", word.istitle()), ("upper", word.isupper() and len(word) > 1),
                     ("digit", any(ch.isdigit() for ch in word)), ("mention", word.startswith("@")),
                     ("hashtag", word.startswith("#")), ("url", lower.startswith(("http", "www."))),
                     ("first", index == 0)):
        if on:
            feats[flag] = 1.0
    for offset in (-2, -1, 1, 2):
        j = index + offset
        if 0 <= j < len(tokens):
            neighbour = tokens[j]
            feats[f"{offset}:w={neighbour.lower()}"] = 1.0
            if abs(offset) == 1:
                feats[f"{offset}:shape={_shape(neighbour)}"] = 1.0
        else:
            feats[f"{offset}:pad"] = 1.0
    return feats


def feature_tagger_baseline(dataset: str = "wnut16", c_grid: Sequence[float] = DEFAULT_C_GRID,
                            seed: int = 0) -> dict[str, Any]:
    """Per-word logistic regression on :func:`word_features`; ``C`` picked on validation entity F1 (seqeval).

    Returns:
        ``{"task", "validation": {C: F1}, "C", "validation_f1", "test_f1", "seconds"}``.
    """
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    from nlp_ssl.data.conll import load_ner
    from nlp_ssl.eval.metrics import seqeval_metric

    started = time.process_time()
    dsd, labels = load_ner(dataset, seed=seed)
    for split in ("train", "validation", "test"):
        if split not in dsd:
            raise UserError(f"NER data {dataset!r} has no {split} split; the baseline needs train, validation and test")

    def featurise(split: str) -> tuple[list[dict[str, float]], np.ndarray, list[int]]:
        rows, tags, lengths = [], [], []
        for tokens, sentence_tags in zip(dsd[split]["tokens"], dsd[split]["ner_tags"]):
            rows += [word_features(tokens, i) for i in range(len(tokens))]
            tags += list(sentence_tags)
            lengths.append(len(tokens))
        return rows, np.asarray(tags), lengths

    vectorizer = DictVectorizer()
    train_rows, y_train, _ = featurise("train")
    x_train = vectorizer.fit_transform(train_rows)

    def f1(model: Any, split: str) -> float:
        rows, gold, lengths = featurise(split)
        predicted = model.predict(vectorizer.transform(rows))
        offsets = np.cumsum([0, *lengths])
        pred_seqs = [[labels[t] for t in predicted[a:b]] for a, b in zip(offsets[:-1], offsets[1:])]
        gold_seqs = [[labels[t] for t in gold[a:b]] for a, b in zip(offsets[:-1], offsets[1:])]
        return float(seqeval_metric(pred_seqs, gold_seqs)["overall_f1"])

    scores, models = {}, {}
    for c in c_grid:
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x_train, y_train)
        scores[c], models[c] = f1(model, "validation"), model
    best = max(c_grid, key=lambda c: (scores[c] if not math.isnan(scores[c]) else -1.0, -c))
    return {"task": dataset, "validation": {str(c): s for c, s in scores.items()}, "C": best,
            "validation_f1": scores[best], "test_f1": f1(models[best], "test"),
            "seconds": round(time.process_time() - started, 1)}
