"""A new self-supervised method is one objective, a config and a few lines of pipeline (the README shows how).

``ToyMoCo`` below is such a method, written against the public contract only: a query encoder, an EMA key
encoder and a queue of keys held as objective state (Chen et al. / He et al. style, on scikit-learn's digits).
It trains through the runner in one and in two processes, and a kill -9 mid-run followed by a rerun gives the
per-step losses and the queue of the uninterrupted run. This file is also the recipe script the tests launch.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_ssl.config import TrainingConfig
from nlp_ssl.engine.run import Pipeline, RunData, run
from nlp_ssl.models.momentum import FeatureQueue, ema_update_, make_momentum_copy, momentum_schedule
from nlp_ssl.objectives.base import Objective, StepOutput
from nlp_ssl.objectives.contrastive_losses import moco_loss
from nlp_ssl.registry import recipe_main, register

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]


# --- the new method: under 40 lines -----------------------------------------------------------------------
class ToyMoCo(Objective):
    """MoCo on noisy views of digit images: query encoder, EMA key encoder, a queue of 32 keys."""

    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16))
        self.key_encoder = make_momentum_copy(self.model)
        self.queue = FeatureQueue(32, 16)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = batch["x"]  # two noisy views per example, drawn for the global batch from the step's generator
        noise = self.per_example(lambda n: torch.randn(n, 2, x.shape[1], generator=self.rng), x.shape[0])
        query = self.model(x + 0.1 * noise[:, 0])
        with torch.no_grad():
            key = self.key_encoder(x + 0.1 * noise[:, 1])
        loss = moco_loss(query, key, self.queue.negatives(), temperature=0.2)
        if self.training:  # evaluation never touches the queue
            self.queue.enqueue(self.dist.all_gather_no_grad(key))
        return StepOutput(loss=loss, num_items=x.shape[0])

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        ema_update_(self.key_encoder, self.model, momentum_schedule(step, max_steps, base=0.9))
        _test_hooks(self, step)

    def export(self, output_dir: Path) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        save_file({**tensors, "queue": self.queue.queue, "filled": self.queue.filled}, str(output_dir / "toy.safetensors"))


class Digits(torch.utils.data.Dataset):
    def __init__(self, split: slice) -> None:
        from sklearn.datasets import load_digits

        self.x = torch.tensor(load_digits().data[split], dtype=torch.float32) / 16.0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[index]}


class ToyPipeline(Pipeline[TrainingConfig]):
    def build_data(self, ctx) -> RunData:
        return RunData(Digits(slice(0, 1500)), Digits(slice(1500, None)))

    def build_objective(self, ctx, data) -> Objective:
        return ToyMoCo()


def _test_hooks(objective: ToyMoCo, step: int) -> None:
    """What the tests observe from inside a run: every process holds the same queue; a kill at a set step."""
    if objective.dist.distributed:
        checksum = objective.queue.queue.sum().reshape(1)
        gathered = objective.dist.all_gather_no_grad(checksum)
        if not torch.allclose(gathered, gathered[0].expand_as(gathered)):
            raise RuntimeError(f"the queues of the processes differ at step {step}: {gathered.tolist()}")
    if step == int(os.environ.get("TOY_KILL_AT_STEP", "-1")):
        os.kill(os.getpid(), signal.SIGKILL)


register("toy_moco", "MoCo on digits (test recipe)", TrainingConfig, lambda cfg: run(ToyPipeline(), cfg))


# --- tests ------------------------------------------------------------------------------------------------
ARGS = ["max_steps=40", "per_device_train_batch_size=8", "learning_rate=0.01", "logging_steps=1", "save_steps=10",
        "eval_steps=15", "per_device_eval_batch_size=64", "report_to=[]", "warmup_steps=0", "seed=3"]
CHANCE = float(torch.log(torch.tensor(33.0)))  # InfoNCE of a key among 32 queued negatives, at random


def toy_command(output_dir: Path, processes: int = 1, extra: list[str] | None = None) -> list[str]:
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "accelerate.commands.launch", "--config_file",
                     str(REPO / "recipes/configs/accelerate/cpu_2proc.yaml"), "--main_process_port", "29547"]
    return launcher + [str(HERE), *ARGS, *(extra or []), f"output_dir={output_dir}"]


def toy_env(kill_at: int | None = None, fault: str | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    for key in ("TOY_KILL_AT_STEP", "TOY_FAULT"):
        env.pop(key, None)
    if kill_at is not None:
        env["TOY_KILL_AT_STEP"] = str(kill_at)
    if fault is not None:
        env["TOY_FAULT"] = fault
    return env


def _launch(output_dir: Path, processes: int = 1, kill_at: int | None = None, extra: list[str] | None = None,
            fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(toy_command(output_dir, processes, extra), cwd=REPO, env=toy_env(kill_at, fault),
                          capture_output=True, text=True, timeout=300)


def _losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _learned(run_dir: Path) -> bool:
    """Well below chance at the end, and the held-out loss fell between the first and the last evaluation."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval/loss"] for r in records if "eval/loss" in r]
    last = [r["train/loss"] for r in records if "train/loss" in r][-10:]
    return sum(last) / len(last) < 0.5 * CHANCE and evals[-1] < evals[0]


