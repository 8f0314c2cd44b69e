"""Language-model training throughput: this toolkit's engine against transformers' ``Trainer``, side by side.

Both sides train the same small model (same config, same initial weights from the same seed) on the same
packed blocks of the same corpus, with the same optimizer settings and LR schedule, in fp32, for the same
number of optimizer steps, in ONE process, so that machine load and thread settings hit both alike:

    --kind masked (default): the ``mlm`` recipe's default encoder (ModernBERT, pre-LN, rotary positions) with masked LM
        (a) engine:  nlp_ssl's Trainer + MaskedLMObjective, built the way ``recipes/mlm.py`` builds them
                     (masking on the device, LM head only on the selected positions);
        (b) Trainer: ``transformers.Trainer`` + ``DataCollatorForLanguageModeling`` (mlm_probability 0.15) on
                     the same ``ModernBertForMaskedLM``, configured the plain way (no eval, no saving, default logging).
    --kind causal: GPT-2 with next-token prediction
        (a) engine:  Trainer + CausalLMObjective, as ``recipes/clm.py`` builds them;
        (b) Trainer: ``transformers.Trainer`` + ``DataCollatorForLanguageModeling(mlm=False)`` on ``GPT2LMHeadModel``.

The first ``--warmup-steps`` optimizer steps of each run are not timed (allocator and thread-pool warm-up,
first-call overheads); the next ``--steps`` are. Throughput counts input tokens (batch x block per step).
With ``--repeats N`` the runs alternate a, b, a, b, ... so slow drifts in machine load spread over both;
the report gives medians and the spread (min..max) of each side and of the per-pair ratio, plus each
side's fastest single step (other processes only ever add time, so that figure is the least disturbed
when the machine is shared), each side's peak memory (resident set size on CPU, ``max_memory_allocated``
on a GPU) and model-FLOPs utilisation against the peak this machine measures (a large fp32 matmul, timed
here, not a constant). The loss of each side over the last quarter of the timed steps, and a held-out loss
measured the same way for both trained models, show that both learn the same.

    python scripts/bench_lm.py                       # defaults: 4 x 256 ModernBERT, seq 128, batch 32, vocab 8k
    python scripts/bench_lm.py --kind causal --repeats 3
    python scripts/bench_lm.py --compile             # the engine with torch_compile: true
    python scripts/bench_lm.py --only engine --profile 8   # where the engine's time goes (torch.profiler)
    OMP_WAIT_POLICY=PASSIVE python scripts/bench_lm.py --repeats 3   # on a machine other jobs load

On a loaded machine OpenMP's default spin-waiting makes both sides several times slower (two spinning
threads compete with the other jobs); ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts) avoids that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
import transformers
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import DataCollatorForLanguageModeling, TrainerCallback, TrainingArguments

from nlp_ssl.config import load_config, to_dict
from nlp_ssl.data.corpus import load_corpus
from nlp_ssl.data.packing import PackedBlocks, collate_blocks, tokenize_corpus
from nlp_ssl.data.tokenizer import train_tokenizer
from nlp_ssl.engine.memory import keep_freed_memory
from nlp_ssl.engine.run_dir import RunDirectory
from nlp_ssl.engine.flops import measure_peak_flops
from nlp_ssl.engine.trainer import Trainer, make_accelerator
from nlp_ssl.errors import UserError, exit_on_user_error
from nlp_ssl.models.transformer_lm import build_lm
from nlp_ssl.objectives.lm import CausalLMObjective, MaskedLMObjective, causal_lm_loss
from nlp_ssl.objectives.masking import mask_tokens
from nlp_ssl.pipelines.language_model import CausalLMConfig, MaskedLMConfig

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "recipes" / "configs" / "mlm" / "default.yaml"
CAUSAL_CONFIG = REPO / "recipes" / "configs" / "clm" / "default.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--steps", type=int, default=30, help="timed optimizer steps per run (default 30)")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed optimizer steps before timing starts (default 3)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--block-size", type=int, default=128, help="tokens per packed block (sequence length)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=None, help="attention heads (default hidden / 64)")
    p.add_argument("--intermediate", type=int, default=None, help="feed-forward size (default 4 x hidden)")
    p.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary trained on the corpus")
    p.add_argument("--dropout", type=float, default=None,
                   help="hidden and attention dropout of both models (default: the recipe config's, 0.1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads for both sides (default: torch's)")
    p.add_argument("--corpus", default="ptb", help="embedded corpus name or local files (default ptb)")
    p.add_argument("--max-train-samples", type=int, default=None, help="cut the corpus (smoke tests)")
    p.add_argument("--repeats", type=int, default=1, help="alternating (engine, Trainer) pairs (default 1)")
    p.add_argument("--eval-blocks", type=int, default=64,
                   help="held-out blocks, masked once with a fixed seed, on which both trained models are scored")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                   help="recipe config whose optimizer, schedule (and masking) settings both sides use "
                        "(default: recipes/configs/mlm/default.yaml, or clm/default.yaml with --kind causal)")
    p.add_argument("--only", choices=["engine", "trainer"], default=None, help="run one side only (profiling)")
    p.add_argument("--kind", choices=["masked", "causal"], default="masked",
                   help="masked LM (the mlm recipe's ModernBERT) or causal LM (GPT-2)")
    p.add_argument("--compile", action="store_true", help="the engine side with torch_compile: true")
    p.add_argument("--profile", type=int, default=0, metavar="STEPS",
                   help="after the runs, profile this many engine steps with torch.profiler and print the table")
    p.add_argument("--json", type=Path, default=None, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 1 or args.repeats < 1:
        # At least one untimed step: the clock starts when it ends, for both sides alike.
        p.error("--steps, --warmup-steps and --repeats must be >= 1")
    return args


# --------------------------------------------------------------------------------------------------------------
# Shared set-up: one config, one tokenizer, one set of packed blocks for both sides.


@dataclass
class Setup:
    cfg: MaskedLMConfig
    kind: str
    tokenizer: Any
    train: PackedBlocks
    held_out: PackedBlocks
    total_steps: int
    lr_warmup: int


def build_setup(args: argparse.Namespace) -> Setup:
    causal = args.kind == "causal"
    config_path = CAUSAL_CONFIG if causal and args.config == DEFAULT_CONFIG else args.config
    config_class = CausalLMConfig if causal else MaskedLMConfig
    base = load_config(config_class, config_path if config_path.is_file() else None)
    total = args.warmup_steps + args.steps
    # A short run still gets the recipe's shape of schedule: linear warm-up over 10% of the steps, then decay.
    lr_warmup = max(1, total // 10)
    dropout = {} if args.dropout is None else {"hidden_dropout_prob": args.dropout,
                                               "attention_probs_dropout_prob": args.dropout}
    cfg = replace(
        base,
        max_steps=total, warmup_steps=lr_warmup, per_device_train_batch_size=args.batch_size,
        # Timed steps must not contain checkpoints, evaluation or tracker I/O (the Trainer side has none).
        save_steps=10**9, eval_steps=10**9, report_to=[], mixed_precision="no", use_cpu=True,
        torch_compile=args.compile,
        data=replace(base.data, corpus=args.corpus, block_size=args.block_size, max_train_samples=args.max_train_samples),
        tokenizer=replace(base.tokenizer, vocab_size=args.vocab_size, name_or_path=None),
        model=replace(base.model, init_from=None, hidden_size=args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=args.heads or max(1, args.hidden // 64),
                      intermediate_size=args.intermediate or 4 * args.hidden, **dropout),
    )
    if not causal:
        cfg = replace(cfg, mlm=replace(base.mlm, whole_word_masking=False))
    corpus = load_corpus(cfg.data)
    tokenizer = train_tokenizer(iter(corpus["train"]["text"]), "bpe" if causal else "wordpiece", cfg.tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    pad = tokenizer.pad_token_id

    def blocks(split: str) -> PackedBlocks:
        tokenized = tokenize_corpus(corpus[split], tokenizer, append_eos=causal)
        return PackedBlocks.from_tokenized(tokenized, cfg.data.block_size, pad)

    train, held_out = blocks("train"), blocks("validation")
    if len(train) < cfg.per_device_train_batch_size:
        raise UserError(f"only {len(train)} blocks of {cfg.data.block_size} tokens; lower --batch-size")
    return Setup(cfg, args.kind, tokenizer, train, held_out, total, lr_warmup)


def fresh_model(setup: Setup) -> transformers.PreTrainedModel:
    set_seed(setup.cfg.seed)  # identical initial weights for both sides and every repeat
    return build_lm(setup.kind, setup.cfg.model, setup.tokenizer, setup.cfg.data.block_size)


@dataclass
class RunResult:
    side: str
    tokens_per_sec: float
    seconds: float
    step_times: list[float]
    final_train_loss: float
    held_out_loss: float
    load_before: float
    load_after: float
    best_step_tokens_per_sec: float = 0.0  # the fastest timed step: the figure least disturbed by other jobs
    extra: dict[str, Any] = field(default_factory=dict)


def _reset_accelerate() -> None:
    # Each side makes its own Accelerator; the process-wide state must not leak between runs.
    AcceleratorState._reset_state(reset_partial_state=True)


def _timed_window(stamps: list[float], warmup: int, steps: int) -> float:
    """Seconds from the end of optimizer step ``warmup`` to the end of step ``warmup + steps``.

    ``stamps[k]`` is taken when step ``k + 1`` ends (after the optimizer and scheduler steps), so the window
    holds exactly ``steps`` whole iterations of either loop, data loading and bookkeeping included.
    """
    return stamps[warmup + steps - 1] - stamps[warmup - 1]


def _fastest_step(stamps: list[float], warmup: int, steps: int) -> float:
    """Seconds of the quickest timed step (timing noise from other processes only ever adds time)."""
    return min(stamps[i] - stamps[i - 1] for i in range(warmup, warmup + steps))


def _final_loss(losses: list[torch.Tensor], steps: int) -> float:
    # Mean over the last quarter of the timed steps: one step's loss is too noisy to show learning.
    tail = losses[-max(1, steps // 4):]
    return float(torch.stack([t.float() for t in tail]).mean())


# --------------------------------------------------------------------------------------------------------------
# (a) this engine


class _Timed:
    """Mixed into the recipe's objective: a time stamp per optimizer step and the per-step loss (kept as a
    tensor: no device sync)."""

    def start_timing(self) -> None:
        self.stamps: list[float] = []
        self.losses: list[torch.Tensor] = []

    def forward(self, batch):  # type: ignore[no-untyped-def]
        out = super().forward(batch)  # type: ignore[misc]
        if self.training:  # type: ignore[attr-defined]
            self.losses.append(out.loss.detach())
        return out

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        super().on_optimizer_step(step, max_steps)  # type: ignore[misc]
        self.stamps.append(time.perf_counter())


class _TimedMaskedLM(_Timed, MaskedLMObjective):
    pass


class _TimedCausalLM(_Timed, CausalLMObjective):
    pass


def _objective(setup: Setup, model: torch.nn.Module) -> Any:
    if setup.kind == "causal":
        objective = _TimedCausalLM(model, setup.tokenizer)
    else:
        objective = _TimedMaskedLM(model, setup.tokenizer, setup.cfg.mlm)  # type: ignore[attr-defined]
    objective.start_timing()
    return objective


class _MemoryWatch:
    """Peak memory of one side: resident set size sampled every 20 ms on CPU, the allocator's peak on a GPU."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            try:
                rss = int(Path("/proc/self/statm").read_text().split()[1]) * page
            except (OSError, ValueError, IndexError):
                return
            self.peak = max(self.peak, rss)
            self._stop.wait(0.02)

    def __enter__(self) -> _MemoryWatch:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        if torch.cuda.is_available():
            self.peak = torch.cuda.max_memory_allocated()


