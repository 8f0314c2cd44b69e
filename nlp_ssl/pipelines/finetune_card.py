"""Model cards for fine-tuned models: model-index results per eval split, and the seed summary.

The shared :mod:`nlp_ssl.hub.model_card` writes one dataset split for all results; a fine-tuned model has
several (MNLI matched and mismatched, validation and test), and GLUE results need the dataset config
(``sst2``) to be found on the hub's leaderboards, so this card fills huggingface_hub's ``EvalResult``
itself. :func:`nlp_ssl.hub.model_card.read_card_metrics` reads it back like any other card.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from nlp_ssl.hub.model_card import USAGE_AND_CONFIG_SECTIONS

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ description }}

## Results

{{ results_table }}
{{ seeds_section }}
## Training

- Base model: `{{ base_model }}`
- Task: {{ task_description }}
- Data: {{ data_description }}
- Fine-tuning: {{ hyperparameters }}
- Trained with nlp_ssl: `{{ command }}`

""" + USAGE_AND_CONFIG_SECTIONS

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Metric keys -> model-index metric types (the hub's metric ids).
_METRIC_TYPES = {"overall_f1": "f1", "overall_precision": "precision", "overall_recall": "recall",
                 "overall_accuracy": "accuracy", "spearmanr": "spearmanr", "pearson": "pearsonr"}
_HEADLINE = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr", "overall_precision",
             "overall_recall", "overall_f1", "overall_accuracy")


@dataclass
class FinetuneCardInfo:
    """What the card of a fine-tuned model says.

    ``metrics`` are this model's own scores, ``{split: {metric: value}}``; ``seed_summary`` (optional) holds
    the per-seed scores and their median when several seeds ran.
    """

    model_name: str
    base_model: str
    task_type: str  # "text-classification" | "token-classification"
    task_name: str  # shown in the card and in the model-index dataset name
    dataset_type: str  # hub dataset id or a local source description
    dataset_config: str | None
    metrics: dict[str, dict[str, float]]
    command: str
    config_yaml: str
    usage: str
    hyperparameters: str
    data_description: str
    task_description: str
    selected_step: int | None = None
    seed_summary: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)


def _results(info: FinetuneCardInfo) -> list[EvalResult]:
    out = []
    for split, metrics in info.metrics.items():
        for key in _HEADLINE:
            value = metrics.get(key)
            if value is None or not math.isfinite(value):
                continue
            out.append(EvalResult(
                task_type=info.task_type, dataset_type=info.dataset_type, dataset_name=info.task_name,
                dataset_config=info.dataset_config, dataset_split=split, metric_type=_METRIC_TYPES.get(key, key),
                metric_name=f"{split}/{key}" if len(info.metrics) > 1 else key, metric_value=round(float(value), 6)))
    return out


def _table(metrics: dict[str, dict[str, float]]) -> str:
    rows = ["| split | metric | value |", "|---|---|---|"]
    for split, values in metrics.items():
        for key, value in values.items():
            if "/" in key:
                continue  # per-entity-type scores get their own table
            rows.append(f"| {split} | {key} | {value:.4f} |")
    types = sorted({k.split("/")[0] for m in metrics.values() for k in m if "/" in k})
    if types:
        rows += ["", "Per entity type (precision / recall / F1, support):", "",
                 "| split | type | P | R | F1 | support |", "|---|---|---|---|---|---|"]
        for split, values in metrics.items():
            for t in types:
                if f"{t}/f1" in values:
                    rows.append(f"| {split} | {t} | {values[f'{t}/precision']:.4f} | {values[f'{t}/recall']:.4f} | "
                                f"{values[f'{t}/f1']:.4f} | {int(values.get(f'{t}/number', 0))} |")
    return "\n".join(rows)


def _seeds_section(summary: dict[str, Any] | None) -> str:
    if not summary:
        return ""
    metric = summary["select_metric"]
    lines = ["", f"### Over {len(summary['seeds'])} seeds", "",
             f"Selection metric `{metric}` on {summary['select_split']}; this folder holds the model of seed "
             f"{summary['exported_seed']} ({summary['export_rule']} run). Median over seeds, each metric "
             "separately:", "", "| seed | " + metric + " |", "|---|---|"]
    for seed, score in zip(summary["seeds"], summary["scores"]):
        lines.append(f"| {seed} | {score:.4f} |")
    lines.append(f"| **median** | **{summary['median_score']:.4f}** |")
    lines += ["", _table(summary["median"]), ""]
    return "\n".join(lines)


def write_finetune_card(folder: Path, info: FinetuneCardInfo) -> Path:
    """Write ``folder/README.md`` with model-index results; returns its path."""
    results = _results(info)
    base = info.base_model if _HUB_ID.match(info.base_model) and not Path(info.base_model).exists() else None
    data = ModelCardData(model_name=info.model_name, library_name="transformers", pipeline_tag=info.task_type,
                         tags=["nlp_ssl", "fine-tuned", *info.tags], eval_results=results or None,
                         base_model=base, datasets=[info.dataset_type] if _HUB_ID.match(info.dataset_type) else None)
    step = f" (best dev evaluation, step {info.selected_step})" if info.selected_step is not None else ""
    card = ModelCard.from_template(
        data, template_str=_TEMPLATE, model_name=info.model_name,
        description=f"`{info.base_model}` fine-tuned on {info.task_name}{step}.",
        results_table=_table(info.metrics), seeds_section=_seeds_section(info.seed_summary),
        base_model=info.base_model, task_description=info.task_description,
        data_description=info.data_description, hyperparameters=info.hyperparameters, command=info.command,
        usage=info.usage, config_yaml=info.config_yaml.strip())
    path = folder / "README.md"
    card.save(path)
    return path
