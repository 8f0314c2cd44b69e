"""Optimizer with weight-decay groups, and the LR schedule from transformers."""

from __future__ import annotations

import torch
from torch import nn
from transformers import get_scheduler

from nlp_ssl.config import TrainingConfig
from nlp_ssl.errors import UserError
from nlp_ssl.models.parameter_groups import decay_parameter_groups


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
