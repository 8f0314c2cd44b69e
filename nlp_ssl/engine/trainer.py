"""The one training loop every recipe uses.

The engine owns everything that is not specific to an objective: device placement and data parallelism
(Accelerate), gradient accumulation, token-weighted loss normalisation, clipping, optimizer and schedule,
seeding, logging, periodic evaluation, checkpoints with exact resume, a wall-clock budget and the final
export. It never looks inside a batch; the :class:`~nlp_ssl.objectives.base.Objective` does.
"""

from __future__ import annotations

import contextlib
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
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration
from torch.utils.data import BatchSampler, DataLoader, Dataset, IterableDataset
from tqdm.auto import tqdm

from nlp_ssl.config import TrainingConfig
from nlp_ssl.engine.atomic import atomic_directory, atomic_write_text
from nlp_ssl.engine.memory import keep_freed_memory
from nlp_ssl.engine.optim import build_optimizer, build_scheduler
from nlp_ssl.engine.run_dir import RunDirectory, flatten_config
from nlp_ssl.engine.sampler import EpochShuffleSampler
from nlp_ssl.objectives.base import Objective, StepOutput

# Tied weights (the MLM decoder is the embedding matrix) are saved once by accelerate, which warns at every
# checkpoint; the model re-ties them on load by construction, so the warning says nothing here.
logging.getLogger("accelerate.utils.other").addFilter(
    lambda record: not str(record.getMessage()).startswith("Removed shared tensor"))

# Peak dense fp32 throughput used for the model-FLOPs-utilisation estimate when no GPU is present
# (a 2048x2048 fp32 matmul on the 2-core AVX2 reference machine).
CPU_PEAK_FLOPS = 150e9


