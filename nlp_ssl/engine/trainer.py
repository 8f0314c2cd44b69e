"""The one training loop every recipe uses.

The engine owns everything that is not specific to an objective: device placement and data parallelism
(Accelerate), gradient accumulation, token-weighted loss normalisation, clipping, optimizer and schedule,
seeding, logging, periodic evaluation, best-model selection, checkpoints with exact resume, a wall-clock
budget and the final export. It never looks inside a batch; the :class:`~nlp_ssl.objectives.base.Objective`
does (see its module for the rules objectives follow).

A step, in order: fetch the step's micro-batches; seed the RNG from (seed, step, rank); forward and backward
each micro-batch (gradient all-reduce only on the last); divide the summed gradients by the step's global
item count; clip; optimizer and scheduler step; ``on_optimizer_step``. Nothing in a step waits for the
device: item counts, throughput and the time budget are read at log steps only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from nlp_ssl.config import TrainingConfig
from nlp_ssl.distributed import LOCAL, DistContext
from nlp_ssl.atomic import atomic_directory, atomic_write_text, share_with_group
from nlp_ssl.engine.best import BestModel
from nlp_ssl.engine.flops import peak_flops
from nlp_ssl.engine.memory import keep_freed_memory
from nlp_ssl.engine.optim import build_optimizer, build_scheduler
from nlp_ssl.engine.preemption import StopRequest
from nlp_ssl.engine.run_dir import RunDirectory, checkpoint_manifest, flatten_config
from nlp_ssl.engine.sampler import EpochShuffleSampler
from nlp_ssl.engine.state_io import load_tree, save_tree
from nlp_ssl.errors import UserError, first_line
from nlp_ssl.hub.publish import Publisher
from nlp_ssl.objectives.base import Objective, OptimizerSetup, StepOutput


class _DropSharedTensorNotice(logging.Filter):
    """Tied weights (the MLM decoder is the embedding matrix) are saved once by accelerate, which warns at
    every checkpoint; the model re-ties them on load by construction, so the notice says nothing here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in str(record.getMessage())


logging.getLogger("accelerate.utils.other").addFilter(_DropSharedTensorNotice())

#: Names of the engine's own files inside a checkpoint folder (beside what ``accelerator.save_state`` writes).
ENGINE_STATE = "engine_state"


