"""Which parameters of a model are regularised by weight decay."""

from __future__ import annotations

from torch import nn

__all__ = ["decay_parameter_groups"]


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group.

    Biases, normalisation weights and other 1-D tensors are not decayed (as in BERT and GPT-2 training):
    shrinking a LayerNorm gain towards zero is not regularisation.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "norm" in name.lower() else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