def test_the_toy_objective_is_short():
    import inspect

    assert len(inspect.getsource(ToyMoCo).splitlines()) < 40


@pytest.mark.slow
def test_new_objective_trains_and_resumes_exactly_through_the_runner(tmp_path):
    straight = _launch(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    losses = _losses(tmp_path / "straight")
    assert sorted(losses) == list(range(1, 41)) and _learned(tmp_path / "straight")
    records = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "eval/loss" in r] == [15, 30, 40]

    killed = _launch(tmp_path / "resumed", kill_at=15)  # after the step-10 checkpoint and the step-15 evaluation
    assert killed.returncode == -signal.SIGKILL
    resumed = _launch(tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed from" in resumed.stdout
    assert _losses(tmp_path / "resumed") == losses  # bit for bit, step 11 on replayed from the checkpoint
    a = load_file(str(tmp_path / "straight" / "final" / "toy.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "toy.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert int(a["filled"]) == 32  # the queue is objective state: it survived the restart full


@pytest.mark.slow
def test_new_objective_in_two_processes_equals_one_process_with_the_global_batch(tmp_path):
    result = _launch(tmp_path / "ddp", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]  # the run itself checks the queues agree every step
    losses = _losses(tmp_path / "ddp")
    assert sorted(losses) == list(range(1, 41)) and _learned(tmp_path / "ddp")
    single = _launch(tmp_path / "single", extra=["per_device_train_batch_size=16"])
    assert single.returncode == 0, single.stderr[-3000:]
    assert losses == pytest.approx(_losses(tmp_path / "single"), rel=1e-4, abs=1e-5)
    a = load_file(str(tmp_path / "ddp" / "final" / "toy.safetensors"))
    b = load_file(str(tmp_path / "single" / "final" / "toy.safetensors"))
    assert int(a["filled"]) == 32  # 2 processes x 8 keys per step: full after two steps
    torch.testing.assert_close(a["queue"], b["queue"], rtol=1e-4, atol=1e-5)


def _install_faults() -> None:
    """Faults the reliability tests inject into a real run (``TOY_FAULT=<kind>:<step>``), from outside the toy."""
    fault = os.environ.get("TOY_FAULT", "")
    kind, _, at = fault.partition(":")
    step = int(at or -1)
    if kind in ("sigterm", "sigint", "sleep"):
        original = ToyMoCo.on_optimizer_step

        def on_optimizer_step(self: ToyMoCo, now: int, max_steps: int) -> None:
            original(self, now, max_steps)
            if kind == "sleep":
                import time

                time.sleep(step / 1000)  # milliseconds per step: keeps a run alive while a test acts on it
            elif now == step:
                os.kill(os.getpid(), signal.SIGTERM if kind == "sigterm" else signal.SIGINT)
        ToyMoCo.on_optimizer_step = on_optimizer_step  # type: ignore[method-assign]
    elif kind == "kill_in_checkpoint":
        import nlp_ssl.engine.trainer as trainer

        original_save = trainer.save_tree

        def save_tree(tree, folder, name, then=None):  # after accelerate's files, before the engine's
            if tree["train_state"]["step"] == step:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_save(tree, folder, name, then)
        trainer.save_tree = save_tree
    elif kind == "kill_in_export":
        def export(self: ToyMoCo, output_dir: Path) -> None:
            (output_dir / "toy.safetensors").write_bytes(b"half a file")
            os.kill(os.getpid(), signal.SIGKILL)
        ToyMoCo.export = export  # type: ignore[method-assign]
    elif kind == "nan":  # the loss becomes NaN from step `at` on (e.g. a learning rate far too high)
        original_forward, original_step = ToyMoCo.forward, ToyMoCo.on_optimizer_step

        def forward(self: ToyMoCo, batch):
            out = original_forward(self, batch)
            if self.training and getattr(self, "steps_done", 0) + 1 >= step:
                out.loss = out.loss * float("nan")
            return out

        def count(self: ToyMoCo, now: int, max_steps: int) -> None:
            self.steps_done = now
            original_step(self, now, max_steps)
        ToyMoCo.forward, ToyMoCo.on_optimizer_step = forward, count  # type: ignore[method-assign]


if __name__ == "__main__":
    _install_faults()
    recipe_main("toy_moco")()
