"""Linear probes: "a simple classifier on the learned features", with an optional label budget.

A probe freezes the representation and fits only a linear classifier on top, so its score measures what the
features already hold (Alain & Bengio, 2016; Conneau et al., 2018, SentEval), and with a label budget (10,
50, 100 labelled examples per class) how few labels the features need.

Features:

* **encoder**: a transformers checkpoint (a run's ``final/``, any model folder or hub id), frozen.
  Sentences are mean-pooled over the last layer's token states (masked by attention), or the ``[CLS]``
  state; a sentence pair is encoded jointly (``[CLS] a [SEP] b [SEP]``). For NER each word is the state of
  its first sub-token. ``--init random`` gives the same architecture untrained, the no-pretraining
  baseline.
* **vectors**: word vectors (gensim ``KeyedVectors``, word2vec text/binary, our word2vec export folder).
  A text is the average of its words' vectors (Mikolov et al., 2013, "bag of vectors" baselines); a pair is
  ``[u, v, |u - v|, u * v]`` (Conneau et al., 2017, InferSent); for NER each word is its own vector. The
  share of tokens found in the vocabulary (coverage) is reported beside the score.

The classifier is scikit-learn's ``LogisticRegression`` on standardised features (``Ridge`` for STS-B's
regression). Scores use the task's official metric (:mod:`nlp_ssl.eval.metrics`) and, for NER, entity-level
seqeval F1.

Command line (mounted as ``nlp-ssl eval probe``; also ``python -m nlp_ssl.eval.probes``)::

    nlp-ssl eval probe runs/mlm/final --task bbc_news --labels-per-class 10 50 all --json probe.json
    nlp-ssl eval probe vectors.kv --task wnut16
    nlp-ssl eval probe bert-base-uncased --task sst2 --data-dir glue_data
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nlp_ssl.errors import UserError, exit_on_user_error

__all__ = ["ProbeData", "add_probe_parser", "cmd_probe", "encode_texts", "encode_words", "format_probe_report",
           "load_probe_data", "main", "run_probe", "sample_per_class", "sample_sentences_per_type",
           "vector_text_features", "vector_word_features"]

_NER_NAMES = {"wnut16", "wnut_16", "wnut-16", "wnut2016", "wnut-2016", "wnut_2016", "conll2003", "conll03",
              "conll-2003", "conll_2003"}


# --- tasks --------------------------------------------------------------------------------------------


@dataclass
class Split:
    """One split: ``texts`` (and ``pairs`` for pair tasks) with ``labels``, or NER ``tokens`` with ``tags``."""

    labels: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    pairs: list[str] | None = None
    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tokens) if self.tokens else len(self.labels)


@dataclass
class ProbeData:
    """A task reduced to what a probe needs.

    Attributes:
        name: task name.
        kind: ``sequence`` (one label per text or pair) or ``token`` (one tag per word).
        metric: metric family (``accuracy``, ``f1``, ``matthews_correlation``, ``pearson_spearman``) or
            ``seqeval``.
        label_names: class / tag names by id; None for regression.
        train: the training split.
        evals: the scored splits (a labelled test split when there is one, else the dev split(s)).
    """

    name: str
    kind: str
    metric: str
    label_names: list[str] | None
    train: Split
    evals: dict[str, Split]


def _sequence_split(ds: Any, columns: Sequence[str]) -> Split:
    return Split(labels=list(ds["label"]), texts=list(ds[columns[0]]),
                 pairs=list(ds[columns[1]]) if len(columns) > 1 else None)


def load_probe_data(task: str, data_dir: str | None = None, seed: int = 0) -> ProbeData:
    """Load ``bbc_news``, ``trec``, ``wnut16``, ``conll2003``, a GLUE task (hub or ``data_dir``) or a CoNLL file/folder.

    Raises:
        UserError: an unknown task, or any data error of the loaders (missing file, bad label...).
    """
    key = task.strip().lower()
    if key in ("bbc_news", "bbc"):
        from nlp_ssl.data.builtin import BBC_NEWS_LABELS, load_bbc_news_classification

        dsd = load_bbc_news_classification()
        return ProbeData("bbc_news", "sequence", "accuracy", list(BBC_NEWS_LABELS),
                         _sequence_split(dsd["train"], ["text"]), {"test": _sequence_split(dsd["test"], ["text"])})
    if key in ("trec", "trec6", "trec-6"):
        from nlp_ssl.data.builtin import TREC_LABELS, load_trec_classification

        dsd = load_trec_classification()
        return ProbeData("trec", "sequence", "accuracy", list(TREC_LABELS),
                         _sequence_split(dsd["train"], ["text"]), {"test": _sequence_split(dsd["test"], ["text"])})
    if key in _NER_NAMES or Path(task).expanduser().exists():
        from nlp_ssl.data.conll import load_ner

        dsd, labels = load_ner(task, data_dir=data_dir, seed=seed)
        splits = {name: Split(tokens=list(ds["tokens"]), tags=list(ds["ner_tags"])) for name, ds in dsd.items()}
        scored = ["test"] if "test" in splits else [s for s in ("validation",) if s in splits]
        if not scored:
            raise UserError(f"NER data {task!r} has no validation or test split to score the probe on")
        name = "wnut16" if key.startswith("wnut") else ("conll2003" if key.startswith("conll") else Path(task).stem)
        return ProbeData(name, "token", "seqeval", labels, splits["train"], {s: splits[s] for s in scored})

    from nlp_ssl.data.glue import GLUE_TASKS, get_glue_task, load_glue_task

    if task not in GLUE_TASKS:
        raise UserError(f"unknown probe task {task!r}; use bbc_news, trec, wnut16, conll2003, a GLUE task "
                        f"({', '.join(GLUE_TASKS)}) or a CoNLL file / folder")
    spec = get_glue_task(task)
    dsd = load_glue_task(spec, data_dir=data_dir)
    labelled_test = [s for s in spec.test_splits if s in dsd and len(dsd[s]) and dsd[s][0]["label"] != -1]
    scored = labelled_test or list(spec.eval_splits)
    return ProbeData(spec.name, "sequence", spec.metric, list(spec.label_names) if spec.label_names else None,
                     _sequence_split(dsd["train"], spec.text_columns),
                     {s: _sequence_split(dsd[s], spec.text_columns) for s in scored})


# --- encoder features ---------------------------------------------------------------------------------


def load_encoder(source: str, init: str = "pretrained") -> tuple[Any, Any]:
    """A frozen ``AutoModel`` (eval mode) and its tokenizer.

    Raises:
        UserError: the model or its tokenizer cannot be loaded.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from nlp_ssl.data.task_data import has_tokenizer_files
    from nlp_ssl.models.checkpoint import quiet_transformers

    if not has_tokenizer_files(source):
        raise UserError(f"{source} has no tokenizer files; save the tokenizer next to the model (tokenizer.json)")
    try:
        # Quiet: an MLM checkpoint's unused LM head is expected, not news.
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(source)
            if init == "random":
                torch.manual_seed(0)
                model = AutoModel.from_config(AutoConfig.from_pretrained(source))
            else:
                model = AutoModel.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - any load failure is one actionable line
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load {source!r} as a transformers model with a tokenizer ({first})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, tokenizer


