"""The objective's distributed context in two real CPU processes (gloo): gathers keep gradients exactly."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nlp_ssl.distributed import LOCAL, DistContext
from nlp_ssl.objectives.contrastive_losses import nt_xent_loss

from conftest import free_port

N_LOCAL, DIM, TAU = 6, 8, 0.3


def _global_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(DIM, DIM, generator=g)
    return torch.randn(2 * N_LOCAL, DIM, generator=g), torch.randn(2 * N_LOCAL, DIM, generator=g), weight


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        ctx = DistContext(rank, 2)
        x_a, x_b, weight = _global_batch()
        weight = weight.clone().requires_grad_(True)
        rows = slice(ctx.offset(N_LOCAL), ctx.offset(N_LOCAL) + N_LOCAL)
        z_a, z_b = x_a[rows] @ weight, x_b[rows] @ weight  # this process's half of the global batch
        all_a, all_b = ctx.all_gather(z_a), ctx.all_gather(z_b)
        loss = nt_xent_loss(z_a, z_b, TAU, all_a=all_a, all_b=all_b, offset=ctx.offset(N_LOCAL))
        # The engine's weighting: backward of loss * num_items, then divide by the global item count
        # (all-reduce of gradients, as DDP does, summed here).
        (loss * 2 * N_LOCAL).backward()
        grad = weight.grad.clone()
        dist.all_reduce(grad)
        total = ctx.all_reduce(loss.detach() * 2 * N_LOCAL)
        gathered_plain = ctx.all_gather_no_grad(torch.tensor([float(rank)]))
        # Plain lists: tensors would travel as shared memory that dies with this process.
        queue.put((rank, float(total) / (4 * N_LOCAL), (grad / (4 * N_LOCAL)).tolist(), gathered_plain.tolist()))
    finally:
        dist.destroy_process_group()


def test_gathered_nt_xent_equals_the_single_process_loss_and_gradients():
    x_a, x_b, weight = _global_batch()
    weight = weight.clone().requires_grad_(True)
    single = nt_xent_loss(x_a @ weight, x_b @ weight, TAU)
    single.backward()

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.spawn(_worker, args=(free_port(), queue), nprocs=2, join=True)
    results = sorted(queue.get() for _ in range(2))
    for rank, loss, grad, gathered in results:
        assert gathered == [0.0, 1.0]
        torch.testing.assert_close(torch.tensor(loss), single.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(torch.tensor(grad), weight.grad, rtol=1e-5, atol=1e-6)


def test_single_process_context_is_the_identity():
    t = torch.randn(3, 2, requires_grad=True)
    assert LOCAL.all_gather(t) is t and not LOCAL.distributed and LOCAL.offset(5) == 0
    assert torch.equal(LOCAL.all_reduce(t, "mean"), t.detach())