@dataclass
class TrainState:
    """Where the run is; checkpointed with the model so a restart continues at the same batch."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed by this process
    items_seen: float = 0.0  # loss terms (e.g. masked tokens)
    inputs_seen: float = 0.0  # what throughput counts (input tokens, words, images)
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k in self.__dict__})


@dataclass
class TrainResult:
    step: int
    final_dir: Path
    eval_metrics: dict[str, float]
    stopped_by_time: bool
    stopped_by_signal: str | None = None  # "SIGTERM" / "SIGINT": checkpointed, no export; rerun to continue


class TrainingDiverged(UserError):
    """The loss or the gradient norm became non-finite; the run stopped before saving a bad state."""


def make_accelerator(config: TrainingConfig, output_dir: Path) -> Accelerator:
    """One Accelerator per run; hardware comes from ``accelerate launch``, precision from the config."""
    keep_freed_memory()  # process-wide: steps reuse freed blocks instead of page-faulting fresh ones
    trackers = [t for t in config.report_to if t != "none"]
    return Accelerator(
        # Without an accelerator, ask for CPU explicitly: then `accelerate launch --multi_gpu --num_processes N`
        # (torchrun underneath) gives N data-parallel CPU processes over gloo instead of N lone ones.
        cpu=config.use_cpu or not _has_accelerator_device(),
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        # Uneven last eval batches are fine: we sum losses and items, so no sample may be duplicated.
        dataloader_config=DataLoaderConfiguration(even_batches=False),
        # The schedule counts optimizer steps (max_steps), which every process takes alike; Accelerate's
        # default would advance it num_processes times per step and end the decay early.
        step_scheduler_with_optimizer=False,
    )


def _has_accelerator_device() -> bool:
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or bool(mps and mps.is_available()) or bool(xpu and xpu.is_available())


class Trainer:
    """Train ``objective`` on ``train_dataset`` for ``config.max_steps`` optimizer steps.

    Args:
        config: engine settings.
        objective: owns model, heads and loss (see :class:`Objective`).
        train_dataset: map-style (shuffled per epoch from (seed, epoch)) or iterable.
        eval_dataset: optional held-out data, evaluated every ``eval_steps`` and at the end.
        collate_fn: turns a list of examples into the batch the objective expects (draws no random numbers).
        run_dir: the output folder (already checked and prepared by the runner).
        accelerator: the run's Accelerator (from :func:`make_accelerator`).
        full_config: the whole recipe config, for trackers.
        on_export: extra files to put into the exported folder (model card, samples), given the folder and
            the exported evaluation's metrics.
    """

    def __init__(
        self,
        config: TrainingConfig,
        objective: Objective,
        train_dataset: Dataset | IterableDataset,
        *,
        run_dir: RunDirectory,
        accelerator: Accelerator,
        eval_dataset: Dataset | None = None,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        full_config: dict[str, Any] | None = None,
        on_export: Callable[[Path, dict[str, float]], None] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.accelerator = accelerator
        self.full_config = full_config or {}
        self.on_export = on_export
        self.state = TrainState()
        self.best = (BestModel(config.metric_for_best_model, config.greater_is_better)
                     if config.metric_for_best_model else None)
        self.publisher = Publisher(config, run_dir.root, is_main_process=accelerator.is_main_process,
                                   export=lambda folder: self.unwrapped.export(folder), print_fn=accelerator.print)
        self.stop = StopRequest()
        self.skipped_steps = 0
        self._first_bad = torch.full((), -1, dtype=torch.long, device=accelerator.device)

        self._sampler: EpochShuffleSampler | None = None
        train_loader = self._train_loader(train_dataset, collate_fn)
        eval_loader = None
        if eval_dataset is not None:
            eval_loader = DataLoader(eval_dataset, batch_size=config.per_device_eval_batch_size,
                                     shuffle=False, collate_fn=collate_fn, num_workers=config.dataloader_num_workers)
        optimizer, scheduler = self._optimizer_and_scheduler(objective)
        if config.torch_compile:
            for module in objective.compiled_modules():
                module.compile()  # in place: parameter names and state_dict keys stay the same
        # One prepare for everything trainable: DDP wraps the objective (model + heads) once.
        prepared = accelerator.prepare(objective, optimizer, train_loader, scheduler,
                                       *([eval_loader] if eval_loader is not None else []))
        self.objective, self.optimizer, self.train_loader, self.scheduler = prepared[:4]
        self.eval_loader = prepared[4] if eval_loader is not None else None
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            raise UserError("DeepSpeed takes the optimizer step inside backward, which breaks this engine's "
                            "token-weighted normalisation over micro-batches and processes; for sharded training "
                            "use recipes/configs/accelerate/fsdp.yaml")
        # Unwrapped once: accelerate's unwrap_model probes installed packages on every call.
        self._unwrapped: Objective = accelerator.unwrap_model(self.objective)
        self.unwrapped.setup_distributed(DistContext(accelerator.process_index, accelerator.num_processes))
        self._rng = torch.Generator(device=accelerator.device)
        self.unwrapped.rng = self._rng
        self._peak: float | None = None

    # ------------------------------------------------------------------------------------------ set-up
    def _train_loader(self, dataset: Dataset | IterableDataset, collate_fn: Callable | None) -> DataLoader:
        cfg = self.config
        if isinstance(dataset, IterableDataset):
            return DataLoader(dataset, batch_size=cfg.per_device_train_batch_size, collate_fn=collate_fn,
                              num_workers=cfg.dataloader_num_workers)
        self._sampler = EpochShuffleSampler(len(dataset), seed=cfg.seed)  # type: ignore[arg-type]
        # drop_last keeps every batch the same shape on every process (no ragged final batch in DDP).
        batch_sampler = BatchSampler(self._sampler, cfg.per_device_train_batch_size, drop_last=True)
        return DataLoader(dataset, batch_sampler=batch_sampler, collate_fn=collate_fn,
                          num_workers=cfg.dataloader_num_workers)

    def _optimizer_and_scheduler(self, objective: Objective):
        setup = objective.configure_optimizer(self.config)
        if isinstance(setup, torch.optim.Optimizer):
            setup = OptimizerSetup(optimizer=setup)
        setup = setup or OptimizerSetup()
        optimizer = setup.optimizer or build_optimizer(objective, self.config, setup.param_groups)
        scheduler = setup.scheduler or build_scheduler(optimizer, self.config)
        return optimizer, scheduler

    @property
    def unwrapped(self) -> Objective:
        return self._unwrapped

    def _seed_step(self, step: int, salt: int = 0) -> None:
        """Make every random draw of a step (dropout, masking, views, negatives) a function of (seed, step, rank).

        Re-seeding per step is what makes resume exact without replaying RNG history: a restarted run
        reaches step ``k`` with the same generator state as the uninterrupted one.
        """
        rank = self.accelerator.process_index
        shared = (self.config.seed * 1_000_003 + step * 1_009 + salt) % (2**63 - 1)
        local = (shared + rank * 7) % (2**63 - 1)  # dropout and other local draws
        if self.accelerator.device.type == "cpu":
            # torch.manual_seed would also queue a lazy CUDA seeding with a captured traceback: a
            # millisecond per step, as long as a fast word2vec step.
            torch.default_generator.manual_seed(local)
        else:
            torch.manual_seed(local)
        self._rng.manual_seed(shared)  # per-example draws: the same in every process (Objective.rng)

    def _batches(self) -> Iterator[Any]:
        """Micro-batches forever, epoch after epoch, resuming mid-epoch after a restart."""
        while True:
            if self._sampler is not None:
                self._sampler.set_epoch(self.state.epoch)
            loader = self.train_loader
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(self.state.epoch)
            if self.state.batches_in_epoch:
                loader = self.accelerator.skip_first_batches(loader, self.state.batches_in_epoch)
            produced = False
            for batch in loader:
                produced = True
                self.state.batches_in_epoch += 1
                yield batch
            if not produced and self.state.batches_in_epoch == 0:
                raise RuntimeError("the training data loader produced no batch: the dataset is smaller than one batch")
            self.state.epoch += 1
            self.state.batches_in_epoch = 0

    # ------------------------------------------------------------------------------------------ the loop
    def train(self, resume_from: Path | None = None, end_process_group: bool = True) -> TrainResult:
        """Train to ``max_steps`` (or the time budget, or a stop signal), evaluate, export ``final/``.

        ``end_process_group=False`` keeps the distributed process group alive (trackers are still closed) so the
        same process can run further trainings, e.g. one per fine-tuning seed; the caller ends it.
        """
        cfg, acc = self.config, self.accelerator
        self._resume(resume_from)
        acc.init_trackers("nlp_ssl", config=flatten_config(self.full_config))
        self._metrics_file = self.run_dir.metrics_file if acc.is_main_process else None
        self._bar = tqdm(total=cfg.max_steps, initial=self.state.step, disable=not acc.is_local_main_process,
                         desc="train", dynamic_ncols=True)
        self._window = _Window(acc.device)
        self._clock = _Clock(self.state.train_seconds)
        eval_metrics: dict[str, float] = {}
        stopped_by_time, stopped_by = False, None

        batches = self._batches()
        self.objective.train()
        self.stop.install()
        try:
            while self.state.step < cfg.max_steps:
                self._train_step(batches)
                step = self.state.step
                at_log = step % cfg.logging_steps == 0 or step == cfg.max_steps
                if at_log:
                    self._log_train()
                    self._check_finite()
                if self.eval_loader is not None and step % cfg.eval_steps == 0 and step < cfg.max_steps:
                    eval_metrics = self._evaluate_and_log()
                out_of_time, signalled = self._should_stop(at_log)
                if step % cfg.save_steps == 0 or out_of_time or signalled:
                    self.save_checkpoint()
                if signalled and step < cfg.max_steps:
                    stopped_by = self.stop.signal_name or "a signal on another process"
                    break
                if out_of_time and step < cfg.max_steps:
                    stopped_by_time = True
                    acc.print(f"Wall-clock budget of {cfg.max_time_minutes} min reached at step {step}; "
                              "rerun the same command to continue.")
                    break
        finally:
            self.stop.restore()
            self._bar.close()
        if stopped_by is not None:
            acc.print(f"Stopped by {stopped_by} at step {self.state.step} with a checkpoint; rerun the same command "
                      "to continue.")
            self.publisher.close()
            self._end(end_process_group)
            return TrainResult(self.state.step, self.run_dir.final, {}, False, stopped_by)

        if self.eval_loader is not None:
            eval_metrics = self._evaluate_and_log()
        self._check_finite()
        if self.state.step % cfg.save_steps != 0 and not stopped_by_time:
            self.save_checkpoint()
        if self.best is not None and self.best.step is not None:
            eval_metrics = {**self.best.metrics, "selected_step": float(self.best.step)}
        try:
            final_dir = self.export(eval_metrics, complete=not stopped_by_time)
            self.publisher.on_final(final_dir)
        finally:
            self.publisher.close()
        self._end(end_process_group)
        return TrainResult(self.state.step, final_dir, eval_metrics, stopped_by_time)

    def _end(self, end_process_group: bool) -> None:
        if end_process_group:
            self.accelerator.end_training()
        else:
            for tracker in self.accelerator.trackers:
                tracker.finish()

    def _resume(self, resume_from: Path | None) -> None:
        """Load ``resume_from``; if it fails to load, name it and fall back to the checkpoint before it."""
        acc = self.accelerator
        while resume_from is not None:
            try:
                self.load_checkpoint(resume_from)
            except Exception as err:  # noqa: BLE001 - any failure to read a checkpoint means: use an older one
                acc.print(f"warning: checkpoint {resume_from} could not be loaded ({first_line(err, 120)}); "
                          "falling back to the one before it")
                resume_from = self.run_dir.latest_checkpoint(before=RunDirectory.step_of(resume_from))
                self.state = TrainState()
                continue
            acc.print(f"Resumed from {resume_from} (step {self.state.step}, epoch {self.state.epoch})")
            break
        if acc.is_main_process:
            self.run_dir.trim_metrics(self.state.step)  # replayed steps must not log twice
        acc.wait_for_everyone()

    def _train_step(self, batches: Iterator[Any]) -> None:
        """One optimizer step over ``gradient_accumulation_steps`` micro-batches."""
        cfg, acc = self.config, self.accelerator
        # Fetch first, then seed: creating a DataLoader iterator draws from the global RNG, and a resumed
        # run creates one at a different step than an uninterrupted run does.
        micro_batches = [next(batches) for _ in range(cfg.gradient_accumulation_steps)]
        self._seed_step(self.state.step)
        step_items = torch.zeros((), device=acc.device)
        outputs: list[StepOutput] = []
        for micro, batch in enumerate(micro_batches):
            last = micro == cfg.gradient_accumulation_steps - 1
            # Skip the gradient all-reduce on all but the last micro-batch of the step.
            sync = contextlib.nullcontext() if last else acc.no_sync(self.objective)
            with sync, acc.autocast():
                out = self.objective(batch)
                items = torch.as_tensor(out.num_items, device=acc.device, dtype=torch.float32)
                # Backpropagate the SUM over items; it is divided by the step's global item count below.
                if not out.updated:
                    acc.backward(out.loss * items)
            step_items += items
            outputs.append(out)
        # Token-weighted normalisation: sum of losses / items over all micro-batches and processes
        # (DDP already averaged gradients over processes, hence the factor num_processes). The all-reduce
        # runs on the device; nothing here waits for it.
        global_items = acc.reduce(step_items, reduction="sum")
        scale = acc.num_processes / global_items.clamp(min=1.0)
        grads = [p.grad for p in self.objective.parameters() if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale.to(grads[0].dtype))
        grad_norm = None
        if cfg.max_grad_norm > 0:
            grad_norm = acc.clip_grad_norm_(self.objective.parameters(), cfg.max_grad_norm)
        # Divergence guard, on the device: remember the first step whose loss or gradient norm is not finite.
        bad = ~torch.isfinite(torch.stack([out.loss.detach().float().sum() for out in outputs]).sum())
        if grad_norm is not None:
            bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=acc.device))
        if cfg.on_nonfinite == "skip" and bool(bad.item()):  # skip mode pays one device sync per step
            self._skip_step()
        else:
            self._first_bad = torch.where(bad & (self._first_bad < 0), self.state.step + 1, self._first_bad)
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.unwrapped.on_optimizer_step(self.state.step, cfg.max_steps)
        self._window.add(outputs, grad_norm, global_items)
        self._bar.update(1)

    def _should_stop(self, at_log: bool) -> tuple[bool, bool]:
        """``(out of wall-clock budget, stop signal received)``, agreed by every process.

        A process that stopped alone would leave the others waiting in a collective, so with several processes
        both are all-reduced, at log steps only (no per-step synchronisation).
        """
        budget = self.config.max_time_minutes
        over = budget is not None and self._clock.session_seconds() > budget * 60
        signalled = self.stop.requested
        acc = self.accelerator
        if acc.num_processes == 1:
            return over, signalled
        if not at_log:
            return False, False
        flags = acc.reduce(torch.tensor([float(over), float(signalled)], device=acc.device), reduction="sum")
        return bool(flags[0].item()), bool(flags[1].item())

    def _skip_step(self) -> None:
        """``on_nonfinite: skip``: drop this step's update, up to ``max_skipped_steps`` times in a run."""
        self.skipped_steps += 1
        self.accelerator.print(f"warning: skipped step {self.state.step + 1}: non-finite loss or gradient norm "
                               f"({self.skipped_steps} of at most {self.config.max_skipped_steps})")
        if self.skipped_steps > self.config.max_skipped_steps:
            self._first_bad.fill_(self.state.step + 1)
            self._check_finite()

    def _check_finite(self) -> None:
        """Stop (before anything is saved from a bad state) if a step's loss or gradient norm was not finite."""
        first_bad = int(self._first_bad.item())
        if first_bad < 0:
            return
        good = self.run_dir.latest_checkpoint(quiet=True)
        kept = f"the last good checkpoint is {good}" if good is not None else "no checkpoint was written before it"
        raise TrainingDiverged(
            f"training diverged at step {first_bad}: the loss or the gradient norm is not finite; {kept}; lower "
            f"learning_rate (now {self.config.learning_rate:g}) or raise warmup_steps (now {self.config.warmup_steps}), "
            "then rerun with overwrite_output_dir=true or another output_dir")

    # ------------------------------------------------------------------------------------------ logging
    def _log_train(self) -> None:
        acc = self.accelerator
        unit = self.unwrapped.throughput_unit
        record, items, inputs, seconds = self._window.reduce(acc)  # the one device sync between log steps
        self.state.items_seen += items
        self.state.inputs_seen += inputs
        self.state.train_seconds = self._clock.total_seconds()
        record["train/lr"] = self.scheduler.get_last_lr()[0]
        record["train/epoch"] = self.state.epoch + self._epoch_fraction()
        if seconds > 0:
            rate = inputs / seconds
            record[f"train/{unit}_per_sec"] = rate
            flops_per_input = self.unwrapped.flops_per_input()
            if flops_per_input and acc.is_main_process:
                flops = flops_per_input * rate
                record["perf/tflops"] = flops / 1e12
                record["perf/mfu"] = flops / (self._peak_flops() * _machines(acc))
        self._log(record)
        self._bar.set_postfix({"loss": f"{record.get('train/loss', float('nan')):.4f}",
                               f"{unit}/s": f"{record.get(f'train/{unit}_per_sec', 0):,.0f}"})

    def _peak_flops(self) -> float:
        if self._peak is None:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.mixed_precision, torch.float32)
            self._peak = peak_flops(self.accelerator.device, dtype, self.config.peak_flops)
        return self._peak

    def _epoch_fraction(self) -> float:
        try:
            return self.state.batches_in_epoch / max(1, len(self.train_loader))
        except TypeError:
            return 0.0

    def _log(self, record: dict[str, float]) -> None:
        record = {"step": self.state.step, **{k: v for k, v in record.items() if k != "step"}}
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
        if self._metrics_file is not None:
            with self._metrics_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------------------------------ evaluation
    def _evaluate_and_log(self) -> dict[str, float]:
        metrics = self.evaluate()
        self._log(metrics)
        if self.best is not None and self.best.update(self.state.step, metrics, self._model_state()):
            self.accelerator.print(f"best {self.best.metric} so far: {self.best.score:.4f} (step {self.state.step})")
        self.objective.train()
        return metrics

    def _model_state(self) -> dict[str, torch.Tensor]:
        return self.accelerator.get_state_dict(self.objective)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Item-weighted means of the objective's eval loss and metrics over the whole eval set.

        Evaluation leaves training state as it found it: the objective's buffers (queues, running statistics)
        are restored afterwards, and the next step re-seeds the RNG anyway.
        """
        acc = self.accelerator
        objective = self.unwrapped
        objective.eval()
        buffers = {name: buf.clone() for name, buf in objective.named_buffers()}
        # Held-out batches are ragged across processes (even_batches=False) and a process may have one batch
        # fewer: a collective inside the objective would pair tensors of different sizes or wait forever, so
        # each process scores its own batches (negatives, queues) and only the sums below are reduced.
        dist_context, objective.dist = objective.dist, LOCAL
        # A fixed seed makes stochastic evaluation (e.g. which tokens are masked) the same at every step.
        self._seed_step(0, salt=12345)
        sums: dict[str, torch.Tensor] = {}
        predictions: list[torch.Tensor] = []
        references: list[torch.Tensor] = []
        items = torch.zeros((), device=acc.device, dtype=torch.float64)
        try:
            for index, batch in enumerate(tqdm(self.eval_loader, desc="eval", leave=False,
                                               disable=not acc.is_local_main_process)):
                if self.config.max_eval_batches is not None and index >= self.config.max_eval_batches:
                    break
                with acc.autocast():
                    out = objective.evaluate_batch(batch)
                n = torch.as_tensor(out.num_items, device=acc.device, dtype=torch.float64)
                items += n
                if out.predictions is not None:
                    # Ragged per process (even_batches=False), so no padding sample is counted twice.
                    predictions.append(_gather_ragged(acc, out.predictions))
                    references.append(_gather_ragged(acc, out.references))
                for name, value in {"loss": out.loss, **out.metrics}.items():
                    sums[name] = sums.get(name, torch.zeros((), device=acc.device, dtype=torch.float64)) + value.detach().double() * n
        finally:
            objective.dist = dist_context
        for name, buf in objective.named_buffers():
            if name in buffers:
                buf.copy_(buffers[name])
        names = sorted(sums)
        stacked = torch.stack([sums[n] for n in names] + [items]) if names else items.reshape(1)
        total = acc.reduce(stacked, reduction="sum")
        count = float(total[-1].item())
        if count == 0:
            # A loss over nothing is no measurement (perplexity would read 1.0): say so and report none.
            acc.print("warning: the evaluation scored no items (e.g. no token of the held-out text could be "
                      "masked); check the held-out data and the tokenizer")
            return {"eval/items": 0.0, "step": self.state.step}
        means = {n: float(total[i].item()) / count for i, n in enumerate(names)}
        result = {f"eval/{k}": v for k, v in means.items()}
        result.update({f"eval/{k}": v for k, v in objective.eval_summary(means).items()})
        if predictions:
            computed = objective.compute_metrics(torch.cat(predictions), torch.cat(references))
            result.update({f"eval/{k}": float(v) for k, v in computed.items()})
        result["eval/items"] = count
        result["step"] = self.state.step
        return result

    # ------------------------------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_<N>`` atomically (every process writes into a temp folder first).

        Accelerate writes model, optimizer, scheduler and RNG states; the engine adds its own state (train
        position, best model, the objective's extra state) as JSON + safetensors, and writes
        ``engine_state.json`` last, with the size of every file: a folder without it, or whose files do not
        match it, is not a checkpoint to resume from. A full disk stops the run with one line; earlier
        checkpoints are untouched.
        """
        self._check_finite()  # never checkpoint a diverged state
        acc = self.accelerator
        target = self.run_dir.checkpoints / f"step_{self.state.step}"
        tmp = self.run_dir.checkpoints / f".step_{self.state.step}.tmp"
        self.state.train_seconds = self._clock.total_seconds()
        engine_state = self._engine_state()
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        try:
            acc.save_state(str(tmp), safe_serialization=True)
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_tree(engine_state, tmp, ENGINE_STATE, then=lambda: {"files": checkpoint_manifest(tmp)})
                share_with_group(tmp)
        except Exception as err:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
            if _disk_full(err):
                raise UserError(f"no space left on the device while writing checkpoint step {self.state.step} in "
                                f"{self.run_dir.checkpoints}; earlier checkpoints are intact: free space and rerun "
                                "the same command") from None
            raise
        acc.wait_for_everyone()
        if acc.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            self.run_dir.prune_checkpoints(self.config.save_total_limit)
            self.publisher.on_checkpoint(target, self.state.step)
        acc.wait_for_everyone()
        return target

    def _engine_state(self) -> dict[str, Any]:
        self._window.flush_items(self.state, self.accelerator)
        return {"train_state": self.state.state_dict(),
                "best": self.best.state_tree() if self.best is not None else None,
                "objective": self.unwrapped.extra_state()}

    def load_checkpoint(self, folder: Path) -> None:
        """Restore everything :meth:`save_checkpoint` wrote."""
        self.accelerator.load_state(str(folder))
        tree = load_tree(Path(folder), ENGINE_STATE) or {}
        self.state.load_state_dict(tree.get("train_state") or {})
        if self.best is not None and tree.get("best"):
            self.best.load_state_tree(tree["best"])
        if tree.get("objective"):
            self.unwrapped.load_extra_state(tree["objective"])

    def export(self, eval_metrics: dict[str, float], complete: bool) -> Path:
        """Write ``final/`` atomically: the objective's artifact, trainer state and eval results.

        With ``metric_for_best_model`` the best evaluation's weights are loaded back first, so the export and
        ``eval_results.json`` describe the same model.
        """
        acc = self.accelerator
        self._window.flush_items(self.state, acc)
        sharded = acc.distributed_type == DistributedType.FSDP
        full_state = None
        if self.best is not None and self.best.weights is not None:
            if sharded:
                full_state = self.best.weights  # already gathered whole when it was taken
            else:
                self.unwrapped.load_state_dict(self.best.weights)
        elif sharded:
            full_state = acc.get_state_dict(self.objective)  # a collective: every process gathers its shards
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {"step": self.state.step, "max_steps": self.config.max_steps, "complete": complete,
                     "epoch": self.state.epoch, "train_seconds": round(self.state.train_seconds, 4),
                     "items_seen": self.state.items_seen, "inputs_seen": self.state.inputs_seen,
                     "input_unit": self.unwrapped.throughput_unit}
            write_artifact = (self.unwrapped.export if full_state is None
                              else lambda folder: self.unwrapped.export(folder, state_dict=full_state))
            try:
                write_final(self.run_dir.final, write_artifact, state, eval_metrics, self.on_export)
            except Exception as err:
                if _disk_full(err):
                    raise UserError(f"no space left on the device while writing {self.run_dir.final}; the checkpoints "
                                    "are intact: free space and rerun the same command to export") from None
                raise
        acc.wait_for_everyone()
        return self.run_dir.final


