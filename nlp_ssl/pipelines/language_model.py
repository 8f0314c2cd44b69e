"""Pretrain a BERT-style masked LM (``mlm``) or a GPT-style causal LM (``clm``) on the runner."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from nlp_ssl.config import TrainingConfig, dump_yaml
from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.lm_data import build_lm_datasets, prepare_tokenizer, token_stream
from nlp_ssl.data.streams import StreamRows, StreamWindows
from nlp_ssl.data.packing import PackedBlocks, collate_blocks, tokenize_corpus
from nlp_ssl.data.tokenizer import TokenizerConfig, load_tokenizer
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome, run
from nlp_ssl.errors import UserError
from nlp_ssl.hub.model_card import CardInfo
from nlp_ssl.models.transformer_lm import (TransformerConfig, build_lm, check_checkpoint, check_tokenizer_matches,
                                          resolve_architecture)
from nlp_ssl.objectives.base import Objective, OptimizerSetup
from nlp_ssl.objectives.lm import CausalLMObjective, MaskedLMObjective
from nlp_ssl.objectives.recurrent_lm import TruncatedBPTTObjective
from nlp_ssl.objectives.masking import MaskingConfig
from nlp_ssl.registry import register


@dataclass
class LanguageModelConfig(TrainingConfig):
    """Engine keys at the top level, then what every LM recipe needs: data, tokenizer and model sections."""

    data: CorpusConfig = field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: TransformerConfig = field(default_factory=TransformerConfig)


@dataclass
class MaskedLMConfig(LanguageModelConfig):
    """``recipes/mlm.py``: adds the masking section."""

    mlm: MaskingConfig = field(default_factory=MaskingConfig)


@dataclass
class GenerationConfig:
    prompt: str = "the"
    max_new_tokens: int = 40
    top_k: int = 50
    temperature: float = 0.9


@dataclass
class RecurrentConfig:
    """Training of ``model.architecture=lstm`` (truncated BPTT over contiguous streams).

    ``per_device_train_batch_size`` is the number of parallel streams per process and ``data.block_size`` the
    BPTT window. ``optimizer`` ``sgd`` is Zaremba et al.'s plain SGD (with the engine's schedule and clipping;
    ``learning_rate`` is then per token-mean loss, so 20 here is their 1.0 on a loss summed over 20 steps),
    ``adamw`` the engine's default.
    """

    optimizer: Literal["adamw", "sgd"] = "adamw"


@dataclass
class CausalLMConfig(LanguageModelConfig):
    """``recipes/clm.py``: adds the sample generated at the end, the recurrent-LM options and ``test_split``:
    a split of an embedded corpus scored once at the end, like the validation split (PTB's ``test``, for the
    perplexities of the literature; skipped when the corpus has no such split)."""

    generation: GenerationConfig = field(default_factory=GenerationConfig)
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)
    test_split: str | None = "test"


class LanguageModelPipeline(Pipeline[LanguageModelConfig]):
    """Corpus -> tokenizer -> packed blocks -> masked or causal LM objective -> ``save_pretrained`` export."""

    def __init__(self, kind: Literal["masked", "causal"]) -> None:
        self.kind = kind
        self.causal = kind == "causal"

    def _is_lstm(self, cfg: LanguageModelConfig) -> bool:
        if cfg.model.init_from:
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(cfg.model.init_from).model_type == "nlp_ssl_lstm"
        return resolve_architecture(self.kind, cfg.model) == "lstm"

    def _stream_data(self, ctx: RunContext[LanguageModelConfig], tokenizer: Any) -> RunData:
        """Contiguous streams for truncated BPTT: ``B x processes`` training streams, held-out rows."""
        cfg, acc = ctx.config, ctx.accelerator
        with acc.main_process_first():
            train_ids = token_stream(ctx.inputs["train"], tokenizer, cfg.data.num_proc)
            eval_ids = token_stream(ctx.inputs["validation"], tokenizer) if "validation" in ctx.inputs else None
        streams = cfg.per_device_train_batch_size * acc.num_processes
        train = StreamWindows(train_ids, streams, cfg.data.block_size)
        held_out = StreamRows(eval_ids, cfg.per_device_eval_batch_size * acc.num_processes) if eval_ids is not None else None
        windows = len(train) // streams
        return RunData(train, held_out, default_collate, extra={"tokenizer": tokenizer},
                       description=f"data: {cfg.data.corpus}: {train_ids.numel():,} train tokens as {streams} streams, "
                                   f"{windows} windows of {cfg.data.block_size} per epoch; vocab {len(tokenizer):,}")

    def prepare_inputs(self, cfg: LanguageModelConfig) -> Any:
        architecture = resolve_architecture(self.kind, cfg.model)  # a wrong architecture fails before any read
        if architecture == "lstm" and cfg.data.streaming:
            raise UserError("model.architecture=lstm reads the corpus as one contiguous stream; set data.streaming=false")
        if cfg.model.init_from:  # the checkpoint first: a wrong path is then named as such
            check_checkpoint(cfg.model.init_from, self.kind)
        corpus = load_corpus(cfg.data)
        if cfg.tokenizer.name_or_path:
            tokenizer = load_tokenizer(cfg.tokenizer.name_or_path)  # a wrong name fails here, before any write
            if cfg.model.init_from and cfg.tokenizer.name_or_path != cfg.model.init_from:
                check_tokenizer_matches(cfg.model.init_from, tokenizer)
        return corpus

    def build_data(self, ctx: RunContext[LanguageModelConfig]) -> RunData:
        cfg, acc = ctx.config, ctx.accelerator
        tokenizer = prepare_tokenizer(cfg.tokenizer, "bpe" if self.causal else "wordpiece", ctx.inputs,
                                      ctx.run_dir.root / "tokenizer", acc, model_init_from=cfg.model.init_from)
        if self._is_lstm(cfg):
            return self._stream_data(ctx, tokenizer)
        train, held_out = build_lm_datasets(ctx.inputs, tokenizer, cfg.data, self.causal, acc, cfg.seed)
        tokens = getattr(train, "num_tokens", 0)
        blocks = len(train) if hasattr(train, "__len__") else "?"
        return RunData(train, held_out, collate_blocks, extra={"tokenizer": tokenizer},
                       description=f"data: {cfg.data.corpus}: {tokens:,} train tokens in {blocks} blocks of "
                                   f"{cfg.data.block_size}; vocab {len(tokenizer):,}")

    def build_objective(self, ctx: RunContext[LanguageModelConfig], data: RunData) -> Objective:
        cfg, tokenizer = ctx.config, data.extra["tokenizer"]
        model = build_lm(self.kind, cfg.model, tokenizer, cfg.data.block_size)
        if self._is_lstm(cfg):
            return RecurrentLMObjective(model, tokenizer, cfg.data.block_size,
                                        cfg.recurrent.optimizer)  # type: ignore[attr-defined]
        if self.causal:
            return CausalLMObjective(model, tokenizer)
        return MaskedLMObjective(model, tokenizer, cfg.mlm)  # type: ignore[attr-defined]

    def on_export(self, ctx: RunContext[LanguageModelConfig], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        if self.causal:
            objective = ctx.trainer.unwrapped  # type: ignore[union-attr]
            text = generate_sample(objective.model, objective.tokenizer, ctx.config.generation)  # type: ignore[attr-defined]
            (folder / "sample.txt").write_text(text + "\n", encoding="utf-8")
            test = self._test_data(ctx, objective.tokenizer)
            if test is not None:
                metrics = {**metrics, **score_split(objective, *test, prefix="test")}
        return metrics

    def _test_data(self, ctx: RunContext[LanguageModelConfig], tokenizer: Any) -> tuple[Dataset, Any, int] | None:
        """The embedded corpus's ``test_split`` laid out like the validation data, or None if it has none."""
        from nlp_ssl.data.builtin import BUILTIN_CORPORA, load_builtin_corpus

        cfg = ctx.config
        split = getattr(cfg, "test_split", None)
        if not split or cfg.data.corpus not in BUILTIN_CORPORA:
            return None
        corpus = load_builtin_corpus(cfg.data.corpus)
        if split not in corpus:
            return None
        batch = cfg.per_device_eval_batch_size
        if self._is_lstm(cfg):
            rows = batch * ctx.accelerator.num_processes
            return StreamRows(token_stream(corpus[split], tokenizer), rows), default_collate, batch
        ids = tokenize_corpus(corpus[split], tokenizer, append_eos=True)
        return PackedBlocks.from_tokenized(ids, cfg.data.block_size, tokenizer.pad_token_id), collate_blocks, batch

    def card(self, ctx: RunContext[LanguageModelConfig], folder: Path, metrics: dict[str, float]) -> CardInfo:
        cfg = ctx.config
        if self.causal:
            objective = "causal language modelling (next-token prediction)"
        else:
            m = cfg.mlm  # type: ignore[attr-defined]
            objective = (f"masked language modelling ({m.mlm_probability:.0%} of tokens, {m.mask_replace_prob:.0%}/"
                         f"{m.random_replace_prob:.0%}/{1 - m.mask_replace_prob - m.random_replace_prob:.0%} "
                         "mask/random/keep)")
        return CardInfo(
            model_name=ctx.run_dir.root.name, objective=objective,
            task_type="text-generation" if self.causal else "fill-mask",
            dataset_name=cfg.data.corpus, dataset_type=cfg.data.corpus, steps=ctx.trainer.state.step,  # type: ignore[union-attr]
            command=ctx.command, config_yaml=dump_yaml(cfg), usage=_usage(self.causal, ctx.run_dir.final,
                                                                     resolve_architecture(self.kind, cfg.model)),
            metrics=metrics, tags=["causal-lm" if self.causal else "masked-lm"],
            description=f"A {_ARCHITECTURE_NAMES[resolve_architecture(self.kind, cfg.model)]} pretrained from scratch on "
                        f"{cfg.data.corpus}.",
        )

    def outcome_extra(self, ctx: RunContext[LanguageModelConfig], final_dir: Path) -> dict[str, Any]:
        extra: dict[str, Any] = {"architecture": resolve_architecture(self.kind, ctx.config.model)}
        sample = final_dir / "sample.txt"
        if sample.is_file():
            extra["sample"] = sample.read_text(encoding="utf-8").rstrip("\n")
        results = final_dir / "eval_results.json"
        if results.is_file():
            test = {k: v for k, v in json.loads(results.read_text(encoding="utf-8")).items() if k.startswith("test/")}
            if test:
                extra["test"] = test
        return extra

    def summary(self, ctx: RunContext[LanguageModelConfig], outcome: RunOutcome) -> str:
        return format_summary(outcome, self.kind)


