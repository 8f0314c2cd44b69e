"""Which data cards (``data_cards/*.md``) describe the corpora a run trained on.

A pushed model carries the cards of its training data, so whoever downloads it sees the source, licence and
caveats of that data next to the weights. The corpora come from the run's ``config.yaml``: ``data.corpus``
for pretraining (``mixed`` stands for its three parts), ``task`` / ``dataset`` for fine-tuning. Cards are
matched by the names their title and the index table (``data_cards/README.md``) put in backticks, so a new
card is found without editing this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nlp_ssl.hub.portable import REPO_ROOT, portable_path

# `mixed` is the concatenation of these embedded corpora (see nlp_ssl.data.builtin).
MIXED_PARTS = ("ptb", "bbc_news", "shakespeare")
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


def data_cards_dir() -> Path | None:
    """The repository's ``data_cards/`` folder (the cards are not part of the installed package)."""
    for candidate in (REPO_ROOT / "data_cards", Path.cwd() / "data_cards"):
        if (candidate / "README.md").is_file():
            return candidate
    return None


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
    """The corpus names a resolved run config trained on, in order, without duplicates."""
    names: list[str] = []
    data = config.get("data")
    if isinstance(data, dict) and isinstance(data.get("corpus"), str):
        names.append(data["corpus"])
    task = config.get("task")
    if isinstance(task, dict) and isinstance(task.get("corpus"), str):
        names.append(task["corpus"])
    elif isinstance(task, str) and task:
        names.append("glue" if task == "all" else task)
    if isinstance(config.get("dataset"), str) and config["dataset"]:
        names.append(config["dataset"])
    expanded: list[str] = []
    for name in names:
        for part in (MIXED_PARTS if name == "mixed" else (name,)):
            if part not in expanded:
                expanded.append(part)
    return expanded


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


def _glue_task_names() -> set[str]:
    try:
        from nlp_ssl.data.glue import GLUE_TASKS
    except Exception:  # the card lookup must not depend on the data stack importing
        return set()
    return {_key(name) for name in GLUE_TASKS}


def find_data_cards(corpora: list[str], folder: Path | None = None) -> list[DataCard]:
    """One card per corpus of ``corpora`` that has one (local files and unknown names have none).

    Several corpora may share a card (two GLUE tasks): each gets its entry, the file is uploaded once.
    """
    folder = folder or data_cards_dir()
    if folder is None:
        return []
    index = card_index(folder)
    glue: set[str] | None = None
    found: list[DataCard] = []
    for corpus in corpora:
        path = index.get(_key(corpus))
        if path is None:
            glue = _glue_task_names() if glue is None else glue
            path = index.get("glue") if _key(corpus) in glue else None
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
