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
from nlp_ssl.distributed import LOCAL, DistContext
from nlp_ssl.engine.run_dir import MARKER, RunDirectory
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
    run_dir.prepare()
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
    same = RunDirectory(tmp_path / "d", {"max_steps": 8}, False)
    assert same.check() is None and same.finished and not same.replace
    # A moved folder is the same run: its location is not part of its config.
    assert RunDirectory(tmp_path / "d", {"max_steps": 8, "output_dir": "elsewhere"}, False).check() is None
    with pytest.raises(UserError, match="different config"):
        RunDirectory(tmp_path / "d", {"max_steps": 8, "seed": 3}, False).check()
    replacing = RunDirectory(tmp_path / "d", {"max_steps": 8, "seed": 3}, True)
    assert replacing.check() is None and replacing.replace


def test_a_folder_whose_run_is_starting_is_not_refused(tmp_path):
    """Another process of the same launch may look while the main process holds the lock and is writing the
    marker (a temporary file until its rename): that is a run starting, not a foreign folder."""
    root = tmp_path / "starting"
    root.mkdir()
    (root / ".lock").write_text("{}")
    (root / f".{MARKER}.tmp-abc123").write_text("")  # the name atomic_write_text gives its temporary file
    assert RunDirectory(root, {"max_steps": 8}, False).check() is None
    (root / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not an nlp_ssl run folder"):
        RunDirectory(root, {"max_steps": 8}, False).check()


@pytest.mark.parametrize("padded", [True, False])
def test_causal_loss_matches_a_naive_loop(padded):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, requires_grad=True)
    ids = torch.randint(0, 11, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]) if padded else torch.ones(2, 5, dtype=torch.long)
    loss, count, accuracy = causal_lm_loss(logits, ids, mask)
    terms, hits = [], []
    for b in range(2):
        for t in range(4):
            if mask[b, t + 1]:
                terms.append(-torch.log_softmax(logits[b, t], -1)[ids[b, t + 1]])
                hits.append(float(logits[b, t].argmax() == ids[b, t + 1]))
    assert int(count) == len(terms) == (6 if padded else 8)
    naive = torch.stack(terms).mean()
    torch.testing.assert_close(loss, naive)
    assert float(accuracy) == pytest.approx(sum(hits) / len(hits))
    grad, = torch.autograd.grad(loss, logits)
    naive_grad, = torch.autograd.grad(naive, logits)
    torch.testing.assert_close(grad, naive_grad)


def test_malloc_tuning_applies_on_glibc_and_can_be_switched_off():
    code = "from nlp_ssl.engine.memory import keep_freed_memory; print(keep_freed_memory())"

    def run(**env: str) -> str:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, **env}).stdout.strip()

    assert run(NLP_SSL_MALLOC_TUNING="0") == "False"
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert run() == "True"


# --- the wider objective contract ------------------------------------------------------------------------