def _max_length(model: Any, tokenizer: Any, requested: int) -> int:
    from nlp_ssl.models.checkpoint import effective_max_length

    return effective_max_length(requested, model.config, tokenizer)


def encode_texts(model: Any, tokenizer: Any, texts: Sequence[str], pairs: Sequence[str] | None = None,
                 max_length: int = 256, batch_size: int = 32, pooling: str = "mean") -> np.ndarray:
    """Sentence features ``[N, H]`` of a frozen encoder: masked mean of the last layer, or its first token.

    Texts are encoded longest first in batches so that little compute goes to padding.
    """
    import torch

    max_length = _max_length(model, tokenizer, max_length)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]) - (len(pairs[i]) if pairs else 0))
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            args = [[texts[i] for i in idx]] + ([[pairs[i] for i in idx]] if pairs else [])
            enc = tokenizer(*args, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # [B, T, H]
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[idx] = pooled.float().numpy()
    return out


def encode_words(model: Any, tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int = 128,
                 batch_size: int = 32) -> tuple[list[np.ndarray], int]:
    """Word features of a frozen encoder: the last-layer state of each word's first sub-token.

    Returns:
        ``(features, truncated)``: one ``[n_words, H]`` array per sentence (rows of words cut off by
        ``max_length`` are zero), and how many words were cut off.

    Raises:
        UserError: the tokenizer is not a fast tokenizer (only those report word ids).
    """
    import torch

    if not getattr(tokenizer, "is_fast", False):
        raise UserError("the NER probe needs a fast tokenizer (it reports word ids); save tokenizer.json with the model")
    max_length = _max_length(model, tokenizer, max_length)
    feats = [np.zeros((len(s), model.config.hidden_size), dtype=np.float32) for s in sentences]
    truncated = 0
    with torch.inference_mode():
        for start in range(0, len(sentences), batch_size):
            batch = [list(s) for s in sentences[start:start + batch_size]]
            enc = tokenizer(batch, is_split_into_words=True, truncation=True, max_length=max_length,
                            padding=True, return_tensors="pt")
            hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           **({"token_type_ids": enc["token_type_ids"]} if "token_type_ids" in enc else {})
                           ).last_hidden_state.float().numpy()
            for b in range(len(batch)):
                seen: set[int] = set()
                for position, word in enumerate(enc.word_ids(b)):
                    if word is not None and word not in seen:
                        seen.add(word)
                        feats[start + b][word] = hidden[b, position]
                truncated += len(batch[b]) - len(seen)
    return feats, truncated


