"""The one runner: everything a training run does around its objective, written once.

    inputs   = pipeline.prepare_inputs(cfg)     read and check every input; nothing is written yet
    run_dir  = RunDirectory(output_dir).check()   fresh, resume from a checkpoint, finished, or refused
    accelerator, run_dir.prepare()               (a finished run is reported and left alone)
    data     = pipeline.build_data(ctx)          datasets + collator
    result   = pipeline.train(ctx, data)         default: the engine's Trainer on pipeline.build_objective()
      export: final/ atomically, then pipeline.on_export() and the model card from pipeline.card()
    print(pipeline.summary(ctx, outcome))

A pipeline supplies only what is specific to its family: a typed config, how to read its inputs, how to
build its data and its objective, what the card says and what the summary prints. A new self-supervised
method is an :class:`~nlp_ssl.objectives.base.Objective` and a pipeline of a few lines (README, "Adding an
objective").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import Dataset, IterableDataset

from nlp_ssl.config import TrainingConfig, to_dict
from nlp_ssl.atomic import atomic_write_text
from nlp_ssl.engine.preemption import RESUMABLE_EXIT, die_with_launcher
from nlp_ssl.engine.run_dir import RunDirectory, RunLock
from nlp_ssl.engine.trainer import TrainResult, Trainer, make_accelerator
from nlp_ssl.hub.model_card import CardInfo, write_model_card
from nlp_ssl.hub.portable import portable_command
from nlp_ssl.objectives.base import Objective

C = TypeVar("C", bound=TrainingConfig)


@dataclass
class RunData:
    """What a pipeline's data step returns.

    Attributes:
        train: map-style (shuffled per epoch from (seed, epoch)) or iterable training data.
        eval: held-out data evaluated every ``eval_steps`` and at the end (optional).
        collate_fn: list of examples -> the batch the objective expects (draws no random numbers).
        description: one line printed before training (``data: ptb: 887,521 tokens ...``).
        extra: anything else the pipeline's later steps need (tokenizer, vocabulary...).
    """

    train: Dataset | IterableDataset | Any
    eval: Dataset | None = None
    collate_fn: Callable[[list[Any]], Any] | None = None
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext(Generic[C]):
    """One run's shared objects, handed to every pipeline hook."""

    config: C
    run_dir: RunDirectory
    accelerator: Accelerator
    resume_from: Path | None
    inputs: Any
    command: str
    trainer: Trainer | None = None
    data: RunData | None = None

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process


@dataclass
class RunOutcome:
    """The result of :func:`run`: where the export is and its evaluation, plus pipeline extras."""

    step: int
    final_dir: Path
    eval_metrics: dict[str, float]
    stopped_by_time: bool
    is_main_process: bool
    train_seconds: float = 0.0
    finished_earlier: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    inputs: Any = None  # what the pipeline's prepare_inputs returned


