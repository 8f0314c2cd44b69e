"""What an objective knows about data parallelism: its rank, the world size and a few collectives.

The engine hands every objective one :class:`DistContext` before training. Contrastive objectives need
negatives from every process *with gradients* (a plain ``all_gather`` returns tensors that are cut from the
graph, so each process would learn only from its own slice of the similarity matrix); MoCo needs the keys of
every process to fill its queue. In a single process every collective is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward returns this process's slice of the SUMMED gradient.

    Every process's loss may depend on this process's rows (they are everyone's negatives), so the gradient
    of a row is the sum over processes of what their losses send back. The backward is an ``all_reduce`` of
    the whole gathered gradient (reduce-scatter would move less data, but gloo, the CPU backend, lacks it).
    """

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        world, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


@dataclass(frozen=True)
class DistContext:
    """Rank and world size of this process, and the collectives objectives use.

    Attributes:
        rank: this process's index in ``0 .. world_size - 1``.
        world_size: number of data-parallel processes.
    """

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` ``[n, ...]`` of every process into ``[world_size * n, ...]``, keeping gradients.

        Rows ``rank * n .. (rank + 1) * n`` are this process's own. Every process must pass the same ``n``.
        """
        if not self.distributed:
            return tensor
        return _GatherWithGrad.apply(tensor)

    def all_gather_no_grad(self, tensor: torch.Tensor) -> torch.Tensor:
        """Like :meth:`all_gather`, detached (e.g. MoCo keys for the queue)."""
        if not self.distributed:
            return tensor.detach()
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.detach().contiguous())
        return torch.cat(parts, dim=0)

    def all_reduce(self, tensor: torch.Tensor, op: Literal["sum", "mean", "max", "min"] = "sum") -> torch.Tensor:
        """A reduced copy of ``tensor`` over processes (no gradient)."""
        if not self.distributed:
            return tensor.detach().clone()
        out = tensor.detach().clone()
        reduce_op = {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
                     "min": dist.ReduceOp.MIN}[op]
        dist.all_reduce(out, op=reduce_op)
        return out / self.world_size if op == "mean" else out

    def offset(self, rows: int) -> int:
        """Index of this process's first row in an :meth:`all_gather` of ``rows`` rows per process."""
        return self.rank * rows


#: The context of a single process (every collective is the identity).
LOCAL = DistContext()
