"""Representation health: is a pretrained checkpoint worth fine-tuning, and if not, why?

``model_health`` reads any transformers encoder / LM (a run's ``final/`` folder, any model folder or hub id)
and measures, on held-out text:

* **Anisotropy, per layer** (embeddings and every hidden layer): the mean cosine similarity between the
  states of two different token occurrences (Ethayarajh 2019, "How Contextual are Contextualized Word
  Representations?"). Near 1 means every token points the same way (a collapsed or highly anisotropic
  space); the same number after subtracting the layer's mean state tells whether anything but that common
  direction is left (close to 0 by construction unless a few outlying directions carry most tokens). Pairs
  are all pairs of a seeded sample of non-special, non-padding tokens, computed exactly as
  ``(|sum u|^2 - sum |u|^2) / (n (n - 1))`` over the unit vectors ``u``; the mean state is taken over all
  tokens. Beside them: the mean state norm, and the effective rank (below) of the centred sampled token
  states, which falls when a layer's states collapse onto a few directions.
* **Effective rank of sentence embeddings** (Roy & Vetterli 2007, "The effective rank: a measure of
  effective dimensionality"): ``exp`` of the entropy of the singular values normalised to sum to 1, for the
  mean-pooled last layer (as ``nlp-ssl eval probe`` pools) and for the ``[CLS]`` state (the last token's
  state for causal LMs), raw and mean-centred. 1 means every text maps to one direction.
* **Masked-token accuracy and loss by token frequency** (masked LMs): a seeded 15% of the non-special
  tokens are replaced by ``[MASK]`` (all of them, not BERT's 80/10/10, so every prediction comes from context
  only) and scored, split by the target's frequency rank. Frequencies are counted **on the evaluated text
  itself** (the tokenizer's training corpus is not saved with a checkpoint); buckets are ranks 0-99, 100-999
  and the rest. Beside them: the always-the-most-frequent-token predictor and the unigram distribution's loss
  (both fitted on the same text, so slightly optimistic), and where the model's own predictions fall: a model
  in its "unigram phase" spends nearly all its predictions on the top bucket.
* **Next-token loss by the same buckets** (causal LMs, including :mod:`nlp_ssl.models.lstm_lm`). Here the
  unknown token is scored like a word, as PTB's ``<unk>`` is in the literature's perplexities.
* **Fine-tuning gradient reaching the encoder**: ``AutoModelForSequenceClassification`` from the same folder
  with a freshly initialised head (fixed seed), one forward/backward on a labelled batch (default: BBC News
  topics), gradient L2 norm per encoder layer, pooler and head; once with the model's own head (``[CLS]`` +
  pooler for BERT, mean pooling + the MLM head's transform for ModernBERT) and once with a fresh linear head on
  the mean-pooled last layer; ``new_weights`` lists what the classifier starts with that the checkpoint lacks. Dropout is off, so the two
  heads see the same encoder forward. ``pooler_in_checkpoint`` says whether the pooler was loaded or freshly
  initialised: ``BertForMaskedLM`` neither trains nor saves one, so its ``[CLS]`` head starts from a random
  ``tanh`` layer.

Everything runs batched under ``torch.inference_mode`` except the gradient probe.

Command line (mounted as ``nlp-ssl eval health``; also ``python -m nlp_ssl.eval.health``)::

    nlp-ssl eval health runs/mlm/final --corpus ptb --task bbc_news --json health.json
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nlp_ssl.errors import UserError, exit_on_user_error, first_line
from nlp_ssl.models.checkpoint import quiet_transformers

__all__ = ["add_health_parser", "bucket_index", "bucket_names", "cmd_health", "effective_rank", "format_health",
           "frequency_ranks", "frequency_table", "gradient_probe", "held_out_texts", "labelled_examples", "main",
           "masked_token_logits", "mean_pairwise_cosine", "model_health"]

DEFAULT_BUCKET_EDGES = (100, 1000)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


# --- the measures, as pure functions ------------------------------------------------------------------


def mean_pairwise_cosine(states: torch.Tensor, centre: torch.Tensor | None = None) -> float:
    """Mean cosine similarity over all pairs of distinct rows (Ethayarajh 2019's anisotropy estimate).

    Args:
        states: ``[N, D]`` token states.
        centre: ``[D]`` subtracted from every row first (the mean state, for the centred variant), or None.

    Returns:
        ``sum_{i != j} cos(x_i, x_j) / (N (N - 1))``, computed in O(N D) from the sum of the unit vectors; NaN
        when ``N < 2``. A zero row (after centring) has no direction and contributes 0 to every pair.
    """
    x = states.double()
    if centre is not None:
        x = x - centre.double()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    unit = F.normalize(x, dim=1)
    total = unit.sum(0)
    pairs = total.dot(total) - (unit * unit).sum()  # sum over i != j of u_i . u_j
    return float(pairs / (n * (n - 1)))


def effective_rank(matrix: torch.Tensor, centred: bool = False) -> float:
    """Roy & Vetterli (2007) effective rank: ``exp(-sum p_k log p_k)`` with ``p_k = s_k / sum s``.

    Args:
        matrix: ``[N, D]`` (rows are examples).
        centred: subtract the column means first (so a shared offset does not count as a dimension).

    Returns:
        A real number in ``[1, min(N, D)]``; equal to ``r`` for a matrix with ``r`` equal non-zero singular
        values; 0 for the zero matrix.
    """
    x = matrix.double()
    if centred:
        x = x - x.mean(0, keepdim=True)
    singular = torch.linalg.svdvals(x)
    total = singular.sum()
    if total <= 0:
        return 0.0
    p = singular / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def frequency_ranks(counts: torch.Tensor) -> torch.Tensor:
    """Rank of every token id by count, most frequent first (0 = most frequent; ties by smaller id).

    Args:
        counts: ``[V]`` occurrences per id.

    Returns:
        ``[V]`` long ranks.
    """
    order = torch.sort(-counts, stable=True).indices  # ids by descending count, ties keep id order
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel())
    return ranks


def bucket_index(ranks: torch.Tensor, edges: Sequence[int] = DEFAULT_BUCKET_EDGES) -> torch.Tensor:
    """Bucket of each frequency rank: 0 for ``rank < edges[0]``, 1 for ``edges[0] <= rank < edges[1]``, ...

    Args:
        ranks: ``[N]`` frequency ranks.
        edges: increasing rank boundaries; ``len(edges) + 1`` buckets.

    Returns:
        ``[N]`` bucket ids.
    """
    return torch.bucketize(ranks, torch.tensor(list(edges), dtype=ranks.dtype), right=True)


def bucket_names(edges: Sequence[int]) -> list[str]:
    """``top-100``, ``100-1k``, ``1k+`` style labels for :func:`bucket_index`'s buckets."""

    def short(n: int) -> str:
        return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)

    names = [f"top-{short(edges[0])}"]
    names += [f"{short(a)}-{short(b)}" for a, b in zip(edges, edges[1:])]
    return names + [f"{short(edges[-1])}+"]


