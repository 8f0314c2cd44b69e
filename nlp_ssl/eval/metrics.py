"""GLUE and seqeval metrics computed offline.

``evaluate.load("glue", task)`` and ``evaluate.load("seqeval")`` download their metric scripts from the
Hugging Face Hub, which fails on machines without it. This module computes the same numbers with the same
libraries those scripts call (scikit-learn, scipy, seqeval) and returns dictionaries with the same keys:

=====================================================  ============================================
task                                                   keys returned by :func:`glue_metric`
=====================================================  ============================================
cola                                                   ``matthews_correlation``
mrpc, qqp                                              ``accuracy``, ``f1`` (binary F1 of label 1)
stsb                                                   ``pearson``, ``spearmanr``
sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte,  ``accuracy``
wnli, hans
=====================================================  ============================================

Two details of the ``evaluate`` script are reproduced on purpose because they change the numbers:
predictions and references of STS-B pass through a ``float32`` Arrow column before the correlations are
taken (so the correlations are computed in single precision), and classification labels are cast to
``int64``.

:func:`seqeval_metric` returns the ``evaluate`` seqeval layout: one entry per entity type with
``precision``, ``recall``, ``f1`` and ``number`` (support), plus ``overall_precision``, ``overall_recall``,
``overall_f1`` (micro averages over entities) and ``overall_accuracy`` (token accuracy).

:func:`glue_score` follows the GLUE leaderboard: see its docstring for the convention and the check
against published leaderboard rows.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from nlp_ssl.errors import UserError

# Re-exported: callers score a task by name through this module.
from nlp_ssl.data.task_names import (GLUE_METRIC_KIND, KIND_KEYS, METRIC_KINDS, canonical_task_name,  # noqa: F401
                                    metric_keys, metric_kind, resolve_task)

# --- GLUE metrics -------------------------------------------------------------------------------------


def _as_1d(values: Any, dtype: Any, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be one-dimensional, got shape {arr.shape}")
    if dtype is np.int64 and arr.dtype.kind == "f":
        # evaluate casts to int64 through Arrow, which refuses to drop a fractional part.
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{what} must be class ids (integers) for a classification metric")
    return arr.astype(dtype)


def compute_metric(kind: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """Compute one metric family on predictions and references.

    ``kind`` is one of :data:`METRIC_KINDS`. ``f1`` returns accuracy and the binary F1 of class 1 (the
    MRPC/QQP convention), ``pearson_spearman`` returns both correlations computed in float32.
    """
    metric_keys(kind)  # validates kind
    regression = kind == "pearson_spearman"
    dtype = np.float32 if regression else np.int64
    preds = _as_1d(predictions, dtype, "predictions")
    refs = _as_1d(references, dtype, "references")
    if preds.shape != refs.shape:
        raise ValueError(f"got {preds.shape[0]} predictions for {refs.shape[0]} references")
    if preds.size == 0:
        raise ValueError("cannot compute a metric on zero examples")

    if kind == "accuracy":
        return {"accuracy": float((preds == refs).mean())}
    if kind == "f1":
        from sklearn.metrics import f1_score

        present = set(np.unique(np.concatenate([preds, refs])).tolist())
        if not present <= {0, 1}:
            raise UserError(
                f"metric 'f1' is binary F1 of class 1 but labels {sorted(present)} occur; "
                "use metric 'accuracy' for tasks with more than two classes"
            )
        acc = float((preds == refs).mean())
        return {"accuracy": acc, "f1": float(f1_score(y_true=refs, y_pred=preds))}
    if kind == "matthews_correlation":
        from sklearn.metrics import matthews_corrcoef

        return {"matthews_correlation": float(matthews_corrcoef(refs, preds))}
    # pearson_spearman
    from scipy.stats import pearsonr, spearmanr

    with warnings.catch_warnings():
        # A constant input gives NaN (as evaluate reports); the ConstantInputWarning adds nothing.
        warnings.simplefilter("ignore")
        pearson = float(pearsonr(preds, refs)[0])
        spearman = float(spearmanr(preds, refs)[0])
    return {"pearson": pearson, "spearmanr": spearman}


def glue_metric(task: str, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
    """Compute what ``evaluate.load("glue", task).compute(predictions=..., references=...)`` reports.

    Args:
        task: a GLUE task name (``cola``, ``sst2``, ``mrpc``, ``stsb``, ``qqp``, ``mnli``,
            ``mnli_matched``, ``mnli_mismatched``, ``qnli``, ``rte``, ``wnli``, ``hans``) or an alias
            such as ``SST-2``, ``STS-B``, ``CoLA``, ``MNLI-mm``.
        predictions: class ids (regression scores for ``stsb``), one per example.
        references: gold class ids (gold scores for ``stsb``).

    Returns:
        A dict of Python floats with the keys ``evaluate`` uses (see the module docstring).

    Raises:
        UserError: for an unknown task name.
    """
    return compute_metric(metric_kind(task), predictions, references)


def primary_metric(task: str) -> str:
    """The key of :func:`glue_metric`'s result to select the best checkpoint on dev.

    CoLA uses ``matthews_correlation``, MRPC and QQP ``f1``, STS-B ``spearmanr`` and every other task
    ``accuracy``: the single number per task that the BERT paper (Devlin et al., 2019, table 1) reports,
    which is what most fine-tuning recipes select on. To select on the leaderboard's task score (the mean
    of both metrics for MRPC/QQP/STS-B) use :func:`task_score` instead.
    """
    kind = metric_kind(task)
    return {
        "accuracy": "accuracy",
        "f1": "f1",
        "matthews_correlation": "matthews_correlation",
        "pearson_spearman": "spearmanr",
    }[kind]


def task_score(task: str, metrics: Mapping[str, float]) -> float:
    """GLUE leaderboard score of one task: the unweighted mean of the task's metrics.

    MRPC and QQP give ``(accuracy + f1) / 2``, STS-B ``(pearson + spearmanr) / 2``; single-metric tasks give
    that metric. Raises :class:`UserError` if a metric the task needs is missing.
    """
    name = resolve_task(task)
    keys = KIND_KEYS[GLUE_METRIC_KIND[name]]
    missing = [k for k in keys if k not in metrics]
    if missing:
        raise UserError(
            f"GLUE task {name!r} needs metrics {list(keys)} but {missing} are missing; "
            "pass the dict returned by glue_metric for that task"
        )
    return float(sum(float(metrics[k]) for k in keys) / len(keys))


# --- GLUE average -------------------------------------------------------------------------------------

#: Tasks averaged into the GLUE score (the nine benchmark tasks; AX is diagnostic and never averaged).
GLUE_SCORE_TASKS: tuple[str, ...] = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


def glue_score(per_task: Mapping[str, Mapping[str, float]], convention: str = "leaderboard") -> float:
    """GLUE average over the tasks present in ``per_task``.

    ``per_task`` maps task names (aliases accepted) to the dicts :func:`glue_metric` returns. MNLI may be
    given as ``mnli_matched`` and ``mnli_mismatched`` (the leaderboard's MNLI-m / MNLI-mm columns) or as
    a single ``mnli`` entry. The result is on the metrics' own 0-1 scale (multiply by 100 to compare with
    published tables). Only the tasks present are averaged, so a partial run gives the mean of its tasks.

    ``convention="leaderboard"`` (default) is the GLUE paper's macro-average as the gluebenchmark.com
    leaderboard computes it: each task contributes one score, the mean of its metrics when it has several
    (MRPC and QQP (F1 + accuracy) / 2, STS-B (Pearson + Spearman) / 2), and MNLI-m and MNLI-mm are treated
    as MNLI's two metrics, so MNLI is averaged to one score and the benchmark has nine entries. This is the
    only reading that reproduces the leaderboard: BERT-large's row (CoLA 60.5, SST-2 94.9, MRPC 89.3/85.4,
    STS-B 87.6/86.5, QQP 72.1/89.3, MNLI 86.7/85.9, QNLI 92.7, RTE 70.1, WNLI 65.1) gives 80.52 with MNLI
    averaged and 81.10 with m and mm counted separately; the leaderboard lists 80.5. The human-baseline
    row gives 87.05 vs 87.59 and is listed as 87.1.

    ``convention="bert"`` reproduces the "Average" column of the BERT paper's table 1 instead: one metric
    per task (:func:`primary_metric`: F1 for MRPC/QQP, Spearman for STS-B), MNLI-m and MNLI-mm counted as
    two separate entries, and WNLI left out (BERT-large: 82.1).

    Raises:
        UserError: for an unknown task name, an unknown convention, an empty input, or a task whose
            metrics are missing.
    """
    if convention not in ("leaderboard", "bert"):
        raise UserError(f"unknown GLUE average convention {convention!r}; use 'leaderboard' or 'bert'")
    if not per_task:
        raise UserError("glue_score needs at least one task's metrics; pass {task: glue_metric(...)}")

    canonical: dict[str, Mapping[str, float]] = {}
    for task, metrics in per_task.items():
        name = resolve_task(task)
        if name == "hans":
            raise UserError("HANS is not part of the GLUE average; drop it from the dict passed to glue_score")
        if name in canonical:
            raise UserError(f"task {name!r} appears twice in the dict passed to glue_score (as {task!r}); keep one")
        canonical[name] = metrics

    entries: list[float] = []
    mnli_parts = [canonical[k] for k in ("mnli_matched", "mnli_mismatched") if k in canonical]
    if "mnli" in canonical and mnli_parts:
        raise UserError("give MNLI either as 'mnli' or as 'mnli_matched'/'mnli_mismatched' to glue_score, not both")

    for name, metrics in canonical.items():
        if name in ("mnli", "mnli_matched", "mnli_mismatched"):
            continue
        if convention == "bert":
            if name == "wnli":
                continue
            key = primary_metric(name)
            if key not in metrics:
                raise UserError(f"GLUE task {name!r} needs metric {key!r} for the BERT-paper average; it is missing")
            entries.append(float(metrics[key]))
        else:
            entries.append(task_score(name, metrics))

    if "mnli" in canonical:
        entries.append(task_score("mnli", canonical["mnli"]))
    elif mnli_parts:
        accs = [task_score("mnli", m) for m in mnli_parts]
        if convention == "bert":
            entries.extend(accs)
        else:
            entries.append(sum(accs) / len(accs))

    if not entries:
        raise UserError("no task left to average in glue_score (the BERT-paper average leaves out WNLI)")
    return float(sum(entries) / len(entries))


# --- seqeval ------------------------------------------------------------------------------------------

_SEQEVAL_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python numbers, so results serialise to JSON without surprises."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def seqeval_metric(
    predictions: list[list[str]],
    references: list[list[str]],
    scheme: str | None = None,
    mode: str | None = None,
    suffix: bool = False,
) -> dict[str, Any]:
    """Compute what ``evaluate.load("seqeval").compute(predictions=..., references=...)`` reports.

    Entity-level scores: an entity counts as correct only if its type and its exact span match, so a
    partially overlapping prediction is both a false positive and a false negative.

    Args:
        predictions: predicted tag sequences, e.g. ``[["B-PER", "I-PER", "O"]]``.
        references: gold tag sequences of the same lengths.
        scheme: ``None`` (conlleval-compatible chunking, the default) or one of ``IOB1``, ``IOB2``,
            ``IOE1``, ``IOE2``, ``IOBES``, ``BILOU``; seqeval only uses it with ``mode="strict"``.
        mode: ``None`` or ``"strict"`` (exact scheme-conformant entities only).
        suffix: True if the tag type comes before the prefix (``PER-B``).

    Returns:
        ``{TYPE: {"precision", "recall", "f1", "number"}, ..., "overall_precision", "overall_recall",
        "overall_f1", "overall_accuracy"}`` with Python numbers; ``number`` is the count of gold entities.
        Zero divisions give 0, as ``evaluate`` reports them.
    """
    from seqeval.metrics import accuracy_score, classification_report

    if mode not in (None, "strict"):
        raise UserError(f"unknown seqeval mode {mode!r}; use None (conlleval) or 'strict'")
    scheme_cls = None
    if scheme is not None:
        if scheme not in _SEQEVAL_SCHEMES:
            raise UserError(f"unknown tagging scheme {scheme!r}; use one of: {', '.join(_SEQEVAL_SCHEMES)}")
        import seqeval.scheme

        scheme_cls = getattr(seqeval.scheme, scheme)
    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predicted sequences for {len(references)} reference sequences")
    for i, (p, r) in enumerate(zip(predictions, references)):
        if len(p) != len(r):
            raise ValueError(f"sequence {i}: {len(p)} predicted tags for {len(r)} reference tags")

    with warnings.catch_warnings():
        # zero_division=0 gives the numbers of evaluate's default "warn" without its warnings; numpy's
        # empty-mean warning comes from the macro average, which we drop like evaluate does.
        warnings.simplefilter("ignore")
        report = classification_report(
            y_true=references,
            y_pred=predictions,
            suffix=suffix,
            output_dict=True,
            scheme=scheme_cls,
            mode=mode,
            zero_division=0,
        )
        accuracy = accuracy_score(y_true=references, y_pred=predictions)

    micro = report.pop("micro avg")
    report.pop("macro avg", None)
    report.pop("weighted avg", None)
    scores: dict[str, Any] = {}
    for type_name, row in report.items():
        scores[type_name] = {
            "precision": _plain(row["precision"]),
            "recall": _plain(row["recall"]),
            "f1": _plain(row["f1-score"]),
            "number": _plain(row["support"]),
        }
    scores["overall_precision"] = _plain(micro["precision"])
    scores["overall_recall"] = _plain(micro["recall"])
    scores["overall_f1"] = _plain(micro["f1-score"])
    scores["overall_accuracy"] = _plain(accuracy)
    return scores
