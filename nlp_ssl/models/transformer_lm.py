"""Build BERT- and GPT-2-style language models from a small config, or load a checkpoint to continue."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, GPT2Config,
                          PreTrainedModel, PreTrainedTokenizerBase)

from nlp_ssl.data.tokenizer import load_tokenizer
from nlp_ssl.errors import UserError, first_line


@dataclass
class TransformerConfig:
    """Architecture of a model trained from scratch (or ``init_from`` a checkpoint folder / hub id).

    Names follow ``BertConfig``; for GPT-2 they map to ``n_embd``, ``n_layer``, ``n_head``, ``n_inner``.
    """

    init_from: str | None = None
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int | None = None
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, key) < 1:
                raise UserError(f"config key 'model.{key}' must be >= 1, got {getattr(self, key)}")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"config key 'model.hidden_size' ({self.hidden_size}) must be divisible by "
                            f"model.num_attention_heads ({self.num_attention_heads})")
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise UserError(f"config key 'model.{key}' must be in [0, 1), got {getattr(self, key)}")


def build_lm(kind: Literal["masked", "causal"], cfg: TransformerConfig, tokenizer: PreTrainedTokenizerBase,
             block_size: int) -> PreTrainedModel:
    """A fresh ``BertForMaskedLM`` / ``GPT2LMHeadModel`` sized by ``cfg``, or the ``init_from`` checkpoint.

    Raises:
        UserError: the checkpoint cannot be loaded, or its vocabulary does not match the tokenizer.
    """
    vocab = len(tokenizer)
    if cfg.init_from:
        auto = AutoModelForMaskedLM if kind == "masked" else AutoModelForCausalLM
        try:
            model = auto.from_pretrained(cfg.init_from)
        except Exception as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"could not load model.init_from '{cfg.init_from}' as a {kind} LM ({first[:200]})") from None
        rows = model.get_input_embeddings().weight.shape[0]
        if rows < vocab:
            raise UserError(f"tokenizer has {vocab} tokens but checkpoint {cfg.init_from} embeds only {rows}; "
                            f"use the checkpoint's own tokenizer (tokenizer.name_or_path={cfg.init_from})")
        return model
    max_pos = cfg.max_position_embeddings or max(block_size, 128)
    if max_pos < block_size:
        raise UserError(f"model.max_position_embeddings ({max_pos}) is smaller than data.block_size ({block_size})")
    if kind == "masked":
        config = BertConfig(
            vocab_size=vocab, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
            num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size or 4 * cfg.hidden_size,
            hidden_dropout_prob=cfg.hidden_dropout_prob, attention_probs_dropout_prob=cfg.attention_probs_dropout_prob,
            max_position_embeddings=max_pos, pad_token_id=tokenizer.pad_token_id,
        )
        from transformers import BertForMaskedLM

        return BertForMaskedLM(config)
    config = GPT2Config(
        vocab_size=vocab, n_positions=max_pos, n_embd=cfg.hidden_size, n_layer=cfg.num_hidden_layers,
        n_head=cfg.num_attention_heads, n_inner=cfg.intermediate_size, resid_pdrop=cfg.hidden_dropout_prob,
        embd_pdrop=cfg.hidden_dropout_prob, attn_pdrop=cfg.attention_probs_dropout_prob,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(config)


def check_checkpoint(model_path: str, kind: Literal["masked", "causal"]) -> None:
    """Refuse a ``model.init_from`` that is not a model, or not the kind of LM the recipe trains.

    Raises:
        UserError: no config to load, or e.g. a masked-LM checkpoint given to the causal-LM recipe.
    """
    local = Path(model_path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise UserError(f"model.init_from {model_path} is not a model folder (no config.json); give a run's final/ "
                        "folder, a transformers model folder or a hub id")
    try:
        config = AutoConfig.from_pretrained(model_path)
    except Exception as err:
        raise UserError(f"could not load model.init_from '{model_path}' ({first_line(err)}); give a run's final/ "
                        "folder, a transformers model folder or a hub id") from None
    architectures = list(getattr(config, "architectures", None) or [])
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures) or bool(getattr(config, "is_decoder", False))
    masked = any(a.endswith("ForMaskedLM") for a in architectures)
    if kind == "causal" and architectures and not causal:
        raise UserError(f"model.init_from {model_path} is a {architectures[0]}, not a causal LM; the clm recipe "
                        "continues GPT-style checkpoints (give a clm run's final/ folder or a causal-LM hub id)")
    if kind == "masked" and architectures and not masked and causal:
        raise UserError(f"model.init_from {model_path} is a {architectures[0]}, a causal LM; the mlm recipe continues "
                        "BERT-style checkpoints (give an mlm run's final/ folder or a masked-LM hub id)")


def check_tokenizer_matches(model_path: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse a tokenizer whose ids do not mean what the checkpoint learned.

    With the checkpoint's own tokenizer at hand, the vocabularies must be the same; otherwise the tokenizer
    must fit the embedding table, leaving at most 64 rows unused (tables are often padded to a multiple).
    """
    try:
        config = AutoConfig.from_pretrained(model_path)
    except Exception:
        return
    rows = getattr(config, "vocab_size", None)
    fix = f"use the checkpoint's own tokenizer (leave tokenizer.name_or_path empty or set it to {model_path})"
    try:
        own = load_tokenizer(model_path)
    except UserError:
        own = None
    if own is not None and own.get_vocab() != tokenizer.get_vocab():
        mine, theirs = tokenizer.get_vocab(), own.get_vocab()
        example = next((t for t in theirs if mine.get(t) != theirs[t]), None)
        detail = f"'{example}' is {theirs[example]} there, {mine.get(example, 'absent')} here" if example else ""
        raise UserError(f"tokenizer ({len(tokenizer)} tokens) does not match the vocabulary of {model_path} "
                        f"({len(own)} tokens; {detail}); {fix}")
    if rows is not None and not rows - 64 <= len(tokenizer) <= rows:
        raise UserError(f"tokenizer has {len(tokenizer)} tokens but {model_path} has a vocabulary of {rows}; {fix}")