# --- word-vector features -----------------------------------------------------------------------------

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def load_word_vectors(source: str) -> Any:
    """Word vectors through :func:`nlp_ssl.eval.vectors.load_vectors` (every format the toolkit meets)."""
    try:
        from nlp_ssl.eval.vectors import load_vectors
    except ImportError:  # older checkouts: gensim's own two loaders
        from gensim.models import KeyedVectors

        path = Path(source)
        if not path.is_file():
            raise UserError(f"vectors file not found: {source}") from None
        try:
            return KeyedVectors.load(str(path))
        except Exception:  # noqa: BLE001 - not a gensim pickle: try the word2vec format
            return KeyedVectors.load_word2vec_format(str(path), binary=path.suffix == ".bin")
    return load_vectors(source)


def _lookup(kv: Any, word: str) -> int | None:
    """Index of ``word`` (or its lower-cased form: many vocabularies are lower-cased)."""
    for form in (word, word.lower()):
        index = kv.key_to_index.get(form)
        if index is not None:
            return index
    return None


def vector_text_features(kv: Any, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Average word vector of each text ``[N, D]`` (zeros if no word is known) and token coverage counts."""
    out = np.zeros((len(texts), kv.vector_size), dtype=np.float32)
    known = total = empty = 0
    for i, text in enumerate(texts):
        ids = [_lookup(kv, w) for w in _WORD.findall(text)]
        total += len(ids)
        ids = [j for j in ids if j is not None]
        known += len(ids)
        if ids:
            out[i] = kv.vectors[ids].mean(0)
        else:
            empty += 1
    return out, {"tokens": total, "known_tokens": known, "texts_without_known_word": empty}


def vector_word_features(kv: Any, sentences: Sequence[Sequence[str]]) -> tuple[list[np.ndarray], dict[str, int]]:
    """Each word's vector (zeros when unknown), one ``[n_words, D]`` array per sentence, and coverage counts."""
    feats, known, total = [], 0, 0
    for words in sentences:
        rows = np.zeros((len(words), kv.vector_size), dtype=np.float32)
        for j, word in enumerate(words):
            index = _lookup(kv, word)
            if index is not None:
                rows[j] = kv.vectors[index]
                known += 1
        total += len(words)
        feats.append(rows)
    return feats, {"tokens": total, "known_tokens": known}


def _pair_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """InferSent's pair representation ``[u, v, |u - v|, u * v]`` (Conneau et al., 2017), ``[N, 4D]``."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


# --- label budgets ------------------------------------------------------------------------------------


def sample_per_class(labels: Sequence[int], per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``per_class`` examples of every class (all of a class that has fewer), sorted."""
    labels = np.asarray(labels)
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        chosen.append(rng.choice(members, size=min(per_class, members.size), replace=False))
    return np.sort(np.concatenate(chosen))


def sample_sentences_per_type(tags: Sequence[Sequence[int]], label_names: Sequence[str], per_type: int,
                              rng: np.random.Generator) -> np.ndarray:
    """Sentences such that each entity type has about ``per_type`` mentions: the NER label budget.

    Sentences are visited in a random order and taken while they mention a type that is still short of
    ``per_type`` entities (a mention is a ``B-`` tag). Sentences without entities are taken in the same
    proportion as in the data, so ``O`` keeps its natural share.
    """
    types = sorted({n[2:] for n in label_names if n != "O"})
    begin = {i: n[2:] for i, n in enumerate(label_names) if n.startswith("B-")}
    need = dict.fromkeys(types, per_type)
    with_entities = sum(1 for t in tags if any(i in begin for i in t))
    empty_ratio = (len(tags) - with_entities) / max(with_entities, 1)
    taken, empty_taken = [], 0
    for index in rng.permutation(len(tags)):
        mentions = [begin[i] for i in tags[index] if i in begin]
        if mentions:
            if any(need[m] > 0 for m in mentions):
                taken.append(index)
                for m in mentions:
                    need[m] -= 1
        elif empty_taken < empty_ratio * max(1, len(taken)):
            taken.append(index)
            empty_taken += 1
        if all(v <= 0 for v in need.values()) and empty_taken >= empty_ratio * len(taken) - 1:
            break
    return np.sort(np.asarray(taken, dtype=np.int64))


# --- fitting ------------------------------------------------------------------------------------------


def _fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_eval: list[np.ndarray], regression: bool, c: float,
                 seed: int) -> list[np.ndarray]:
    """Standardise, fit logistic regression (ridge for regression) and predict each eval matrix."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if regression:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0 / c))
    else:
        if np.unique(y_train).size < 2:
            constant = y_train[0]
            return [np.full(x.shape[0], constant) for x in x_eval]
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))
    model.fit(x_train, y_train)
    return [model.predict(x) for x in x_eval]


def _score(data: ProbeData, split: Split, prediction: np.ndarray) -> dict[str, float]:
    from nlp_ssl.eval.metrics import compute_metric, seqeval_metric

    if data.kind == "sequence":
        return compute_metric(data.metric, prediction, np.asarray(split.labels))
    names = data.label_names or []
    pred, gold, start = [], [], 0
    for tags in split.tags:
        pred.append([names[int(i)] for i in prediction[start:start + len(tags)]])
        gold.append([names[int(i)] for i in tags])
        start += len(tags)
    scores = seqeval_metric(pred, gold)
    flat = {k: float(v) for k, v in scores.items() if not isinstance(v, dict)}
    flat.update({f"{t}/f1": float(v["f1"]) for t, v in scores.items() if isinstance(v, dict)})
    return flat


_HEADLINE = {"accuracy": "accuracy", "f1": "f1", "matthews_correlation": "matthews_correlation",
             "pearson_spearman": "spearmanr", "seqeval": "overall_f1"}


def run_probe(source: str, task: str, *, features: str = "auto", data_dir: str | None = None,
              labels_per_class: Sequence[int | None] = (None,), repeats: int = 3, max_length: int = 256,
              batch_size: int = 32, pooling: str = "mean", init: str = "pretrained", c: float = 1.0,
              seed: int = 0, max_train_samples: int | None = None) -> dict[str, Any]:
    """Fit linear probes of ``source``'s features on ``task`` at each label budget.

    Args:
        source: transformers model folder / hub id, or word vectors (file or export folder).
        task: see :func:`load_probe_data`.
        features: ``encoder``, ``vectors`` or ``auto`` (a folder with ``config.json`` or a hub id is an encoder).
        labels_per_class: budgets; None means every training label. NER budgets count entity mentions per type.
        repeats: draws per budget (their mean and standard deviation are reported); "all" is drawn once.
        max_length, batch_size, pooling, init: encoder options (``pooling`` mean or cls; ``init`` random for
            the untrained baseline of the same architecture).
        c: inverse regularisation strength of the logistic regression.
        seed: seed of the budget draws (and of the NER data split).
        max_train_samples: keep N training examples, a seeded draw (quick runs).

    Returns:
        A JSON-ready dict: source, features, task, metric, split sizes, coverage (vectors), and ``results``
        (one entry per budget with per-draw scores, mean and std of the headline metric, and full metrics).

    Raises:
        UserError: bad arguments, or loading errors of the data or the features.
    """
    if repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {repeats}")
    if c <= 0:
        raise UserError(f"--C must be > 0, got {c}")
    if any(b is not None and b < 1 for b in labels_per_class):
        raise UserError("--labels-per-class takes positive integers or 'all'")
    started = time.perf_counter()
    kind = _feature_kind(source, features)
    data = load_probe_data(task, data_dir, seed)
    if max_train_samples is not None:
        data.train = _head(data.train, max_train_samples)
    regression = data.label_names is None
    if regression and any(b is not None for b in labels_per_class):
        raise UserError(f"{data.name} is a regression task: label budgets per class do not apply; use 'all'")

    info: dict[str, Any] = {"source": str(source), "features": kind, "task": data.name, "metric": data.metric,
                            "train_size": len(data.train), "eval_sizes": {s: len(v) for s, v in data.evals.items()}}
    x_train, x_evals, coverage = _features(kind, source, data, info, max_length, batch_size, pooling, init)
    if coverage is not None:
        info["coverage"] = coverage

    y_train = (np.concatenate([np.asarray(t, dtype=np.int64) for t in data.train.tags]) if data.kind == "token"
               else np.asarray(data.train.labels, dtype=np.float32 if regression else np.int64))
    headline = _HEADLINE[data.metric]
    results = []
    for budget in labels_per_class:
        draws = 1 if budget is None else repeats
        runs = []
        for draw in range(draws):
            rng = np.random.default_rng([seed, draw, budget or 0])
            rows, n_train = _budget_rows(data, budget, rng)
            preds = _fit_predict(x_train[rows], y_train[rows], [x for x in x_evals.values()], regression, c, seed)
            metrics = {split: _score(data, data.evals[split], p) for split, p in zip(x_evals, preds)}
            runs.append({"n_train": n_train, "metrics": metrics})
        first = next(iter(data.evals))
        scores = [r["metrics"][first][headline] for r in runs]
        results.append({
            "labels_per_class": "all" if budget is None else budget, "draws": draws, "split": first,
            "n_train": [r["n_train"] for r in runs], "scores": scores, "mean": float(np.mean(scores)),
            "std": float(statistics.stdev(scores)) if len(scores) > 1 else 0.0, "runs": runs,
        })
    info.update({"headline": headline, "results": results, "seconds": round(time.perf_counter() - started, 1)})
    return info


def _head(split: Split, n: int) -> Split:
    """``n`` examples of ``split`` drawn with a fixed seed (a prefix of a label-sorted file is one class)."""
    from nlp_ssl.data.task_data import subset_indices

    rows = subset_indices(len(split), n)
    if split.tokens:
        return Split(tokens=[split.tokens[i] for i in rows], tags=[split.tags[i] for i in rows])
    return Split(labels=[split.labels[i] for i in rows], texts=[split.texts[i] for i in rows],
                 pairs=[split.pairs[i] for i in rows] if split.pairs else None)


def _feature_kind(source: str, features: str) -> str:
    if features not in ("auto", "encoder", "vectors"):
        raise UserError(f"--features must be auto, encoder or vectors, got {features!r}")
    if features != "auto":
        return features
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return "encoder"
        return "vectors"
    if path.is_file():
        return "vectors"
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", source) and not path.suffix:
        return "encoder"  # a hub id
    raise UserError(f"{source} does not exist; pass a model folder, a hub id or a vectors file")


def _features(kind: str, source: str, data: ProbeData, info: dict[str, Any], max_length: int, batch_size: int,
              pooling: str, init: str) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any] | None]:
    """Train features ``[N, D]`` (NER: ``[words, D]``), eval features per split, coverage (vectors only)."""
    splits = {"train": data.train, **data.evals}
    if kind == "encoder":
        model, tokenizer = load_encoder(source, init)
        info.update({"pooling": pooling if data.kind == "sequence" else "first sub-token", "init": init,
                     "dim": int(model.config.hidden_size)})
        feats: dict[str, np.ndarray] = {}
        truncated = 0
        for name, split in splits.items():
            if data.kind == "sequence":
                feats[name] = encode_texts(model, tokenizer, split.texts, split.pairs, max_length, batch_size, pooling)
            else:
                rows, cut = encode_words(model, tokenizer, split.tokens, max_length, batch_size)
                feats[name] = np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)
                truncated += cut
        if truncated:
            info["words_truncated"] = truncated
        coverage = None
    else:
        if init != "pretrained":
            raise UserError("--init random applies to encoders only")
        kv = load_word_vectors(source)
        info["dim"] = int(kv.vector_size)
        feats, counts = {}, {}
        for name, split in splits.items():
            if data.kind == "sequence":
                x, c = vector_text_features(kv, split.texts)
                if split.pairs is not None:
                    y, c2 = vector_text_features(kv, split.pairs)
                    x = _pair_features(x, y)
                    c = {k: c[k] + c2[k] for k in c}
            else:
                rows, c = vector_word_features(kv, split.tokens)
                x = np.concatenate(rows)
            feats[name], counts[name] = x, c
        coverage = {name: {**c, "coverage": c["known_tokens"] / max(c["tokens"], 1)} for name, c in counts.items()}
    return feats.pop("train"), feats, coverage


def _budget_rows(data: ProbeData, budget: int | None, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Rows of the training matrix for one budget draw, and the number of labelled examples (NER: sentences)."""
    if data.kind == "sequence":
        if budget is None:
            return np.arange(len(data.train)), len(data.train)
        rows = sample_per_class(data.train.labels, budget, rng)
        return rows, int(rows.size)
    lengths = np.array([len(t) for t in data.train.tags])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sentences = (np.arange(len(lengths)) if budget is None
                 else sample_sentences_per_type(data.train.tags, data.label_names or [], budget, rng))
    rows = np.concatenate([np.arange(offsets[s], offsets[s + 1]) for s in sentences]) if len(sentences) else np.zeros(0, np.int64)
    return rows, int(len(sentences))


