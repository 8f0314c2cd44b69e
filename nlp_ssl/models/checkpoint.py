"""Loading a checkpoint for fine-tuning: its config with the task's head, a tokenizer that fits it, the model.

Every failure (missing folder, unreachable hub id, a tokenizer from another checkpoint) becomes a one-line
:class:`~nlp_ssl.errors.UserError`; transformers' own load report is replaced by one line saying which
weights are new.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nlp_ssl.errors import UserError, first_line
from nlp_ssl.data.task_data import has_tokenizer_files


@dataclass
class TaskSpec:
    """Everything the flow needs to know about one task, whatever its family."""

    name: str
    kind: Literal["sequence", "token"]
    metric: str  # metric family, or "seqeval"
    label_names: list[str] | None  # None: regression
    dataset_type: str  # hub dataset id (model-index "type"), or a short name for local data
    dataset_config: str | None
    description: str
    display_name: str  # model-index dataset "name", e.g. "GLUE SST-2"
    source: str  # where the examples were read from (hub id, folder, file)

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)


# --- loading model and tokenizer ----------------------------------------------------------------------


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars; we print one line of our own instead."""
    from transformers.utils import logging as hf_logging

    level, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def check_model_path(model: str) -> None:
    """Refuse a local model path that does not exist or holds no model (hub ids pass through)."""
    local = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) and not local.exists():
        raise UserError(f"model folder {model} not found; pass a run's final/ folder, a transformers model folder "
                        "or a hub id")
    if local.is_dir() and not (local / "config.json").is_file():
        raise UserError(f"{model} is not a model folder (no config.json); pass a run's final/ folder, a "
                        "transformers model folder or a hub id")


def load_model_config(model: str, spec: TaskSpec, pooling: str = "auto") -> Any:
    """The checkpoint's config with the task's head size, label names and (sequence tasks) pooling.

    ``pooling`` ``auto`` keeps the checkpoint's own choice: ModernBERT's ``classifier_pooling`` (``mean`` for
    the models the masked-LM recipe trains), BERT's ``[CLS]`` state through its pooler. ``mean`` / ``cls`` set
    it for architectures whose classifier offers both (those with a ``classifier_pooling`` setting).

    Raises:
        UserError: the model folder / hub id cannot be read, or it cannot pool as asked.
    """
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {"num_labels": spec.num_labels}
    if spec.label_names is not None:
        kwargs["id2label"] = dict(enumerate(spec.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(spec.label_names)}
    if spec.kind == "sequence":
        kwargs["problem_type"] = "regression" if spec.label_names is None else "single_label_classification"
    check_model_path(model)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(model, **kwargs)
    except Exception as err:  # noqa: BLE001 - missing folder, bad JSON, hub unreachable: one actionable line
        raise UserError(f"could not load model {model!r} ({first_line(err)}); pass a transformers model folder "
                        "(e.g. a run's final/) or a hub id") from None
    if pooling != "auto" and spec.kind == "sequence":
        if not hasattr(config, "classifier_pooling"):
            raise UserError(f"pooling={pooling}: the {config.model_type} classifier of {model!r} always pools its "
                            "own way ([CLS] through a pooler for BERT); use pooling=auto, or a ModernBERT checkpoint "
                            "(mlm recipe with model.architecture=modernbert)")
        config.classifier_pooling = pooling
    return config


def _try_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    if not has_tokenizer_files(name):
        return None
    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(name)
    except Exception:  # noqa: BLE001 - "no tokenizer here" in its many forms
        return None


def load_checked_tokenizer(model: str, tokenizer: str | None, vocab_size: int | None) -> Any:
    """The model's own tokenizer, or ``tokenizer`` after checking that it fits the checkpoint.

    Raises:
        UserError: no tokenizer could be loaded; ``tokenizer`` differs from the one saved with the model;
            or the tokenizer has more tokens than the model's embedding table.
    """
    own = _try_tokenizer(model)
    if tokenizer:
        tok = _try_tokenizer(tokenizer)
        if tok is None:
            raise UserError(f"could not load tokenizer {tokenizer!r}; pass a folder with tokenizer files or a hub id")
        if own is not None and own.get_vocab() != tok.get_vocab():
            raise UserError(f"tokenizer {tokenizer!r} does not match the tokenizer saved with model {model!r} "
                            f"({len(tok)} vs {len(own)} tokens, different vocabularies); drop the tokenizer key "
                            "to use the model's own")
    else:
        if own is None:
            raise UserError(f"model {model!r} has no tokenizer files; pass tokenizer=<folder or hub id> (the "
                            "tokenizer the model was pretrained with)")
        tok = own
    if vocab_size is not None and len(tok) > vocab_size:
        raise UserError(f"tokenizer has {len(tok)} tokens but model {model!r} embeds only {vocab_size}; the "
                        "tokenizer does not belong to this checkpoint")
    if tok.pad_token_id is None:
        # GPT-2-style tokenizers have no padding token; padding is masked out, so any id will do.
        if tok.eos_token is None:
            raise UserError(f"the tokenizer of {model!r} has neither a padding nor an end-of-text token")
        tok.pad_token = tok.eos_token
    return tok


def build_model(model: str, config: Any, spec: TaskSpec, init: str) -> tuple[Any, str]:
    """A ``*ForSequenceClassification`` / ``*ForTokenClassification`` model and a one-line load note.

    ``init="random"`` builds the same architecture with fresh weights (the no-pretraining baseline).
    """
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    auto = AutoModelForSequenceClassification if spec.kind == "sequence" else AutoModelForTokenClassification
    try:
        with quiet_transformers():
            if init == "random":
                return auto.from_config(config), "randomly initialised (init=random)"
            # ignore_mismatched_sizes: a checkpoint fine-tuned with another label count gets a new head.
            net, info = auto.from_pretrained(model, config=config, ignore_mismatched_sizes=True,
                                             output_loading_info=True)
    except Exception as err:  # noqa: BLE001
        raise UserError(f"could not load model {model!r} for {spec.kind} classification ({first_line(err)})") from None
    new = sorted(set(info.get("missing_keys", [])) | {k for k, *_ in info.get("mismatched_keys", [])})
    unused = info.get("unexpected_keys", [])
    note = f"new weights: {', '.join(new) if new else 'none'}"
    if unused:
        note += f"; {len(unused)} checkpoint tensors unused (e.g. {sorted(unused)[0]})"
    return net, note


def effective_max_length(requested: int, config: Any, tokenizer: Any) -> int:
    """``requested`` capped by the model's position embeddings and the tokenizer's own limit."""
    limits = [requested]
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions:
        # RoBERTa-family position ids start after the padding index.
        limits.append(positions - 2 if "roberta" in getattr(config, "model_type", "") else positions)
    if getattr(tokenizer, "model_max_length", 0) and tokenizer.model_max_length < 100_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)