class RecurrentLMObjective(TruncatedBPTTObjective):
    """:class:`TruncatedBPTTObjective` with the recipe's optimizer choice (``recurrent.optimizer``)."""

    def __init__(self, model: Any, tokenizer: Any, bptt: int, optimizer: str) -> None:
        super().__init__(model, tokenizer, bptt)
        self.optimizer_name = optimizer

    def configure_optimizer(self, config: Any) -> OptimizerSetup | None:
        if self.optimizer_name != "sgd":
            return None
        # Plain SGD as in Zaremba et al. 2014; the engine still applies its schedule and gradient clipping.
        return OptimizerSetup(optimizer=torch.optim.SGD(self.parameters(), lr=config.learning_rate,
                                                        weight_decay=config.weight_decay))


@torch.no_grad()
def score_split(objective: Objective, dataset: Dataset, collate: Any, batch_size: int, prefix: str) -> dict[str, float]:
    """Item-weighted mean loss of ``objective.evaluate_batch`` over ``dataset`` and its perplexity, as
    ``{prefix}/loss``, ``{prefix}/perplexity``, ``{prefix}/items``; the objective's mode is restored."""
    was_training = objective.training
    objective.eval()
    device = next(objective.parameters()).device
    total, items = 0.0, 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out = objective.evaluate_batch(batch)
        count = int(out.num_items)
        total += float(out.loss) * count
        items += count
    objective.train(was_training)
    loss = total / max(items, 1)
    return {f"{prefix}/loss": loss, f"{prefix}/perplexity": float(torch.exp(torch.tensor(min(loss, 50.0)))),
            f"{prefix}/items": float(items)}


