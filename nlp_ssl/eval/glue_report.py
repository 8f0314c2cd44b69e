"""Aggregating fine-tuning runs: the median over seeds, and the GLUE suite table (markdown and JSON).

Fine-tuning BERT-style models on small sets is unstable from seed to seed (Devlin et al., 2019, sec. 4.1;
Dodge et al., 2020), so papers run several seeds and report the median (RoBERTa, Liu et al., 2019, and
ELECTRA, Clark et al., 2020, report medians over five runs on dev). Results here are nested dicts
``{split: {metric: value}}`` per run.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from nlp_ssl.eval.metrics import GLUE_SCORE_TASKS, canonical_task_name, glue_score, task_score

Metrics = dict[str, dict[str, float]]  # split -> metric -> value


def median_over_seeds(runs: Sequence[Mapping[str, Mapping[str, float]]]) -> Metrics:
    """Per split and metric, the median over runs (each metric independently, as papers report them).

    A metric missing from some runs is the median of the runs that have it; NaN values are left out
    (a constant prediction gives a NaN correlation), and a metric with no finite value is NaN.

    Raises:
        ValueError: ``runs`` is empty.
    """
    if not runs:
        raise ValueError("median_over_seeds needs at least one run")
    out: Metrics = {}
    for run in runs:
        for split, metrics in run.items():
            for key in metrics:
                out.setdefault(split, {})[key] = math.nan
    for split, metrics in out.items():
        for key in metrics:
            values = [float(r[split][key]) for r in runs if key in r.get(split, {}) and math.isfinite(r[split][key])]
            metrics[key] = float(statistics.median(values)) if values else math.nan
    return out


def pick_run(scores: Sequence[float], how: str = "median") -> int:
    """Index of the run to export: the one whose score is closest to the median, or the best one.

    With an even number of runs the median falls between two; the better of the two is taken. NaN scores
    count as worst. Ties go to the earlier run.

    Raises:
        ValueError: empty ``scores`` or an unknown ``how``.
    """
    if not scores:
        raise ValueError("pick_run needs at least one score")
    if how not in ("median", "best"):
        raise ValueError(f"unknown selection {how!r}; use 'median' or 'best'")
    clean = [s if math.isfinite(s) else -math.inf for s in scores]
    if how == "best":
        return max(range(len(clean)), key=lambda i: (clean[i], -i))
    finite = [s for s in clean if math.isfinite(s)]
    if not finite:
        return 0
    middle = statistics.median(finite)
    return min(range(len(clean)), key=lambda i: (abs(clean[i] - middle), -clean[i], i))


# --- GLUE suite --------------------------------------------------------------------------------------

# GLUE's split names -> the evaluate/leaderboard task names glue_score expects.
_MNLI_SPLITS = {"validation_matched": "mnli_matched", "validation_mismatched": "mnli_mismatched"}

GLUE_DISPLAY_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
            "mnli_matched": "MNLI-m", "mnli_mismatched": "MNLI-mm", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def glue_entries(task: str, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Dev metrics of one task, keyed as :func:`nlp_ssl.eval.metrics.glue_score` wants them.

    MNLI becomes ``mnli_matched`` and ``mnli_mismatched``; other tasks use their validation split.
    Custom tasks (not in GLUE) give an empty dict: they are reported but never averaged.
    """
    name = canonical_task_name(task)
    if name is None or name not in GLUE_SCORE_TASKS:
        return {}
    if name == "mnli":
        return {_MNLI_SPLITS[s]: dict(m) for s, m in metrics.items() if s in _MNLI_SPLITS}
    return {name: dict(metrics["validation"])} if "validation" in metrics else {}


