"""Tokenise documents and pack them into fixed-length blocks without losing a token.

``group_texts`` in the transformers examples packs inside each ``datasets.map`` batch and drops every
batch's remainder (up to ``block_size - 1`` tokens per 1,000 documents). Here the whole token stream is
concatenated first and cut once; the last partial block is padded and its padding is masked out, so every
token of the corpus is trained on exactly once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import torch
from transformers import PreTrainedTokenizerBase

from nlp_ssl.errors import UserError


def tokenize_corpus(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, append_eos: bool,
                    num_proc: int | None = None) -> datasets.Dataset:
    """Map ``text`` -> ``input_ids`` (cached by datasets for file-backed corpora, parallel with ``num_proc``).

    With ``append_eos`` (causal LM) each document ends with the EOS token so the model learns where
    documents stop; otherwise the tokenizer's own special tokens are added (``[CLS] ... [SEP]`` for BERT).
    """
    eos = tokenizer.eos_token_id

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[list[int]]]:
        texts = [t for t in batch["text"] if isinstance(t, str) and t.strip()]
        ids = tokenizer(texts, add_special_tokens=not append_eos, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)["input_ids"]
        if append_eos:
            ids = [seq + [eos] for seq in ids]
        return {"input_ids": ids}

    kwargs = {} if isinstance(ds, datasets.IterableDataset) else {"num_proc": num_proc, "desc": "tokenize"}
    return ds.map(encode, batched=True, remove_columns=ds.column_names, **kwargs)


def pack_array(token_ids: np.ndarray, block_size: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a 1-D token stream into ``[num_blocks, block_size]`` blocks plus an attention mask.

    The final partial block is padded with ``pad_id`` (mask 0), so no token is dropped.
    """
    n = int(token_ids.shape[0])
    if n == 0:
        raise UserError("the corpus produced no tokens after tokenisation")
    num_blocks = -(-n // block_size)
    blocks = np.full((num_blocks, block_size), pad_id, dtype=np.int64)
    blocks.reshape(-1)[:n] = token_ids
    mask = np.zeros((num_blocks, block_size), dtype=np.int64)
    mask.reshape(-1)[:n] = 1
    return blocks, mask


class PackedBlocks(torch.utils.data.Dataset):
    """Map-style dataset of packed blocks: each item is ``{"input_ids": [T], "attention_mask": [T]}``."""

    def __init__(self, blocks: np.ndarray, mask: np.ndarray) -> None:
        self.blocks = torch.from_numpy(blocks)
        self.mask = torch.from_numpy(mask)

    @classmethod
    def from_tokenized(cls, ds: datasets.Dataset, block_size: int, pad_id: int) -> "PackedBlocks":
        # Flatten the list column in Arrow: one copy, no Python loop over documents.
        column = ds.data.column("input_ids")
        flat = pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return cls(*pack_array(flat, block_size, pad_id))

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.blocks[index], "attention_mask": self.mask[index]}

    def __getitems__(self, indices: list[int]) -> dict[str, Any]:
        # One fancy-index per batch instead of one per example (the DataLoader hands this to collate).
        index = torch.as_tensor(indices)
        mask = self.mask[index]
        return {"input_ids": self.blocks[index], "attention_mask": mask, "padded": not bool(mask.all())}


def collate_blocks(batch: dict[str, Any] | list[dict[str, torch.Tensor]]) -> dict[str, Any]:
    """Collate for :class:`PackedBlocks` / :class:`StreamingBlocks` (already stacked by ``__getitems__``).

    ``padded`` (a Python bool, decided here on the host) says whether any position is padding: packing
    pads only the very last block, so models can skip the attention mask (a faster attention path) on
    every other batch without the device having to report it.
    """
    if isinstance(batch, dict):
        return batch
    stacked: dict[str, Any] = {key: torch.stack([item[key] for item in batch]) for key in batch[0]}
    stacked["padded"] = not bool(stacked["attention_mask"].all())
    return stacked


def pack_stream(sequences: Iterable[list[int]], block_size: int, pad_id: int) -> Iterator[dict[str, torch.Tensor]]:
    """Streaming version of packing: carry the remainder across documents, pad only the very last block."""
    buffer: list[int] = []
    for seq in sequences:
        buffer.extend(seq)
        while len(buffer) >= block_size:
            block, buffer = buffer[:block_size], buffer[block_size:]
            yield {"input_ids": torch.tensor(block), "attention_mask": torch.ones(block_size, dtype=torch.long)}
    if buffer:
        n = len(buffer)
        yield {"input_ids": torch.tensor(buffer + [pad_id] * (block_size - n)),
               "attention_mask": torch.tensor([1] * n + [0] * (block_size - n))}


class StreamingBlocks(torch.utils.data.IterableDataset):
    """Packed blocks from a streamed (``datasets.IterableDataset``) tokenised corpus."""

    def __init__(self, tokenized: datasets.IterableDataset, block_size: int, pad_id: int, seed: int) -> None:
        self.tokenized = tokenized
        self.block_size = block_size
        self.pad_id = pad_id
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Shuffle documents in a buffer whose seed depends on the epoch, so the order is reproducible.
        stream = self.tokenized.shuffle(seed=self.seed + self.epoch, buffer_size=10_000)
        return pack_stream((row["input_ids"] for row in stream), self.block_size, self.pad_id)