def write_final(final: Path, write_artifact: Callable[[Path], None], trainer_state: dict[str, Any],
                eval_metrics: dict[str, float], on_export: Callable[[Path, dict[str, float]], None] | None = None) -> None:
    """Write ``final/`` atomically: the artifact, ``trainer_state.json``, ``eval_results.json``, then
    ``on_export``'s files (card, samples), all in a temporary folder renamed into place at the end."""
    with atomic_directory(final, replace=True) as tmp:
        write_artifact(tmp)
        atomic_write_text(tmp / "trainer_state.json", json.dumps(trainer_state, indent=2) + "\n")
        numbers = {k: float(v) for k, v in eval_metrics.items() if k != "step" and isinstance(v, (int, float))}
        clean = {k: v for k, v in numbers.items() if math.isfinite(v)}
        # Non-finite results are reported as such (JSON has no NaN), never dropped without a word.
        reported = {k: (v if math.isfinite(v) else str(v)) for k, v in numbers.items()}
        if len(clean) < len(numbers):
            print(f"warning: non-finite evaluation results: {', '.join(sorted(set(numbers) - set(clean)))}")
        atomic_write_text(tmp / "eval_results.json", json.dumps(reported, indent=2) + "\n")
        if on_export is not None:
            on_export(tmp, clean)
        share_with_group(tmp)


