"""Build the language models the LM recipes train from a small config, or load a checkpoint to continue.

Masked LM: ``bert`` (``BertForMaskedLM``: post-LN, learned positions, a ``[CLS]`` pooler for classification)
or ``modernbert`` (``ModernBertForMaskedLM``, Warner et al. 2024: pre-LN, rotary positions, GeGLU, no biases;
its classification heads pool the mean of the last layer through the MLM head's transform, so nothing a
fine-tuning run starts from is untrained). Causal LM: ``gpt2`` (``GPT2LMHeadModel``) or ``lstm``
(:class:`~nlp_ssl.models.lstm_lm.LSTMForCausalLM`, Zaremba et al. 2014).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, BertConfig, GPT2Config,
                          PreTrainedModel, PreTrainedTokenizerBase)

from nlp_ssl.data.tokenizer import load_tokenizer
from nlp_ssl.errors import UserError, first_line
from nlp_ssl.models import lstm_lm as _lstm_lm  # noqa: F401 - registers the LSTM LM with the Auto classes


@dataclass
class TransformerConfig:
    """Architecture of a model trained from scratch (or ``init_from`` a checkpoint folder / hub id).

    Names follow ``BertConfig``; for GPT-2 they map to ``n_embd``, ``n_layer``, ``n_head``, ``n_inner``; for
    ModernBERT ``intermediate_size`` is the GeGLU width (default ``8/3 x hidden``, rounded to a multiple of 32,
    the parameter count of BERT's ``4 x hidden`` feed-forward) and ``classifier_pooling`` its fine-tuning
    pooling; for the LSTM ``num_hidden_layers`` LSTM layers of ``hidden_size`` units with dropout
    ``hidden_dropout_prob`` between them, ``tie_word_embeddings``, ``init_range`` and the ``softmax``
    (``full`` or ``adaptive`` with ``adaptive_cutoffs``). ``architecture`` None is the recipe's classic:
    ``bert`` for masked LM, ``gpt2`` for causal LM.
    """

    init_from: str | None = None
    architecture: Literal["bert", "modernbert", "gpt2", "lstm"] | None = None
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int | None = None
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int | None = None
    classifier_pooling: Literal["mean", "cls"] = "mean"
    tie_word_embeddings: bool = True
    init_range: float = 0.1
    softmax: Literal["full", "adaptive"] = "full"
    adaptive_cutoffs: list[int] | None = None

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
        if self.init_range <= 0:
            raise UserError(f"config key 'model.init_range' must be > 0, got {self.init_range}")
        if self.architecture != "lstm":
            for key, default in (("softmax", "full"), ("adaptive_cutoffs", None)):
                if getattr(self, key) != default:
                    raise UserError(f"config key 'model.{key}' applies to model.architecture=lstm only")
        elif self.softmax == "adaptive" and self.tie_word_embeddings:
            raise UserError("model.softmax=adaptive has its own output weights; set model.tie_word_embeddings=false")


#: The architectures each kind of LM can have; the first one is the recipe's default.
ARCHITECTURES = {"masked": ("bert", "modernbert"), "causal": ("gpt2", "lstm")}


def resolve_architecture(kind: Literal["masked", "causal"], cfg: TransformerConfig) -> str:
    """``cfg.architecture`` checked against the recipe, or the recipe's default.

    Raises:
        UserError: e.g. ``model.architecture=lstm`` in the masked-LM recipe.
    """
    allowed = ARCHITECTURES[kind]
    if cfg.architecture is None:
        return allowed[0]
    if cfg.architecture not in allowed:
        recipe = "mlm" if kind == "masked" else "clm"
        raise UserError(f"model.architecture={cfg.architecture} is not a {kind} LM; the {recipe} recipe trains "
                        f"{' or '.join(allowed)}")
    return cfg.architecture


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
    architecture = resolve_architecture(kind, cfg)
    if architecture == "lstm":
        return _build_lstm(cfg, tokenizer)
    max_pos = cfg.max_position_embeddings or max(block_size, 128)
    if max_pos < block_size:
        raise UserError(f"model.max_position_embeddings ({max_pos}) is smaller than data.block_size ({block_size})")
    if architecture == "modernbert":
        return _build_modernbert(cfg, tokenizer, max_pos)
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


def _build_modernbert(cfg: TransformerConfig, tokenizer: PreTrainedTokenizerBase, max_pos: int) -> PreTrainedModel:
    """A fresh ``ModernBertForMaskedLM``: every layer attends globally (the blocks are short), no biases."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    width = cfg.intermediate_size or 32 * round(8 * cfg.hidden_size / 3 / 32)
    config = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, intermediate_size=width, max_position_embeddings=max_pos,
        layer_types=["full_attention"] * cfg.num_hidden_layers,
        embedding_dropout=cfg.hidden_dropout_prob, mlp_dropout=cfg.hidden_dropout_prob,
        attention_dropout=cfg.attention_probs_dropout_prob, classifier_pooling=cfg.classifier_pooling,
        pad_token_id=tokenizer.pad_token_id, cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    return ModernBertForMaskedLM(config)


def _build_lstm(cfg: TransformerConfig, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A fresh :class:`~nlp_ssl.models.lstm_lm.LSTMForCausalLM` (Zaremba et al. 2014) sized by ``cfg``."""
    from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMLMConfig

    config = LSTMLMConfig(
        vocab_size=len(tokenizer), embedding_size=cfg.hidden_size, hidden_size=cfg.hidden_size,
        num_layers=cfg.num_hidden_layers, dropout=cfg.hidden_dropout_prob,
        tie_word_embeddings=cfg.tie_word_embeddings, init_range=cfg.init_range, softmax=cfg.softmax,
        adaptive_cutoffs=cfg.adaptive_cutoffs, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LSTMForCausalLM(config)


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