@torch.no_grad()
def generate_sample(model: torch.nn.Module, tokenizer, cfg: GenerationConfig) -> str:
    """A short top-k sample from ``cfg.prompt`` (seeded, so reruns print the same text)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    prompt = tokenizer(cfg.prompt, return_tensors="pt").to(device)
    if prompt["input_ids"].shape[1] == 0:
        raise UserError("generation.prompt is empty after tokenisation; give a prompt with some text")
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    # min_new_tokens: a word-level LM trained on a stream of sentences may end the prompt's sentence at once
    # (PTB: "... the company said <eos>"); the sample should show max_new_tokens of generated text.
    out = model.generate(**prompt, do_sample=True, top_k=cfg.top_k, temperature=cfg.temperature,
                         max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id)
    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    return tokenizer.decode(out[0], skip_special_tokens=True)


_ARCHITECTURE_NAMES = {"bert": "BERT-style encoder", "modernbert": "ModernBERT-style (pre-LN) encoder",
                       "gpt2": "GPT-2-style decoder", "lstm": "word-level LSTM language model (Zaremba et al. 2014)"}


#: Architectures of this package that transformers' Auto classes know only once their module is imported.
_REGISTERING_IMPORT = {"lstm": "import nlp_ssl.models.lstm_lm  # registers the LSTM with transformers' Auto classes"}


def _usage(causal: bool, folder: Path, architecture: str) -> str:
    prefix = f"{_REGISTERING_IMPORT[architecture]}\n" if architecture in _REGISTERING_IMPORT else ""
    if causal:
        return (f"{prefix}from transformers import pipeline\n\ngenerate = pipeline('text-generation', model='{folder}')\n"
                "print(generate('the market', max_new_tokens=30)[0]['generated_text'])")
    return (f"from transformers import pipeline\n\nfill = pipeline('fill-mask', model='{folder}')\n"
            "print(fill('the stock market [MASK] sharply .'))")


def format_summary(outcome: RunOutcome, kind: Literal["masked", "causal"]) -> str:
    """The lines the recipe prints at the end: held-out metrics and where the model is."""
    metrics = outcome.eval_metrics
    rows = [("held-out loss", metrics.get("eval/loss")), ("perplexity", metrics.get("eval/perplexity")),
            ("masked-token accuracy" if kind == "masked" else "next-token accuracy", metrics.get("eval/accuracy")),
            ("test perplexity", outcome.extra.get("test", {}).get("test/perplexity"))]
    width = max(len(name) for name, _ in rows)
    lines = [f"Evaluation after {outcome.step} steps ({int(metrics.get('eval/items', 0)):,} held-out "
             f"{'masked ' if kind == 'masked' else ''}tokens):"]
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in rows if value is not None]
    if outcome.extra.get("sample") is not None:
        lines.append(f"Sample: {outcome.extra['sample']!r}")
    state = "" if not outcome.stopped_by_time else " (stopped by max_time_minutes; rerun to continue)"
    lines.append(f"Exported model: {outcome.final_dir.resolve()}{state}")
    auto = "AutoModelForCausalLM" if kind == "causal" else "AutoModelForMaskedLM"
    registering = _REGISTERING_IMPORT.get(outcome.extra.get("architecture", ""))
    after = f" after `{registering.split('  #')[0]}`" if registering else ""
    lines.append(f"  load it with transformers.{auto}.from_pretrained('{outcome.final_dir}'){after}")
    return "\n".join(lines)


register("mlm", "BERT-style masked-LM pretraining (80/10/10 masking)", MaskedLMConfig,
         lambda cfg: run(LanguageModelPipeline("masked"), cfg))
register("clm", "GPT-style causal-LM pretraining", CausalLMConfig,
         lambda cfg: run(LanguageModelPipeline("causal"), cfg))