def run_engine(setup: Setup, args: argparse.Namespace, workdir: Path) -> RunResult:
    _reset_accelerate()
    out_dir = workdir / f"engine-{time.monotonic_ns()}"
    cfg = replace(setup.cfg, output_dir=str(out_dir))
    run_dir = RunDirectory(cfg.output_dir, to_dict(cfg))
    run_dir.check()
    accelerator = make_accelerator(cfg, run_dir.root)
    run_dir.prepare()
    model = fresh_model(setup)
    objective = _objective(setup, model)
    trainer = Trainer(cfg, objective, setup.train, run_dir=run_dir, accelerator=accelerator,
                      collate_fn=collate_blocks, full_config=to_dict(cfg))
    load_before = os.getloadavg()[0]
    with _MemoryWatch() as memory:
        trainer.train()
    load_after = os.getloadavg()[0]
    seconds = _timed_window(objective.stamps, args.warmup_steps, args.steps)
    tokens = args.steps * cfg.per_device_train_batch_size * cfg.data.block_size
    logged = [json.loads(line) for line in run_dir.metrics_file.read_text().splitlines() if line.strip()]
    mfu = [r["perf/mfu"] for r in logged if "perf/mfu" in r]
    extra = {"logged_mfu_last": mfu[-1] if mfu else None, "peak_memory_bytes": memory.peak,
             # The engine names its rate after the objective's unit (train/tokens_per_sec for LMs).
             "logged_per_sec_last": next((v for r in reversed(logged) for k, v in r.items()
                                          if k.startswith("train/") and k.endswith("_per_sec")), None),
             }
    best = tokens / args.steps / _fastest_step(objective.stamps, args.warmup_steps, args.steps)
    return RunResult("engine", tokens / seconds, seconds, _step_times(objective.stamps),
                     _final_loss(objective.losses, args.steps), held_out_loss(model, setup, args),
                     load_before, load_after, best, extra)


