"""Momentum (exponential moving average) encoders and MoCo's queue of negative keys.

The target network of MoCo (He et al. 2019) and BYOL (Grill et al. 2020) follows the online network as
``theta_k <- m theta_k + (1 - m) theta_q`` after each optimizer step; MoCo also keeps the keys of recent
batches in a first-in-first-out queue to use as negatives.
"""

from __future__ import annotations

import copy
import math
from numbers import Real

import torch
from torch import nn

from nlp_ssl.errors import UserError

__all__ = ["FeatureQueue", "ema_update_", "make_momentum_copy", "momentum_schedule"]


def _check_momentum(value: float, name: str) -> None:
    if not (isinstance(value, Real) and 0.0 <= value <= 1.0):
        raise UserError(f"{name} must be in [0, 1] (e.g. 0.99), got {value!r}")


def make_momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` that the optimizer never trains (every parameter ``requires_grad=False``).

    The copy starts equal to the online network, as in MoCo (Algorithm 1: ``f_k.params = f_q.params``)
    and BYOL; weight tying inside ``module`` is kept by the deep copy.
    """
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """Move ``target`` towards ``online`` in place: ``theta_k <- m theta_k + (1 - m) theta_q``.

    He et al. 2019, "Momentum Contrast for Unsupervised Visual Representation Learning", eq. 2.
    Parameters are matched by position (so ``online`` may be wrapped, e.g. by DDP, and ``target`` not) and
    updated with two fused multi-tensor kernels. Buffers (batch-norm running statistics, step counters)
    are copied from ``online`` rather than averaged: running statistics are already moving averages, and
    an average of integer counters means nothing.

    Args:
        target: the momentum encoder (:func:`make_momentum_copy` of the online network).
        online: the network the optimizer trains.
        momentum: ``m`` in ``[0, 1]``; 1 freezes ``target``, 0 copies ``online``.
    """
    _check_momentum(momentum, "momentum")
    target_params, online_params = list(target.parameters()), list(online.parameters())
    target_buffers, online_buffers = list(target.buffers()), list(online.buffers())
    if len(target_params) != len(online_params) or len(target_buffers) != len(online_buffers):
        raise ValueError(f"ema_update_: target has {len(target_params)} parameters and {len(target_buffers)} "
                         f"buffers, online {len(online_params)} and {len(online_buffers)}: not the same network")
    for t, o in zip(target_params + target_buffers, online_params + online_buffers):
        if t.shape != o.shape:
            raise ValueError(f"ema_update_: shape {tuple(t.shape)} in target vs {tuple(o.shape)} in online")
    if target_params:
        torch._foreach_mul_(target_params, momentum)
        torch._foreach_add_(target_params, online_params, alpha=1.0 - momentum)
    if target_buffers:
        torch._foreach_copy_(target_buffers, online_buffers)


def momentum_schedule(step: int, max_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL's cosine increase of the target momentum from ``base`` at step 0 to ``final`` at ``max_steps``.

    Grill et al. 2020, "Bootstrap Your Own Latent", section 3.2::

        m(k) = final - (final - base) * (cos(pi k / K) + 1) / 2

    Steps past ``max_steps`` keep ``final``.
    """
    _check_momentum(base, "base momentum")
    _check_momentum(final, "final momentum")
    if max_steps < 1:
        raise UserError(f"momentum_schedule: max_steps must be >= 1, got {max_steps}")
    k = min(max(step, 0), max_steps)
    return final - (final - base) * (math.cos(math.pi * k / max_steps) + 1.0) / 2.0


class FeatureQueue(nn.Module):
    """A first-in-first-out queue of the ``K`` most recent feature vectors (MoCo's dictionary of keys).

    The queue, the write pointer and the fill count are persistent buffers, so a checkpoint (the
    objective's ``state_dict``) carries them and a resumed run sees exactly the negatives it would have
    seen. With data parallelism, enqueue the keys gathered from every process, so that all processes hold
    the same queue.

    The queue starts empty and :meth:`negatives` returns only the rows written so far, instead of starting
    from random unit vectors as the MoCo reference does: random vectors are not features of any example,
    and drawing them at construction would move the global RNG that the rest of the model's
    initialisation depends on. The price is that the number of negatives grows over the first
    ``K / B`` steps.

    Args:
        size: ``K >= 1``, the number of keys kept.
        dim: ``D >= 1``, the feature dimension.
        dtype: storage dtype of the queue (keys are cast to it).

    Shape:
        - queue: ``[K, D]``; pointer, filled: 0-d int64 (next row to write, rows written so far, ``<= K``)
    """

    queue: torch.Tensor
    pointer: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size < 1:
            raise UserError(f"queue size must be >= 1 (MoCo uses 65536), got {size}")
        if dim < 1:
            raise UserError(f"queue feature dimension must be >= 1, got {dim}")
        self.size, self.dim = int(size), int(dim)
        self.register_buffer("queue", torch.zeros(self.size, self.dim, dtype=dtype))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``[B, D]`` over the oldest rows, wrapping around the end of the buffer.

        Works for any ``B``, dividing ``K`` or not; when ``B > K`` only the newest ``K`` keys are kept.
        Everything stays on the device (no host sync).
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise UserError(f"FeatureQueue.enqueue: keys must be [B, {self.dim}], got shape {tuple(keys.shape)}")
        b = keys.shape[0]
        if b == 0:
            return
        skip = max(b - self.size, 0)  # keys that would be overwritten within this very batch
        kept = keys[skip:].detach().to(self.queue.dtype)
        rows = (self.pointer + skip + torch.arange(kept.shape[0], device=self.queue.device)) % self.size
        self.queue.index_copy_(0, rows, kept)
        self.pointer.copy_((self.pointer + b) % self.size)
        self.filled.copy_((self.filled + b).clamp(max=self.size))

    def negatives(self) -> torch.Tensor:
        """``[min(filled, K), D]`` the keys written so far (storage order; the loss does not depend on it).

        Until the first wrap-around the written rows are exactly ``0 .. filled - 1``; after it all rows
        are. Reading ``filled`` is one host sync per call.
        """
        filled = int(self.filled)
        return self.queue if filled == self.size else self.queue[:filled]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}"