# --- report and command line --------------------------------------------------------------------------


def format_probe_report(result: dict[str, Any]) -> str:
    """The table the command prints: one row per label budget."""
    kind, per_word = result["features"], result["metric"] == "seqeval"
    if kind == "encoder":
        detail = "first sub-token of each word" if per_word else f"{result.get('pooling')}-pooled"
    else:
        detail = "each word's vector" if per_word else "averaged word vectors"
    head = result["headline"]
    lines = [f"Linear probe of {result['source']} ({kind}, {detail}, {result.get('dim')}-d"
             f"{', init=random' if result.get('init') == 'random' else ''}) on {result['task']}",
             f"  train {result['train_size']:,}; scored on " +
             ", ".join(f"{s} ({n:,})" for s, n in result["eval_sizes"].items())]
    for split, cov in (result.get("coverage") or {}).items():
        lines.append(f"  coverage {split}: {cov['coverage']:.1%} of {cov['tokens']:,} tokens in the vocabulary")
    unit = "sentences" if result["metric"] == "seqeval" else "examples"
    lines.append(f"  {'labels/class':>12}  {unit:>9}  {head} ({result['results'][0]['split']})")
    for row in result["results"]:
        n = row["n_train"]
        n_text = f"{n[0]:,}" if len(set(n)) == 1 else f"~{int(np.mean(n)):,}"
        spread = f" ± {row['std']:.4f} ({row['draws']} draws)" if row["draws"] > 1 else ""
        lines.append(f"  {str(row['labels_per_class']):>12}  {n_text:>9}  {row['mean']:.4f}{spread}")
    lines.append(f"  ({result['seconds']:.0f} s)")
    return "\n".join(lines)