# --------------------------------------------------------------------------------------------------------------
# (b) transformers' Trainer


class _StampCallback(TrainerCallback):
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
        self.stamps.append(time.perf_counter())


class _LossRecordingTrainer(transformers.Trainer):
    """Stock Trainer that also keeps each step's (already detached) loss tensor, without a host sync."""

    recorded: list[torch.Tensor]

    def training_step(self, model, inputs, num_items_in_batch=None):  # noqa: ANN001
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.recorded.append(loss)
        return loss


def run_hf_trainer(setup: Setup, args: argparse.Namespace, workdir: Path) -> RunResult:
    _reset_accelerate()
    cfg = setup.cfg
    training_args = TrainingArguments(
        output_dir=str(workdir / f"hf-{time.monotonic_ns()}"),
        max_steps=setup.total_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1, adam_beta2=cfg.adam_beta2, adam_epsilon=cfg.adam_epsilon,
        max_grad_norm=cfg.max_grad_norm, lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=setup.lr_warmup,
        seed=cfg.seed, use_cpu=True, report_to=[], save_strategy="no", eval_strategy="no",
        dataloader_drop_last=True,  # as the engine does: every batch full
    )
    # The usual shape of transformers LM data: a datasets.Dataset of packed blocks (same blocks as the engine).
    dataset = datasets.Dataset.from_dict({"input_ids": setup.train.blocks.numpy(),
                                          "attention_mask": setup.train.mask.numpy()})
    if setup.kind == "causal":
        collator = DataCollatorForLanguageModeling(setup.tokenizer, mlm=False)
    else:
        collator = DataCollatorForLanguageModeling(setup.tokenizer, mlm=True, mlm_probability=cfg.mlm.mlm_probability,
                                                   mask_replace_prob=cfg.mlm.mask_replace_prob,
                                                   random_replace_prob=cfg.mlm.random_replace_prob)
    model = fresh_model(setup)
    stamps = _StampCallback()
    trainer = _LossRecordingTrainer(model=model, args=training_args, train_dataset=dataset, data_collator=collator,
                                    callbacks=[stamps])
    trainer.recorded = []
    load_before = os.getloadavg()[0]
    with _MemoryWatch() as memory:
        trainer.train()
    load_after = os.getloadavg()[0]
    seconds = _timed_window(stamps.stamps, args.warmup_steps, args.steps)
    tokens = args.steps * cfg.per_device_train_batch_size * cfg.data.block_size
    best = tokens / args.steps / _fastest_step(stamps.stamps, args.warmup_steps, args.steps)
    return RunResult("trainer", tokens / seconds, seconds, _step_times(stamps.stamps),
                     _final_loss(trainer.recorded, args.steps), held_out_loss(model, setup, args),
                     load_before, load_after, best, {"peak_memory_bytes": memory.peak})


