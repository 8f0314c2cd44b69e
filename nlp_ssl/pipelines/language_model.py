"""Pretrain a BERT-style masked LM or a GPT-style causal LM: the flow both LM recipes run."""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from accelerate.utils import set_seed

from nlp_ssl.config import TrainingConfig, dump_yaml, to_dict
from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.lm_data import build_lm_datasets, prepare_tokenizer
from nlp_ssl.data.packing import collate_blocks
from nlp_ssl.data.tokenizer import TokenizerConfig
from nlp_ssl.engine.run_dir import RunDirectory
from nlp_ssl.engine.trainer import TrainResult, Trainer, make_accelerator
from nlp_ssl.errors import UserError
from nlp_ssl.hub.model_card import CardInfo, write_model_card
from nlp_ssl.models.transformer_lm import TransformerConfig, build_lm
from nlp_ssl.objectives.lm import CausalLMObjective, MaskedLMObjective
from nlp_ssl.objectives.masking import MaskingConfig


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


@dataclass
class LMRunSummary:
    result: TrainResult
    tokens_per_epoch: int
    is_main_process: bool
    sample: str | None = None


def pretrain_language_model(cfg: MaskedLMConfig | CausalLMConfig, kind: Literal["masked", "causal"]) -> LMRunSummary:
    """Load data, build tokenizer and model, train with the engine, export ``final/`` with a model card."""
    causal = kind == "causal"
    run_dir = RunDirectory(cfg.output_dir, to_dict(cfg), cfg.overwrite_output_dir)
    resume_from = run_dir.check()
    # Every input check happens before the first byte is written to output_dir.
    corpus = load_corpus(cfg.data)
    if cfg.tokenizer.name_or_path and cfg.model.init_from and cfg.tokenizer.name_or_path != cfg.model.init_from:
        from nlp_ssl.data.tokenizer import load_tokenizer
        from nlp_ssl.models.transformer_lm import check_tokenizer_matches

        check_tokenizer_matches(cfg.model.init_from, load_tokenizer(cfg.tokenizer.name_or_path))

    accelerator = make_accelerator(cfg, run_dir.root)
    set_seed(cfg.seed)
    if accelerator.is_main_process:
        run_dir.prepare(RunDirectory.step_of(resume_from) if resume_from else None)
    accelerator.wait_for_everyone()

    tokenizer = prepare_tokenizer(cfg.tokenizer, "bpe" if causal else "wordpiece", corpus, run_dir, accelerator,
                                  model_init_from=cfg.model.init_from)
    train, held_out = build_lm_datasets(corpus, tokenizer, cfg.data, causal, accelerator, cfg.seed)
    tokens = getattr(train, "num_tokens", 0)
    accelerator.print(f"data: {cfg.data.corpus}: {tokens:,} train tokens in {len(train) if hasattr(train, '__len__') else '?'} "
                      f"blocks of {cfg.data.block_size}; vocab {len(tokenizer):,}")

    set_seed(cfg.seed)  # the model's initial weights depend only on the seed, not on data loading
    model = build_lm(kind, cfg.model, tokenizer, cfg.data.block_size)
    objective = CausalLMObjective(model, tokenizer) if causal else MaskedLMObjective(model, tokenizer, cfg.mlm)
    n_params = sum(p.numel() for p in model.parameters())
    accelerator.print(f"model: {type(model).__name__}, {n_params / 1e6:.2f}M parameters")

    sample: dict[str, str] = {}

    def on_export(folder: Path, metrics: dict[str, float]) -> None:
        if causal:
            sample["text"] = generate_sample(model, tokenizer, cfg.generation)  # type: ignore[union-attr]
            (folder / "sample.txt").write_text(sample["text"] + "\n", encoding="utf-8")
        write_model_card(folder, CardInfo(
            model_name=run_dir.root.name,
            objective="causal language modelling (next-token prediction)" if causal else
            f"masked language modelling ({cfg.mlm.mlm_probability:.0%} of tokens, "  # type: ignore[union-attr]
            f"{cfg.mlm.mask_replace_prob:.0%}/{cfg.mlm.random_replace_prob:.0%}/"  # type: ignore[union-attr]
            f"{1 - cfg.mlm.mask_replace_prob - cfg.mlm.random_replace_prob:.0%} mask/random/keep)",  # type: ignore[union-attr]
            task_type="text-generation" if causal else "fill-mask",
            dataset_name=cfg.data.corpus, dataset_type=cfg.data.corpus, steps=trainer.state.step,
            command=" ".join(shlex.quote(a) for a in sys.argv), config_yaml=dump_yaml(cfg),
            usage=_usage(causal, run_dir.final), metrics=metrics, tags=["causal-lm" if causal else "masked-lm"],
            description=f"A {'GPT-2' if causal else 'BERT'}-style model pretrained from scratch on {cfg.data.corpus}.",
        ))

    trainer = Trainer(cfg, objective, train, run_dir=run_dir, accelerator=accelerator, eval_dataset=held_out,
                      collate_fn=collate_blocks, full_config=to_dict(cfg), on_export=on_export)
    result = trainer.train(resume_from=resume_from)
    return LMRunSummary(result, tokens, accelerator.is_main_process, sample.get("text"))


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


def format_summary(summary: LMRunSummary, kind: Literal["masked", "causal"]) -> str:
    """The lines the recipe prints at the end: held-out metrics and where the model is."""
    metrics = summary.result.eval_metrics
    rows = [("held-out loss", metrics.get("eval/loss")), ("perplexity", metrics.get("eval/perplexity")),
            ("masked-token accuracy" if kind == "masked" else "next-token accuracy", metrics.get("eval/accuracy"))]
    width = max(len(name) for name, _ in rows)
    lines = [f"Evaluation after {summary.result.step} steps ({int(metrics.get('eval/items', 0)):,} held-out "
             f"{'masked ' if kind == 'masked' else ''}tokens):"]
    lines += [f"  {name:<{width}}  {value:.4f}" for name, value in rows if value is not None]
    if summary.sample is not None:
        lines.append(f"Sample: {summary.sample!r}")
    state = "" if not summary.result.stopped_by_time else " (stopped by max_time_minutes; rerun to continue)"
    lines.append(f"Exported model: {summary.result.final_dir.resolve()}{state}")
    auto = "AutoModelForCausalLM" if kind == "causal" else "AutoModelForMaskedLM"
    lines.append(f"  load it with transformers.{auto}.from_pretrained('{summary.result.final_dir}')")
    return "\n".join(lines)