class Pipeline(Generic[C]):
    """What a recipe supplies to :func:`run`. Override :meth:`build_data` and :meth:`build_objective` (or
    :meth:`train` for a backend that is not the engine); the other hooks have useful defaults."""

    def prepare_inputs(self, cfg: C) -> Any:
        """Read and check every input (corpus, checkpoint, tokenizer) and derive config values that depend
        on them (e.g. ``max_steps`` from epochs). Runs before anything is written; returns ``ctx.inputs``."""
        return None

    def build_data(self, ctx: RunContext[C]) -> RunData:
        raise TypeError(f"{type(self).__name__} must define build_data")

    def build_objective(self, ctx: RunContext[C], data: RunData) -> Objective:
        raise TypeError(f"{type(self).__name__} trains with the engine, so it must define build_objective")

    def describe_objective(self, objective: Objective) -> str:
        """The line printed about the model (default: class and parameter count)."""
        model = getattr(objective, "model", objective)
        params = sum(p.numel() for p in objective.parameters())
        return f"model: {type(model).__name__}, {params / 1e6:.2f}M parameters"

    def train(self, ctx: RunContext[C], data: RunData) -> TrainResult:
        """Train and export ``final/`` (default: the engine on :meth:`build_objective`)."""
        set_seed(ctx.config.seed)  # initial weights depend only on the seed, not on data loading
        objective = self.build_objective(ctx, data)
        ctx.accelerator.print(self.describe_objective(objective))
        trainer = Trainer(ctx.config, objective, data.train, run_dir=ctx.run_dir, accelerator=ctx.accelerator,
                          eval_dataset=data.eval, collate_fn=data.collate_fn, full_config=to_dict(ctx.config),
                          on_export=lambda folder, metrics: finish_export(self, ctx, folder, metrics))
        ctx.trainer = trainer
        return trainer.train(resume_from=ctx.resume_from, end_process_group=self.end_process_group)

    #: False keeps the process group for further runs in the same process (fine-tuning seeds).
    end_process_group: bool = True

    def on_export(self, ctx: RunContext[C], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        """Add files to the export (samples, evaluations) and return its final metrics (default: as is)."""
        return metrics

    def card(self, ctx: RunContext[C], folder: Path, metrics: dict[str, float]) -> CardInfo | None:
        """What the model card says; None writes no card."""
        return None

    def outcome_extra(self, ctx: RunContext[C], final_dir: Path) -> dict[str, Any]:
        """Pipeline-specific results for the summary, read back from ``final_dir`` (works for runs that
        finished earlier too)."""
        return {}

    def summary(self, ctx: RunContext[C], outcome: RunOutcome) -> str:
        """What the recipe prints at the end."""
        lines = [f"Evaluation after {outcome.step} steps:"]
        lines += [f"  {k}: {v:.4f}" for k, v in sorted(outcome.eval_metrics.items())]
        lines.append(f"Exported: {outcome.final_dir.resolve()}")
        return "\n".join(lines)


def finish_export(pipeline: Pipeline, ctx: RunContext, folder: Path, metrics: dict[str, float]) -> None:
    """The pipeline's part of an export (extra files, final metrics, the card), inside the temp folder."""
    final_metrics = pipeline.on_export(ctx, folder, metrics)
    if final_metrics is not metrics:
        atomic_write_text(folder / "eval_results.json", json.dumps(final_metrics, indent=2) + "\n")
    info = pipeline.card(ctx, folder, final_metrics)
    if info is not None:
        write_model_card(folder, info)


def run(pipeline: Pipeline[C], cfg: C) -> RunOutcome:
    """Run ``pipeline`` with ``cfg``: check inputs and the output folder, train, export, print the summary.

    Raises:
        UserError: bad input or a conflicting output folder; nothing has been written then.
        SystemExit: with :data:`~nlp_ssl.engine.preemption.RESUMABLE_EXIT` when a signal stopped the run
            after its checkpoint (rerun the same command to continue).
    """
    die_with_launcher()
    inputs = pipeline.prepare_inputs(cfg)
    accelerator = make_accelerator(cfg, Path(cfg.output_dir))
    run_dir = RunDirectory(cfg.output_dir, to_dict(cfg), cfg.overwrite_output_dir, report=accelerator.print)
    resume_from = run_dir.check()
    ctx = RunContext(cfg, run_dir, accelerator, resume_from, inputs, portable_command(sys.argv))
    if run_dir.finished:
        outcome = _finished_outcome(pipeline, ctx)
        if accelerator.is_main_process:
            print(pipeline.summary(ctx, outcome))
        return outcome
    # Every process has read the folder before the main process writes to it: a process that looked later
    # would see the marker half-written (a temporary file next to the lock) and refuse the folder.
    accelerator.wait_for_everyone()
    lock = RunLock(run_dir.root)
    try:
        if accelerator.is_main_process:
            lock.acquire()  # before the first write: a second run into this folder is refused here
            run_dir.prepare()
        accelerator.wait_for_everyone()
        data = pipeline.build_data(ctx)
        ctx.data = data
        if data.description:
            accelerator.print(data.description)
        result = pipeline.train(ctx, data)
    finally:
        lock.release()
    if result.stopped_by_signal is not None:
        raise SystemExit(RESUMABLE_EXIT)
    outcome = RunOutcome(result.step, result.final_dir, result.eval_metrics, result.stopped_by_time,
                         accelerator.is_main_process, _train_seconds(result.final_dir),
                         extra=pipeline.outcome_extra(ctx, result.final_dir) if accelerator.is_main_process else {},
                         inputs=inputs)
    if accelerator.is_main_process:
        print(pipeline.summary(ctx, outcome))
    return outcome


def _finished_outcome(pipeline: Pipeline, ctx: RunContext) -> RunOutcome:
    """A run that finished earlier with this config: report its results instead of training again."""
    final = ctx.run_dir.final
    state = json.loads((final / "trainer_state.json").read_text(encoding="utf-8"))
    metrics_file = final / "eval_results.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    ctx.accelerator.print(f"{ctx.run_dir.root} already holds this finished run (step {state.get('step')}); "
                          "nothing to do (raise max_steps to continue it, or pass overwrite_output_dir=true)")
    return RunOutcome(int(state.get("step", 0)), final, metrics, False, ctx.accelerator.is_main_process,
                      float(state.get("train_seconds", 0.0)), finished_earlier=True,
                      extra=pipeline.outcome_extra(ctx, final), inputs=ctx.inputs)


def _train_seconds(final: Path) -> float:
    try:
        return float(json.loads((final / "trainer_state.json").read_text(encoding="utf-8")).get("train_seconds", 0.0))
    except (OSError, ValueError):
        return 0.0
