"""From a corpus config to a tokenizer and train/eval data, shared by the masked- and causal-LM recipes: packed
blocks for transformers, contiguous streams (:mod:`nlp_ssl.data.streams`) for recurrent LMs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import Dataset, IterableDataset
from transformers import PreTrainedTokenizerBase

from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.packing import PackedBlocks, StreamingBlocks, tokenize_corpus
from nlp_ssl.data.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer
from nlp_ssl.errors import UserError


def prepare_tokenizer(cfg: TokenizerConfig, kind: Literal["wordpiece", "bpe", "wordlevel"], corpus: datasets.DatasetDict,
                      saved: Path, accelerator: Accelerator, model_init_from: str | None = None
                      ) -> PreTrainedTokenizerBase:
    """The run's tokenizer, saved under ``saved`` (``output_dir/tokenizer``) so a resumed run reuses it exactly.

    Order of preference: the one saved by an earlier attempt of this run, ``tokenizer.name_or_path``, the
    tokenizer of ``model.init_from``, and otherwise one of ``kind`` (``tokenizer.kind`` overrides it) trained on
    the train split (main process first).
    """
    needs_mask = kind == "wordpiece"  # the default kind says which recipe asks: WordPiece is the masked LM's
    kind = cfg.kind or kind
    with accelerator.main_process_first():
        if (saved / "tokenizer_config.json").is_file():
            return load_tokenizer(saved)
        source = cfg.name_or_path or model_init_from
        if source:
            tokenizer = load_tokenizer(source)
        else:
            train = corpus["train"]
            texts = (row["text"] for row in train) if isinstance(train, datasets.IterableDataset) else iter(train["text"])
            tokenizer = train_tokenizer(texts, kind, cfg)
        if needs_mask and tokenizer.mask_token_id is None:
            raise UserError(f"tokenizer {source or kind} has no mask token, so it cannot be used for masked LM; "
                            "pick a BERT-style tokenizer (tokenizer.kind=wordpiece) or let the recipe train one")
        if tokenizer.pad_token_id is None:
            # GPT-2 tokenizers ship without padding; the tail block's padding is masked out, so any id works.
            tokenizer.pad_token = tokenizer.eos_token
        if accelerator.is_main_process:
            tokenizer.save_pretrained(saved)
    return tokenizer


def build_lm_datasets(corpus: datasets.DatasetDict | datasets.IterableDatasetDict, tokenizer: PreTrainedTokenizerBase,
                      cfg: CorpusConfig, causal: bool, accelerator: Accelerator, seed: int
                      ) -> tuple[Dataset | IterableDataset, Dataset | None]:
    """Tokenise and pack both splits; returns ``(train, eval)`` block datasets."""
    pad = tokenizer.pad_token_id
    with accelerator.main_process_first():
        tokenized = {name: tokenize_corpus(split, tokenizer, append_eos=causal, num_proc=cfg.num_proc)
                     for name, split in corpus.items()}
    if cfg.streaming:
        train: Dataset | IterableDataset = StreamingBlocks(tokenized["train"], cfg.block_size, pad, seed)
        eval_blocks = None
        if "validation" in tokenized:
            # The eval split is small enough to materialise once: a fixed set of blocks for comparable numbers.
            rows = [row["input_ids"] for row in tokenized["validation"]]
            eval_blocks = PackedBlocks.from_tokenized(datasets.Dataset.from_dict({"input_ids": rows}), cfg.block_size, pad)
        return train, eval_blocks
    train = PackedBlocks.from_tokenized(tokenized["train"], cfg.block_size, pad)
    eval_blocks = PackedBlocks.from_tokenized(tokenized["validation"], cfg.block_size, pad) if "validation" in tokenized else None
    return train, eval_blocks


# --- contiguous streams for recurrent LMs (truncated BPTT) ----------------------------------------------


def token_stream(split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, num_proc: int | None = None
                 ) -> torch.Tensor:
    """Every text of ``split`` tokenised, each followed by EOS, concatenated into one ``[N]`` stream.

    On Mikolov's PTB with a word-level tokenizer this is the literature's stream: one id per word and one
    ``<eos>`` per sentence.
    """
    tokenized = tokenize_corpus(split, tokenizer, append_eos=True, num_proc=num_proc)
    ids = tokenized.with_format("numpy")["input_ids"]
    flat = np.concatenate(list(ids)) if len(ids) else np.zeros(0, dtype=np.int64)
    if flat.size == 0:
        raise UserError("the corpus produced no tokens after tokenisation")
    return torch.from_numpy(flat.astype(np.int64))