class StatefulRegression(RaggedRegression):
    """Records the hooks the engine calls and holds state of every kind the contract allows."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("seen", torch.zeros(()))  # a persistent buffer: checkpointed with the weights
        self.calls: list[tuple[int, int]] = []
        self.counter = 0  # non-tensor state: checkpointed through extra_state

    def forward(self, batch):
        out = super().forward(batch)
        if self.training:
            self.seen += 1
        return out

    def evaluate_batch(self, batch):
        self.seen += 1000  # a careless objective: the engine must undo this after evaluation
        return super().forward(batch)

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        self.calls.append((step, max_steps))
        self.counter += 1

    def extra_state(self):
        return {"counter": self.counter, "history": torch.tensor([float(s) for s, _ in self.calls])}

    def load_extra_state(self, state):
        self.counter = state["counter"]
        self.calls = [(int(s), 8) for s in state["history"].tolist()]

    def configure_optimizer(self, config):
        from nlp_ssl.objectives.base import OptimizerSetup

        head, rest = [self.linear.bias], [self.linear.weight]
        optimizer = torch.optim.SGD([{"params": rest}, {"params": head, "lr": 0.0}], lr=config.learning_rate)
        return OptimizerSetup(optimizer=optimizer,
                              scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step)))


def _engine(tmp_path: Path, name: str, objective: Objective, **overrides) -> Trainer:
    settings = dict(output_dir=str(tmp_path / name), max_steps=8, learning_rate=0.05, logging_steps=1, eval_steps=4,
                    save_steps=4, report_to=[], max_grad_norm=0.0, weight_decay=0.0)
    cfg = TrainingConfig(**{**settings, **overrides})
    run_dir = RunDirectory(cfg.output_dir, {"max_steps": cfg.max_steps}, False)
    acc = make_accelerator(cfg, run_dir.root)
    run_dir.prepare()
    return Trainer(cfg, objective, RaggedData(), run_dir=run_dir, accelerator=acc, eval_dataset=RaggedData(16))


def test_engine_calls_hooks_restores_buffers_after_eval_and_checkpoints_extra_state(tmp_path):
    trainer = _engine(tmp_path, "hooks", StatefulRegression())
    trainer.train()
    objective = trainer.unwrapped
    assert objective.calls == [(s, 8) for s in range(1, 9)]
    assert objective.seen.item() == 8  # two evaluations ran, and neither left a trace in the buffer
    assert objective.linear.bias.item() == StatefulRegression().linear.bias.item()  # its group has lr 0
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.05 / 9)  # the objective's own schedule
    checkpoint = tmp_path / "hooks" / "checkpoints" / "step_4"
    fresh = _engine(tmp_path, "hooks-resumed", StatefulRegression())
    fresh.load_checkpoint(checkpoint)
    assert fresh.state.step == 4 and fresh.unwrapped.counter == 4 and fresh.unwrapped.seen.item() == 4
    assert fresh.unwrapped.calls == [(s, 8) for s in range(1, 5)]
    assert all(p.name.startswith("random_states") for p in checkpoint.glob("*.pkl"))  # no custom pickles


class ContextRecorder(RaggedRegression):
    """Records the distributed context each training step and each evaluation batch sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen_in: dict[str, set] = {"train": set(), "eval": set()}

    def forward(self, batch):
        self.seen_in["train" if self.training else "eval"].add(self.dist)
        return super().forward(batch)


def test_evaluation_runs_without_collectives_and_training_keeps_its_context(tmp_path):
    """Held-out batches are ragged across processes, so evaluation hands the objective a local context (a
    gather there would pair tensors of different sizes or wait for a process that has no batch left)."""
    trainer = _engine(tmp_path, "context", ContextRecorder())
    objective = trainer.unwrapped
    two_processes = DistContext(rank=1, world_size=2)
    objective.dist = two_processes  # what a two-process run holds; evaluation alone must not use it
    metrics = trainer.evaluate()
    assert metrics["eval/items"] > 0 and objective.seen_in["eval"] == {LOCAL}
    assert objective.dist is two_processes  # restored for training


class ScoredRegression(RaggedRegression):
    """Its evaluation score peaks at step 4 and falls afterwards (a stand-in for over-fitting)."""

    def __init__(self) -> None:
        super().__init__()
        self.step = 0

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        self.step = step

    def evaluate_batch(self, batch):
        out = super().forward(batch)
        out.metrics = {"score": torch.tensor(-abs(self.step - 4.0))}
        return out


def test_metric_for_best_model_exports_the_best_evaluation(tmp_path):
    trainer = _engine(tmp_path, "best", ScoredRegression(), metric_for_best_model="score", eval_steps=2)
    weights_at = {}

    original = trainer._evaluate_and_log

    def spy():
        weights_at[trainer.state.step] = trainer.unwrapped.linear.weight.detach().clone()
        return original()

    trainer._evaluate_and_log = spy
    result = trainer.train()
    assert result.eval_metrics["selected_step"] == 4.0 and result.eval_metrics["eval/score"] == 0.0
    exported = torch.load(tmp_path / "best" / "final" / "weights.pt")
    torch.testing.assert_close(exported["linear.weight"], weights_at[4])
    saved = json.loads((tmp_path / "best" / "final" / "eval_results.json").read_text())
    assert saved["selected_step"] == 4.0


