"""The contract between an objective and the training engine.

The engine never looks inside a batch: it hands each batch to :meth:`Objective.forward` and gets back a
:class:`StepOutput`. Everything family-specific (masking, views, negative sampling, momentum encoders,
queues, what the exported artifact is) lives in the objective.

Rules every objective follows (``tests/test_objective_contract.py`` checks them for every objective):

1. **All randomness of a step is drawn inside** :meth:`Objective.forward`, after the engine has seeded the
   step (the step's batches are fetched first), so it is a function of the step alone and a resumed run
   draws exactly what the uninterrupted run drew. Data loaders and collators draw nothing. Two sources:

   - what decides the fate of each example (which tokens are masked, the views and augmentations of an
     image, negatives, subsampling) comes from :attr:`Objective.rng`, a generator seeded from
     (seed, step) alone, the same in every process, drawn for the GLOBAL batch and sliced to this
     process's rows with :meth:`Objective.per_example`. Then one process with batch 2B draws exactly what
     two processes with batch B draw together, and their losses agree;
   - what is local to a computation (dropout inside a model) comes from torch's global RNG, which the
     engine seeds from (seed, step, rank).
2. **Evaluation never changes training state.** :meth:`Objective.evaluate_batch` runs under
   ``torch.no_grad`` with the objective in eval mode; methods with state (a MoCo queue) only update it in
   training mode. The engine also restores every buffer after an evaluation, so a slip cannot leak.
   During evaluation ``self.dist`` is the local context: held-out batches are ragged across processes,
   so each process scores its own batches (negatives included) and the engine reduces the sums.
3. **State the objective owns is checkpointed by the engine.** Tensors that must survive a restart (a
   queue, its pointer, a momentum encoder) are persistent buffers or frozen submodules: they are part of the
   objective's ``state_dict`` and so of every checkpoint. Anything else goes through
   :meth:`Objective.extra_state` / :meth:`Objective.load_extra_state` (JSON-able values and tensors, written
   as JSON and safetensors: checkpoints never hold pickles).
4. **Loss weighting.** ``StepOutput.loss`` is the MEAN over ``num_items`` local loss terms. The engine
   back-propagates ``loss * num_items`` and divides the summed gradient by the number of items of the
   whole optimizer step (all micro-batches, all processes). So the update is the gradient of the mean
   over every loss term of the global batch, whatever the batch layout.

   Multi-view batches: ``num_items`` counts loss terms, not examples. NT-Xent over ``N`` examples with two
   views has ``2N`` terms (each view is an anchor once), so ``num_items = 2N``. When negatives come from
   every process (``self.dist.all_gather``, which keeps gradients), each local term already sees the
   global batch; the gather's backward sums the gradient that other processes' terms send to this
   process's embeddings, and the engine's global normalisation then gives exactly the gradient of the
   single-process loss over the global batch.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from nlp_ssl.distributed import LOCAL, DistContext


@dataclass
class StepOutput:
    """What one forward pass returns.

    Attributes:
        loss: scalar, the MEAN loss over the ``num_items`` items behind it (see rule 4 above).
        metrics: detached scalars for logging, each a mean over ``num_items`` (weighted the same way).
        num_items: loss terms behind ``loss`` (tokens, pairs, views, images); an int or a 0-d tensor (a
            tensor avoids a device-to-host copy).
        predictions, references: optional per-example tensors (eval only) for metrics that are not means
            of per-batch values (F1, Matthews correlation); the engine gathers them from every process and
            hands them to :meth:`Objective.compute_metrics`.
        num_inputs: what throughput is counted in (input tokens, words, images); defaults to ``num_items``.
            They differ for masked LM, whose loss covers only the ~15% selected tokens of each block.
        updated: the objective already applied this micro-batch's update inside ``forward`` (a fused
            kernel that trains word by word, e.g. word2vec's on one CPU process): the engine does not
            back-propagate it, and its optimizer only keeps the learning-rate schedule.
    """

    loss: torch.Tensor
    num_items: int | torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    num_inputs: int | torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    references: torch.Tensor | None = None
    updated: bool = False


@dataclass
class OptimizerSetup:
    """What :meth:`Objective.configure_optimizer` may return instead of a plain optimizer.

    Attributes:
        optimizer: the optimizer to use (None: the engine's AdamW over ``param_groups``).
        param_groups: parameter groups for the engine's AdamW, each a dict with ``params`` and optional
            ``lr`` / ``weight_decay`` (e.g. a separate learning rate for a projection head).
        scheduler: an LR scheduler to use instead of the engine's ``lr_scheduler_type`` schedule; it is
            stepped once per optimizer step.
    """

    optimizer: torch.optim.Optimizer | None = None
    param_groups: list[dict[str, Any]] | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None


class Objective(nn.Module, abc.ABC):
    """Owns the model(s), heads and loss; ``accelerator.prepare`` wraps it once."""

    #: what ``StepOutput.num_inputs`` counts, for the progress bar and the ``train/<unit>_per_sec`` log key
    throughput_unit: str = "items"

    def __init__(self) -> None:
        super().__init__()
        #: rank, world size and gradient-preserving collectives; set once by the engine before training
        self.dist: DistContext = LOCAL
        #: the step's generator for per-example draws (rule 1); re-seeded by the engine before every step
        self.rng: torch.Generator = torch.Generator()

    def per_example(self, draw: Callable[[int], torch.Tensor], rows: int) -> torch.Tensor:
        """This process's rows of a draw made for the whole global batch (rule 1).

        Args:
            draw: ``draw(n)`` returns random values for ``n`` examples, ``[n, ...]``, drawn from ``self.rng``
                (e.g. ``lambda n: torch.rand(n, T, generator=self.rng, device=x.device)``).
            rows: examples in this process's batch.

        Returns:
            ``draw(rows * world_size)[offset : offset + rows]``: the same numbers for an example whether the
            global batch is processed by one process or split over several.
        """
        start = self.dist.offset(rows)
        return draw(rows * self.dist.world_size)[start:start + rows]

    @abc.abstractmethod
    def forward(self, batch: Any) -> StepOutput:
        """Loss of one micro-batch (training mode). Draw every random number here (rule 1)."""

    @abc.abstractmethod
    def export(self, output_dir: Path) -> None:
        """Write the pretrained artifact (a ``save_pretrained`` folder, word vectors...) into ``output_dir``.

        Under FSDP the engine calls ``export(output_dir, state_dict=full)`` with the objective's whole state
        gathered from the shards (keys as in ``self.state_dict()``); objectives that support sharded
        training take that keyword (see :func:`model_state`)."""

    # --- hooks with defaults ---------------------------------------------------------------------------
    def setup_distributed(self, dist: DistContext) -> None:
        """Called once by the engine after ``prepare``; keeps the context in ``self.dist``."""
        self.dist = dist

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        """Called after each optimizer step with the new global step (momentum updates, schedules)."""

    def evaluate_batch(self, batch: Any) -> StepOutput:
        """Held-out evaluation of one batch; defaults to :meth:`forward` (called under ``torch.no_grad``)."""
        return self.forward(batch)

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        """Derive extra eval metrics (e.g. perplexity) from the item-weighted means in ``totals``."""
        return {}

    def compute_metrics(self, predictions: torch.Tensor, references: torch.Tensor) -> dict[str, float]:
        """Metrics over the whole eval set from gathered ``predictions`` / ``references`` (see StepOutput).

        A pure function of its inputs: best-model selection is the engine's (``metric_for_best_model``).
        """
        return {}

    def configure_optimizer(self, config: Any) -> torch.optim.Optimizer | OptimizerSetup | None:
        """An optimizer, or parameter groups and / or a scheduler (:class:`OptimizerSetup`), or None for the
        engine's AdamW with weight-decay groups over every trainable parameter."""
        return None

    def compiled_modules(self) -> list[nn.Module]:
        """Modules ``torch_compile: true`` compiles in place (default: ``self.model`` if there is one)."""
        model = getattr(self, "model", None)
        return [model] if isinstance(model, nn.Module) else []

    def extra_state(self) -> dict[str, Any]:
        """State outside the ``state_dict`` to checkpoint: JSON-able values and tensors, nested in dicts."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned (called on resume, before the first step)."""

    def flops_per_input(self) -> float | None:
        """Training FLOPs per input (forward + backward), for the model-FLOPs-utilisation log (None: not logged)."""
        return None


def model_state(state_dict: dict[str, torch.Tensor] | None, prefix: str = "model.") -> dict[str, torch.Tensor] | None:
    """The entries of an objective's ``state_dict`` under ``prefix`` (the prefix removed), or None."""
    if state_dict is None:
        return None
    return {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
