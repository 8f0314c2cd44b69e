"""Tokenised train and eval sets for fine-tuning, and the collator that pads them.

The eval set of a run is every eval split of the task concatenated (MNLI matched + mismatched, or
validation + test where test has labels), each example tagged with ``split_id``, so one pass of the engine's
evaluation scores all of them and the objective reports metrics per split (see
:mod:`nlp_ssl.objectives.supervised`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import PreTrainedTokenizerBase

from nlp_ssl.data.conll import tokenize_and_align
from nlp_ssl.data.glue import GlueTask
from nlp_ssl.errors import UserError

#: Label of positions that carry no loss (special tokens, padding, non-first sub-tokens), as in PyTorch.
IGNORE_INDEX = -100

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Any of these marks a folder that holds a tokenizer (fast, WordPiece, BPE or SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model")


def has_tokenizer_files(name_or_path: str) -> bool:
    """False for a local folder without tokenizer files; True for such a folder or anything else (a hub id).

    transformers 5 builds an empty tokenizer (five special tokens, no vocabulary) from a folder that only has
    ``config.json``, which would silently encode every word as ``[UNK]``.
    """
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        return True
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


@dataclass
class PreparedData:
    """What the engine trains and evaluates on.

    Attributes:
        train: tokenised training examples (``input_ids``, ``attention_mask``, maybe ``token_type_ids``,
            ``labels``).
        eval: every eval split concatenated, plus ``split_id`` (index into ``eval_splits``) and
            ``sentence_id`` (row index, unique in the eval set).
        eval_splits: names of the eval splits, the selection split first.
        sizes: examples per split, for the log and the model card.
    """

    train: datasets.Dataset
    eval: datasets.Dataset
    eval_splits: list[str]
    sizes: dict[str, int]


def subset_indices(size: int, limit: int | None, seed: int = 0) -> list[int]:
    """``limit`` of ``range(size)`` drawn with a fixed seed, in their original order (all when ``limit`` is None).

    Not simply the first ``limit``: files are often sorted by label (BBC News is), and a prefix would then
    hold a single class.
    """
    if limit is None or size <= limit:
        return list(range(size))
    return sorted(random.Random(seed).sample(range(size), limit))


def _cap(ds: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    return ds if limit is None or len(ds) <= limit else ds.select(subset_indices(len(ds), limit))


def _labelled(ds: datasets.Dataset, regression: bool) -> bool:
    """False for GLUE test splits, whose labels are hidden (-1)."""
    if len(ds) == 0:
        return False
    first = ds[0]["label"]
    return not (first == -1 or (regression and first == -1.0))


def _with_ids(parts: list[datasets.Dataset]) -> datasets.Dataset:
    tagged = [ds.add_column("split_id", [index] * len(ds)) for index, ds in enumerate(parts)]
    joined = datasets.concatenate_datasets(tagged)
    return joined.add_column("sentence_id", list(range(len(joined))))


def prepare_sequence_data(task: GlueTask, dsd: datasets.DatasetDict, tokenizer: PreTrainedTokenizerBase,
                          max_length: int, max_train_samples: int | None = None,
                          max_eval_samples: int | None = None, extra_eval_splits: Sequence[str] = ()
                          ) -> PreparedData:
    """Tokenise a sentence(-pair) classification task loaded by :func:`nlp_ssl.data.glue.load_glue_task`.

    Args:
        task: the task (text columns, label set, eval splits).
        dsd: its splits.
        tokenizer: the checkpoint's tokenizer; pairs are encoded as ``[CLS] a [SEP] b [SEP]``.
        max_length: truncate longer inputs (pairs: the longer text first).
        max_train_samples, max_eval_samples: keep N examples of train / of each eval split (a seeded draw).
        extra_eval_splits: further labelled splits to score with the selected model (e.g. ``test``).

    Raises:
        UserError: a split is missing, or the training set is empty.
    """
    splits = list(task.eval_splits) + [s for s in extra_eval_splits if s not in task.eval_splits]
    missing = [s for s in ["train", *task.eval_splits] if s not in dsd]
    if missing:
        raise UserError(f"task {task.name} has no split(s) {missing}; found {list(dsd)}")
    splits = [s for s in splits if s in dsd and _labelled(dsd[s], task.is_regression)]

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        texts = [batch[c] for c in task.text_columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        return {**{k: enc[k] for k in MODEL_INPUTS if k in enc}, "labels": batch["label"]}

    def tokenize(ds: datasets.Dataset) -> datasets.Dataset:
        return ds.map(encode, batched=True, remove_columns=ds.column_names, desc="tokenize")

    train = tokenize(_cap(dsd["train"], max_train_samples))
    if len(train) == 0:
        raise UserError(f"the training split of {task.name} is empty")
    evals = [tokenize(_cap(dsd[s], max_eval_samples)) for s in splits]
    sizes = {"train": len(train), **{s: len(e) for s, e in zip(splits, evals)}}
    return PreparedData(train, _with_ids(evals), splits, sizes)


def prepare_token_data(dsd: datasets.DatasetDict, label_names: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                       max_length: int, label_all_subtokens: bool = False, max_train_samples: int | None = None,
                       max_eval_samples: int | None = None) -> PreparedData:
    """Tokenise NER data from :func:`nlp_ssl.data.conll.load_ner`; tags go to the first sub-token of each word.

    Eval splits are ``validation`` (selection) and ``test`` when present. Words cut off by ``max_length``
    carry no label and are not scored (as in the transformers NER examples); raise ``max_length`` for long
    sentences.

    Raises:
        UserError: no train or validation split, or the tokenizer is not a fast tokenizer.
    """
    if "train" not in dsd or "validation" not in dsd:
        raise UserError(f"NER data needs train and validation splits, found {list(dsd)}; "
                        "add dev.txt (or validation.txt) next to train.txt")
    splits = [s for s in ("validation", "test") if s in dsd and len(dsd[s])]

    def tokenize(ds: datasets.Dataset) -> datasets.Dataset:
        return ds.map(tokenize_and_align, batched=True, remove_columns=ds.column_names, desc="tokenize",
                      fn_kwargs={"tokenizer": tokenizer, "max_length": max_length,
                                 "label_all_subtokens": label_all_subtokens, "label_names": list(label_names)})

    train = tokenize(_cap(dsd["train"], max_train_samples))
    evals = [tokenize(_cap(dsd[s], max_eval_samples)) for s in splits]
    keep = [c for c in (*MODEL_INPUTS, "labels") if c in train.column_names]
    train = train.select_columns(keep)
    evals = [e.select_columns(keep) for e in evals]
    sizes = {"train": len(train), **{s: len(e) for s, e in zip(splits, evals)}}
    return PreparedData(train, _with_ids(evals), splits, sizes)


class PadCollator:
    """Pad a list of tokenised examples into tensors (right padding to the longest in the batch).

    Output: ``input_ids``, ``attention_mask`` (and ``token_type_ids``) ``[B, T]``; ``labels`` ``[B]``
    (sequence tasks; float for regression) or ``[B, T]`` padded with -100 (token tasks); ``split_id`` and
    ``sentence_id`` ``[B]`` when present. Written by hand because ``DataCollatorWithPadding`` would route
    the extra id columns through ``tokenizer.pad``.
    """

    def __init__(self, pad_token_id: int, regression: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.regression = regression

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        batch: dict[str, torch.Tensor] = {}
        fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0}
        for key, value in fill.items():
            if key in examples[0]:
                batch[key] = torch.tensor([list(e[key]) + [value] * (length - len(e[key])) for e in examples])
        labels = [e["labels"] for e in examples]
        if isinstance(labels[0], (list, tuple)):
            batch["labels"] = torch.tensor([list(x) + [IGNORE_INDEX] * (length - len(x)) for x in labels])
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if self.regression else torch.long)
        for key in ("split_id", "sentence_id"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.long)
        return batch
