"""Model cards (README.md with model-index metadata) for exported folders, via ``huggingface_hub``.

The metadata block is what the Hub indexes: ``model-index`` results (only real evaluation scores; counts
such as ``eval/items`` or analogy coverage stay in the body), ``datasets`` (hub ids), ``license``,
``library_name`` (``transformers``, or ``gensim`` for word vectors), ``pipeline_tag`` and ``tags``. The body
says what the model is, how it was trained (recipe, objective, data, a command line without local paths),
what it cost (steps, items seen, wall time, hardware), its scores, how to load it and the resolved config.
:func:`check_card` runs huggingface_hub's own metadata parsing offline.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

from nlp_ssl.hub.compute import count_parameters, describe_hardware, format_duration, read_trainer_state
from nlp_ssl.hub.data_cards import corpora_of_config, find_data_cards, training_data_section
from nlp_ssl.hub.portable import portable_command, portable_command_string, portable_path, portable_text

__all__ = ["CardInfo", "USAGE_AND_CONFIG_SECTIONS", "check_card", "portable_command", "read_card_metrics",
           "split_metrics", "write_model_card"]

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

## Model

{{ model_lines }}

## Training

- Recipe: {{ recipe }}
- Objective: {{ objective }}
- Data: {{ dataset }}
- Trained with nlp_ssl: `{{ command }}`

{{ training_data }}
## Compute

| | |
|---|---|
{% for name, value in compute -%}
| {{ name }} | {{ value }} |
{% endfor %}
## Evaluation

{% if results -%}
| metric | value | data |
|---|---|---|
{% for r in results -%}
| {{ r.metric_name }} | {{ '%.4f' | format(r.metric_value) }} | {{ r.dataset_name }} ({{ r.dataset_split }}) |
{% endfor %}
{%- else -%}
No evaluation scores were recorded for this export.
{% endif %}
{% if other_figures -%}
Counts and coverage behind these scores:

| figure | value |
|---|---|
{% for name, value in other_figures -%}
| {{ name }} | {{ value }} |
{% endfor %}
{% endif -%}
## License

{{ license_text }}

""" + USAGE_AND_CONFIG_SECTIONS

# Last components of metric names that are counts, coverages or bookkeeping, not scores of the model.
_NOT_SCORES = {"items", "covered", "total", "coverage", "oov", "pairs", "candidates", "step", "epoch", "seconds",
               "samples", "number", "support", "runtime", "load_seconds"}
# Metric ids the Hub knows (https://hf.co/metrics) for the names nlp_ssl logs.
_METRIC_IDS = {"spearman": "spearmanr", "pearson": "pearsonr", "mcc": "matthews_correlation"}
# Evaluation sets that a metric's prefix names: (pretty name, split the scores come from).
_EVAL_SETS = {"wordsim353": ("WordSim-353", "test"), "simlex999": ("SimLex-999", "test"),
              "questions-words": ("Google analogy test set", "test")}
_SPLIT_PREFIXES = {"eval", "train", "validation", "test", "dev"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class CardInfo:
    """What the card says; ``metrics`` that are scores become model-index entries the hub renders and indexes.

    Fields left at ``None`` are filled from the exported folder and this machine: ``library_name`` from the
    artifact kind, ``recipe`` from the command, ``items_seen`` / ``train_seconds`` from the engine's
    ``trainer_state.json``, ``hardware`` from :func:`~nlp_ssl.hub.compute.describe_hardware`.
    """

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
    library_name: str | None = None
    recipe: str | None = None
    items_seen: int | None = None
    items_name: str = "tokens"
    train_seconds: float | None = None
    hardware: str | None = None
    language: str | list[str] | None = None


def _is_score(name: str, value: Any) -> bool:
    last = name.split("/")[-1]
    if last in _NOT_SCORES or last.endswith(("_p", "_per_second", "_samples")):
        return False
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))