def suite_summary(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The suite's JSON: per-task medians, per-task GLUE scores and the averages.

    Args:
        results: task -> ``{"metrics": {split: {metric: value}}, "seeds": [...], ...}`` (the median metrics
            of each task as :func:`median_over_seeds` gives them; other keys are copied through).

    Returns:
        ``{"tasks": {...}, "glue_score_per_task": {...}, "glue_average": float | None,
        "glue_average_bert": float | None}``. ``glue_average`` is the GLUE leaderboard's macro-average
        (Wang et al., 2019) over the tasks that ran; ``glue_average_bert`` the BERT paper's table-1 average
        (no WNLI, MNLI-m and -mm separately). Both are on a 0-100 scale; None when no GLUE task ran.
    """
    per_task: dict[str, dict[str, float]] = {}
    for task, result in results.items():
        per_task.update(glue_entries(task, result["metrics"]))
    scores = {name: 100 * task_score(name, m) for name, m in per_task.items()}
    average = 100 * glue_score(per_task) if per_task else None
    try:
        bert = 100 * glue_score(per_task, convention="bert") if per_task else None
    except Exception:  # only WNLI ran: nothing left for the BERT-paper average
        bert = None
    return {"tasks": {t: dict(r) for t, r in results.items()}, "glue_score_per_task": scores,
            "glue_average": average, "glue_average_bert": bert}


def _fmt(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def suite_markdown(summary: Mapping[str, Any], title: str = "GLUE dev results") -> str:
    """A markdown table of :func:`suite_summary`: one row per task (and per MNLI dev set), then averages.

    Scores are x100 as in the GLUE paper; two-metric tasks show ``F1/accuracy`` and ``Pearson/Spearman``.
    """
    lines = [f"## {title}", "", "| task | metric | dev score | seeds |", "|---|---|---|---|"]
    for task, result in summary["tasks"].items():
        n_seeds = len(result.get("seeds", [])) or 1
        for split, m in result["metrics"].items():
            name = GLUE_DISPLAY_NAMES.get(task, task)
            if split != "validation":
                name = GLUE_DISPLAY_NAMES.get(_MNLI_SPLITS.get(split, ""), f"{name} ({split})")
            if "f1" in m and "accuracy" in m:
                metric, value = "F1 / accuracy", f"{_fmt(m['f1'])} / {_fmt(m['accuracy'])}"
            elif "pearson" in m:
                metric, value = "Pearson / Spearman", f"{_fmt(m['pearson'])} / {_fmt(m['spearmanr'])}"
            elif "matthews_correlation" in m:
                metric, value = "Matthews corr.", _fmt(m["matthews_correlation"])
            elif "overall_f1" in m:
                metric, value = "entity F1", _fmt(m["overall_f1"])
            else:
                metric, value = "accuracy", _fmt(m.get("accuracy"))
            lines.append(f"| {name} | {metric} | {value} | median of {n_seeds} |")
    if summary.get("glue_average") is not None:
        lines.append(f"| **GLUE average** | leaderboard macro-average | **{summary['glue_average']:.1f}** | |")
    if summary.get("glue_average_bert") is not None:
        lines.append(f"| GLUE average (BERT paper) | no WNLI, MNLI-m/mm apart | {summary['glue_average_bert']:.1f} | |")
    return "\n".join(lines) + "\n"


_TASK_METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "overall_precision",
                 "overall_recall", "overall_f1", "overall_accuracy")


def task_markdown(summary: Mapping[str, Any]) -> str:
    """A markdown table of one task: each split's headline metrics, median and per seed (x100).

    ``summary`` is a task's ``results.json``: ``task``, ``seeds``, ``median`` and ``per_seed`` (each with
    ``metrics``), plus ``select_metric``, ``select_split`` and ``exported_seed``.
    """
    seeds = list(summary["seeds"])
    head = "| split | metric | median | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [f"## {summary['task']}: {summary.get('model', '')}", "", head, "|---" * (3 + len(seeds)) + "|"]
    for split, metrics in summary["median"].items():
        for key in _TASK_METRICS:
            if key not in metrics:
                continue
            per_seed = [_fmt(run["metrics"].get(split, {}).get(key)) for run in summary["per_seed"]]
            lines.append(f"| {split} | {key} | **{_fmt(metrics[key])}** | " + " | ".join(per_seed) + " |")
    lines += ["", f"Selection: best `{summary['select_metric']}` on {summary['select_split']} per seed; "
              f"exported seed {summary['exported_seed']} ({summary.get('export_rule', 'median')} run)."]
    return "\n".join(lines) + "\n"


def to_json(data: Any) -> str:
    """Strict JSON (NaN and infinities become null)."""
    def clean(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [clean(v) for v in obj]
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        return obj

    return json.dumps(clean(data), indent=2, allow_nan=False) + "\n"
