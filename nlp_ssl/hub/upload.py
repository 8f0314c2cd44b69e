"""What goes into a Hub commit, and the commit itself.

Every upload is ONE ``create_commit``: the Hub applies a commit entirely or not at all, so an upload cut
short leaves the repository as it was, and rerunning it sends the files again. Files the repository
already holds with the same content are dropped by huggingface_hub before the commit (the pre-upload call
returns their object ids), so a rerun after a commit that did land creates no empty commit.

The uploaded README is the exported card with three changes for readers on the Hub: the local folder in
the usage snippet becomes the repository id, machine paths are removed, and a ``Training data`` section
links the data cards (``data_cards/<corpus>.md``) that travel with the model.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nlp_ssl.errors import UserError
from nlp_ssl.hub.data_cards import (
    TRAINING_DATA_HEADING,
    DataCard,
    corpora_of_config,
    find_data_cards,
    run_config,
    training_data_section,
)
from nlp_ssl.hub.portable import portable_path, portable_text

if TYPE_CHECKING:
    from huggingface_hub import HfApi

# Never uploaded: hidden files (editor and lock files, atomic-write temporaries) and write-in-progress files.
_SKIP = re.compile(r"(^|/)\.|\.tmp|\.lock$")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "vocab.json", "spiece.model",
                    "sentencepiece.bpe.model", "tokenizer.model")
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "image_processor_config.json")
_SENTENCE_FILES = ("sentence_pooling.json", "modules.json", "config_sentence_transformers.json", "1_Pooling")
_MODEL_ARG = re.compile(r"""(model\s*=\s*)(['"])([^'"]+)\2""")


@dataclass
class Export:
    """A folder worth publishing: its kind and the run it came from."""

    folder: Path
    kind: str  # "transformers" | "sentence-encoder" | "vision-encoder" | "word-vectors"
    config: dict[str, Any] | None = None  # the run's resolved config.yaml, when found
    corpora: list[str] = field(default_factory=list)
    data_cards: list[DataCard] = field(default_factory=list)

    @property
    def library_name(self) -> str:
        return "gensim" if self.kind == "word-vectors" else "transformers"


def _is_vision(config: dict[str, Any], folder: Path) -> bool:
    if any((folder / name).is_file() for name in _IMAGE_PROCESSOR_FILES):
        return True
    # Vision configs describe image channels and have no vocabulary (ViT, ResNet, ConvNeXt, ...).
    return "num_channels" in config and "vocab_size" not in config


def artifact_kind(folder: Path) -> str:
    """Return the artifact kind of ``folder``; raise a :class:`UserError` naming what is missing."""
    if not folder.is_dir():
        raise UserError(f"no exported folder at {folder}; point push at a run folder or its final/ folder")
    missing: list[str] = []
    if (folder / "vectors.kv").exists():
        kind = "word-vectors"
    elif (folder / "config.json").is_file():
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except ValueError:
            raise UserError(f"{folder / 'config.json'} is not valid JSON; re-export the model") from None
        config = config if isinstance(config, dict) else {}
        if _is_vision(config, folder):
            kind = "vision-encoder"
        elif any((folder / name).exists() for name in _SENTENCE_FILES):
            kind = "sentence-encoder"
        else:
            kind = "transformers"
        if kind != "vision-encoder" and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            missing.append("a tokenizer (tokenizer.json)")
        if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
            missing.append("model weights (*.safetensors)")
    else:
        raise UserError(f"{folder} holds neither a transformers model (config.json) nor word vectors (vectors.kv); "
                        "point push at a run's final/ folder")
    if not (folder / "README.md").is_file():
        missing.insert(0, "README.md")
    if missing:
        raise UserError(f"{folder} is not a complete export: missing {', '.join(missing)}")
    return kind


def resolve_export(path: Path) -> Export:
    """The export behind ``path``: a ``final/`` folder, or a run folder whose ``final/`` is used."""
    path = Path(path)
    if path.is_dir() and (path / "final").is_dir() and not (path / "config.json").exists() \
            and not (path / "vectors.kv").exists():
        path = path / "final"
    kind = artifact_kind(path)
    config = run_config(path)
    corpora = corpora_of_config(config) if config else []
    return Export(path, kind, config, corpora, find_data_cards(corpora))


def _local_names(export: Export) -> set[str]:
    """Spellings of the export folder that a card's usage snippet may contain."""
    folder = export.folder
    names = {str(folder), str(folder.resolve()), os.path.relpath(folder.resolve()),
             portable_path(str(folder.resolve()))}
    output_dir = (export.config or {}).get("output_dir")
    if isinstance(output_dir, str):
        names |= {str(Path(output_dir) / "final"), portable_path(str(Path(output_dir) / "final"))}
    return {n for n in names if n and n != "."}


def hub_readme(text: str, export: Export, repo_id: str) -> str:
    """The exported card as it should read on the Hub (see the module docstring)."""
    names = _local_names(export)
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(f"'{name}'", f"'{repo_id}'").replace(f'"{name}"', f'"{repo_id}"')

    def hub_model(match: re.Match[str]) -> str:
        value = match.group(3)
        looks_local = value.endswith("/final") or value.startswith(("/", "./", "../", "~")) or Path(value).exists()
        return f"{match.group(1)}{match.group(2)}{repo_id if looks_local else value}{match.group(2)}"

    text = _MODEL_ARG.sub(hub_model, text)
    text = portable_text(text)
    extra = ""
    if export.kind == "word-vectors" and "snapshot_download" not in text:
        extra += ("## Download\n\n```python\nfrom gensim.models import KeyedVectors\n"
                  "from huggingface_hub import snapshot_download\n\n"
                  f"vectors = KeyedVectors.load(snapshot_download('{repo_id}') + '/vectors.kv')\n```\n\n")
    if export.corpora and TRAINING_DATA_HEADING not in text:
        extra += training_data_section(export.corpora, export.data_cards) + "\n"
    if extra:
        at = text.find("\n## Usage")
        text = text.rstrip("\n") + "\n\n" + extra if at < 0 else text[:at + 1] + extra + text[at + 1:]
    return text


def folder_files(folder: Path, path_in_repo: str = "") -> dict[str, Path]:
    """``{path in repo: local file}`` for every file under ``folder`` (hidden and temporary files left out)."""
    prefix = path_in_repo.strip("/")
    files: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and not _SKIP.search(relative):
            files[f"{prefix}/{relative}" if prefix else relative] = path
    return files


def export_files(export: Export, repo_id: str) -> dict[str, Path | bytes]:
    """Everything one push of ``export`` sends: its files, the Hub README and the data cards."""
    files: dict[str, Path | bytes] = dict(folder_files(export.folder))
    files["README.md"] = hub_readme((export.folder / "README.md").read_text(encoding="utf-8"), export,
                                    repo_id).encode("utf-8")
    for card in export.data_cards:
        files.setdefault(card.repo_path, card.path)
    return files


def ensure_repo(api: HfApi, repo_id: str, private: bool | None, revision: str | None) -> str:
    """Create ``repo_id`` (and branch ``revision``) if missing; returns the full ``namespace/name`` id."""
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    full_id = getattr(url, "repo_id", None) or repo_id
    if revision and revision != "main":
        api.create_branch(full_id, branch=revision, exist_ok=True)
    return full_id


def commit_files(api: HfApi, repo_id: str, files: dict[str, Path | bytes], message: str,
                 revision: str | None = None) -> str:
    """One atomic commit of ``files``; returns the commit URL."""
    from huggingface_hub import CommitOperationAdd

    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=content if isinstance(content, bytes)
                                     else str(content)) for name, content in files.items()]
    info = api.create_commit(repo_id, operations=operations, commit_message=message, revision=revision)
    return str(getattr(info, "commit_url", info))


def describe_failure(err: BaseException) -> str:
    """The first line of an upload error, without the token, short enough for one line of output."""
    text = str(err).strip()
    first = text.splitlines()[0].strip() if text else type(err).__name__
    server = getattr(err, "server_message", None)
    if server and server.splitlines()[0].strip() not in first:
        # The Hub's own explanation ("Invalid credentials in Authorization header") is the useful part.
        first = f"{first.rstrip('.')}: {server.splitlines()[0].strip()}"
    token = _current_token()
    if token:
        first = first.replace(token, "***")
    return first[:240]


def _current_token() -> str | None:
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # a broken token file is reported by the upload itself
        return None
