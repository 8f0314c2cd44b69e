"""Model cards (README.md with model-index metadata) for exported folders, via ``huggingface_hub``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# The closing sections every card of this project ends with (the usage snippet and the resolved config).
USAGE_AND_CONFIG_SECTIONS = """## Usage

```python
{{ usage }}
```

## Training configuration

```yaml
{{ config_yaml }}
```
"""

_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ description }}

## Training

- Objective: {{ objective }}
- Data: {{ dataset }}
- Steps: {{ steps }}
- Trained with nlp_ssl: `{{ command }}`

## Evaluation

| metric | value | data |
|---|---|---|
{% for r in results -%}
| {{ r.metric_name }} | {{ '%.4f' | format(r.metric_value) }} | {{ r.dataset_name }} ({{ r.dataset_split }}) |
{% endfor %}

""" + USAGE_AND_CONFIG_SECTIONS


@dataclass
class CardInfo:
    """What the card says; ``results`` become model-index entries that the hub renders and indexes."""

    model_name: str
    objective: str
    task_type: str  # hub task id, e.g. "fill-mask", "text-generation"
    dataset_name: str
    dataset_type: str
    steps: int
    command: str
    usage: str
    config_yaml: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    dataset_split: str = "validation"
    license: str | None = None


def write_model_card(folder: Path, info: CardInfo) -> Path:
    """Write ``folder/README.md``; returns its path."""
    results = [
        EvalResult(task_type=info.task_type, dataset_type=info.dataset_type, dataset_name=info.dataset_name,
                   dataset_split=info.dataset_split, metric_type=name.split("/")[-1], metric_name=name,
                   metric_value=round(float(value), 6))
        for name, value in info.metrics.items()
    ]
    data = ModelCardData(model_name=info.model_name, library_name="transformers", tags=["nlp_ssl", *info.tags],
                         pipeline_tag=info.task_type, eval_results=results or None, license=info.license,
                         datasets=[info.dataset_type] if "/" in info.dataset_type else None)
    card = ModelCard.from_template(data, template_str=_TEMPLATE, model_name=info.model_name,
                                   description=info.description, objective=info.objective, dataset=info.dataset_name,
                                   steps=info.steps, command=info.command, results=results, usage=info.usage,
                                   config_yaml=info.config_yaml.strip())
    path = folder / "README.md"
    card.save(path)
    return path


def read_card_metrics(folder: Path) -> dict[str, Any]:
    """The model-index results of an existing card, ``{metric_name: value}``."""
    card = ModelCard.load(folder / "README.md")
    return {r.metric_name or r.metric_type: r.metric_value for r in (card.data.eval_results or [])}
