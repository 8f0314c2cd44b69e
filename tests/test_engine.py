"""The engine on a toy objective: token-weighted accumulation, checkpoints, export, the output contract."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nlp_ssl.config import TrainingConfig
from nlp_ssl.engine.run_dir import RunDirectory
from nlp_ssl.engine.trainer import Trainer, make_accelerator
from nlp_ssl.errors import UserError
from nlp_ssl.objectives.base import Objective, StepOutput
from nlp_ssl.objectives.lm import causal_lm_loss


class RaggedRegression(Objective):
    """Linear regression where every example carries a different number of valid items (like tokens)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(4, 1)

    def forward(self, batch):
        x, y, valid = batch["x"], batch["y"], batch["valid"]  # [B, L, 4], [B, L], [B, L]
        err = (self.linear(x).squeeze(-1) - y) ** 2
        n = int(valid.sum())
        return StepOutput(loss=err[valid].mean(), num_items=n)

    def export(self, output_dir: Path) -> None:
        torch.save(self.state_dict(), output_dir / "weights.pt")


class RaggedData(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, length: int = 6) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, length, 4, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(n, length, generator=g)
        lengths = torch.randint(1, length + 1, (n,), generator=g)
        self.valid = torch.arange(length)[None, :] < lengths[:, None]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "valid": self.valid[i]}


def train_toy(tmp_path: Path, name: str, **overrides) -> tuple[nn.Module, RunDirectory]:
    cfg = TrainingConfig(output_dir=str(tmp_path / name), max_steps=8, learning_rate=0.05, warmup_steps=0,
                         weight_decay=0.0, max_grad_norm=0.0, logging_steps=1, eval_steps=4, save_steps=4,
                         report_to=[], lr_scheduler_type="constant", **overrides)
    run_dir = RunDirectory(cfg.output_dir, {"max_steps": cfg.max_steps}, False)
    resume = run_dir.check()
    acc = make_accelerator(cfg, run_dir.root)
    run_dir.prepare(None)
    objective = RaggedRegression()
    trainer = Trainer(cfg, objective, RaggedData(), run_dir=run_dir, accelerator=acc, eval_dataset=RaggedData(16))
    trainer.train(resume_from=resume)
    return trainer.unwrapped, run_dir


def test_accumulation_is_token_weighted(tmp_path):
    """Batch 8 in one step and batch 4 x 2 accumulated give the same update: loss = sum / all valid items."""
    whole, _ = train_toy(tmp_path, "a", per_device_train_batch_size=8, gradient_accumulation_steps=1)
    split, _ = train_toy(tmp_path, "b", per_device_train_batch_size=4, gradient_accumulation_steps=2)
    for p, q in zip(whole.parameters(), split.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_output_contract(tmp_path):
    _, run_dir = train_toy(tmp_path, "c", per_device_train_batch_size=8)
    root = run_dir.root
    assert (root / "config.yaml").is_file()
    records = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in train] == list(range(1, 9))
    assert [r["step"] for r in evals] == [4, 8]
    assert train[-1]["train/loss"] < train[0]["train/loss"]
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["step_4", "step_8"]
    assert (root / "final" / "weights.pt").is_file()
    state = json.loads((root / "final" / "trainer_state.json").read_text())
    assert state["step"] == 8 and state["complete"]
    # No temporary folders are left behind by the atomic writes.
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_finished_run_is_not_overwritten(tmp_path):
    train_toy(tmp_path, "d", per_device_train_batch_size=8)
    with pytest.raises(UserError, match="already holds a finished run"):
        RunDirectory(tmp_path / "d", {"max_steps": 8}, False).check()
    with pytest.raises(UserError, match="different config"):
        RunDirectory(tmp_path / "d", {"max_steps": 8, "seed": 3}, False).check()
    replacing = RunDirectory(tmp_path / "d", {"max_steps": 8, "seed": 3}, True)
    assert replacing.check() is None and replacing.replace


def test_causal_loss_matches_a_naive_loop():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    loss, count, _ = causal_lm_loss(logits, ids, mask)
    terms = []
    for b in range(2):
        for t in range(4):
            if mask[b, t + 1]:
                terms.append(-torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]])
    assert count == len(terms) == 6
    torch.testing.assert_close(loss, torch.stack(terms).mean())



def test_malloc_tuning_applies_on_glibc_and_can_be_switched_off():
    code = "from nlp_ssl.engine.memory import keep_freed_memory; print(keep_freed_memory())"

    def run(**env: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.strip()

    assert run(NLP_SSL_MALLOC_TUNING="0") == "False"
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert run() == "True"