@dataclass
class TrainState:
    """Where the run is; checkpointed with the model so a restart continues at the same batch."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of the current epoch already consumed by this process
    items_seen: int = 0
    train_seconds: float = 0.0

    def state_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


@dataclass
class TrainResult:
    step: int
    final_dir: Path
    eval_metrics: dict[str, float]
    stopped_by_time: bool


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
        collate_fn: turns a list of examples into the batch the objective expects.
        run_dir: the output folder (already checked by the recipe, so the tokenizer could be saved there).
        accelerator: the run's Accelerator (from :func:`make_accelerator`).
        full_config: the whole recipe config, for trackers.
        on_export: extra files to put into the exported folder (model card, samples), given the folder and
            final eval metrics.
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

        self._sampler: EpochShuffleSampler | None = None
        train_loader = self._train_loader(train_dataset, collate_fn)
        eval_loader = None
        if eval_dataset is not None:
            eval_loader = DataLoader(eval_dataset, batch_size=config.per_device_eval_batch_size,
                                     shuffle=False, collate_fn=collate_fn, num_workers=config.dataloader_num_workers)
        optimizer = objective.configure_optimizer(config) or build_optimizer(objective, config)
        scheduler = build_scheduler(optimizer, config)
        # One prepare for everything trainable: DDP wraps the objective (model + heads) once.
        if eval_loader is not None:
            (self.objective, self.optimizer, self.train_loader, self.scheduler, self.eval_loader) = accelerator.prepare(
                objective, optimizer, train_loader, scheduler, eval_loader)
        else:
            self.objective, self.optimizer, self.train_loader, self.scheduler = accelerator.prepare(
                objective, optimizer, train_loader, scheduler)
            self.eval_loader = None
        accelerator.register_for_checkpointing(self.state)

    # ------------------------------------------------------------------------------------------------------
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

    @property
    def unwrapped(self) -> Objective:
        return self.accelerator.unwrap_model(self.objective)

    def _seed_step(self, step: int, salt: int = 0) -> None:
        """Make every random draw of a step (dropout, masking, negatives) a function of (seed, step, rank).

        Re-seeding per step is what makes resume exact without replaying RNG history: a restarted run
        reaches step ``k`` with the same generator state as the uninterrupted one.
        """
        rank = self.accelerator.process_index
        torch.manual_seed((self.config.seed * 1_000_003 + step * 1_009 + rank * 7 + salt) % (2**63 - 1))

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

    # ------------------------------------------------------------------------------------------------------
    def train(self, resume_from: Path | None = None, end_process_group: bool = True) -> TrainResult:
        """Train to ``max_steps`` (or the time budget), evaluate, export ``final/``.

        ``end_process_group=False`` keeps the distributed process group alive (trackers are still closed) so the
        same process can run further trainings, e.g. one per fine-tuning seed; the caller ends it.
        """
        cfg, acc = self.config, self.accelerator
        if resume_from is not None:
            acc.load_state(str(resume_from))
            acc.print(f"Resumed from {resume_from} (step {self.state.step}, epoch {self.state.epoch})")
        acc.init_trackers("nlp_ssl", config=flatten_config(self.full_config))

        metrics_file = self.run_dir.metrics_file if acc.is_main_process else None
        bar = tqdm(total=cfg.max_steps, initial=self.state.step, disable=not acc.is_local_main_process,
                   desc="train", dynamic_ncols=True)
        batches = self._batches()
        window = _Window()
        start_time = time.perf_counter()
        prior_seconds = self.state.train_seconds
        eval_metrics: dict[str, float] = {}
        stopped_by_time = False

        unit = self.unwrapped.throughput_unit
        self.objective.train()
        while self.state.step < cfg.max_steps:
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
                    acc.backward(out.loss * items)
                step_items += items
                outputs.append(out)
            # Token-weighted normalisation: sum of losses / items over all micro-batches and processes
            # (DDP already averaged gradients over processes, hence the factor num_processes).
            global_items = acc.reduce(step_items.detach(), reduction="sum")
            scale = acc.num_processes / global_items.clamp(min=1.0)
            grads = [p.grad for p in self.objective.parameters() if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, scale)
            grad_norm = None
            if cfg.max_grad_norm > 0:
                grad_norm = acc.clip_grad_norm_(self.objective.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.state.step += 1
            self.unwrapped.on_optimizer_step(self.state.step)

            window.add(outputs, grad_norm)
            self.state.items_seen += int(global_items.item())
            elapsed = prior_seconds + time.perf_counter() - start_time
            self.state.train_seconds = elapsed
            bar.update(1)

            if self.state.step % cfg.logging_steps == 0 or self.state.step == cfg.max_steps:
                record = window.reduce(acc)
                record["train/lr"] = self.scheduler.get_last_lr()[0]
                record["train/epoch"] = self.state.epoch + self._epoch_fraction()
                if record.get("_seconds"):
                    rate = record.pop("_inputs") / record.pop("_seconds")
                    record[f"train/{unit}_per_sec"] = rate
                    flops_per_input = self.unwrapped.flops_per_input()
                    if flops_per_input:
                        flops = flops_per_input * rate
                        record["perf/tflops"] = flops / 1e12
                        if acc.device.type == "cpu":
                            record["perf/mfu_cpu"] = flops / (CPU_PEAK_FLOPS * _machines(acc))
                else:
                    record.pop("_inputs", None)
                    record.pop("_seconds", None)
                self._log(record, metrics_file)
                bar.set_postfix({"loss": f"{record.get('train/loss', float('nan')):.4f}",
                                 f"{unit}/s": f"{record.get(f'train/{unit}_per_sec', 0):,.0f}"})

            if self.eval_loader is not None and self.state.step % cfg.eval_steps == 0 and self.state.step < cfg.max_steps:
                eval_metrics = self.evaluate()
                self._log(eval_metrics, metrics_file)
                self.objective.train()

            out_of_time = False
            if cfg.max_time_minutes is not None:
                # Every process must agree, or one would stop while the others wait in an all-reduce.
                over = float(time.perf_counter() - start_time > cfg.max_time_minutes * 60)
                out_of_time = bool(acc.reduce(torch.tensor(over, device=acc.device), reduction="sum").item())
            if self.state.step % cfg.save_steps == 0 or out_of_time:
                self.save_checkpoint()
            if out_of_time and self.state.step < cfg.max_steps:
                stopped_by_time = True
                acc.print(f"Wall-clock budget of {cfg.max_time_minutes} min reached at step {self.state.step}; "
                          "rerun the same command to continue.")
                break
        bar.close()

        if self.eval_loader is not None:
            eval_metrics = self.evaluate()
            self._log(eval_metrics, metrics_file)
        if self.state.step % cfg.save_steps != 0 and not stopped_by_time:
            self.save_checkpoint()
        final_dir = self.export(eval_metrics, complete=not stopped_by_time)
        if end_process_group:
            acc.end_training()
        else:
            for tracker in acc.trackers:
                tracker.finish()
        return TrainResult(self.state.step, final_dir, eval_metrics, stopped_by_time)

    def _epoch_fraction(self) -> float:
        try:
            return self.state.batches_in_epoch / max(1, len(self.train_loader))
        except TypeError:
            return 0.0

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Item-weighted means of the objective's eval loss and metrics over the whole eval set."""
        acc = self.accelerator
        self.objective.eval()
        # A fixed seed makes stochastic evaluation (e.g. which tokens are masked) the same at every step.
        self._seed_step(0, salt=12345)
        sums: dict[str, torch.Tensor] = {}
        predictions: list[torch.Tensor] = []
        references: list[torch.Tensor] = []
        items = torch.zeros((), device=acc.device, dtype=torch.float64)
        for index, batch in enumerate(tqdm(self.eval_loader, desc="eval", leave=False,
                                           disable=not acc.is_local_main_process)):
            if self.config.max_eval_batches is not None and index >= self.config.max_eval_batches:
                break
            with acc.autocast():
                out = self.unwrapped.evaluate_batch(batch)
            n = torch.as_tensor(out.num_items, device=acc.device, dtype=torch.float64)
            items += n
            if out.predictions is not None:
                # Ragged per process (even_batches=False), so no padding sample is counted twice.
                predictions.append(_gather_ragged(acc, out.predictions))
                references.append(_gather_ragged(acc, out.references))
            for name, value in {"loss": out.loss, **out.metrics}.items():
                sums[name] = sums.get(name, torch.zeros((), device=acc.device, dtype=torch.float64)) + value.detach().double() * n
        names = sorted(sums)
        stacked = torch.stack([sums[n] for n in names] + [items]) if names else items.reshape(1)
        total = acc.reduce(stacked, reduction="sum")
        count = float(total[-1].item())
        means = {n: float(total[i].item()) / max(count, 1.0) for i, n in enumerate(names)}
        result = {f"eval/{k}": v for k, v in means.items()}
        result.update({f"eval/{k}": v for k, v in self.unwrapped.eval_summary(means).items()})
        if predictions:
            computed = self.unwrapped.compute_metrics(torch.cat(predictions), torch.cat(references))
            result.update({f"eval/{k}": float(v) for k, v in computed.items()})
        result["eval/items"] = count
        result["step"] = self.state.step
        return result

    def _log(self, record: dict[str, float], metrics_file: Path | None) -> None:
        record = {"step": self.state.step, **{k: v for k, v in record.items() if k != "step"}}
        self.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=self.state.step)
        if metrics_file is not None:
            with metrics_file.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/step_<N>`` atomically (every process writes into a temp folder first)."""
        acc = self.accelerator
        target = self.run_dir.checkpoints / f"step_{self.state.step}"
        tmp = self.run_dir.checkpoints / f".step_{self.state.step}.tmp"
        if acc.is_main_process:
            tmp.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
            self.run_dir.prune_checkpoints(self.config.save_total_limit)
        acc.wait_for_everyone()
        return target

    def export(self, eval_metrics: dict[str, float], complete: bool) -> Path:
        """Write ``final/`` atomically: the objective's artifact, trainer state and eval results."""
        acc = self.accelerator
        acc.wait_for_everyone()
        final = self.run_dir.final
        if acc.is_main_process:
            with atomic_directory(final, replace=True) as tmp:
                self.unwrapped.export(tmp)
                state = {"step": self.state.step, "max_steps": self.config.max_steps, "complete": complete,
                         "epoch": self.state.epoch, "train_seconds": round(self.state.train_seconds, 2)}
                atomic_write_text(tmp / "trainer_state.json", json.dumps(state, indent=2) + "\n")
                clean = {k: v for k, v in eval_metrics.items() if k != "step" and isinstance(v, float) and math.isfinite(v)}
                atomic_write_text(tmp / "eval_results.json", json.dumps(clean, indent=2) + "\n")
                if self.on_export is not None:
                    self.on_export(tmp, clean)
        acc.wait_for_everyone()
        return final


