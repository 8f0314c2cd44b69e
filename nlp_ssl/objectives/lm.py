"""Language-model objectives: BERT-style masked LM and GPT-style causal LM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from nlp_ssl.objectives.base import Objective, StepOutput, model_state
from nlp_ssl.objectives.linear_cross_entropy import IGNORE_INDEX, linear_cross_entropy
from nlp_ssl.objectives.masking import MaskingConfig, mask_tokens, masking_noise


class MaskedLMObjective(Objective):
    """Masked LM with the vocabulary projection applied only at the selected positions.

    The LM head (transform + ``H x V`` decoder) is the most expensive part of a small BERT; running it on the
    ~15% of positions that carry a label gives the same loss as the full head at a fraction of the cost
    (the loss ignores the other positions anyway).

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T], "padded": bool}`` (packed blocks, 0 only in final
    padding; see :func:`~nlp_ssl.data.packing.collate_blocks`).
    """

    throughput_unit = "tokens"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, masking: MaskingConfig) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.masking = masking
        self.mask_token_id = tokenizer.mask_token_id
        self.vocab_size = len(tokenizer)
        special = torch.zeros(max(self.vocab_size, model.get_input_embeddings().weight.shape[0]), dtype=torch.bool)
        special[torch.tensor(tokenizer.all_special_ids, dtype=torch.long)] = True
        self.register_buffer("special_lookup", special, persistent=False)
        continuation = torch.zeros_like(special)
        if masking.whole_word_masking:
            for token, index in tokenizer.get_vocab().items():
                if token.startswith("##"):
                    continuation[index] = True
        self.register_buffer("continuation_lookup", continuation, persistent=False)
        self.head_path = sparse_head_path(model)

    def corrupt(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's corruption of ``[B, T]`` ids: ``(corrupted [B, T], selected [B, T] bool)``. Special tokens and
        padding are never selected; whole-word masking selects every piece of a chosen word."""
        maskable = attention_mask.bool() & ~self.special_lookup[input_ids]
        word_start = ~self.continuation_lookup[input_ids] if self.masking.whole_word_masking else None
        rows, length = input_ids.shape
        # Drawn for the global batch and sliced: one process with batch 2B masks exactly like two with B.
        noise = self.per_example(lambda n: masking_noise(n, length, self.rng, input_ids.device), rows)
        return mask_tokens(input_ids, maskable, self.mask_token_id, self.vocab_size, self.masking,
                           word_start=word_start, noise=noise)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        self.seq_len = input_ids.shape[1]
        corrupted, selected = self.corrupt(input_ids, attention_mask)
        labels = input_ids[selected]
        # Packed blocks only contain padding in the very last block; skip the mask then (faster SDPA path).
        mask_arg = attention_mask if _padded(batch) else None
        if self.head_path:
            # Reached through the model (not stored as submodules here) so each weight is saved once.
            hidden = self.model.base_model(input_ids=corrupted, attention_mask=mask_arg).last_hidden_state
            logits = hidden[selected]
            for name in self.head_path:
                logits = getattr(self.model, name)(logits)  # ends as [N_selected, V]
        else:
            logits = self.model(input_ids=corrupted, attention_mask=mask_arg).logits[selected]
        count = labels.numel()
        if count == 0:
            # Nothing selected (tiny batch): a zero loss that still touches the graph keeps DDP in step.
            zero = logits.sum() * 0.0
            return StepOutput(loss=zero, num_items=0, metrics={"accuracy": zero.detach()},
                              num_inputs=attention_mask.sum())
        loss = F.cross_entropy(logits.float(), labels)
        accuracy = (logits.argmax(dim=-1) == labels).float().mean()
        return StepOutput(loss=loss, num_items=count, metrics={"accuracy": accuracy.detach()},
                          num_inputs=attention_mask.sum())

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"perplexity": float(torch.exp(torch.tensor(min(totals["loss"], 50.0))))}

    def compiled_modules(self) -> list[nn.Module]:
        # The encoder body is called directly (the head runs on the selected positions only): compiling the
        # whole model would leave the call that runs uncompiled.
        return [self.model.base_model] if self.head_path else [self.model]

    def flops_per_input(self) -> float | None:
        return _transformer_flops_per_token(self.model, self.masking.mlm_probability, getattr(self, "seq_len", 0))

    def export(self, output_dir: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        self.model.save_pretrained(output_dir, state_dict=model_state(state_dict))
        self.tokenizer.save_pretrained(output_dir)


class CausalLMObjective(Objective):
    """Next-token prediction (Radford et al. 2018/2019, GPT/GPT-2): cross-entropy of token t+1 given <= t.

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T], "padded": bool}``; targets are the inputs shifted
    by one, and positions whose target is padding carry no loss.
    """

    throughput_unit = "tokens"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        # (body, head) when the head can be fused into the loss; a tuple, so no module is registered twice.
        self.body_and_head = plain_head(model)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        self.seq_len = input_ids.shape[1]
        mask_arg = attention_mask if _padded(batch) else None
        if self.body_and_head is not None:
            decoder, head = self.body_and_head
            hidden = decoder(input_ids=input_ids, attention_mask=mask_arg, use_cache=False).last_hidden_state
            if _fp32_without_autocast(hidden, head.weight):
                # The head and the loss in one pass over row chunks: the [B, T, V] logits never exist whole.
                targets = next_token_targets(input_ids, attention_mask)
                loss, count, hits = linear_cross_entropy(hidden.reshape(-1, hidden.shape[-1]), head,
                                                         targets.reshape(-1))
                num_items = count if mask_arg is not None else targets.numel() - targets.shape[0]
                metrics = {} if self.training else {"accuracy": (hits / count.clamp(min=1)).float()}
                return StepOutput(loss=loss, num_items=num_items, metrics=metrics, num_inputs=attention_mask.sum())
            logits = head(hidden)
        else:
            logits = self.model(input_ids=input_ids, attention_mask=mask_arg).logits
        # Next-token accuracy costs one more pass over the [B, T, V] logits (an argmax), the step's largest
        # tensor: it is measured on held-out text only.
        loss, count, correct = causal_lm_loss(logits, input_ids, attention_mask, padded=mask_arg is not None,
                                              with_accuracy=not self.training)
        metrics = {} if correct is None else {"accuracy": correct.detach()}
        return StepOutput(loss=loss, num_items=count, metrics=metrics, num_inputs=attention_mask.sum())

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"perplexity": float(torch.exp(torch.tensor(min(totals["loss"], 50.0))))}

    def compiled_modules(self) -> list[nn.Module]:
        # The decoder body is called directly where the head is fused into the loss.
        return [self.body_and_head[0]] if self.body_and_head is not None else [self.model]

    def flops_per_input(self) -> float | None:
        return _transformer_flops_per_token(self.model, 1.0, getattr(self, "seq_len", 0))

    def export(self, output_dir: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        self.model.save_pretrained(output_dir, state_dict=model_state(state_dict))
        self.tokenizer.save_pretrained(output_dir)


def sparse_head_path(model: nn.Module) -> tuple[str, ...]:
    """Names of the masked-LM head modules to apply, in order, to the selected final states; empty if unknown.

    BERT keeps its head in ``cls``, RoBERTa in ``lm_head``; ModernBERT applies ``head`` (dense, GELU, norm)
    and then the ``decoder`` projection.
    """
    for name in ("cls", "lm_head"):
        if isinstance(getattr(model, name, None), nn.Module):
            return (name,)
    if all(isinstance(getattr(model, name, None), nn.Module) for name in ("head", "decoder")):
        return ("head", "decoder")
    return ()


def _padded(batch: dict[str, Any]) -> bool:
    """Whether the batch holds padding: the collator's flag, else (a batch built by hand) the mask itself."""
    flag = batch.get("padded")
    return bool(batch["attention_mask"].min() == 0) if flag is None else bool(flag)


# Decoders whose logits are exactly ``get_output_embeddings()(base_model(...).last_hidden_state)``: no logit
# scaling or soft-capping after the head (Gemma's, Cohere's) that a fused head + loss would skip.
_PLAIN_HEAD_DECODERS = frozenset({"gpt2", "llama", "mistral", "qwen2"})


def plain_head(model: nn.Module) -> tuple[nn.Module, nn.Linear] | None:
    """``(decoder body, output projection)`` of a causal LM whose logits are the projection of the body's final
    states, or ``None`` (other architectures are called whole)."""
    if getattr(getattr(model, "config", None), "model_type", None) not in _PLAIN_HEAD_DECODERS:
        return None
    head = model.get_output_embeddings()
    return (model.base_model, head) if type(head) is nn.Linear else None


def _fp32_without_autocast(hidden: torch.Tensor, weight: torch.Tensor) -> bool:
    """The fused head + loss accumulates in the inputs' dtype: used for fp32 training (mixed precision keeps the
    unfused path, whose loss runs in fp32)."""
    return (hidden.dtype == weight.dtype == torch.float32
            and not torch.is_autocast_enabled(hidden.device.type))


def next_token_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` targets: token t+1 at position t, ``IGNORE_INDEX`` (-100) at the last position and where the
    target is padding."""
    targets = torch.full_like(input_ids, IGNORE_INDEX)
    targets[:, :-1] = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    return targets


def causal_lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   padded: bool | None = None, with_accuracy: bool = True
                   ) -> tuple[torch.Tensor, int | torch.Tensor, torch.Tensor | None]:
    """Mean next-token cross-entropy over valid targets.

    Args:
        logits: ``[B, T, V]``; position t predicts token t+1.
        input_ids: ``[B, T]``.
        attention_mask: ``[B, T]``, 0 at padding.
        padded: whether ``attention_mask`` holds any 0 (the collator knows; ``None`` reads the mask).
        with_accuracy: also compute the next-token accuracy (``None`` in its place otherwise).

    Returns:
        ``(mean loss, number of targets, next-token accuracy)``; the number of targets is an int when nothing
        is padded, else a 0-d tensor (read without a host sync).
    """
    # The targets are shifted, not the logits: slicing [B, T, V] logits to T - 1 positions (or picking the
    # valid ones with a mask) copies the largest tensor of the step and scatters its gradient back. Here the
    # logits stay a view and the last position's target (and padding) is ignored.
    batch, length, vocab = logits.shape
    flat_targets = next_token_targets(input_ids, attention_mask).reshape(-1)
    loss = F.cross_entropy(logits.reshape(-1, vocab).float(), flat_targets, ignore_index=IGNORE_INDEX)
    valid = flat_targets != IGNORE_INDEX
    if padded is None:
        padded = bool(attention_mask.min() == 0)
    count: int | torch.Tensor = valid.sum() if padded else batch * (length - 1)
    if not with_accuracy:
        return loss, count, None
    with torch.no_grad():
        hits = (logits.reshape(-1, vocab).argmax(-1) == flat_targets) & valid
    accuracy = hits.sum() / valid.sum().clamp(min=1)
    return loss, count, accuracy.float()


def _transformer_flops_per_token(model: PreTrainedModel, head_fraction: float, seq_len: int) -> float:
    """Training FLOPs per input token (forward + backward = 3 x forward, 2 FLOPs per multiply-add).

    ``6 x (encoder params) + 6 x head_fraction x (decoder V x H + head transform params) + 12 x layers x T x H``.
    The last term is attention's two ``T x T`` products, Q K^T and A V (Chowdhery et al. 2022, "PaLM",
    appendix B; Kaplan et al. 2020 table 1 lists only the first). Checked against
    ``torch.utils.flop_counter`` on the 4 x 256 BERT: within 1% at the realised masking fraction.
    """
    config = model.config
    embeddings = model.get_input_embeddings().weight
    vocab, hidden = embeddings.shape
    # Embedding lookups (token, position, type) do no matmul work; the tied decoder is counted as the head.
    params, head = 0, 0
    for name, p in model.named_parameters():
        if p.ndim == 2 and ("embeddings" in name or name.endswith(("wte.weight", "wpe.weight"))):
            continue
        # The masked-LM head's transform runs only on the selected positions, like its decoder; an untied
        # decoder matrix is the ``vocab x hidden`` term already.
        if name.startswith(("cls.", "lm_head.", "head.", "decoder.")):
            head += 0 if p.shape == embeddings.shape else p.numel()
        else:
            params += p.numel()
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", 0)
    return 6.0 * params + 6.0 * head_fraction * (vocab * hidden + head) + 12.0 * layers * seq_len * hidden