def frequency_table(targets: torch.Tensor, losses: torch.Tensor, correct: torch.Tensor, predicted: torch.Tensor,
                  counts: torch.Tensor, edges: Sequence[int]) -> dict[str, Any]:
    """Accuracy and loss of scored tokens per frequency bucket, with the unigram baselines.

    Args:
        targets, losses, correct, predicted: ``[N]`` per scored token (target id, cross-entropy in nats,
            whether the argmax was right, the argmax id).
        counts: ``[V]`` token counts of the evaluated text (non-special tokens only).
        edges: bucket boundaries in frequency rank.
    """
    ranks = frequency_ranks(counts)
    top_token = int(ranks.argmin())  # the rank-0 id
    unigram = counts.double() / counts.sum()
    target_bucket = bucket_index(ranks[targets], edges)
    predicted_bucket = bucket_index(ranks[predicted], edges)
    unigram_loss = -unigram[targets].clamp_min(1e-300).log()  # every target occurs in the text, so p > 0
    unigram_correct = targets == top_token
    n = targets.numel()
    rows = []
    for index, name in enumerate(bucket_names(edges)):
        inside = target_bucket == index
        k = int(inside.sum())
        rows.append({
            "bucket": name,
            "ranks": [0 if index == 0 else edges[index - 1], edges[index] if index < len(edges) else None],
            "targets": k, "share": k / n if n else float("nan"),
            "accuracy": float(correct[inside].double().mean()) if k else float("nan"),
            "loss": float(losses[inside].double().mean()) if k else float("nan"),
            "unigram_accuracy": float(unigram_correct[inside].double().mean()) if k else float("nan"),
            "unigram_loss": float(unigram_loss[inside].mean()) if k else float("nan"),
            # Where the model's guesses land, over all scored tokens: ~100% in the top bucket = unigram phase.
            "predictions_share": float((predicted_bucket == index).double().mean()) if n else float("nan"),
        })
    overall = {
        "targets": n,
        "accuracy": float(correct.double().mean()) if n else float("nan"),
        "loss": float(losses.double().mean()) if n else float("nan"),
        "unigram_accuracy": float(unigram_correct.double().mean()) if n else float("nan"),
        "unigram_loss": float(unigram_loss.mean()) if n else float("nan"),
        "distinct_predictions": int(predicted.unique().numel()),
        "distinct_targets": int(targets.unique().numel()),
    }
    overall["perplexity"] = math.exp(min(overall["loss"], 50.0)) if n else float("nan")
    overall["unigram_perplexity"] = math.exp(min(overall["unigram_loss"], 50.0)) if n else float("nan")
    return {"buckets": rows, "overall": overall, "top_token_id": top_token}


