"""Sentence encoders on any transformers encoder: loading, pooling, the projection head and the export.

A sentence embedding is the pooled last layer of an encoder: the masked mean over its tokens, or the state
of the first (``[CLS]``) token. The encoder comes from any masked-LM checkpoint (a run's ``final/``, a
transformers folder or a hub id) through ``AutoModel``, which keeps the encoder and drops the LM head.
Training adds SimCLR's projection head g(.) (Chen et al. 2020, "A Simple Framework for Contrastive Learning
of Visual Representations", section 2.1: the loss is computed on ``g(h)``, the representation is ``h``);
the export is the encoder alone, a folder ``AutoModel.from_pretrained`` loads, with the pooling recorded in
``config.json`` (``sentence_pooling``) and in ``sentence_pooling.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from nlp_ssl.errors import UserError

__all__ = ["POOLING_FILE", "POOLINGS", "ProjectionHead", "causal_attention_mask", "load_backbone", "load_masked_lm",
           "load_tokenizer_and_config", "pool", "read_pooling", "save_sentence_encoder"]

POOLINGS = ("mean", "cls")
POOLING_FILE = "sentence_pooling.json"
Pooling = Literal["mean", "cls"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence vectors from token states.

    Shape:
        - hidden: ``[B, T, H]``; attention_mask: ``[B, T]`` (1 at real tokens)
        - output: ``[B, H]``: the first token's state (``cls``) or the mean over real tokens (``mean``)
    """
    if pooling == "cls":
        return hidden[:, 0]
    if pooling != "mean":
        raise UserError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class ProjectionHead(nn.Sequential):
    """SimCLR's g(.): ``Linear(H, hidden) -> ReLU -> Linear(hidden, out)``, used in training only.

    No batch normalisation: its statistics would differ between one process and several, and between the
    two views of a batch. ``layers=0`` makes the head the identity (the loss then sees the encoder's output).

    Shape: ``[B, H]`` -> ``[B, out]``.
    """

    def __init__(self, dim: int, hidden: int, out: int, layers: int = 2) -> None:
        if layers not in (0, 1, 2):
            raise UserError(f"config key 'projection.layers' must be 0, 1 or 2, got {layers}")
        modules: list[nn.Module] = []
        if layers == 1:
            modules = [nn.Linear(dim, out)]
        elif layers == 2:
            modules = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, out)]
        super().__init__(*modules)
        self.out_dim = out if layers else dim


def causal_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """A 4-D boolean mask letting position ``t`` attend to real positions ``<= t`` only.

    transformers passes 4-D masks through unchanged, so a bidirectional encoder run with it is causal.

    Shape: ``[B, T]`` -> ``[B, 1, T, T]`` (True: attend).
    """
    t = attention_mask.shape[1]
    lower = torch.ones(t, t, dtype=torch.bool, device=attention_mask.device).tril()
    mask = lower[None, None] & attention_mask.bool()[:, None, None, :]
    # A padded query row with nothing to attend to would give NaN in softmax: let it see itself.
    return mask | torch.eye(t, dtype=torch.bool, device=attention_mask.device)[None, None]


def load_tokenizer_and_config(source: str) -> tuple[Any, Any]:
    """``(tokenizer, config)`` of a checkpoint without loading its weights (checks and data preparation).

    Raises:
        UserError: as :func:`load_backbone`.
    """
    from transformers import AutoConfig, AutoTokenizer

    from nlp_ssl.data.task_data import has_tokenizer_files
    from nlp_ssl.models.checkpoint import quiet_transformers

    if not has_tokenizer_files(source):
        raise UserError(f"{source} has no tokenizer files; save the tokenizer next to the model (tokenizer.json)")
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - missing folder, bad files, hub unreachable: one actionable line
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load {source!r} as a transformers encoder with a tokenizer ({first}); pass "
                        "a run's final/ folder, a transformers model folder or a hub id") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer, config


#: The hidden / attention dropout rates of the encoder families a masked-LM checkpoint comes in: BERT-like
#: (BERT, RoBERTa, ELECTRA, DeBERTa, MPNet), ModernBERT (embedding, MLP and attention dropout, 0 after
#: pretraining: without setting all three, SimCSE's two views would be almost the same), DistilBERT, GPT-2.
#: A classifier's dropout is not among them (no classifier here).
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "embedding_dropout", "mlp_dropout",
                "attention_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def _config_with_dropout(source: str, dropout: float | None, init: str) -> tuple[Any, Any]:
    if init not in ("pretrained", "random"):
        raise UserError(f"init must be 'pretrained' or 'random', got {init!r}")
    tokenizer, config = load_tokenizer_and_config(source)
    if dropout is not None:
        for key in DROPOUT_KEYS:
            if hasattr(config, key):
                setattr(config, key, dropout)
    return tokenizer, config


