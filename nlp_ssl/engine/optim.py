"""Optimizer with weight-decay groups, and the LR schedule from transformers."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_scheduler

from nlp_ssl.config import TrainingConfig
from nlp_ssl.errors import UserError


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


def build_optimizer(model: nn.Module, config: TrainingConfig, param_groups: list[dict] | None = None
                    ) -> torch.optim.Optimizer:
    """AdamW over ``param_groups`` (default: the decay groups of every trainable parameter); ``foreach``
    batches the per-parameter updates into few kernels. Groups may carry their own ``lr`` / ``weight_decay``."""
    groups = param_groups if param_groups is not None else decay_parameter_groups(model, config.weight_decay)
    groups = [g for g in groups if g["params"]]
    if not groups:
        raise UserError("the model has no trainable parameters; check the model section of the config")
    return torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_epsilon,
        foreach=True,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainingConfig) -> torch.optim.lr_scheduler.LRScheduler:
    try:
        return get_scheduler(
            config.lr_scheduler_type,
            optimizer,
            num_warmup_steps=config.warmup_steps,
            num_training_steps=config.max_steps,
        )
    except ValueError as err:
        raise UserError(f"config key 'lr_scheduler_type': {err}") from None