# --- loading ------------------------------------------------------------------------------------------



def _check_source(model_path: str) -> None:
    path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{model_path} has no config.json; give a transformers model folder (a run's final/)")
        if not any((path / name).is_file() for name in _TOKENIZER_FILES):
            raise UserError(f"{model_path} has no tokenizer files; save the tokenizer next to the model "
                            "(tokenizer.save_pretrained)")
        return
    if path.exists():
        raise UserError(f"{model_path} is a file; give a transformers model folder or a hub id")
    # A hub id is "name" or "org/name"; anything else that does not exist is a mistyped folder.
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", model_path) or model_path.startswith((".", "~")):
        raise UserError(f"model folder not found: {model_path}; give a run's final/ folder or a hub id")


def _model_kind(config: Any) -> str:
    """``masked``, ``causal`` or ``encoder`` from the saved architecture name."""
    names = " ".join(getattr(config, "architectures", None) or [])
    if "ForMaskedLM" in names:
        return "masked"
    if "ForCausalLM" in names or "LMHeadModel" in names:
        return "causal"
    return "encoder"


def _load(model_path: str) -> tuple[Any, Any, str]:
    """``(model in eval mode, tokenizer, kind)``; the model carries its LM head for masked / causal LMs."""
    import nlp_ssl.models.lstm_lm  # noqa: F401 - registers the LSTM LM with the Auto classes
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    _check_source(model_path)
    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(model_path)
            kind = _model_kind(config)
            auto = {"masked": AutoModelForMaskedLM, "causal": AutoModelForCausalLM, "encoder": AutoModel}[kind]
            model = auto.from_pretrained(model_path)
            tokenizer = AutoTokenizer.from_pretrained(model_path)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any load failure is one actionable line
        raise UserError(f"could not load {model_path!r} as a transformers model with a tokenizer "
                        f"({first_line(err)})") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if kind == "masked" and tokenizer.mask_token_id is None:
        raise UserError(f"{model_path} is a masked LM but its tokenizer has no mask token; save the tokenizer "
                        "the model was trained with next to it")
    model.eval()
    return model, tokenizer, kind


def _max_length(requested: int, config: Any, tokenizer: Any) -> int:
    """``requested`` capped by the position embeddings and the tokenizer's own limit."""
    limits = [requested]
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if positions:
        limits.append(positions - 2 if "roberta" in getattr(config, "model_type", "") else positions)
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def _select(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` drawn with ``seed`` (all of them if ``k >= n``), in their original order."""
    if k >= n:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:k].tolist())


def _batches(ids: list[list[int]], batch_size: int, pad_id: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded ``([B, T] input_ids, [B, T] attention_mask)``, longest texts first (little padding)."""
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for start in range(0, len(order), batch_size):
        rows = [ids[i] for i in order[start:start + batch_size]]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, seq in enumerate(rows):
            input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, :len(seq)] = 1
        yield input_ids, mask


def _lm_head(model: Any) -> nn.Module | None:
    """The masked-LM head module applied to final states (BERT ``cls``, RoBERTa ``lm_head``), if separable."""
    for name in ("cls", "lm_head"):
        head = getattr(model, name, None)
        if isinstance(head, nn.Module):
            return head
    return None


def masked_token_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, selected: torch.Tensor,
                        mask_token_id: int) -> torch.Tensor:
    """Masked-LM scores at the ``selected`` positions after replacing all of them by ``[MASK]``.

    Args:
        model: a ``*ForMaskedLM`` model.
        input_ids, attention_mask, selected: ``[B, T]``.
        mask_token_id: id written at the selected positions.

    Returns:
        ``[N, V]`` logits, one row per selected position in row-major order. The LM head runs on the selected
        states only when it is a separate module (BERT's ``cls``), which is where most of its cost goes.
    """
    corrupted = input_ids.masked_fill(selected, mask_token_id)
    head = _lm_head(model)
    if head is not None:
        states = model.base_model(input_ids=corrupted, attention_mask=attention_mask).last_hidden_state
        return head(states[selected])
    return model(input_ids=corrupted, attention_mask=attention_mask).logits[selected]


# --- the report ---------------------------------------------------------------------------------------


def model_health(model_path: str, texts: list[str], *, max_texts: int = 512, max_length: int = 128,
                 labelled: tuple[list[str], list[int]] | None = None, seed: int = 0, batch_size: int = 32,
                 max_sampled_tokens: int = 4096, mask_probability: float = 0.15,
                 bucket_edges: Sequence[int] = DEFAULT_BUCKET_EDGES, gradient_examples: int = 32) -> dict[str, Any]:
    """Measure the representation health of a transformers model on held-out ``texts``.

    Args:
        model_path: model folder (with its tokenizer) or hub id.
        texts: held-out texts; blank ones are dropped, and a seeded ``max_texts`` of them are used.
        max_length: tokens per text (capped by the model's positions).
        labelled: ``(texts, integer labels)`` for the fine-tuning gradient probe; None skips it.
        seed: seeds the text choice, the token sample, the masking and the fresh heads.
        batch_size: texts per forward pass.
        max_sampled_tokens: token states kept per layer for the pairwise cosines.
        mask_probability: share of non-special tokens masked (masked LMs).
        bucket_edges: frequency-rank boundaries of the buckets.
        gradient_examples: labelled examples in the gradient batch (a seeded draw).

    Returns:
        A JSON-ready dict: ``model``, ``kind``, sizes, ``layers`` (per-layer cosines and norms),
        ``sentence_embeddings`` (effective ranks), ``masked_lm`` or ``causal_lm`` (bucket table), ``gradients``
        and ``seconds``. The module docstring defines each measure.

    Raises:
        UserError: a missing / unloadable model, no usable text, bad option values.
    """
    started = time.perf_counter()
    if max_texts < 2:
        raise UserError(f"max_texts must be >= 2, got {max_texts}")
    if not 0.0 < mask_probability < 1.0:
        raise UserError(f"mask_probability must be in (0, 1), got {mask_probability}")
    if list(bucket_edges) != sorted(set(bucket_edges)) or not bucket_edges or bucket_edges[0] < 1:
        raise UserError(f"bucket edges must be increasing positive ranks, got {list(bucket_edges)}")
    texts = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
    if len(texts) < 2:
        raise UserError(f"health needs at least 2 non-blank held-out texts, got {len(texts)}; give a larger corpus")
    texts = [texts[i] for i in _select(len(texts), max_texts, seed)]

    model, tokenizer, kind = _load(model_path)
    config = model.config
    length = _max_length(max_length, config, tokenizer)
    ids = tokenizer(texts, truncation=True, max_length=length, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)["input_ids"]
    vocab = max(len(tokenizer), int(model.get_input_embeddings().weight.shape[0]))
    special = torch.zeros(vocab, dtype=torch.bool)
    special[torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)] = True
    if kind == "causal" and tokenizer.unk_token_id is not None:
        # A word-level LM predicts the unknown word like any other (PTB's <unk> counts in its perplexity);
        # a masked LM's objective never masks it, so there it stays out.
        special[tokenizer.unk_token_id] = False
    flat = torch.tensor([t for seq in ids for t in seq], dtype=torch.long)
    content = flat[~special[flat]]
    if content.numel() < 2:
        raise UserError("the held-out texts have fewer than 2 non-special tokens; give more text")
    counts = torch.bincount(content, minlength=vocab)

    sample_gen = torch.Generator().manual_seed(seed)
    mask_gen = torch.Generator().manual_seed(seed + 1)
    keep_p = min(1.0, max_sampled_tokens / content.numel())
    layer_sum: list[torch.Tensor] = []
    layer_norm_sum: list[float] = []
    layer_sample: list[list[torch.Tensor]] = []
    pooled_mean, pooled_first = [], []
    scored: dict[str, list[torch.Tensor]] = {"targets": [], "losses": [], "correct": [], "predicted": []}
    cls_id = getattr(tokenizer, "cls_token_id", None)
    first_is_cls = cls_id is not None and all(seq and seq[0] == cls_id for seq in ids)

    with torch.inference_mode():
        for input_ids, attention_mask in _batches(ids, batch_size, tokenizer.pad_token_id):
            content_mask = attention_mask.bool() & ~special[input_ids]  # [B, T]
            encoder = model.base_model if kind == "masked" else model
            try:
                out = encoder(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
            except (TypeError, ValueError) as err:  # e.g. an encoder-decoder that also wants decoder inputs
                raise UserError(f"{model_path} ({type(model).__name__}) cannot encode text on its own "
                                f"({first_line(err)}); give an encoder or a decoder-only LM") from None
            hidden = out.hidden_states  # (L + 1) x [B, T, H]
            keep = content_mask & (torch.rand(input_ids.shape, generator=sample_gen) < keep_p)
            if not layer_sum:
                layer_sum = [torch.zeros(h.shape[-1], dtype=torch.float64) for h in hidden]
                layer_norm_sum = [0.0] * len(hidden)
                layer_sample = [[] for _ in hidden]
            for index, states in enumerate(hidden):
                tokens = states[content_mask].double()  # [n, H]
                layer_sum[index] += tokens.sum(0)
                layer_norm_sum[index] += float(tokens.norm(dim=1).sum())
                layer_sample[index].append(states[keep].float())
            last = hidden[-1]
            weights = attention_mask.unsqueeze(-1).to(last.dtype)  # [B, T, 1]
            pooled_mean.append((last * weights).sum(1) / weights.sum(1).clamp_min(1.0))
            if kind == "causal":
                last_index = attention_mask.sum(1) - 1  # [B]
                pooled_first.append(last[torch.arange(last.shape[0]), last_index])
            elif first_is_cls:
                pooled_first.append(last[:, 0])

            if kind == "masked":
                selected = content_mask & (torch.rand(input_ids.shape, generator=mask_gen) < mask_probability)
                logits = masked_token_logits(model, input_ids, attention_mask, selected, tokenizer.mask_token_id)
                targets = input_ids[selected]
            elif kind == "causal":
                valid = content_mask[:, 1:]  # position t predicts token t + 1
                logits = out.logits[:, :-1][valid]  # [N, V]
                targets = input_ids[:, 1:][valid]
            else:
                continue
            logits = logits.float()
            scored["targets"].append(targets)
            scored["losses"].append(F.cross_entropy(logits, targets, reduction="none"))
            predicted = logits.argmax(-1)
            scored["predicted"].append(predicted)
            scored["correct"].append(predicted == targets)

    n_content = int(content.numel())
    layers = []
    for index in range(len(layer_sum)):
        sample = torch.cat(layer_sample[index])
        mean_state = layer_sum[index] / n_content
        layers.append({
            "layer": index, "name": "embeddings" if index == 0 else f"layer {index}",
            "mean_cosine": mean_pairwise_cosine(sample),
            "mean_cosine_centred": mean_pairwise_cosine(sample, mean_state),
            "mean_norm": layer_norm_sum[index] / n_content,
            # Centred, so that the common direction (anisotropy, reported above) does not count as a dimension.
            "token_effective_rank": effective_rank(sample, centred=True),
            "sampled_tokens": int(sample.shape[0]),
        })
    mean_matrix = torch.cat(pooled_mean)
    sentence = {"texts": int(mean_matrix.shape[0]), "dim": int(mean_matrix.shape[1]),
                "mean": {"effective_rank": effective_rank(mean_matrix),
                         "effective_rank_centred": effective_rank(mean_matrix, centred=True)}}
    if pooled_first:
        first_matrix = torch.cat(pooled_first)
        sentence["last_token" if kind == "causal" else "cls"] = {
            "effective_rank": effective_rank(first_matrix),
            "effective_rank_centred": effective_rank(first_matrix, centred=True)}

    report: dict[str, Any] = {
        "model": str(model_path), "kind": kind,
        "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
        "num_layers": len(layers) - 1, "hidden_size": int(mean_matrix.shape[1]), "texts": len(texts),
        "tokens": int(flat.numel()), "content_tokens": n_content, "max_length": length, "seed": seed,
        "layers": layers, "sentence_embeddings": sentence,
    }
    if scored["targets"]:
        table = frequency_table(*(torch.cat(scored[k]) for k in ("targets", "losses", "correct", "predicted")),
                              counts=counts, edges=bucket_edges)
        table["top_token"] = tokenizer.convert_ids_to_tokens(table["top_token_id"])
        table["frequency_source"] = "evaluated text"
        if kind == "masked":
            table["mask_probability"] = mask_probability
        report["masked_lm" if kind == "masked" else "causal_lm"] = table
    del model
    if labelled is not None:
        report["gradients"] = gradient_probe(model_path, tokenizer, labelled, max_length=length, seed=seed,
                                             examples=gradient_examples)
    report["seconds"] = round(time.perf_counter() - started, 2)
    return report


# --- the fine-tuning gradient probe -------------------------------------------------------------------


_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")


def _group(name: str, prefix: str) -> str:
    """Report group of a parameter name: ``embeddings``, ``layer N``, ``pooler``, ``encoder other`` or ``head``."""
    if not name.startswith(prefix + "."):
        return "head"
    inner = name[len(prefix) + 1:]
    if "pooler" in inner:
        return "pooler"
    match = _LAYER.search(inner)
    if match:
        return f"layer {int(match.group(1)) + 1}"
    if "embed" in inner or inner.startswith(("wte.", "wpe.")):
        return "embeddings"
    return "encoder other"


def _grad_norms(named: Sequence[tuple[str, nn.Parameter]], prefix: str) -> dict[str, float]:
    """L2 norm of the gradient of each parameter group, in model order (parameters without gradient skipped)."""
    squares: dict[str, float] = {}
    for name, param in named:
        if param.grad is None:
            continue
        key = _group(name, prefix)
        squares[key] = squares.get(key, 0.0) + float(param.grad.double().pow(2).sum())
    return {key: math.sqrt(value) for key, value in squares.items()}


def gradient_probe(model_path: str, tokenizer: Any, labelled: tuple[list[str], list[int]], *, max_length: int,
                   seed: int = 0, examples: int = 32) -> dict[str, Any]:
    """Gradient norms a fine-tuning step would send into the encoder, for two fresh heads.

    ``AutoModelForSequenceClassification`` is loaded from ``model_path`` with a new head (initialised under
    ``seed``, without touching the global RNG); one cross-entropy forward/backward on ``examples`` labelled
    texts (a seeded draw) with the model's own head (BERT: ``[CLS]`` -> pooler -> linear), then one with a new
    linear head on the mean-pooled last layer. Dropout is off.

    Returns:
        ``{"examples", "num_labels", "pooler_in_checkpoint", "heads": {"cls_pooler"|"own_head": {...},
        "mean_pooling": {...}}}``, each head with its ``loss`` and ``grad_norm`` per group; or ``{"skipped":
        reason}`` when the architecture has no sequence-classification class.
    """
    from transformers import AutoModelForSequenceClassification

    texts, labels = labelled
    if len(texts) != len(labels) or not texts:
        raise UserError(f"labelled data needs as many labels as texts (got {len(texts)} texts, {len(labels)} labels)")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise UserError("the labelled data has a single class; the gradient probe needs at least 2")
    to_index = {c: i for i, c in enumerate(classes)}
    rows = _select(len(texts), examples, seed)
    enc = tokenizer([texts[i] for i in rows], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt", return_token_type_ids=False)
    target = torch.tensor([to_index[labels[i]] for i in rows], dtype=torch.long)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            with quiet_transformers():
                clf, info = AutoModelForSequenceClassification.from_pretrained(
                    model_path, num_labels=len(classes), output_loading_info=True)
        except ValueError as err:
            return {"skipped": f"no sequence-classification head for this architecture ({first_line(err)})"}
        hidden = clf.config.hidden_size
        mean_head = nn.Linear(hidden, len(classes))
        std = getattr(clf.config, "initializer_range", 0.02) or 0.02
        nn.init.normal_(mean_head.weight, std=std)
        nn.init.zeros_(mean_head.bias)
    if clf.config.pad_token_id is None:
        clf.config.pad_token_id = tokenizer.pad_token_id  # GPT-2 style heads pool the last non-pad token
    clf.eval()
    prefix = clf.base_model_prefix
    has_pooler = any("pooler" in name for name, _ in clf.named_parameters())
    missing = info.get("missing_keys", [])
    result: dict[str, Any] = {
        "examples": len(rows), "num_labels": len(classes),
        "pooler_in_checkpoint": (not any("pooler" in k for k in missing)) if has_pooler else None,
        # Everything the classifier starts with that the checkpoint did not hold (ideally only the output layer).
        "new_weights": sorted(missing),
        "heads": {},
    }
    own = "cls_pooler" if has_pooler else "own_head"
    loss = F.cross_entropy(clf(**enc).logits, target)
    loss.backward()
    result["heads"][own] = {"loss": float(loss.detach()),
                            "grad_norm": _grad_norms(list(clf.named_parameters()), prefix)}
    clf.zero_grad(set_to_none=True)

    states = clf.base_model(**enc).last_hidden_state  # [B, T, H]
    weights = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # [B, H]
    loss = F.cross_entropy(mean_head(pooled), target)
    loss.backward()
    named = [(f"{prefix}.{n}", p) for n, p in clf.base_model.named_parameters()]
    named += [(f"mean_head.{n}", p) for n, p in mean_head.named_parameters()]
    result["heads"]["mean_pooling"] = {"loss": float(loss.detach()), "grad_norm": _grad_norms(named, prefix)}
    return result


# --- data for the command line ------------------------------------------------------------------------


def held_out_texts(corpus: str) -> list[str]:
    """Held-out text: the ``validation`` split of an embedded corpus or hub dataset, or a whole local file.

    A local file or folder is taken whole (the user points at text the model did not train on).

    Raises:
        UserError: missing / empty / unreadable corpus (from :func:`nlp_ssl.data.corpus.load_corpus`).
    """
    from nlp_ssl.data.corpus import CorpusConfig, load_corpus

    if Path(corpus).expanduser().exists():
        split = load_corpus(CorpusConfig(corpus=corpus, eval_fraction=0.0))["train"]
    else:
        loaded = load_corpus(CorpusConfig(corpus=corpus))
        if "validation" not in loaded:
            raise UserError(f"corpus {corpus} has no validation split; give a held-out text file instead")
        split = loaded["validation"]
    texts = [t for t in split["text"] if isinstance(t, str) and t.strip()]
    if not texts:
        raise UserError(f"corpus {corpus} has no non-blank held-out text")
    return texts


def labelled_examples(task: str) -> tuple[list[str], list[int]]:
    """Training texts and labels of a sentence-level task, read by the linear-probe loaders.

    Raises:
        UserError: unknown task, or a token-level (NER) task.
    """
    from nlp_ssl.eval.probes import load_probe_data

    data = load_probe_data(task)
    if data.kind != "sequence" or data.label_names is None:
        raise UserError(f"--task {task} is not a sentence classification task; use bbc_news or a GLUE "
                        "classification task, or 'none' to skip the gradient probe")
    if data.train.pairs is not None:
        raise UserError(f"--task {task} has sentence pairs; use a single-sentence task such as bbc_news or sst2")
    return list(data.train.texts), [int(v) for v in data.train.labels]


# --- text report and command line ---------------------------------------------------------------------


def _num(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def format_health(report: dict[str, Any]) -> str:
    """The text report ``nlp-ssl eval health`` prints."""
    lines = [f"Representation health of {report['model']} ({report['architecture']}, {report['kind']}, "
             f"{report['num_layers']} layers x {report['hidden_size']})",
             f"  {report['texts']:,} held-out texts, {report['content_tokens']:,} non-special tokens "
             f"(max length {report['max_length']}, seed {report['seed']})",
             "  anisotropy: mean cosine between token states (Ethayarajh 2019)",
             f"  {'layer':<12} {'cosine':>8} {'centred':>8} {'norm':>9} {'token eff. rank':>16}"]
    for row in report["layers"]:
        lines.append(f"  {row['name']:<12} {_num(row['mean_cosine']):>8} {_num(row['mean_cosine_centred']):>8} "
                     f"{_num(row['mean_norm'], '.2f'):>9} {_num(row['token_effective_rank'], '.1f'):>16}")
    sent = report["sentence_embeddings"]
    parts = [f"mean-pooled {_num(sent['mean']['effective_rank'], '.1f')} "
             f"(centred {_num(sent['mean']['effective_rank_centred'], '.1f')})"]
    for key, label in (("cls", "[CLS]"), ("last_token", "last token")):
        if key in sent:
            parts.append(f"{label} {_num(sent[key]['effective_rank'], '.1f')} "
                         f"(centred {_num(sent[key]['effective_rank_centred'], '.1f')})")
    lines.append(f"  effective rank of {sent['texts']} sentence embeddings (max {min(sent['texts'], sent['dim'])}): "
                 + ", ".join(parts))
    for key, title in (("masked_lm", "masked-token prediction"), ("causal_lm", "next-token prediction")):
        table = report.get(key)
        if not table:
            continue
        overall = table["overall"]
        what = f"{table['mask_probability']:.0%} of tokens masked, " if key == "masked_lm" else ""
        lines.append(f"  {title} ({what}{overall['targets']:,} scored; frequency ranks counted on the "
                     f"{table['frequency_source']}):")
        lines.append(f"  {'bucket':<10} {'targets':>8} {'acc':>7} {'loss':>7} {'unigram acc':>12} "
                     f"{'unigram loss':>13} {'predictions':>12}")
        for row in table["buckets"]:
            lines.append(f"  {row['bucket']:<10} {row['targets']:>8,} {_num(row['accuracy']):>7} "
                         f"{_num(row['loss'], '.2f'):>7} {_num(row['unigram_accuracy']):>12} "
                         f"{_num(row['unigram_loss'], '.2f'):>13} {_num(row['predictions_share'], '.1%'):>12}")
        lines.append(f"  {'all':<10} {overall['targets']:>8,} {_num(overall['accuracy']):>7} "
                     f"{_num(overall['loss'], '.2f'):>7} {_num(overall['unigram_accuracy']):>12} "
                     f"{_num(overall['unigram_loss'], '.2f'):>13} {'100.0%':>12}")
        lines.append(f"  perplexity {_num(overall['perplexity'], '.1f')} vs unigram "
                     f"{_num(overall['unigram_perplexity'], '.1f')}; most frequent token {table['top_token']!r}; "
                     f"{overall['distinct_predictions']:,} distinct predictions for "
                     f"{overall['distinct_targets']:,} distinct targets")
    grads = report.get("gradients")
    if grads:
        if "skipped" in grads:
            lines.append(f"  fine-tuning gradient: skipped ({grads['skipped']})")
        else:
            pooler = {True: "yes", False: "no (freshly initialised)",
                      None: "model has none"}[grads["pooler_in_checkpoint"]]
            heads = list(grads["heads"])
            lines.append(f"  fine-tuning gradient norm, one batch of {grads['examples']} "
                         f"({grads.get('task', 'labelled')}, "
                         f"{grads['num_labels']} labels, fresh head); pooler in checkpoint: {pooler}")
            if grads.get("new_weights") is not None:
                lines.append(f"  classifier weights not in the checkpoint: {', '.join(grads['new_weights']) or 'none'}")
            lines.append(f"  {'group':<14}" + "".join(f"{h:>14}" for h in heads))
            groups = list(dict.fromkeys(g for h in heads for g in grads["heads"][h]["grad_norm"]))
            for group in groups:
                lines.append(f"  {group:<14}" + "".join(
                    f"{_num(grads['heads'][h]['grad_norm'].get(group), '.3e'):>14}" for h in heads))
            lines.append(f"  {'loss':<14}" + "".join(f"{_num(grads['heads'][h]['loss']):>14}" for h in heads))
    lines.append(f"  ({report['seconds']:.1f} s)")
    return "\n".join(lines)


def add_health_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``health`` sub-command to an argparse ``subparsers`` object; its ``func`` is :func:`cmd_health`."""
    p = subparsers.add_parser(
        "health", help="representation health of a model: anisotropy, effective rank, LM accuracy by "
                       "token frequency, fine-tuning gradient",
        description="Diagnose a transformers model (a run's final/ folder or a hub id) on held-out text: per-layer "
                    "mean cosine between token states, effective rank of sentence embeddings, masked / next-token "
                    "accuracy by token frequency against a unigram baseline, and the gradient a fine-tuning step "
                    "sends into each encoder layer.")
    p.add_argument("model", metavar="MODEL", help="model folder with its tokenizer, or a hub id")
    p.add_argument("--corpus", default="ptb", help="held-out text: an embedded corpus (its validation split), a hub "
                                                   "dataset id, or a text file / folder used whole (default ptb)")
    p.add_argument("--task", default="bbc_news", help="labelled task for the gradient probe (bbc_news, a GLUE "
                                                      "classification task) or 'none' (default bbc_news)")
    p.add_argument("--max-texts", type=int, default=512, help="held-out texts to use, a seeded draw (default 512)")
    p.add_argument("--max-length", type=int, default=128, help="tokens per text (default 128)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws, the masking and the fresh heads")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_health)
    return p


def cmd_health(args: argparse.Namespace) -> int:
    """Run :func:`model_health` as parsed ``args`` describe, print the report, write JSON. Returns 0."""
    from nlp_ssl.eval.intrinsic_cli import write_json_atomic

    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.exists() and not args.overwrite:
        raise UserError(f"{json_path} already exists; pass --overwrite to replace it or choose another --json file")
    for key in ("max_texts", "max_length", "batch_size"):
        if getattr(args, key) < 1:
            raise UserError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    _check_source(args.model)  # before loading any data: a typo should fail in a second
    texts = held_out_texts(args.corpus)
    task = None if args.task.strip().lower() in ("none", "") else args.task
    labelled = labelled_examples(task) if task else None
    report = model_health(args.model, texts, max_texts=args.max_texts, max_length=args.max_length,
                          labelled=labelled, seed=args.seed, batch_size=args.batch_size)
    report["corpus"] = args.corpus
    if "gradients" in report:
        report["gradients"]["task"] = task
    print(format_health(report))
    if json_path is not None:
        write_json_atomic(json_path, report, overwrite=args.overwrite)
        print(f"wrote {json_path}")
    return 0


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m nlp_ssl.eval.health MODEL [--corpus ...] [--task ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m nlp_ssl.eval.health")
    sub = parser.add_subparsers(dest="command", required=True)
    add_health_parser(sub)
    if not argv or argv[0] != "health":
        argv = ["health", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