def _freeze_pooler(model: nn.Module) -> None:
    pooler = getattr(model, "pooler", None)
    if isinstance(pooler, nn.Module):
        pooler.requires_grad_(False)


def load_backbone(source: str, *, dropout: float | None = None, init: str = "pretrained") -> tuple[Any, Any]:
    """``(encoder, tokenizer)`` from a checkpoint folder or hub id (``AutoModel``: the LM head is dropped).

    Args:
        source: a run's ``final/``, a transformers folder or a hub id.
        dropout: overrides every hidden and attention dropout rate of the config (:data:`DROPOUT_KEYS`;
            SimCSE's views are dropout masks).
        init: ``random`` builds the same architecture untrained (the no-pretraining baseline).

    The encoder's pooler (``[CLS]`` -> dense -> tanh) is frozen: nothing here trains it, and a parameter
    without a gradient would stop data-parallel training.

    Raises:
        UserError: the folder or hub id cannot be loaded, or has no tokenizer files.
    """
    from transformers import AutoModel

    from nlp_ssl.models.checkpoint import quiet_transformers

    tokenizer, config = _config_with_dropout(source, dropout, init)
    try:
        with quiet_transformers():
            model = (AutoModel.from_config(config) if init == "random"
                     else AutoModel.from_pretrained(source, config=config))
    except Exception as err:  # noqa: BLE001 - missing or corrupt weights: one actionable line
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load the weights of {source!r} as a transformers encoder ({first})") from None
    _freeze_pooler(model)
    return model, tokenizer


def load_masked_lm(source: str, *, dropout: float | None = None, init: str = "pretrained") -> tuple[Any, Any]:
    """``(masked-LM model, tokenizer)`` with its LM head, for an auxiliary masked-LM loss beside a contrastive one.

    The encoder is ``model.base_model`` (the same module, so the export is still the encoder alone). Arguments
    as :func:`load_backbone`.

    Raises:
        UserError: the checkpoint cannot be loaded, its tokenizer has no mask token, or its weights hold the
            encoder alone (no trained LM head to continue from).
    """
    from transformers import AutoModelForMaskedLM

    from nlp_ssl.models.checkpoint import quiet_transformers

    tokenizer, config = _config_with_dropout(source, dropout, init)
    if tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of {source!r} has no mask token, which contrastive.mlm_weight needs; "
                        "start from a masked-LM checkpoint or set contrastive.mlm_weight=0")
    try:
        with quiet_transformers():
            if init == "random":
                model, missing = AutoModelForMaskedLM.from_config(config), []
            else:
                model, info = AutoModelForMaskedLM.from_pretrained(source, config=config, output_loading_info=True)
                missing = info.get("missing_keys", [])
    except Exception as err:  # noqa: BLE001 - an encoder family without a masked-LM class, corrupt weights
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load {source!r} as a masked LM ({first}); set contrastive.mlm_weight=0 "
                        "to train the encoder alone") from None
    prefix = getattr(model, "base_model_prefix", "")
    head_missing = [k for k in missing if not k.startswith(prefix + ".")]
    if head_missing:
        raise UserError(f"{source!r} holds no masked-LM head (missing {head_missing[0]}); start from a masked-LM "
                        "checkpoint such as a run's final/ folder, or set contrastive.mlm_weight=0")
    _freeze_pooler(model.base_model)
    return model, tokenizer


def save_sentence_encoder(model: Any, tokenizer: Any, folder: str | Path, pooling: str,
                          extra: dict[str, Any] | None = None) -> None:
    """Write the encoder (no projection head) and tokenizer, with the pooling in ``config.json`` and
    ``sentence_pooling.json``, so that :func:`read_pooling` and other tools know how to embed a sentence."""
    folder = Path(folder)
    model.config.sentence_pooling = pooling
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {"pooling": pooling, "normalize": False, "max_length": None, **(extra or {})}
    (folder / POOLING_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")


def read_pooling(source: str | Path, default: str = "mean") -> str:
    """The pooling an export recorded (``sentence_pooling.json``, else ``config.json``), or ``default``."""
    folder = Path(source).expanduser()
    for name, key in ((POOLING_FILE, "pooling"), ("config.json", "sentence_pooling")):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if value in POOLINGS:
            return value
    return default
