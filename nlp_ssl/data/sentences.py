"""Sentence-level data for sentence encoders: single texts, (anchor, positive[, negative]) tuples, labelled texts.

Unlike language-model pretraining, nothing is packed: each example is one line or document of a corpus
(any source :func:`nlp_ssl.data.corpus.load_corpus` reads), cut to ``max_length`` tokens, and the collators
pad each batch to its longest example. Files of pairs / triplets and labelled texts may be TSV, CSV or
JSON lines; the columns are named in the file's header (TSV/CSV) or keys (JSONL).

Batch layouts (what the contrastive objectives receive):

* texts: ``{"input_ids": [B, T], "attention_mask": [B, T]}``;
* tuples: ``{"anchor": {...}, "positive": {...}[, "negative": {...}]}``, each a texts batch;
* labelled texts: a texts batch plus ``"labels": [B]`` (int64).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from nlp_ssl.errors import UserError

__all__ = ["PairCollator", "TextCollator", "read_labelled_file", "read_pairs_file", "sentence_texts",
           "tokenize_labelled", "tokenize_pairs", "tokenize_texts"]

TUPLE_COLUMNS = ("anchor", "positive", "negative")


def sentence_texts(split: datasets.Dataset, split_lines: bool = False, min_chars: int = 1) -> list[str]:
    """The non-blank texts of a corpus split (column ``text``), or its non-blank lines with ``split_lines``."""
    texts: list[str] = []
    for text in split["text"]:
        if not isinstance(text, str):
            continue
        parts = text.splitlines() if split_lines else [text]
        texts.extend(p.strip() for p in parts if len(p.strip()) >= min_chars)
    return texts


def _encode(tokenizer, texts: list[str], max_length: int) -> dict[str, list[list[int]]]:
    enc = tokenizer(texts, truncation=True, max_length=max_length)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def tokenize_texts(texts: Sequence[str], tokenizer, max_length: int) -> datasets.Dataset:
    """One example per text: ``input_ids`` and ``attention_mask``, truncated to ``max_length`` tokens."""
    ds = datasets.Dataset.from_dict({"text": list(texts)})
    return ds.map(lambda b: _encode(tokenizer, b["text"], max_length), batched=True, remove_columns=["text"],
                  desc="tokenize")


def tokenize_pairs(table: datasets.Dataset, tokenizer, max_length: int) -> datasets.Dataset:
    """Columns ``<col>_input_ids`` / ``<col>_attention_mask`` for each of anchor, positive (and negative)."""
    columns = [c for c in TUPLE_COLUMNS if c in table.column_names]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for column in columns:
            enc = _encode(tokenizer, [str(t) for t in batch[column]], max_length)
            out.update({f"{column}_{k}": v for k, v in enc.items()})
        return out

    return table.map(encode, batched=True, remove_columns=table.column_names, desc="tokenize")


def tokenize_labelled(texts: Sequence[str], labels: Sequence[int], tokenizer, max_length: int) -> datasets.Dataset:
    """Texts with an int ``labels`` column."""
    ds = tokenize_texts(texts, tokenizer, max_length)
    return ds.add_column("labels", [int(x) for x in labels])


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    length = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (length - len(r)) for r in rows], dtype=torch.long)


class TextCollator:
    """Pad texts (and ``labels`` when present) to the longest example of the batch; draws nothing."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {"input_ids": _pad([e["input_ids"] for e in examples], self.pad_token_id),
                 "attention_mask": _pad([e["attention_mask"] for e in examples], 0)}
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([int(e["labels"]) for e in examples], dtype=torch.long)
        return batch


class PairCollator:
    """Pad each side of (anchor, positive[, negative]) tuples separately: ``{side: texts batch}``."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, dict[str, torch.Tensor]]:
        sides = [c for c in TUPLE_COLUMNS if f"{c}_input_ids" in examples[0]]
        return {side: {"input_ids": _pad([e[f"{side}_input_ids"] for e in examples], self.pad_token_id),
                       "attention_mask": _pad([e[f"{side}_attention_mask"] for e in examples], 0)}
                for side in sides}


# --- files ----------------------------------------------------------------------------------------------


def _read_table(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and column names of a TSV / CSV (header line) or JSON lines / JSON list file."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"file not found: {path}")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not valid UTF-8 text; re-encode it (e.g. `iconv -f latin1 -t utf-8`)") from None
    if not text.strip():
        raise UserError(f"file is empty: {path}")
    suffix = file.suffix.lower()
    if suffix in (".jsonl", ".json"):
        try:
            if suffix == ".json" and text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as err:
            raise UserError(f"{path} is not valid JSON lines ({err.msg} at line {err.lineno})") from None
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{path} must hold one JSON object per line (keys are the column names)")
        columns = list(dict.fromkeys(k for r in rows for k in r))
        return rows, columns
    if suffix not in (".tsv", ".csv", ".txt"):
        raise UserError(f"unsupported file type {suffix!r} for {path}; use .tsv, .csv or .jsonl")
    delimiter = "," if suffix == ".csv" else "\t"
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    rows = [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    return rows, columns


def _column(rows: list[dict[str, Any]], columns: list[str], name: str, path: str | Path) -> list[str]:
    if name not in columns:
        raise UserError(f"{path} has no column '{name}' (columns: {', '.join(columns) or 'none'}); "
                        f"name it in the header line (TSV/CSV) or as a key (JSONL)")
    values = []
    for number, row in enumerate(rows, start=2):
        value = row.get(name)
        if value is None or not str(value).strip():
            raise UserError(f"{path}: column '{name}' is empty in data row {number - 1}")
        values.append(str(value).strip())
    return values


def read_pairs_file(path: str | Path) -> datasets.Dataset:
    """(anchor, positive[, negative]) texts from a TSV / CSV / JSONL file with those column names.

    Raises:
        UserError: missing file, a missing ``anchor`` or ``positive`` column, an empty cell, no rows.
    """
    rows, columns = _read_table(path)
    if not rows:
        raise UserError(f"{path} has a header but no data rows")
    table = {name: _column(rows, columns, name, path) for name in TUPLE_COLUMNS[:2]}
    if "negative" in columns:
        table["negative"] = _column(rows, columns, "negative", path)
    return datasets.Dataset.from_dict(table)


def read_labelled_file(path: str | Path, text_column: str = "text", label_column: str = "label"
                       ) -> tuple[list[str], list[int], list[str]]:
    """Labelled texts: ``(texts, label ids, label names)`` (names sorted, ids index them).

    Raises:
        UserError: missing file or column, an empty cell, or fewer than two classes (no negatives).
    """
    rows, columns = _read_table(path)
    if not rows:
        raise UserError(f"{path} has a header but no data rows")
    texts = _column(rows, columns, text_column, path)
    raw = _column(rows, columns, label_column, path)
    names = sorted(set(raw))
    if len(names) < 2:
        raise UserError(f"{path}: column '{label_column}' holds a single class ({names[0]!r}); contrastive "
                        "training and evaluation need at least two labels")
    index = {n: i for i, n in enumerate(names)}
    return texts, [index[x] for x in raw], names
