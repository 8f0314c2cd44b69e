"""Which data cards (``data_cards/*.md``) describe the corpora a run trained on.

A pushed model carries the cards of its training data, so whoever downloads it sees the source, licence and
caveats of that data next to the weights. The datasets come from the run's ``config.yaml``
(:func:`nlp_ssl.data.cards.datasets_of_config`). Cards are matched by the names their title and the index
table (``data_cards/README.md``) put in backticks, then by the toolkit's own name -> card table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlp_ssl.data.cards import card_name, cards_dir, datasets_of_config
from nlp_ssl.hub.portable import portable_path

TRAINING_DATA_HEADING = "## Training data"
_BACKTICKED = re.compile(r"`([^`]+)`")
_QUOTED = re.compile(r"[\"']([^\"']+)[\"']")
_ROW_LINK = re.compile(r"^\|\s*\[[^\]]+\]\(([^)]+\.md)\)\s*\|([^|]*)\|")


@dataclass(frozen=True)
class DataCard:
    corpus: str  # the name the config used
    path: Path  # the card file
    title: str  # its first heading, without the leading '#'

    @property
    def repo_path(self) -> str:
        """Where the card goes in an uploaded repository."""
        return f"data_cards/{self.path.name}"


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9/]", "", name.lower())


def card_index(folder: Path) -> dict[str, Path]:
    """``{normalised name: card}`` for every card in ``folder``."""
    index: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        for candidate in [name, *_QUOTED.findall(name)]:
            key = _key(candidate.removesuffix(".txt").removesuffix(".tsv"))
            if key:
                index.setdefault(key, path)

    cards = sorted(p for p in folder.glob("*.md") if p.name != "README.md")
    for path in cards:
        add(path.stem, path)
    for path in cards:
        title = path.read_text(encoding="utf-8").splitlines()[:1]
        for name in _BACKTICKED.findall(title[0] if title else ""):
            add(name, path)
    readme = folder / "README.md"
    for line in readme.read_text(encoding="utf-8").splitlines() if readme.is_file() else []:
        match = _ROW_LINK.match(line.strip())
        if match and (folder / match.group(1)).is_file():
            for name in _BACKTICKED.findall(match.group(2)):
                add(name, folder / match.group(1))
    return index


def corpora_of_config(config: dict[str, Any]) -> list[str]:
    """The datasets a resolved run config used (see :func:`nlp_ssl.data.cards.datasets_of_config`)."""
    return datasets_of_config(config)


def run_config(folder: Path) -> dict[str, Any] | None:
    """The ``config.yaml`` of the run that exported ``folder`` (``<run>/final`` or the run folder itself)."""
    folder = Path(folder)
    for candidate in (folder / "config.yaml", folder.parent / "config.yaml"):
        if candidate.is_file():
            try:
                loaded = yaml.safe_load(candidate.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError):
                return None
            return loaded if isinstance(loaded, dict) else None
    return None


def find_data_cards(corpora: list[str], folder: Path | None = None) -> list[DataCard]:
    """One card per corpus of ``corpora`` that has one (local files and unknown names have none).

    Several corpora may share a card (two GLUE tasks): each gets its entry, the file is uploaded once.
    """
    folder = folder or cards_dir()
    if folder is None:
        return []
    index = card_index(folder)
    found: list[DataCard] = []
    for corpus in corpora:
        path = index.get(_key(corpus))
        if path is None:
            known = card_name(corpus)
            path = index.get(_key(known)) if known else None
        if path is not None:
            # Titles read "<name> — `<id>`"; the id is shown next to the link already.
            title = path.read_text(encoding="utf-8").splitlines()[0].lstrip("#").split(" — ")[0].strip()
            found.append(DataCard(corpus, path, title))
    return found


def training_data_section(corpora: list[str], cards: list[DataCard]) -> str:
    """Markdown ``## Training data`` section naming each corpus and linking its card."""
    lines = [TRAINING_DATA_HEADING, ""]
    by_corpus = {card.corpus: card for card in cards}
    for corpus in corpora:
        card = by_corpus.get(corpus)
        if card is not None:
            lines.append(f"- `{corpus}`: {card.title}; data card: [{card.repo_path}]({card.repo_path})")
        else:
            lines.append(f"- `{portable_path(corpus)}`: a local or external corpus, without a data card in nlp_ssl")
    lines += ["", "Each data card gives the corpus's source, its licence as stated, its size and known caveats; "
              "read them before reusing this model."]
    return "\n".join(lines) + "\n"
