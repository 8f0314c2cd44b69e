"""The output projection and the cross-entropy over the vocabulary in one pass over row chunks.

A causal LM's largest tensor is its ``[B x T, V]`` logits: written by the head, read by ``log_softmax``,
written again as its gradient and read twice more by the head's backward. Here the logits of ``chunk_size``
rows at a time are projected, turned into the loss and straight into their gradient (softmax minus the
one-hot target) while they are still in cache, and the gradients of the hidden states and of the head are
taken from that chunk at once (the idea of Liger Kernel's fused linear cross-entropy, Hsu et al. 2024, and
of Wijmans et al. 2024, "Cut Your Losses in Large-Vocabulary Language Models"). The same matrix products as
``F.cross_entropy(F.linear(h, W, b), t)``, none of its full-size element-wise passes, and the logits never
exist whole; the backward pass only scales the gradients the forward pass already took.
"""

from __future__ import annotations

import torch
from torch import nn

IGNORE_INDEX = -100
DEFAULT_CHUNK_SIZE = 256  # rows: 256 x 8k fp32 logits (8 MiB) stay in a server CPU's cache


class _LinearCrossEntropy(torch.autograd.Function):
    """Forward: ``hidden [N, H]``, ``weight [V, H]``, ``bias [V] | None``, ``targets [N]`` -> ``(mean loss, count,
    hits)``; the gradients of the mean loss are taken during forward and only scaled by the upstream gradient
    in backward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                chunk_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        valid = targets != IGNORE_INDEX
        count = valid.sum()
        weights = valid.to(hidden.dtype)[:, None]  # [N, 1]: rows whose target is ignored add nothing
        safe = targets.clamp(min=0)
        want_grad = any(ctx.needs_input_grad[:3])
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
        loss_sum = hidden.new_zeros(())
        hits = torch.zeros((), dtype=torch.long, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            rows = slice(start, start + chunk_size)
            h, t, w = hidden[rows], safe[rows], weights[rows]
            logits = torch.addmm(bias, h, weight.t()) if bias is not None else h @ weight.t()  # [n, V]
            if not want_grad:  # an argmax costs as much as the softmax here: held-out accuracy only
                hits += ((logits.argmax(-1) == t) & valid[rows]).sum()
            log_probs = torch.log_softmax(logits, dim=-1)
            del logits
            picked = torch.arange(h.shape[0], device=h.device)
            loss_sum -= (log_probs[picked, t] * w.squeeze(1)).sum()
            if not want_grad:
                continue
            grad_logits = log_probs.exp_()  # softmax, in place of the log-probabilities
            grad_logits[picked, t] -= 1.0  # d(-log p_t)/d logits = softmax - one_hot(t)
            if grad_hidden is not None:
                grad_hidden[rows] = (grad_logits @ weight) * w
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.t(), h * w)
            if grad_bias is not None:
                grad_bias += (grad_logits * w).sum(0)
        scale = 1.0 / count.clamp(min=1).to(hidden.dtype)
        ctx.save_for_backward(*(g * scale if g is not None else None for g in (grad_hidden, grad_weight, grad_bias)))
        ctx.mark_non_differentiable(count, hits)
        return loss_sum * scale, count, hits

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_count: None, _grad_hits: None):
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        scaled = [None if g is None else g * grad_loss for g in (grad_hidden, grad_weight, grad_bias)]
        return scaled[0], scaled[1], scaled[2], None, None


def linear_cross_entropy(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor,
                         chunk_size: int = DEFAULT_CHUNK_SIZE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``head(hidden)`` against ``targets``, without the full logits.

    Args:
        hidden: ``[N, H]`` final hidden states.
        head: the output projection, weight ``[V, H]`` (bias ``[V]`` or none).
        targets: ``[N]`` token ids, :data:`IGNORE_INDEX` where a row carries no loss.
        chunk_size: rows projected at a time (memory ``chunk_size x V`` instead of ``N x V``).

    Returns:
        ``(mean loss over the counted rows, number of counted rows, number of counted rows whose argmax is the
        target)``; the last two are 0-d integer tensors (read without a host sync). The hits are counted only
        when no gradient is taken (evaluation), 0 otherwise. The loss equals
        ``F.cross_entropy(head(hidden), targets, ignore_index=-100)`` up to float rounding.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    return _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_size)
