"""Contiguous token streams for recurrent language models: truncated-BPTT training windows whose rows continue
one another, and held-out rows scored from zero memory."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, IterableDataset

from nlp_ssl.errors import UserError

__all__ = ["StreamRows", "StreamWindows", "contiguous_stream_batches"]


def contiguous_stream_batches(token_ids: torch.Tensor, batch_size: int, bptt: int) -> torch.Tensor:
    """Cut one token stream into ``batch_size`` parallel streams and then into TBPTT windows.

    The layout of Zaremba et al.'s ``ptb_iterator``: the stream (its first ``B * (N // B)`` tokens) is
    reshaped row-major into ``[B, N // B]`` so that row ``b`` is the b-th contiguous slice of the text; window
    ``k`` is columns ``k * bptt .. k * bptt + bptt`` of every row (``bptt + 1`` tokens: inputs are
    ``[..., :-1]``, targets ``[..., 1:]``). Consecutive windows share one token, so row ``b`` of window
    ``k + 1`` continues row ``b`` of window ``k`` and the LSTM state can be carried from one to the next.

    Args:
        token_ids: ``[N]`` token ids.
        batch_size: ``B``, number of parallel streams.
        bptt: ``T``, time steps per window.

    Returns:
        ``[S, B, T + 1]`` with ``S = (N // B - 1) // T`` windows (a view-free copy).

    Raises:
        UserError: bad sizes, or a stream too short for one window.
    """
    if token_ids.dim() != 1:
        raise UserError(f"token_ids must be a 1-D stream, got shape {tuple(token_ids.shape)}")
    if batch_size < 1 or bptt < 1:
        raise UserError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
    columns = token_ids.numel() // batch_size
    steps = (columns - 1) // bptt
    if steps < 1:
        raise UserError(f"a stream of {token_ids.numel()} tokens is too short for {batch_size} streams of "
                        f"{bptt + 1} tokens; lower the batch size or bptt")
    rows = token_ids[: batch_size * columns].view(batch_size, columns)  # [B, N // B]
    return rows.unfold(1, bptt + 1, bptt)[:, :steps].permute(1, 0, 2).contiguous()  # [S, B, T + 1]


class StreamWindows(IterableDataset):
    """Training windows for truncated BPTT, in the order that lets the LSTM memory be carried.

    The stream is cut into ``streams`` parallel rows (:func:`contiguous_stream_batches`,
    Zaremba et al. 2014) and yielded window by window: row 0..B-1 of window 0, then of window 1, ... Each item
    is ``{"input_ids": [T + 1], "window": k}``; a data loader with batch ``B / processes`` gives process ``p``
    the rows ``p B / P .. (p + 1) B / P - 1`` of every window, so each process always continues its own streams.
    Every epoch reads the same windows from the start (``window == 0`` tells the objective to reset the memory).
    Not shuffled: the order is what makes carried memory correct.
    """

    def __init__(self, token_ids: torch.Tensor, streams: int, bptt: int) -> None:
        self.windows = contiguous_stream_batches(token_ids, streams, bptt)  # [S, B, T + 1]
        self.num_tokens = int(self.windows.shape[0] * self.windows.shape[1] * bptt)

    def __len__(self) -> int:
        return int(self.windows.shape[0] * self.windows.shape[1])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, window in enumerate(self.windows):
            for row in window:
                yield {"input_ids": row, "window": index}


class StreamRows(Dataset):
    """A held-out stream cut into ``rows`` contiguous pieces of equal length, ``[L]`` each (the tail dropped).

    Each row is scored from zero memory, so only the first few tokens of each row lack their true context;
    with a handful of rows over PTB's 74k validation words the difference from one unbroken pass is small.
    """

    def __init__(self, token_ids: torch.Tensor, rows: int) -> None:
        length = token_ids.numel() // rows
        if length < 2:
            raise UserError(f"the held-out text ({token_ids.numel()} tokens) is too short for {rows} rows; lower "
                            "per_device_eval_batch_size")
        self.rows = token_ids[: rows * length].view(rows, length)
        self.num_tokens = int(rows * (length - 1))

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[index]}
