"""The contract between an objective and the training engine.

The engine never looks inside a batch: it hands each batch to :meth:`Objective.forward` and gets back a
:class:`StepOutput`. Everything family-specific (masking, negative sampling, momentum encoders, what the
exported artifact is) lives in the objective.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass
class StepOutput:
    """What one forward pass returns.

    Attributes:
        loss: scalar, the MEAN loss over the ``num_items`` items behind it. The engine multiplies it back by
            ``num_items`` and divides by the number of items in the whole optimizer step (all micro-batches,
            all processes), so the update does not depend on how items are split into batches.
        metrics: detached scalars for logging, each a mean over ``num_items`` (weighted the same way).
        num_items: tokens / pairs / images behind ``loss``.
        predictions, references: optional per-example tensors (eval only) for metrics that are not means
            of per-batch values (F1, Matthews correlation); the engine gathers them from every process and
            hands them to :meth:`Objective.compute_metrics`.
        num_inputs: what throughput is counted in (input tokens, words, images); defaults to ``num_items``.
            They differ for masked LM, whose loss covers only the ~15% selected tokens of each block.
    """

    loss: torch.Tensor
    num_items: int | torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    num_inputs: int | None = None
    predictions: torch.Tensor | None = None
    references: torch.Tensor | None = None


class Objective(nn.Module, abc.ABC):
    """Owns the model(s), heads and loss; ``accelerator.prepare`` wraps it once."""

    #: what ``StepOutput.num_inputs`` counts, for the progress bar and the ``train/<unit>_per_sec`` log key
    throughput_unit: str = "items"

    @abc.abstractmethod
    def forward(self, batch: Any) -> StepOutput:
        """Loss of one micro-batch."""

    def on_optimizer_step(self, step: int) -> None:
        """Called after each optimizer step with the new global step (momentum updates, schedules)."""

    def evaluate_batch(self, batch: Any) -> StepOutput:
        """Held-out evaluation of one batch; defaults to :meth:`forward` (called under ``torch.no_grad``)."""
        return self.forward(batch)

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        """Derive extra eval metrics (e.g. perplexity) from the item-weighted means in ``totals``."""
        return {}

    def compute_metrics(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        """Metrics over the whole eval set from gathered ``predictions`` / ``references`` (see StepOutput)."""
        return {}

    def configure_optimizer(self, config: Any) -> torch.optim.Optimizer | None:
        """Return an optimizer to use instead of the engine's AdamW (e.g. sparse SGD for word2vec), or None."""
        return None

    @abc.abstractmethod
    def export(self, output_dir: Path) -> None:
        """Write the pretrained artifact (a ``save_pretrained`` folder, word vectors...) into ``output_dir``."""

    def flops_per_input(self) -> float | None:
        """Training FLOPs per input (forward + backward), for the model-FLOPs-utilisation log (None: not logged)."""
        return None
