"""Contrastive objectives for sentence encoders: SimCSE / SimCLR (NT-Xent), MoCo, supervised pairs or labels, CPC.

All share one shape: an encoder from any masked-LM checkpoint (``AutoModel``), a pooling (mean or ``[CLS]``)
and, for the view-based methods, SimCLR's projection head g(.), used in training and dropped at export
(:mod:`nlp_ssl.models.sentence_encoder`).

* :class:`ContrastiveTextObjective` (unsupervised). Two views of every sentence: dropout alone (SimCSE,
  Gao, Yao & Chen 2021, "SimCSE: Simple Contrastive Learning of Sentence Embeddings": the same batch encoded
  twice, two dropout masks) and / or text augmentations (:mod:`nlp_ssl.data.text_views`), drawn inside
  ``forward``. Loss: NT-Xent with the negatives of every process (Chen et al. 2020), or MoCo (He et al.
  2019): an EMA key encoder and a queue of keys gathered from every process.
* :class:`SupervisedContrastiveObjective`: (anchor, positive[, negative]) tuples or labelled texts, with
  NT-Xent where positives are the pair or the same label (Khosla et al. 2020), a triplet loss (optionally
  batch-hard) or the siamese contrastive loss (Hadsell et al. 2006).
* :class:`TextCPCObjective`: contrastive predictive coding over tokens (van den Oord et al. 2018).

Batches are those of :mod:`nlp_ssl.data.sentences`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from nlp_ssl.data.text_views import (TextViewConfig, apply_text_view, params_from_uniform,
                                     special_and_word_start_lookups, view_draw_size)
from nlp_ssl.errors import UserError
from nlp_ssl.models.momentum import FeatureQueue, ema_update_, make_momentum_copy, momentum_schedule
from nlp_ssl.models.sentence_encoder import ProjectionHead, causal_attention_mask, pool, save_sentence_encoder
from nlp_ssl.objectives.base import Objective, StepOutput
from nlp_ssl.objectives.contrastive_losses import (batch_hard_triplet_loss, cpc_loss, moco_loss, nt_xent_loss,
                                                   siamese_contrastive_loss, supervised_nt_xent_loss, triplet_loss)

__all__ = ["ContrastiveConfig", "ContrastiveTextObjective", "SentenceObjective", "SupervisedContrastiveObjective",
           "TextCPCObjective"]


@dataclass
class ContrastiveConfig:
    """The ``contrastive`` section: which method and its hyper-parameters.

    Attributes:
        method: ``nt_xent`` (SimCLR / SimCSE), ``moco``, ``supervised`` (pairs / labels) or ``cpc``.
        temperature: tau of NT-Xent, MoCo and CPC (SimCSE: 0.05; MoCo v2: 0.2).
        queue_size: MoCo's number of queued keys; must be a multiple of the global batch.
        momentum, final_momentum: MoCo's key-encoder momentum, raised along a cosine schedule
            (Grill et al. 2020) from ``momentum`` to ``final_momentum`` over the run.
        loss: supervised loss: ``nt_xent``, ``triplet`` (needs a negative column), ``batch_hard`` or ``siamese``.
        margin: margin of the triplet and siamese losses.
        cpc_steps: K, how many tokens ahead CPC predicts.
        cpc_context: CPC's causal context network: ``gru`` or ``transformer`` (one causal layer).
        cpc_normalize: score CPC with cosine / temperature instead of the paper's plain dot product.
        cpc_causal_encoder: run the encoder with a causal attention mask for CPC, so that the encoding of a
            token never sees the tokens it is asked to predict.
        mlm_weight: lambda of SimCSE's auxiliary masked-LM loss (Gao et al. 2021, appendix: ``l + lambda *
            l_mlm``, lambda 0.1 there): keeps the token-level knowledge of the checkpoint while the sentence
            vectors are reshaped; 0 turns it off. NT-Xent and MoCo only; needs a masked-LM checkpoint.
        mlm_probability: share of the tokens the auxiliary loss masks (BERT's 80/10/10 corruption).
    """

    method: Literal["nt_xent", "moco", "supervised", "cpc"] = "nt_xent"
    temperature: float = 0.05
    queue_size: int = 4096
    momentum: float = 0.995
    final_momentum: float = 1.0
    loss: Literal["nt_xent", "triplet", "batch_hard", "siamese"] = "nt_xent"
    margin: float = 1.0
    cpc_steps: int = 4
    cpc_context: Literal["gru", "transformer"] = "gru"
    cpc_normalize: bool = True
    cpc_causal_encoder: bool = True
    mlm_weight: float = 0.0
    mlm_probability: float = 0.15

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise UserError(f"config key 'contrastive.temperature' must be > 0 (e.g. 0.05), got {self.temperature}")
        if self.queue_size < 1:
            raise UserError(f"config key 'contrastive.queue_size' must be >= 1, got {self.queue_size}")
        for key in ("momentum", "final_momentum"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise UserError(f"config key 'contrastive.{key}' must be in [0, 1], got {getattr(self, key)}")
        if not self.margin > 0:
            raise UserError(f"config key 'contrastive.margin' must be > 0, got {self.margin}")
        if self.cpc_steps < 1:
            raise UserError(f"config key 'contrastive.cpc_steps' must be >= 1, got {self.cpc_steps}")
        if not self.mlm_weight >= 0:
            raise UserError(f"config key 'contrastive.mlm_weight' must be >= 0 (0: off), got {self.mlm_weight}")
        if self.mlm_weight > 0 and self.method not in ("nt_xent", "moco"):
            raise UserError(f"config key 'contrastive.mlm_weight' applies to nt_xent and moco, not {self.method}; "
                            "set it to 0")
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"config key 'contrastive.mlm_probability' must be in (0, 1), got {self.mlm_probability}")


class SentenceObjective(Objective):
    """Encoder + pooling (+ projection head): the part every sentence objective shares, and the export."""

    throughput_unit = "sentences"

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str, head: nn.Module | None = None,
                 max_length: int = 64) -> None:
        super().__init__()
        self.model = encoder
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.head = head if head is not None else nn.Identity()
        self.max_length = max_length

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, model: nn.Module | None = None
              ) -> torch.Tensor:
        """Pooled sentence vectors ``[B, H]`` of a ``[B, T]`` batch."""
        hidden = (model or self.model)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.pooling)

    def export(self, output_dir: Path) -> None:
        save_sentence_encoder(self.model, self.tokenizer, output_dir, self.pooling,
                              extra={"max_length": self.max_length, "objective": type(self).__name__})


def _cosine_of_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.detach().float(), b.detach().float(), dim=1).mean()


class ContrastiveTextObjective(SentenceObjective):
    """Two views per sentence, NT-Xent over the global batch or MoCo with a key queue.

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T]}``; ``num_items`` is ``2B`` for NT-Xent (each view
    is an anchor) and ``B`` for MoCo (one query per sentence).

    With ``cfg.mlm_weight > 0`` pass ``masked_lm`` (the checkpoint with its LM head, :func:`load_masked_lm`):
    the encoder is then its ``base_model`` (``encoder`` may be None) and the loss gains ``mlm_weight`` times the
    masked-LM loss of the undistorted batch (SimCSE's auxiliary objective); the LM head is not exported.
    """

    def __init__(self, encoder: nn.Module | None, tokenizer: Any, pooling: str, head: ProjectionHead,
                 cfg: ContrastiveConfig, views: TextViewConfig, max_length: int,
                 masked_lm: nn.Module | None = None) -> None:
        if (masked_lm is None) == (cfg.mlm_weight > 0):
            raise ValueError("pass masked_lm exactly when cfg.mlm_weight > 0")
        if masked_lm is not None:
            encoder = masked_lm.base_model
        super().__init__(encoder, tokenizer, pooling, head, max_length)
        # Registered beside self.model (which it contains): parameters() lists each tensor once.
        self.masked_lm = masked_lm
        if cfg.method not in ("nt_xent", "moco"):
            raise UserError(f"ContrastiveTextObjective trains nt_xent or moco, not {cfg.method!r}")
        self.cfg, self.views = cfg, views
        special, word_start = special_and_word_start_lookups(tokenizer, encoder.get_input_embeddings().weight.shape[0])
        self.register_buffer("special_lookup", special, persistent=False)
        self.register_buffer("word_start_lookup", word_start, persistent=False)
        if cfg.method == "moco":
            self.key_model = make_momentum_copy(self.model)
            self.key_head = make_momentum_copy(self.head)
            self.queue = FeatureQueue(cfg.queue_size, head.out_dim)

    def make_views(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                   ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Two ``(ids, mask)`` views; with no augmentation both are the batch itself (dropout makes them differ)."""
        if not self.views.active:
            return [(input_ids, attention_mask)] * 2
        size = view_draw_size(self.max_length)
        u = self.per_example(lambda n: torch.rand(n, 2, size, generator=self.rng, device=input_ids.device),
                             input_ids.shape[0])  # [B, 2, draws]: per-example, the same in every layout
        return [apply_text_view(input_ids, attention_mask, params_from_uniform(u[:, v]), self.views,
                                self.special_lookup, self.word_start_lookup, self.tokenizer.pad_token_id)
                for v in range(2)]

    def auxiliary_mlm_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the masked-LM head at the tokens BERT's 80/10/10 corruption selected.

        Shape: ``input_ids``, ``attention_mask``: ``[B, T]``; returns a scalar (0 when nothing was selected).
        """
        from nlp_ssl.objectives.masking import MaskingConfig, mask_tokens, masking_noise

        rows, length = input_ids.shape
        noise = self.per_example(lambda n: masking_noise(n, length, self.rng, input_ids.device), rows)
        maskable = attention_mask.bool() & ~self.special_lookup[input_ids]
        vocab = self.masked_lm.config.vocab_size
        corrupted, selected = mask_tokens(input_ids, maskable, self.tokenizer.mask_token_id, vocab,
                                          MaskingConfig(mlm_probability=self.cfg.mlm_probability), noise=noise)
        logits = self.masked_lm(input_ids=corrupted, attention_mask=attention_mask).logits  # [B, T, V]
        if not selected.any():
            return logits.sum() * 0.0  # keeps the head in the graph: no data-parallel stall
        return F.cross_entropy(logits[selected].float(), input_ids[selected])

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        out = self._contrastive(batch)
        if self.masked_lm is None:
            return out
        mlm = self.auxiliary_mlm_loss(batch["input_ids"], batch["attention_mask"])
        out.metrics["mlm_loss"] = mlm.detach()
        out.loss = out.loss + self.cfg.mlm_weight * mlm
        return out

    def _contrastive(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        (ids_a, mask_a), (ids_b, mask_b) = self.make_views(batch["input_ids"], batch["attention_mask"])
        n = ids_a.shape[0]
        if self.cfg.method == "moco":
            return self._moco(ids_a, mask_a, ids_b, mask_b)
        # SimCSE: one encoder pass over both views stacked, so the two dropout masks differ per row.
        if ids_a.shape == ids_b.shape:
            z = self.head(self.embed(torch.cat([ids_a, ids_b]), torch.cat([mask_a, mask_b])))
            z_a, z_b = z[:n], z[n:]
        else:
            z_a, z_b = self.head(self.embed(ids_a, mask_a)), self.head(self.embed(ids_b, mask_b))
        all_a, all_b = self.dist.all_gather(z_a), self.dist.all_gather(z_b)
        loss = nt_xent_loss(z_a, z_b, self.cfg.temperature, all_a=all_a, all_b=all_b, offset=self.dist.offset(n))
        return StepOutput(loss=loss, num_items=2 * n, metrics={"positive_cosine": _cosine_of_pairs(z_a, z_b)},
                          num_inputs=n)

    def _moco(self, ids_q: torch.Tensor, mask_q: torch.Tensor, ids_k: torch.Tensor, mask_k: torch.Tensor
              ) -> StepOutput:
        query = self.head(self.embed(ids_q, mask_q))
        with torch.no_grad():
            key = self.key_head(self.embed(ids_k, mask_k, model=self.key_model))
        loss = moco_loss(query, key, self.queue.negatives(), self.cfg.temperature)
        if self.training:  # evaluation never changes the queue (rule 2)
            self.queue.enqueue(self.dist.all_gather_no_grad(key))
        return StepOutput(loss=loss, num_items=query.shape[0],
                          metrics={"positive_cosine": _cosine_of_pairs(query, key)}, num_inputs=query.shape[0])

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        if self.cfg.method == "moco":
            m = momentum_schedule(step, max_steps, self.cfg.momentum, self.cfg.final_momentum)
            ema_update_(self.key_model, self.model, m)
            ema_update_(self.key_head, self.head, m)


class SupervisedContrastiveObjective(SentenceObjective):
    """Contrastive / metric learning from tuples or labels.

    Batches: tuples ``{"anchor": {...}, "positive": {...}[, "negative": {...}]}`` or labelled texts
    ``{"input_ids", "attention_mask", "labels": [B]}``. NT-Xent gathers the other processes' embeddings as
    negatives (the loss equals the one-process loss over the global batch); the triplet, batch-hard and siamese
    losses are computed within each process's batch.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str, head: nn.Module, cfg: ContrastiveConfig,
                 max_length: int) -> None:
        super().__init__(encoder, tokenizer, pooling, head, max_length)
        self.cfg = cfg

    def forward(self, batch: dict[str, Any]) -> StepOutput:
        if "anchor" in batch:
            return self._tuples(batch)
        return self._labelled(batch)

    def _encode_sides(self, batch: dict[str, Any], sides: list[str]) -> list[torch.Tensor]:
        return [self.head(self.embed(batch[s]["input_ids"], batch[s]["attention_mask"])) for s in sides]

    def _tuples(self, batch: dict[str, Any]) -> StepOutput:
        sides = [s for s in ("anchor", "positive", "negative") if s in batch]
        z = self._encode_sides(batch, sides)
        n, loss_name = z[0].shape[0], self.cfg.loss
        metrics = {"positive_cosine": _cosine_of_pairs(z[0], z[1])}
        if loss_name == "nt_xent":
            # One label per pair; each negative gets a label of its own, so it is only ever a negative.
            start = self.dist.offset(n)
            pair = torch.arange(start, start + n, device=z[0].device)
            total = n * self.dist.world_size
            labels = torch.cat([pair, pair] + ([pair + total] if len(z) == 3 else []))
            local = torch.cat(z)
            loss, count = supervised_nt_xent_loss(local, labels, self.cfg.temperature,
                                                  all_z=self.dist.all_gather(local),
                                                  all_labels=self.dist.all_gather_no_grad(labels),
                                                  offset=self.dist.offset(local.shape[0]))
            return StepOutput(loss=loss, num_items=count, metrics=metrics, num_inputs=n)
        if loss_name == "triplet":
            if len(z) < 3:
                raise UserError("contrastive.loss=triplet needs a 'negative' column in the pairs file; "
                                "use nt_xent, batch_hard or siamese for pairs")
            return StepOutput(loss=triplet_loss(z[0], z[1], z[2], self.cfg.margin), num_items=n, metrics=metrics,
                              num_inputs=n)
        if loss_name == "batch_hard":
            pair = torch.arange(n, device=z[0].device)
            labels = torch.cat([pair, pair] + ([pair + n] if len(z) == 3 else []))
            loss, count = batch_hard_triplet_loss(torch.cat(z), labels, self.cfg.margin)
            return StepOutput(loss=loss, num_items=count, metrics=metrics, num_inputs=n)
        # siamese: (anchor, positive) similar; (anchor, negative), or the next example's positive, dissimilar.
        other = z[2] if len(z) == 3 else torch.roll(z[1], 1, dims=0)
        x1, x2 = torch.cat([z[0], z[0]]), torch.cat([z[1], other])
        same = torch.cat([torch.ones(n, device=x1.device), torch.zeros(n, device=x1.device)])
        return StepOutput(loss=siamese_contrastive_loss(x1, x2, same, self.cfg.margin), num_items=2 * n,
                          metrics=metrics, num_inputs=n)

    def _labelled(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        labels = batch["labels"]
        z = self.head(self.embed(batch["input_ids"], batch["attention_mask"]))
        n = z.shape[0]
        if self.cfg.loss == "nt_xent":
            loss, count = supervised_nt_xent_loss(z, labels, self.cfg.temperature, all_z=self.dist.all_gather(z),
                                                  all_labels=self.dist.all_gather_no_grad(labels),
                                                  offset=self.dist.offset(n))
            return StepOutput(loss=loss, num_items=count, num_inputs=n)
        if self.cfg.loss == "batch_hard":
            loss, count = batch_hard_triplet_loss(z, labels, self.cfg.margin)
            return StepOutput(loss=loss, num_items=count, num_inputs=n)
        if self.cfg.loss == "siamese":
            other = torch.roll(z, 1, dims=0)
            same = (labels == torch.roll(labels, 1, dims=0)).float()
            return StepOutput(loss=siamese_contrastive_loss(z, other, same, self.cfg.margin), num_items=n, num_inputs=n)
        raise UserError("contrastive.loss=triplet needs (anchor, positive, negative) triplets; with labelled "
                        "texts use batch_hard (it mines the triplets in the batch), nt_xent or siamese")


class _CausalTransformerContext(nn.Module):
    """One transformer layer with a causal mask: ``c_t`` depends on ``z_1 .. z_t`` only. ``[B, T, H]`` in and out."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0, batch_first=True)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        mask = nn.Transformer.generate_square_subsequent_mask(z.shape[1], device=z.device, dtype=z.dtype)
        return self.layer(z, src_mask=mask, is_causal=True)


class TextCPCObjective(SentenceObjective):
    """CPC over tokens: the encoder's token states ``z_t``, a causal context ``c_t`` (GRU or a causal layer),
    ``K`` linear maps predicting ``z_{t+k}`` from ``c_t``, InfoNCE against every other position of the global
    batch (:func:`~nlp_ssl.objectives.contrastive_losses.cpc_loss`; van den Oord et al. 2018, section 2).

    With ``cpc_causal_encoder`` the encoder runs with a causal attention mask during training: a bidirectional
    encoder would let ``z_t`` see the tokens it is predicting. The export is the encoder (mean pooling by
    default); the context network and predictors are dropped like a projection head.

    Batch: ``{"input_ids": [B, T], "attention_mask": [B, T]}``; ``num_items`` is the number of (t, k) terms.
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any, pooling: str, cfg: ContrastiveConfig, max_length: int) -> None:
        super().__init__(encoder, tokenizer, pooling, None, max_length)
        self.cfg = cfg
        dim = encoder.config.hidden_size
        if cfg.cpc_context == "gru":
            self.context: nn.Module = nn.GRU(dim, dim, batch_first=True)
        else:
            self.context = _CausalTransformerContext(dim, max(1, getattr(encoder.config, "num_attention_heads", 4)))
        self.predictor = nn.Linear(dim, cfg.cpc_steps * dim)  # the K maps W_k side by side

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        attention = causal_attention_mask(mask) if self.cfg.cpc_causal_encoder else mask
        z = self.model(input_ids=ids, attention_mask=attention).last_hidden_state  # [B, T, H]
        context = self.context(z)
        context = context[0] if isinstance(context, tuple) else context  # GRU returns (outputs, last state)
        b, t, h = z.shape
        predictions = self.predictor(context).view(b, t, self.cfg.cpc_steps, h)
        real = mask.bool()
        all_z, all_mask = z, real
        if self.dist.distributed:
            # Candidates from every process: pad to the longest batch of all, then gather (with gradients).
            longest = int(self.dist.all_reduce(torch.tensor(t, device=z.device), "max"))
            padded_z = F.pad(z, (0, 0, 0, longest - t))
            padded_mask = F.pad(real, (0, longest - t))
            all_z, all_mask = self.dist.all_gather(padded_z), self.dist.all_gather_no_grad(padded_mask)
        loss, count = cpc_loss(predictions, z, real, self.cfg.temperature, all_encodings=all_z, all_mask=all_mask,
                               offset=self.dist.offset(b), normalize=self.cfg.cpc_normalize)
        return StepOutput(loss=loss, num_items=count, num_inputs=mask.sum())
