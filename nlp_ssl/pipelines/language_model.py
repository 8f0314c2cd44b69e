"""Pretrain a BERT-style masked LM (``mlm``) or a GPT-style causal LM (``clm``) on the runner."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nlp_ssl.config import TrainingConfig, dump_yaml
from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.lm_data import build_lm_datasets, prepare_tokenizer
from nlp_ssl.data.packing import collate_blocks
from nlp_ssl.data.tokenizer import TokenizerConfig, load_tokenizer
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome, run
from nlp_ssl.errors import UserError
from nlp_ssl.hub.model_card import CardInfo
from nlp_ssl.models.transformer_lm import TransformerConfig, build_lm, check_checkpoint, check_tokenizer_matches
from nlp_ssl.objectives.base import Objective
from nlp_ssl.objectives.lm import CausalLMObjective, MaskedLMObjective
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
class CausalLMConfig(LanguageModelConfig):
    """``recipes/clm.py``: adds the sample generated at the end."""

    generation: GenerationConfig = field(default_factory=GenerationConfig)


class LanguageModelPipeline(Pipeline[LanguageModelConfig]):
    """Corpus -> tokenizer -> packed blocks -> masked or causal LM objective -> ``save_pretrained`` export."""

    def __init__(self, kind: Literal["masked", "causal"]) -> None:
        self.kind = kind
        self.causal = kind == "causal"

    def prepare_inputs(self, cfg: LanguageModelConfig) -> Any:
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
        train, held_out = build_lm_datasets(ctx.inputs, tokenizer, cfg.data, self.causal, acc, cfg.seed)
        tokens = getattr(train, "num_tokens", 0)
        blocks = len(train) if hasattr(train, "__len__") else "?"
        return RunData(train, held_out, collate_blocks, extra={"tokenizer": tokenizer},
                       description=f"data: {cfg.data.corpus}: {tokens:,} train tokens in {blocks} blocks of "
                                   f"{cfg.data.block_size}; vocab {len(tokenizer):,}")

    def build_objective(self, ctx: RunContext[LanguageModelConfig], data: RunData) -> Objective:
        cfg, tokenizer = ctx.config, data.extra["tokenizer"]
        model = build_lm(self.kind, cfg.model, tokenizer, cfg.data.block_size)
        if self.causal:
            return CausalLMObjective(model, tokenizer)
        return MaskedLMObjective(model, tokenizer, cfg.mlm)  # type: ignore[attr-defined]

    def on_export(self, ctx: RunContext[LanguageModelConfig], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        if self.causal:
            objective = ctx.trainer.unwrapped  # type: ignore[union-attr]
            text = generate_sample(objective.model, objective.tokenizer, ctx.config.generation)  # type: ignore[attr-defined]
            (folder / "sample.txt").write_text(text + "\n", encoding="utf-8")
        return metrics

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
            command=ctx.command, config_yaml=dump_yaml(cfg), usage=_usage(self.causal, ctx.run_dir.final),
            metrics=metrics, tags=["causal-lm" if self.causal else "masked-lm"],
            description=f"A {'GPT-2' if self.causal else 'BERT'}-style model pretrained from scratch on {cfg.data.corpus}.",
        )

    def outcome_extra(self, ctx: RunContext[LanguageModelConfig], final_dir: Path) -> dict[str, Any]:
        sample = final_dir / "sample.txt"
        return {"sample": sample.read_text(encoding="utf-8").rstrip("\n")} if sample.is_file() else {}

    def summary(self, ctx: RunContext[LanguageModelConfig], outcome: RunOutcome) -> str:
        return format_summary(outcome, self.kind)


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
    out = model.generate(**prompt, do_sample=True, top_k=cfg.top_k, temperature=cfg.temperature,
                         max_new_tokens=cfg.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    torch.random.set_rng_state(generator_state)
    model.train(was_training)
    return tokenizer.decode(out[0], skip_special_tokens=True)


def _usage(causal: bool, folder: Path) -> str:
    if causal:
        return (f"from transformers import pipeline\n\ngenerate = pipeline('text-generation', model='{folder}')\n"
                "print(generate('the market', max_new_tokens=30)[0]['generated_text'])")
    return (f"from transformers import pipeline\n\nfill = pipeline('fill-mask', model='{folder}')\n"
            "print(fill('the stock market [MASK] sharply .'))")


def format_summary(outcome: RunOutcome, kind: Literal["masked", "causal"]) -> str:
    """The lines the recipe prints at the end: held-out metrics and where the model is."""
    metrics = outcome.eval_metrics
    rows = [("held-out loss", metrics.get("eval/loss")), ("perplexity", metrics.get("eval/perplexity")),
            ("masked-token accuracy" if kind == "masked" else "next-token accuracy", metrics.get("eval/accuracy"))]
    width = max(len(name) for name, _ in rows)
    lines = [f"Evaluation after {outcome.step} steps ({int(metrics.get('eval/items', 0)):,} held-out "
             f"{'masked ' if kind == 'masked' else ''}tokens):"]
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in rows if value is not None]
    if outcome.extra.get("sample") is not None:
        lines.append(f"Sample: {outcome.extra['sample']!r}")
    state = "" if not outcome.stopped_by_time else " (stopped by max_time_minutes; rerun to continue)"
    lines.append(f"Exported model: {outcome.final_dir.resolve()}{state}")
    auto = "AutoModelForCausalLM" if kind == "causal" else "AutoModelForMaskedLM"
    lines.append(f"  load it with transformers.{auto}.from_pretrained('{outcome.final_dir}')")
    return "\n".join(lines)


register("mlm", "BERT-style masked-LM pretraining (80/10/10 masking)", MaskedLMConfig,
         lambda cfg: run(LanguageModelPipeline("masked"), cfg))
register("clm", "GPT-style causal-LM pretraining", CausalLMConfig,
         lambda cfg: run(LanguageModelPipeline("causal"), cfg))
