"""Sentence encoders by contrastive learning (``contrastive_text``): SimCSE / SimCLR, MoCo, supervised, CPC.

Starts from any masked-LM checkpoint (``model.name_or_path``: a run's ``final/``, a transformers folder or a
hub id), trains on the sentences of a corpus (unsupervised methods), a file of (anchor, positive[, negative])
tuples or labelled texts (supervised), and exports the encoder without the projection head, with its pooling
recorded. The ``evaluation`` section then scores the export on labelled sentence sets (kNN and linear-probe
accuracy) and scored pairs (Spearman), into ``eval_results.json`` and the model card.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nlp_ssl.config import TrainingConfig, dump_yaml
from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.text_views import TextViewConfig
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome, run
from nlp_ssl.errors import UserError
from nlp_ssl.hub.model_card import CardInfo
from nlp_ssl.hub.portable import portable_path
from nlp_ssl.objectives.base import Objective
from nlp_ssl.objectives.contrastive import ContrastiveConfig
from nlp_ssl.registry import register


@dataclass
class SentenceDataConfig(CorpusConfig):
    """The ``data`` section: a corpus (unsupervised) or a supervised file, cut to ``max_length`` tokens.

    Attributes (beyond :class:`~nlp_ssl.data.corpus.CorpusConfig`'s corpus keys):
        max_length: tokens per sentence, special tokens included; longer texts are truncated.
        split_lines: one example per line of each corpus example (paragraphs of an article) instead of one
            per example.
        min_chars: drop texts shorter than this (headers, stray punctuation).
        pairs_file: supervised: a TSV / CSV / JSONL file with ``anchor``, ``positive`` (and ``negative``) columns.
        labelled_file: supervised: a file with ``text_column`` and ``label_column``, or ``trec`` / ``bbc_news``
            (their train split).
        label_column: the label column of ``labelled_file``.
    """

    max_length: int = 64
    split_lines: bool = False
    min_chars: int = 1
    pairs_file: str | None = None
    labelled_file: str | None = None
    label_column: str = "label"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_length < 4:
            raise UserError(f"config key 'data.max_length' must be >= 4, got {self.max_length}")
        if self.pairs_file and self.labelled_file:
            raise UserError("config keys 'data.pairs_file' and 'data.labelled_file' exclude each other; give one")


@dataclass
class SentenceModelConfig:
    """The ``model`` section: the checkpoint to start from and how sentences are pooled."""

    name_or_path: str = "runs/mlm-ptb/final"
    init: Literal["pretrained", "random"] = "pretrained"
    pooling: Literal["mean", "cls"] = "mean"
    dropout: float | None = None

    def __post_init__(self) -> None:
        if not self.name_or_path:
            raise UserError("config key 'model.name_or_path' is empty; give a run's final/ folder, a transformers "
                            "folder or a hub id")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise UserError(f"config key 'model.dropout' must be in [0, 1) (or null: the checkpoint's), got {self.dropout}")


@dataclass
class ProjectionConfig:
    """The ``projection`` section: SimCLR's head g(.) (dropped at export). ``layers: 0`` trains without one."""

    layers: int = 2
    hidden_dim: int = 512
    dim: int = 128

    def __post_init__(self) -> None:
        if self.layers not in (0, 1, 2):
            raise UserError(f"config key 'projection.layers' must be 0, 1 or 2, got {self.layers}")
        if self.hidden_dim < 1 or self.dim < 1:
            raise UserError("config keys 'projection.hidden_dim' and 'projection.dim' must be >= 1")


@dataclass
class SentenceEvalConfig:
    """The ``evaluation`` section: what the export is scored on at the end of the run.

    Attributes:
        tasks: labelled sentence sets (``trec``, ``bbc_news``, labelled files) for kNN and probe accuracy.
        pairs_file: scored pairs in the STS-B layout (Spearman), optional.
        k: kNN neighbours.
        labels_per_class: probe label budgets (``null`` entries: all labels).
        max_length: tokens per text when encoding (BBC articles are long).
    """

    enabled: bool = True
    tasks: list[str] = field(default_factory=lambda: ["trec"])
    pairs_file: str | None = None
    k: int = 10
    labels_per_class: list[int | None] = field(default_factory=lambda: [None])
    max_length: int = 128

    def __post_init__(self) -> None:
        if self.k < 1:
            raise UserError(f"config key 'evaluation.k' must be >= 1, got {self.k}")
        if any(b is not None and b < 1 for b in self.labels_per_class):
            raise UserError("config key 'evaluation.labels_per_class' takes positive integers or null (all labels)")


@dataclass
class ContrastiveTextConfig(TrainingConfig):
    """``recipes/contrastive_text.py``: engine keys, then data, model, projection, contrastive, views, evaluation."""

    data: SentenceDataConfig = field(default_factory=SentenceDataConfig)
    model: SentenceModelConfig = field(default_factory=SentenceModelConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    views: TextViewConfig = field(default_factory=TextViewConfig)
    evaluation: SentenceEvalConfig = field(default_factory=SentenceEvalConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        method = self.contrastive.method
        supervised_data = bool(self.data.pairs_file or self.data.labelled_file)
        if method == "supervised" and not supervised_data:
            raise UserError("contrastive.method=supervised needs data.pairs_file or data.labelled_file")
        if method != "supervised" and supervised_data:
            raise UserError(f"data.pairs_file / data.labelled_file are for contrastive.method=supervised, not {method}")
        if method == "supervised" and self.contrastive.loss == "triplet" and self.data.labelled_file:
            raise UserError("contrastive.loss=triplet needs (anchor, positive, negative) triplets in data.pairs_file; "
                            "with data.labelled_file use batch_hard, nt_xent or siamese")
        if method == "moco":
            check_queue_size(self.contrastive.queue_size, self.per_device_train_batch_size,
                             self.gradient_accumulation_steps, world_size())


def world_size() -> int:
    """Processes of this launch (``accelerate launch`` / torchrun set ``WORLD_SIZE``), known before the run starts."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_queue_size(queue_size: int, per_device: int, accumulation: int, processes: int) -> None:
    """MoCo's queue holds whole batches of keys: its size must be a multiple of the global batch.

    Raises:
        UserError: naming the three factors of the global batch.
    """
    global_batch = per_device * processes * accumulation
    if queue_size % global_batch:
        raise UserError(f"config key 'contrastive.queue_size' ({queue_size}) must be a multiple of the global batch "
                        f"{global_batch} (per_device_train_batch_size {per_device} x {processes} processes x "
                        f"gradient_accumulation_steps {accumulation}); e.g. {max(1, queue_size // global_batch) * global_batch}")


@dataclass
class _Inputs:
    corpus: Any = None
    pairs: Any = None
    labelled: tuple[list[str], list[int], list[str]] | None = None
    labelled_eval: tuple[list[str], list[int]] | None = None
    masked_lm: tuple[Any, Any] | None = None  # (model, tokenizer) when contrastive.mlm_weight > 0, loaded once


class ContrastiveTextPipeline(Pipeline[ContrastiveTextConfig]):
    """Checkpoint + sentences (or supervised file) -> contrastive objective -> encoder export -> evaluation."""

    def prepare_inputs(self, cfg: ContrastiveTextConfig) -> _Inputs:
        from nlp_ssl.data.sentences import read_labelled_file, read_pairs_file
        from nlp_ssl.models.sentence_encoder import load_tokenizer_and_config

        inputs = _Inputs()
        if cfg.data.pairs_file:
            inputs.pairs = read_pairs_file(cfg.data.pairs_file)
            if cfg.contrastive.loss == "triplet" and "negative" not in inputs.pairs.column_names:
                raise UserError(f"{cfg.data.pairs_file} has no column 'negative', which contrastive.loss=triplet "
                                "needs; add it or use nt_xent, batch_hard or siamese")
        elif cfg.data.labelled_file:
            inputs.labelled, inputs.labelled_eval = _labelled_inputs(cfg.data.labelled_file, cfg.data.text_column,
                                                                     cfg.data.label_column, read_labelled_file)
        else:
            inputs.corpus = load_corpus(cfg.data)
        if cfg.evaluation.enabled:
            from nlp_ssl.eval.sentence import load_labelled_set, read_sts_pairs

            for task in cfg.evaluation.tasks:
                load_labelled_set(task)  # fail now, not after training
            if cfg.evaluation.pairs_file:
                read_sts_pairs(cfg.evaluation.pairs_file)
        load_tokenizer_and_config(cfg.model.name_or_path)  # a bad checkpoint stops the run before anything is written
        if cfg.contrastive.mlm_weight > 0:  # and so does one without a mask token or a masked-LM head
            from nlp_ssl.models.sentence_encoder import load_masked_lm

            masked_lm = load_masked_lm(cfg.model.name_or_path, dropout=cfg.model.dropout, init=cfg.model.init)
            if cfg.model.init == "pretrained":  # random weights are drawn again once the run's seed is set
                inputs.masked_lm = masked_lm
        return inputs

    def build_data(self, ctx: RunContext[ContrastiveTextConfig]) -> RunData:
        from nlp_ssl.data.sentences import (PairCollator, TextCollator, sentence_texts, tokenize_labelled,
                                            tokenize_pairs, tokenize_texts)
        from nlp_ssl.models.sentence_encoder import load_tokenizer_and_config

        cfg, inputs = ctx.config, ctx.inputs
        tokenizer, _ = load_tokenizer_and_config(cfg.model.name_or_path)
        length = cfg.data.max_length
        if inputs.pairs is not None:
            parts = inputs.pairs.train_test_split(test_size=min(0.1, 200 / max(len(inputs.pairs), 1)), seed=0) \
                if len(inputs.pairs) >= 20 else {"train": inputs.pairs, "test": None}
            train = tokenize_pairs(parts["train"], tokenizer, length)
            held = tokenize_pairs(parts["test"], tokenizer, length) if parts["test"] is not None else None
            sides = "triplets" if "negative" in inputs.pairs.column_names else "pairs"
            return RunData(train, held, PairCollator(tokenizer.pad_token_id), extra={"tokenizer": tokenizer},
                           description=f"data: {cfg.data.pairs_file}: {len(train):,} train {sides}, "
                                       f"{len(held) if held is not None else 0:,} held out; max {length} tokens")
        if inputs.labelled is not None:
            texts, labels, names = inputs.labelled
            train = tokenize_labelled(texts, labels, tokenizer, length)
            eval_texts, eval_labels = inputs.labelled_eval
            held = tokenize_labelled(eval_texts, eval_labels, tokenizer, length) if eval_texts else None
            return RunData(train, held, TextCollator(tokenizer.pad_token_id), extra={"tokenizer": tokenizer},
                           description=f"data: {cfg.data.labelled_file}: {len(train):,} labelled texts, "
                                       f"{len(names)} classes; max {length} tokens")
        corpus = inputs.corpus
        train_texts = sentence_texts(corpus["train"], cfg.data.split_lines, cfg.data.min_chars)
        if len(train_texts) < cfg.per_device_train_batch_size:
            raise UserError(f"corpus {cfg.data.corpus} has {len(train_texts)} texts, fewer than one batch of "
                            f"{cfg.per_device_train_batch_size}; lower per_device_train_batch_size or data.min_chars")
        eval_texts = (sentence_texts(corpus["validation"], cfg.data.split_lines, cfg.data.min_chars)
                      if "validation" in corpus else [])
        train = tokenize_texts(train_texts, tokenizer, length)
        held = tokenize_texts(eval_texts, tokenizer, length) if eval_texts else None
        unit = "lines" if cfg.data.split_lines else "texts"
        return RunData(train, held, TextCollator(tokenizer.pad_token_id), extra={"tokenizer": tokenizer},
                       description=f"data: {cfg.data.corpus}: {len(train):,} train {unit}, "
                                   f"{len(held) if held is not None else 0:,} held out; max {length} tokens")

    def build_objective(self, ctx: RunContext[ContrastiveTextConfig], data: RunData) -> Objective:
        from nlp_ssl.models.sentence_encoder import ProjectionHead, load_backbone, load_masked_lm
        from nlp_ssl.objectives.contrastive import (ContrastiveTextObjective, SupervisedContrastiveObjective,
                                                    TextCPCObjective)

        cfg = ctx.config
        masked_lm = None
        if cfg.contrastive.mlm_weight > 0:
            masked_lm, tokenizer = ctx.inputs.masked_lm or load_masked_lm(
                cfg.model.name_or_path, dropout=cfg.model.dropout, init=cfg.model.init)
            encoder = masked_lm.base_model
        else:
            encoder, tokenizer = load_backbone(cfg.model.name_or_path, dropout=cfg.model.dropout, init=cfg.model.init)
        dim = encoder.config.hidden_size
        method, pooling, length = cfg.contrastive.method, cfg.model.pooling, cfg.data.max_length
        if method == "cpc":
            return TextCPCObjective(encoder, tokenizer, pooling, cfg.contrastive, length)
        head = ProjectionHead(dim, cfg.projection.hidden_dim, cfg.projection.dim, cfg.projection.layers)
        if method == "supervised":
            return SupervisedContrastiveObjective(encoder, tokenizer, pooling, head, cfg.contrastive, length)
        return ContrastiveTextObjective(encoder, tokenizer, pooling, head, cfg.contrastive, cfg.views, length,
                                        masked_lm=masked_lm)

    def describe_objective(self, objective: Objective) -> str:
        encoder = sum(p.numel() for p in objective.model.parameters())  # type: ignore[union-attr]
        trained = sum(p.numel() for p in objective.parameters() if p.requires_grad)
        return (f"model: {type(objective.model).__name__} encoder, {encoder / 1e6:.2f}M parameters "  # type: ignore[union-attr]
                f"({trained / 1e6:.2f}M trained, heads included); objective {type(objective).__name__}")

    def on_export(self, ctx: RunContext[ContrastiveTextConfig], folder: Path, metrics: dict[str, float]
                  ) -> dict[str, float]:
        ev = ctx.config.evaluation
        if not ev.enabled or (not ev.tasks and not ev.pairs_file):
            return metrics
        from nlp_ssl.eval.sentence import evaluate_sentence_encoder, format_sentence_report

        result = evaluate_sentence_encoder(str(folder), ev.tasks, pairs_file=ev.pairs_file,
                                           labels_per_class=ev.labels_per_class, k=ev.k,
                                           pooling=ctx.config.model.pooling, max_length=ev.max_length)
        print(format_sentence_report(result).replace(str(folder), "the export"))
        # Test scores go to eval_results.json and the card; the full result (validation too) beside them.
        result["source"] = "final"
        (folder / "sentence_eval.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return {**metrics, **result["metrics"]}

    def card(self, ctx: RunContext[ContrastiveTextConfig], folder: Path, metrics: dict[str, float]) -> CardInfo:
        cfg = ctx.config
        c = cfg.contrastive
        if c.method == "nt_xent":
            views = _describe_views(cfg.views)
            objective = f"NT-Xent (SimCLR / SimCSE), temperature {c.temperature}, views: {views}"
        elif c.method == "moco":
            objective = (f"MoCo: EMA key encoder (momentum {c.momentum} -> {c.final_momentum}), queue of "
                         f"{c.queue_size} keys, temperature {c.temperature}, views: {_describe_views(cfg.views)}")
        elif c.method == "supervised":
            objective = f"supervised contrastive ({c.loss} loss)"
        else:
            objective = f"CPC over tokens: {c.cpc_context} context, {c.cpc_steps} steps ahead, InfoNCE"
        if c.mlm_weight > 0:
            objective += f"; plus {c.mlm_weight:g} x masked-LM loss on {c.mlm_probability:.0%} of the tokens"
        data = cfg.data.pairs_file or cfg.data.labelled_file or cfg.data.corpus
        return CardInfo(
            model_name=ctx.run_dir.root.name, objective=objective, task_type="sentence-similarity",
            dataset_name=str(data), dataset_type=str(data), steps=ctx.trainer.state.step,  # type: ignore[union-attr]
            command=ctx.command, config_yaml=dump_yaml(cfg), usage=_usage(ctx.run_dir.final, cfg.model.pooling),
            metrics=metrics, tags=["sentence-embeddings", "contrastive", c.method], items_name="sentences",
            description=(f"A sentence encoder ({cfg.model.pooling} pooling) trained contrastively from "
                         f"`{portable_path(cfg.model.name_or_path)}`"
                         f"{' (random init)' if cfg.model.init == 'random' else ''}. {_heads_note(cfg)} The pooling is "
                         "recorded in `config.json` (`sentence_pooling`) and `sentence_pooling.json`."),
        )

    def outcome_extra(self, ctx: RunContext[ContrastiveTextConfig], final_dir: Path) -> dict[str, Any]:
        try:
            return {"metrics": json.loads((final_dir / "eval_results.json").read_text(encoding="utf-8"))}
        except (OSError, ValueError):
            return {}

    def summary(self, ctx: RunContext[ContrastiveTextConfig], outcome: RunOutcome) -> str:
        metrics = {**outcome.eval_metrics, **outcome.extra.get("metrics", {})}
        lines = [f"After {outcome.step} steps:"]
        lines += [f"  {k}: {v:.4f}" for k, v in sorted(metrics.items()) if not k.endswith(("items", "step"))]
        state = "" if not outcome.stopped_by_time else " (stopped by max_time_minutes; rerun to continue)"
        lines.append(f"Exported sentence encoder: {outcome.final_dir.resolve()}{state}")
        lines.append(f"  embed texts with: nlp-ssl embed {outcome.final_dir} TEXTS_FILE --out emb.npy")
        return "\n".join(lines)


def _labelled_inputs(source: str, text_column: str, label_column: str, read_file):
    """Training and held-out labelled texts: a file (10% held out per label), or trec / bbc_news train / validation."""
    key = source.strip().lower()
    if key in ("trec", "bbc_news"):
        from nlp_ssl.eval.sentence import load_labelled_set

        data = load_labelled_set(key)
        texts, labels = data.splits["train"]
        val_texts, val_labels = data.splits["validation"]
        return (texts, [int(x) for x in labels], data.label_names), (val_texts, [int(x) for x in val_labels])
    from nlp_ssl.data.builtin import _hashed_split

    texts, labels, names = read_file(source, text_column, label_column)
    rows = list(zip(texts, labels))
    split = _hashed_split(rows, key=lambda r: f"{Path(source).name}:{r[0]}", held_out_fraction=0.05)
    train = split["train"] + split["test"]  # only one held-out part is needed: validation
    held = split["validation"]
    return ([t for t, _ in train], [y for _, y in train], names), ([t for t, _ in held], [y for _, y in held])


def _heads_note(cfg: ContrastiveTextConfig) -> str:
    lm_head = (" The masked-LM head of the auxiliary loss is not part of the export either."
               if cfg.contrastive.mlm_weight > 0 else "")
    return _projection_note(cfg) + lm_head


def _projection_note(cfg: ContrastiveTextConfig) -> str:
    if cfg.contrastive.method == "cpc":
        return "The context network and the predictors used in training are not part of the export."
    if cfg.projection.layers == 0:
        return "The loss was computed on the pooled encoder output itself (no projection head)."
    return "The projection head used in training is not part of the export."


def _describe_views(views: TextViewConfig) -> str:
    parts = ["dropout"]
    if views.crop_min < 1:
        parts.append(f"span crop {views.crop_min:.0%}-100%")
    if views.word_deletion > 0:
        parts.append(f"word deletion {views.word_deletion:.0%}")
    if views.reorder_window > 0:
        parts.append(f"local reordering (window {views.reorder_window})")
    return " + ".join(parts)


def _usage(folder: Path, pooling: str) -> str:
    pool_line = ("emb = out.last_hidden_state[:, 0]" if pooling == "cls" else
                 "mask = batch['attention_mask'].unsqueeze(-1)\n"
                 "emb = (out.last_hidden_state * mask).sum(1) / mask.sum(1)")
    return (f"import torch\nfrom transformers import AutoModel, AutoTokenizer\n\n"
            f"tokenizer = AutoTokenizer.from_pretrained('{folder}')\nmodel = AutoModel.from_pretrained('{folder}').eval()\n"
            "batch = tokenizer(['what is the capital of peru ?'], padding=True, return_tensors='pt')\n"
            f"with torch.no_grad():\n    out = model(**batch)\n{pool_line}\n"
            f"# or: nlp-ssl embed {folder} texts.txt --out emb.npy")


register("contrastive_text", "sentence encoders by contrastive learning (SimCSE, MoCo, supervised, CPC)",
         ContrastiveTextConfig, lambda cfg: run(ContrastiveTextPipeline(), cfg), config_folder="contrastive")