def test_peak_flops_is_measured_once_and_configurable(tmp_path, monkeypatch):
    from nlp_ssl.engine import flops

    monkeypatch.setattr(flops, "_CACHE", tmp_path / "peak.json")
    assert flops.peak_flops(torch.device("cpu"), configured=1e9) == 1e9
    calls = []
    monkeypatch.setattr(flops, "measure_peak_flops", lambda device, dtype: calls.append(1) or 5e10)
    assert flops.peak_flops(torch.device("cpu")) == 5e10
    assert flops.peak_flops(torch.device("cpu")) == 5e10 and len(calls) == 1  # cached per machine


def test_export_takes_a_gathered_state_dict_as_under_fsdp(tmp_path):
    """Under FSDP the engine hands export the whole state gathered from the shards; the folder holds it."""
    from transformers import AutoModelForMaskedLM, BertConfig, BertForMaskedLM

    from nlp_ssl.objectives.lm import MaskedLMObjective
    from nlp_ssl.objectives.masking import MaskingConfig
    from test_randomness_rule import _tokenizer

    tok = _tokenizer("wordpiece")
    objective = MaskedLMObjective(BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                                             num_attention_heads=2, intermediate_size=32)),
                                  tok, MaskingConfig())
    gathered = {k: torch.full_like(v, 0.5) if k.endswith("query.weight") else v for k, v in objective.state_dict().items()}
    objective.export(tmp_path, state_dict=gathered)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    assert torch.all(loaded.bert.encoder.layer[0].attention.self.query.weight == 0.5)


def test_every_hardware_config_loads_in_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = sorted((Path(__file__).resolve().parents[1] / "recipes/configs/accelerate").glob("*.yaml"))
    assert {p.name for p in configs} >= {"cpu_2proc.yaml", "multi_gpu.yaml", "single_gpu.yaml", "fsdp.yaml"}
    for path in configs:
        config = load_config_from_file(str(path))
        assert config.num_processes >= 1, path
    fsdp = load_config_from_file(str(configs[[p.name for p in configs].index("fsdp.yaml")]))
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2


def test_a_start_that_failed_before_its_first_checkpoint_is_started_again(tmp_path):
    root = tmp_path / "run"
    first = RunDirectory(root, {"max_steps": 8, "learning_rate": 1.0}, False)
    first.check()
    first.prepare()  # then the run failed: only config.yaml and the marker are there
    corrected = RunDirectory(root, {"max_steps": 8, "learning_rate": 0.1}, False, report=lambda line: None)
    assert corrected.check() is None and corrected.replace
    corrected.prepare()
    assert "learning_rate: 0.1" in (root / "config.yaml").read_text()


def test_unreadable_trainer_state_means_unfinished_and_exports_are_group_readable(tmp_path):
    import stat

    old = os.umask(0o022)
    try:
        _, run_dir = train_toy(tmp_path, "perm", per_device_train_batch_size=8)
    finally:
        os.umask(old)
    final = run_dir.root / "final"
    assert stat.S_IMODE(final.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in final.iterdir() if p.is_file())
    checkpoint = run_dir.root / "checkpoints" / "step_8"
    assert stat.S_IMODE(checkpoint.stat().st_mode) == 0o755
    (final / "trainer_state.json").write_text("{garbled")
    lines = []
    again = RunDirectory(run_dir.root, {"max_steps": 8}, False, report=lines.append)
    assert again.check() == checkpoint and not again.finished  # resumes (and so exports again)
    assert "unreadable" in lines[0]