def _disk_full(err: BaseException) -> bool:
    """An ENOSPC anywhere in the exception chain (safetensors reports it as its own error type)."""
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(err):
            return True
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def _machines(acc: Accelerator) -> int:
    """How many machines the run spans: the measured peak is one machine's, shared by all its processes.

    Two CPU processes on one 2-core box still have one box's FLOP/s in total, so the peak must not be
    multiplied by the process count. torchrun (under ``accelerate launch``) sets ``LOCAL_WORLD_SIZE``;
    without it every process is taken to be on this machine. On GPUs every process has its own device.
    """
    if acc.device.type != "cpu":
        return acc.num_processes
    local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes) or acc.num_processes)
    return max(1, acc.num_processes // max(1, local))


def _gather_ragged(acc: Accelerator, tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``[n_rank, ...]``, n differing per process) from all processes, on CPU."""
    if acc.num_processes == 1:
        return tensor.detach().cpu()
    sizes = acc.gather(torch.tensor([tensor.shape[0]], device=acc.device)).tolist()
    padded = acc.pad_across_processes(tensor.detach().contiguous(), dim=0)
    gathered = acc.gather(padded).cpu()
    width = max(sizes)
    return torch.cat([gathered[i * width: i * width + n] for i, n in enumerate(sizes)])


class _Clock:
    """Training wall time: what earlier sessions of the run spent plus this session's."""

    def __init__(self, prior_seconds: float) -> None:
        self.prior = prior_seconds
        self.start = time.perf_counter()

    def session_seconds(self) -> float:
        return time.perf_counter() - self.start

    def total_seconds(self) -> float:
        return self.prior + self.session_seconds()


class _Window:
    """Item-weighted running sums of train loss and metrics between two log lines, kept on the device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.unflushed_items = torch.zeros((), dtype=torch.float64, device=device)
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.items = torch.zeros((), dtype=torch.float64, device=self.device)
        self.inputs = torch.zeros((), dtype=torch.float64, device=self.device)
        self.grad_norms: list[torch.Tensor] = []
        self.started = time.perf_counter()

    def add(self, outputs: list[StepOutput], grad_norm: torch.Tensor | float | None, global_items: torch.Tensor) -> None:
        for out in outputs:
            n = torch.as_tensor(out.num_items, dtype=torch.float64, device=self.device)
            self.items += n
            inputs = out.num_inputs if out.num_inputs is not None else out.num_items
            self.inputs += torch.as_tensor(inputs, dtype=torch.float64, device=self.device)
            for name, value in {"loss": out.loss, **out.metrics}.items():
                weighted = value.detach().double() * n
                self.sums[name] = weighted if name not in self.sums else self.sums[name] + weighted
        self.unflushed_items += global_items.double()
        if grad_norm is not None:
            self.grad_norms.append(torch.as_tensor(grad_norm, dtype=torch.float64, device=self.device))

    def flush_items(self, state: TrainState, acc: Accelerator) -> None:
        """Move the global item count of steps since the last flush into ``state.items_seen``."""
        state.items_seen += float(self.unflushed_items.item())
        self.unflushed_items.zero_()

    def reduce(self, acc: Accelerator) -> tuple[dict[str, float], float, float, float]:
        """``(record, global items, global inputs, seconds)`` of the window; resets it."""
        names = sorted(self.sums)
        stacked = torch.stack([self.sums[n] for n in names] + [self.items, self.inputs])
        total = acc.reduce(stacked, reduction="sum").tolist()
        count = total[-2]
        record = {f"train/{n}": total[i] / max(count, 1.0) for i, n in enumerate(names)}
        if self.grad_norms:
            record["train/grad_norm"] = float(torch.stack(self.grad_norms).mean().item())
        items = float(self.unflushed_items.item())
        self.unflushed_items.zero_()
        seconds = time.perf_counter() - self.started
        inputs = total[-1]
        self.reset()
        return record, items, inputs, seconds