def _machines(acc: Accelerator) -> int:
    """How many machines the run spans: CPU_PEAK_FLOPS is one machine's peak, shared by all its processes.

    ``accelerate launch --cpu --num_processes 2`` on one 2-core box still has 150 GFLOP/s in total, so the
    peak must not be multiplied by the process count. torchrun (under ``accelerate launch``) sets
    ``LOCAL_WORLD_SIZE``; without it every process is taken to be on this machine.
    """
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


class _Window:
    """Item-weighted running sums of train loss and metrics between two log lines."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.items: torch.Tensor | None = None
        self.inputs = 0
        self.grad_norms: list[torch.Tensor] = []
        self.started = time.perf_counter()

    def add(self, outputs: list[StepOutput], grad_norm: torch.Tensor | float | None) -> None:
        for out in outputs:
            n = torch.as_tensor(out.num_items, dtype=torch.float64, device=out.loss.device)
            self.items = n if self.items is None else self.items + n
            self.inputs += int(out.num_inputs if out.num_inputs is not None else out.num_items)
            for name, value in {"loss": out.loss, **out.metrics}.items():
                weighted = value.detach().double() * n
                self.sums[name] = weighted if name not in self.sums else self.sums[name] + weighted
        if grad_norm is not None:
            self.grad_norms.append(torch.as_tensor(grad_norm, dtype=torch.float64))

    def reduce(self, acc: Accelerator) -> dict[str, float]:
        if self.items is None:
            return {}
        names = sorted(self.sums)
        inputs = torch.tensor(float(self.inputs), dtype=torch.float64, device=self.items.device)
        stacked = torch.stack([self.sums[n] for n in names] + [self.items, inputs]).to(acc.device)
        total = acc.reduce(stacked, reduction="sum")
        count = float(total[-2].item())
        record = {f"train/{n}": float(total[i].item()) / max(count, 1.0) for i, n in enumerate(names)}
        if self.grad_norms:
            record["train/grad_norm"] = float(torch.stack(self.grad_norms).mean().item())
        record["_inputs"] = float(total[-1].item())
        record["_seconds"] = time.perf_counter() - self.started
        self.reset()
        return record