def _step_times(stamps: list[float]) -> list[float]:
    return [round(b - a, 4) for a, b in zip(stamps, stamps[1:])]


def model_flops_per_token(setup: Setup) -> float:
    """Training FLOPs per input token of the model, counted as the engine logs them (both sides train it)."""
    objective = _objective(setup, fresh_model(setup))
    objective.seq_len = setup.cfg.data.block_size  # normally learned from the first batch
    return float(objective.flops_per_input())


def profile_engine(setup: Setup, args: argparse.Namespace) -> str:
    """torch.profiler over ``--profile`` engine steps (after two untimed ones): where the time goes."""
    from torch.profiler import ProfilerActivity, profile, schedule

    _reset_accelerate()
    with tempfile.TemporaryDirectory(prefix="bench_lm_profile_") as tmp:
        cfg = replace(setup.cfg, output_dir=str(Path(tmp) / "run"), max_steps=2 + args.profile)
        run_dir = RunDirectory(cfg.output_dir, to_dict(cfg))
        run_dir.check()
        accelerator = make_accelerator(cfg, run_dir.root)
        run_dir.prepare()
        objective = _objective(setup, fresh_model(setup))
        trainer = Trainer(cfg, objective, setup.train, run_dir=run_dir, accelerator=accelerator,
                          collate_fn=collate_blocks, full_config=to_dict(cfg))
        tables: list[str] = []

        def keep_table(done: Any) -> None:
            tables.append(done.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=0, warmup=2, active=args.profile),
                     on_trace_ready=keep_table) as prof:
            original = objective.on_optimizer_step

            def step_and_tick(step: int, max_steps: int) -> None:
                original(step, max_steps)
                prof.step()
            objective.on_optimizer_step = step_and_tick
            trainer.train()
    return tables[-1] if tables else "(the profiler recorded no complete cycle)"


