"""GLUE task names and the metric family each task is scored with.

Task metadata, shared by the data readers (:mod:`nlp_ssl.data.glue`) and the metrics
(:mod:`nlp_ssl.eval.metrics`).
"""

from __future__ import annotations

from nlp_ssl.errors import UserError

#: Metric families. A GLUE task uses one of them; a custom task (see ``nlp_ssl.data.glue``) names one.
METRIC_KINDS: tuple[str, ...] = ("accuracy", "f1", "matthews_correlation", "pearson_spearman")

# Every configuration name the ``evaluate`` GLUE script accepts, mapped to its metric family.
GLUE_METRIC_KIND: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "stsb": "pearson_spearman",
    "qqp": "f1",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "hans": "accuracy",
}

# Keys each family returns, in the order ``evaluate`` returns them.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "f1": ("accuracy", "f1"),
    "matthews_correlation": ("matthews_correlation",),
    "pearson_spearman": ("pearson", "spearmanr"),
}

# Spellings people use for the same task: the GLUE data folders (SST-2, STS-B), paper names (CoLA) and
# the leaderboard's MNLI-m / MNLI-mm columns.
_ALIASES: dict[str, str] = {
    "sst": "sst2",
    "sts": "stsb",
    "mnlim": "mnli_matched",
    "mnlimm": "mnli_mismatched",
    "mnlimatched": "mnli_matched",
    "mnlimismatched": "mnli_mismatched",
    "qqpclean": "qqp",
}


def canonical_task_name(task: str) -> str | None:
    """Return the canonical GLUE name for ``task`` (``"SST-2"`` -> ``"sst2"``), or None if unknown.

    Case, hyphens, underscores and spaces are ignored, so ``CoLA``, ``sts-b``, ``MNLI-mm`` and
    ``mnli_mismatched`` all resolve.
    """
    if not isinstance(task, str):
        return None
    squashed = "".join(ch for ch in task.strip().lower() if ch not in "-_ ")
    for name in GLUE_METRIC_KIND:
        if squashed == name.replace("_", ""):
            return name
    return _ALIASES.get(squashed)


def resolve_task(task: str) -> str:
    name = canonical_task_name(task)
    if name is None:
        valid = ", ".join(GLUE_METRIC_KIND)
        raise UserError(f"unknown GLUE task {task!r}; use one of: {valid}")
    return name


def metric_kind(task: str) -> str:
    """Metric family of a GLUE task: ``accuracy``, ``f1``, ``matthews_correlation`` or ``pearson_spearman``."""
    return GLUE_METRIC_KIND[resolve_task(task)]


def metric_keys(kind: str) -> tuple[str, ...]:
    """Keys that :func:`compute_metric` returns for a metric family."""
    if kind not in KIND_KEYS:
        raise UserError(f"unknown metric {kind!r}; use one of: {', '.join(METRIC_KINDS)}")
    return KIND_KEYS[kind]