def split_metrics(metrics: dict[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """``(scores, other figures)``: scores go to the model-index, counts and coverages stay in the body."""
    scores = {k: float(v) for k, v in metrics.items() if _is_score(k, v)}
    return scores, {k: v for k, v in metrics.items() if k not in scores}


def _metric_id(name: str) -> str:
    last = name.split("/")[-1]
    if last == "accuracy" or last.endswith("_accuracy"):
        return "accuracy"
    return _METRIC_IDS.get(last, last)


def _results(info: CardInfo, scores: dict[str, float]) -> list[EvalResult]:
    results = []
    for name, value in scores.items():
        prefix = name.split("/")[0] if "/" in name else ""
        if prefix and prefix not in _SPLIT_PREFIXES:
            # Scored on an evaluation set of its own (word similarity, analogies), not on the training corpus.
            pretty, split = _EVAL_SETS.get(prefix, (prefix, "test"))
            dataset_type, dataset_name = prefix, pretty
        else:
            # A local corpus file is named without the machine's folders.
            dataset_type, dataset_name = portable_path(info.dataset_type), portable_path(info.dataset_name)
            split = info.dataset_split
        results.append(EvalResult(task_type=info.task_type, dataset_type=dataset_type, dataset_name=dataset_name,
                                  dataset_split=split, metric_type=_metric_id(name), metric_name=name,
                                  metric_value=round(value, 6)))
    return results


def _recipe_of(command: str) -> str:
    match = re.search(r"recipes/(\w+)\.py", command) or re.search(r"nlp-ssl run (\w+)", command)
    return f"`{match.group(1)}` (`recipes/{match.group(1)}.py`)" if match else "not recorded"


def _model_lines(folder: Path, word_vectors: bool) -> str:
    if word_vectors:
        try:
            from gensim.models import KeyedVectors

            kv = KeyedVectors.load(str(folder / "vectors.kv"), mmap="r")
            return (f"- Word vectors (gensim `KeyedVectors`): {len(kv.index_to_key):,} words x {kv.vector_size} "
                    "dimensions\n- Files: `vectors.kv` (gensim), `vectors.bin` / `vectors.txt` (word2vec format) "
                    "when exported")
        except Exception:  # a card without this line is better than no card
            return "- Word vectors (gensim `KeyedVectors`, `vectors.kv`)"
    config: dict[str, Any] = {}
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    architecture = ", ".join(config.get("architectures") or []) or config.get("model_type", "unknown")
    lines = [f"- Architecture: `{architecture}` (transformers, model type `{config.get('model_type', '?')}`)"]
    shape = [f"{key.replace('_', ' ')} {config[key]}" for key in
             ("num_hidden_layers", "n_layer", "hidden_size", "n_embd", "num_attention_heads", "n_head",
              "intermediate_size", "vocab_size") if isinstance(config.get(key), int)]
    if shape:
        lines.append("- Size: " + ", ".join(shape))
    params = count_parameters(folder)
    if params:
        lines.append(f"- Parameters: {params / 1e6:.2f}M (as stored; tied weights once)")
    return "\n".join(lines)


def _compute_rows(info: CardInfo, state: dict[str, Any], hardware: str) -> list[tuple[str, str]]:
    steps = f"{info.steps:,}"
    if isinstance(state.get("max_steps"), int) and state["max_steps"] != info.steps:
        steps += f" of {state['max_steps']:,}"
    if state.get("complete") is False:
        steps += " (stopped early by the time budget)"
    rows = [("optimizer steps", steps)]
    # What the engine counts as throughput (input tokens, words, images), not the loss terms (masked tokens).
    items = info.items_seen if info.items_seen is not None else state.get("inputs_seen", state.get("items_seen"))
    name = info.items_name if info.items_seen is not None else state.get("input_unit", info.items_name)
    if isinstance(items, (int, float)) and items > 0:
        rows.append((f"{name} seen", f"{int(items):,}"))
    seconds = info.train_seconds if info.train_seconds is not None else state.get("train_seconds")
    if isinstance(seconds, (int, float)) and seconds > 0:
        rows.append(("wall time (training loop)", format_duration(float(seconds))))
    rows.append(("hardware", hardware))
    return rows


def _format_figure(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return f"{int(value):,}"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "n/a"
    return str(value)


def write_model_card(folder: Path, info: CardInfo) -> Path:
    """Write ``folder/README.md``; returns its path."""
    folder = Path(folder)
    word_vectors = (folder / "vectors.kv").exists()
    library = info.library_name or ("gensim" if word_vectors else "transformers")
    scores, others = split_metrics(info.metrics)
    results = _results(info, scores)
    command = portable_command_string(info.command)
    try:
        config = yaml.safe_load(info.config_yaml) or {}
    except yaml.YAMLError:
        config = {}
    corpora = corpora_of_config(config) if isinstance(config, dict) else []
    corpora = corpora or [info.dataset_name]
    cards = find_data_cards(corpora)
    hub_datasets = [c for c in dict.fromkeys([*corpora, info.dataset_type])
                    if _HUB_ID.match(c) and not Path(c).exists()]
    license_id = info.license or "other"
    if info.license:
        license_text = f"`{info.license}`."
    else:
        license_text = ("No licence has been chosen for these weights (`license: other`). They are derived from the "
                        "training data, whose terms are stated in the data cards listed under Training data.")
    data = ModelCardData(model_name=info.model_name, library_name=library, tags=["nlp_ssl", *info.tags],
                         pipeline_tag=info.task_type, eval_results=results or None, license=license_id,
                         datasets=hub_datasets or None, language=info.language)
    state = read_trainer_state(folder)
    card = ModelCard.from_template(
        data, template_str=_TEMPLATE, model_name=info.model_name, description=portable_text(info.description),
        model_lines=_model_lines(folder, word_vectors), recipe=info.recipe or _recipe_of(command),
        objective=portable_text(info.objective), dataset=", ".join(f"`{portable_path(c)}`" for c in corpora),
        command=command,
        training_data=training_data_section(corpora, cards),
        compute=_compute_rows(info, state, info.hardware or describe_hardware()), results=results,
        other_figures=[(k, _format_figure(v)) for k, v in others.items()], license_text=license_text,
        usage=portable_text(info.usage), config_yaml=portable_text(info.config_yaml.strip()))
    path = folder / "README.md"
    card.save(path)
    return path


def read_card_metrics(folder: Path) -> dict[str, Any]:
    """The model-index results of an existing card, ``{metric_name: value}``."""
    card = ModelCard.load(folder / "README.md")
    return {r.metric_name or r.metric_type: r.metric_value for r in (card.data.eval_results or [])}


def check_card(path: Path) -> list[str]:
    """Problems huggingface_hub finds in a card's metadata offline (an empty list means none).

    ``ModelCard.validate`` asks the Hub's ``validate-yaml`` endpoint; without the network this runs the same
    library's parsing strictly (``ignore_metadata_errors=False``), checks that the ``model-index`` survives
    the round trip through :class:`EvalResult` unchanged, and that every score is a finite number.
    """
    problems: list[str] = []
    text = Path(path).read_text(encoding="utf-8")
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # huggingface_hub raises ValueError for bad YAML, others for bad fields
        return [f"metadata does not parse: {err}"]
    metadata = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else {}
    for key in ("library_name", "license", "pipeline_tag", "tags"):
        if not metadata.get(key):
            problems.append(f"metadata has no {key}")
    index = metadata.get("model-index")
    if index:
        try:
            name, results = model_index_to_eval_results(index)
        except (KeyError, TypeError, ValueError) as err:
            return problems + [f"model-index does not parse: {err!r}"]
        if eval_results_to_model_index(name, results) != index:
            problems.append("model-index changes when read back through EvalResult")
        for r in results:
            if not isinstance(r.metric_value, (int, float)) or not math.isfinite(float(r.metric_value)):
                problems.append(f"metric {r.metric_name or r.metric_type} has a non-numeric value {r.metric_value!r}")
        if card.data.eval_results is None or len(card.data.eval_results) != len(results):
            problems.append("ModelCardData did not load every model-index result")
    return problems