# --------------------------------------------------------------------------------------------------------------
# The same yardstick for both trained models.


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, setup: Setup, args: argparse.Namespace) -> float:
    """Next-token, or masked-token, cross-entropy on the first ``--eval-blocks`` held-out blocks (masked with a
    fixed seed).

    The models were trained by different loops with different masking RNGs, so their train losses are each
    measured on other masks; this number is measured on the same corrupted inputs for both.
    """
    n = min(args.eval_blocks, len(setup.held_out))
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    ids, attention = setup.held_out.blocks[:n], setup.held_out.mask[:n]
    if setup.kind == "causal":
        total, count = 0.0, 0
        for start in range(0, n, 32):
            rows = slice(start, start + 32)
            logits = model(input_ids=ids[rows], attention_mask=attention[rows]).logits
            loss, items, _ = causal_lm_loss(logits, ids[rows], attention[rows])
            total, count = total + float(loss) * int(items), count + int(items)
        model.train(was_training)
        return total / max(count, 1)
    special = torch.zeros(max(len(setup.tokenizer), model.config.vocab_size), dtype=torch.bool)
    special[torch.tensor(setup.tokenizer.all_special_ids)] = True
    maskable = attention.bool() & ~special[ids]
    generator = torch.Generator().manual_seed(1234)
    corrupted, selected = mask_tokens(ids, maskable, setup.tokenizer.mask_token_id, len(setup.tokenizer),
                                      setup.cfg.mlm, generator=generator)
    total, count = 0.0, 0
    for start in range(0, n, 32):
        rows = slice(start, start + 32)
        logits = model(input_ids=corrupted[rows], attention_mask=attention[rows]).logits
        sel = selected[rows]
        total += float(F.cross_entropy(logits[sel], ids[rows][sel], reduction="sum"))
        count += int(sel.sum())
    model.train(was_training)
    return total / max(count, 1)


# --------------------------------------------------------------------------------------------------------------


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def _spread(values: list[float]) -> dict[str, float]:
    med = statistics.median(values)
    return {"median": med, "min": min(values), "max": max(values),
            "spread_pct": 100.0 * (max(values) - min(values)) / med if med else float("nan")}