def _budget(text: str) -> int | None:
    if text.lower() == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def add_probe_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``probe`` sub-command to an argparse ``subparsers`` object; its ``func`` is :func:`cmd_probe`."""
    p = subparsers.add_parser(
        "probe", help="linear probe of frozen features (encoder or word vectors) on a labelled task",
        description="Fit a logistic regression on frozen features of SOURCE (a transformers model folder or hub "
                    "id: mean-pooled states; or word vectors: averaged vectors) and score it on TASK, optionally "
                    "with only N labels per class.")
    p.add_argument("source", metavar="SOURCE", help="model folder / hub id, or a vectors file / export folder")
    p.add_argument("--task", required=True, help="bbc_news | trec | wnut16 | conll2003 | a GLUE task | a CoNLL file or folder")
    p.add_argument("--data-dir", help="local data: GLUE TSV/JSONL folder, or CoNLL files for conll2003")
    p.add_argument("--features", default="auto", choices=["auto", "encoder", "vectors"],
                   help="how to read SOURCE (default: guess from it)")
    p.add_argument("--labels-per-class", nargs="+", type=_budget, default=[None], metavar="N",
                   help="label budgets, e.g. 10 50 100 all (NER: entity mentions per type); default all")
    p.add_argument("--repeats", type=int, default=3, help="random draws per budget (default 3)")
    p.add_argument("--max-length", type=int, default=256, help="encoder: truncate inputs to N tokens (default 256)")
    p.add_argument("--batch-size", type=int, default=32, help="encoder: batch size for feature extraction")
    p.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="encoder: sentence pooling")
    p.add_argument("--init", default="pretrained", choices=["pretrained", "random"],
                   help="encoder: 'random' probes the same architecture untrained (baseline)")
    p.add_argument("--C", dest="c", type=float, default=1.0, help="inverse L2 strength of the classifier (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label-budget draws")
    p.add_argument("--max-train-samples", type=int, help="use only N training examples (a seeded draw)")
    p.add_argument("--json", metavar="FILE", help="write the full results as JSON to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_probe)
    return p


def cmd_probe(args: argparse.Namespace) -> int:
    """Run the probe described by parsed ``args``, print the report, write JSON. Returns 0."""
    from nlp_ssl.atomic import atomic_write_text
    from nlp_ssl.eval.glue_report import to_json

    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.exists() and not args.overwrite:
        raise UserError(f"{json_path} already exists; pass --overwrite to replace it or choose another --json file")
    result = run_probe(args.source, args.task, features=args.features, data_dir=args.data_dir,
                       labels_per_class=args.labels_per_class, repeats=args.repeats, max_length=args.max_length,
                       batch_size=args.batch_size, pooling=args.pooling, init=args.init, c=args.c, seed=args.seed,
                       max_train_samples=args.max_train_samples)
    print(format_probe_report(result))
    if json_path is not None:
        atomic_write_text(json_path, to_json(result))
        print(f"wrote {json_path}")
    return 0


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m nlp_ssl.eval.probes SOURCE --task TASK ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m nlp_ssl.eval.probes")
    sub = parser.add_subparsers(dest="command", required=True)
    add_probe_parser(sub)
    if not argv or argv[0] != "probe":
        argv = ["probe", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