@exit_on_user_error
def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # what every recipe process does; set up front so both sides run under it
    uptime_start = _uptime()
    t0 = time.perf_counter()
    setup = build_setup(args)
    cfg = setup.cfg
    model = fresh_model(setup)
    n_params, model_name = sum(p.numel() for p in model.parameters()), type(model).__name__
    del model  # not held through the runs: peak memory is theirs
    print(f"setup {time.perf_counter() - t0:.1f}s: {cfg.data.corpus}, {setup.train.num_tokens:,} train tokens in "
          f"{len(setup.train):,} blocks of {cfg.data.block_size}; vocab {len(setup.tokenizer):,}; "
          f"{model_name} "
          f"{cfg.model.num_hidden_layers} x {cfg.model.hidden_size} ({cfg.model.num_attention_heads} heads, ffn "
          f"{cfg.model.intermediate_size}, dropout {cfg.model.hidden_dropout_prob:g}), {n_params / 1e6:.2f}M params; "
          f"batch {cfg.per_device_train_batch_size}; "
          f"{args.warmup_steps} untimed + {args.steps} timed steps; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)

    sides = [("engine", run_engine), ("trainer", run_hf_trainer)]
    if args.only:
        sides = [s for s in sides if s[0] == args.only]
    runs: dict[str, list[RunResult]] = {name: [] for name, _ in sides}
    with tempfile.TemporaryDirectory(prefix="bench_lm_") as tmp:
        for repeat in range(args.repeats):
            for name, fn in sides:
                result = fn(setup, args, Path(tmp))
                runs[name].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name:<7} {result.tokens_per_sec:8,.0f} tokens/s "
                      f"(fastest step {result.best_step_tokens_per_sec:,.0f})  "
                      f"({result.seconds:.1f}s for {args.steps} steps)  train loss {result.final_train_loss:.3f}  "
                      f"held-out loss {result.held_out_loss:.3f}  load {result.load_before:.2f} -> {result.load_after:.2f}",
                      flush=True)
    uptime_end = _uptime()

    report: dict[str, Any] = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "model": {"kind": setup.kind, "compiled": args.compile, "layers": cfg.model.num_hidden_layers, "hidden": cfg.model.hidden_size,
                  "heads": cfg.model.num_attention_heads, "intermediate": cfg.model.intermediate_size,
                  "hidden_dropout": cfg.model.hidden_dropout_prob,
                  "attention_dropout": cfg.model.attention_probs_dropout_prob,
                  "vocab": len(setup.tokenizer), "params": n_params},
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        # Under other jobs' load, OpenMP's default spin-waiting (ACTIVE) costs far more than PASSIVE.
                        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")},
        "uptime_start": uptime_start, "uptime_end": uptime_end,
        "runs": {name: [r.__dict__ for r in results] for name, results in runs.items()},
    }
    print()
    print(f"{'':<8} {'tokens/s (median)':>18} {'min..max':>17} {'spread':>7} {'train loss':>11} {'held-out loss':>14}")
    for name, results in runs.items():
        tps = _spread([r.tokens_per_sec for r in results])
        report[name] = {"tokens_per_sec": tps,
                        "fastest_step_tokens_per_sec": max(r.best_step_tokens_per_sec for r in results),
                        "final_train_loss": statistics.median(r.final_train_loss for r in results),
                        "held_out_loss": statistics.median(r.held_out_loss for r in results)}
        print(f"{name:<8} {tps['median']:>18,.0f} {tps['min']:>8,.0f}..{tps['max']:<8,.0f} {tps['spread_pct']:>6.1f}% "
              f"{report[name]['final_train_loss']:>11.3f} {report[name]['held_out_loss']:>14.3f}")
    if len(runs) == 2:
        ratios = [a.tokens_per_sec / b.tokens_per_sec for a, b in zip(runs["engine"], runs["trainer"])]
        report["ratio"] = _spread(ratios)
        r = report["ratio"]
        print(f"ratio engine / Trainer: {r['median']:.2f}x (per-pair min..max {r['min']:.2f}..{r['max']:.2f}, "
              f"{len(ratios)} pair{'s' if len(ratios) > 1 else ''})")
        fast = {name: report[name]["fastest_step_tokens_per_sec"] for name in runs}
        report["fastest_step_ratio"] = fast["engine"] / fast["trainer"]
        print(f"fastest single step over all runs: engine {fast['engine']:,.0f}, Trainer {fast['trainer']:,.0f} tokens/s, "
              f"ratio {report['fastest_step_ratio']:.2f}x (the figure least disturbed by other jobs' load)")
    flops = model_flops_per_token(setup)
    peak = measure_peak_flops(torch.device("cpu"))  # this machine's fp32 matmul peak, measured now
    report["model_flops_per_token"], report["peak_flops"] = flops, peak
    print(f"model FLOPs/token {flops / 1e6:.1f}M; measured fp32 peak {peak / 1e9:.0f} GFLOP/s")
    for name in runs:
        tps = report[name]["tokens_per_sec"]["median"]
        memory = max(r.extra.get("peak_memory_bytes", 0) for r in runs[name])
        report[name]["mfu"], report[name]["peak_memory_bytes"] = flops * tps / peak, memory
        print(f"{name:<8} MFU {100 * flops * tps / peak:.0f}%  ({flops * tps / 1e9:.1f} GFLOP/s)  "
              f"peak memory {memory / 2**20:,.0f} MiB")
    if args.profile:
        print(profile_engine(setup, args))
    print(f"uptime before: {uptime_start}\nuptime after:  {uptime_end}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
