"""MoCo on images: a query encoder, a momentum key encoder and a queue of keys as negatives.

He, Fan, Wu, Xie & Girshick 2020, "Momentum Contrast for Unsupervised Visual Representation Learning"
(CVPR), with the MLP projection head and SimCLR-style augmentations of MoCo v2 (Chen, Fan, Girshick & He
2020, "Improved Baselines with Momentum Contrastive Learning"). The query view goes through the trained
encoder + projector; the key view through their exponential moving average (no gradient); the loss is
InfoNCE of each query against its key and the queue (:func:`nlp_ssl.objectives.contrastive_losses.moco_loss`).
After the step, the keys of the global batch, gathered from every process, are pushed into the queue, so
every process holds the same queue; the momentum update runs in :meth:`MoCoObjective.on_optimizer_step`.

Batch normalisation: a key encoder that normalises with the statistics of the whole current batch leaks
which keys belong to that batch, a signature the positive shares with its query and the queued negatives lack
(MoCo's reason for "shuffling BN"). One process emulates the shuffle as MoCo's single-GPU demo does: the
key batch is permuted and normalised in ``key_bn_splits`` separate groups, so a key's statistics come from
a random subset of the batch, not the one its query sees. (Running the key encoder in eval mode instead is
not an option: the running statistics it would copy belong to the query encoder's weights, not to the
averaged weights, and the keys collapse to a constant.) Queue, pointer and key encoder are persistent state
(checkpointed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from nlp_ssl.data.image_views import ViewConfig
from nlp_ssl.models.momentum import FeatureQueue, ema_update_, make_momentum_copy, momentum_schedule
from nlp_ssl.models.vision import feature_dim
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.contrastive_losses import moco_loss
from nlp_ssl.objectives.vision_base import EncoderWithHead, VisionObjective, mlp
from nlp_ssl.objectives.vision_simclr import draw_two_views

__all__ = ["MoCoObjective"]


class MoCoObjective(VisionObjective):
    """Momentum contrast; exports the query encoder.

    Batch: ``{"pixel_values": uint8 [B, C, H, W]}``. Loss: InfoNCE of the ``B`` local queries against their
    keys and the queue, ``num_items = B``; metric ``accuracy`` (the key scores above every queued negative).

    Args:
        encoder: a ``ResNetModel`` or ``ViTModel``.
        mean, std: per-channel training statistics ``[C]``.
        views: the augmentations of both views.
        temperature: InfoNCE's ``t`` (MoCo v2: 0.2).
        queue_size: ``K`` keys kept as negatives.
        momentum: the key encoder's EMA momentum at step 0; it rises to ``momentum_final`` along BYOL's cosine
            schedule (:func:`nlp_ssl.models.momentum.momentum_schedule`; equal values keep it constant).
        projection_hidden, projection_dim: the projection head ``D -> hidden -> dim``.
        key_bn_splits: groups the key batch is normalised in (shuffling BN; 1: the whole batch).
        pooling: ViT pooling.
        data_info: recorded in ``vision.json``.
    """

    def __init__(self, encoder: PreTrainedModel, *, mean: Sequence[float], std: Sequence[float], views: ViewConfig,
                 temperature: float = 0.2, queue_size: int = 4096, momentum: float = 0.99,
                 momentum_final: float = 0.99, projection_hidden: int = 256, projection_dim: int = 128,
                 key_bn_splits: int = 4, pooling: Literal["cls", "mean"] = "cls",
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("moco", mean, std, "normalized", data_info)
        self.views = views
        self.temperature = temperature
        self.key_bn_splits = max(1, int(key_bn_splits))
        self.momentum, self.momentum_final = momentum, momentum_final
        self.query = EncoderWithHead(encoder, mlp(feature_dim(encoder), projection_hidden, projection_dim), pooling)
        self.key = make_momentum_copy(self.query)
        self.queue = FeatureQueue(queue_size, projection_dim)

    @property
    def model(self) -> PreTrainedModel:  # the exported encoder
        return self.query.encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.unit(batch["pixel_values"])
        view_q, view_k = draw_two_views(self, x, self.views)
        q = self.query(view_q)  # [B, d]
        with torch.no_grad():
            k = self.keys(view_k)
        negatives = self.queue.negatives()
        loss = moco_loss(q, k, negatives, self.temperature)
        metrics = {"accuracy": _key_accuracy(q, k, negatives)}
        if self.training:  # evaluation never touches the queue
            self.queue.enqueue(self.dist.all_gather_no_grad(k))
        return StepOutput(loss=loss, num_items=x.shape[0], metrics=metrics)

    @torch.no_grad()
    def keys(self, view: torch.Tensor) -> torch.Tensor:
        """Key projections ``[B, d]`` of ``view``, batch-normalised in shuffled groups (module docstring).

        Which images share a group is local to the computation (like dropout), so the permutation comes from
        torch's global RNG, not from the per-example generator; it changes no key's value across processes
        beyond what per-process batch statistics already do.
        """
        self.key.train()
        splits = min(self.key_bn_splits, view.shape[0])
        if splits == 1:
            return self.key(view)
        order = torch.randperm(view.shape[0], device=view.device)
        shuffled = torch.cat([self.key(chunk) for chunk in view[order].chunk(splits)])
        return torch.empty_like(shuffled).index_copy_(0, order, shuffled)

    def on_optimizer_step(self, step: int, max_steps: int) -> None:
        ema_update_(self.key, self.query, momentum_schedule(step, max_steps, self.momentum, self.momentum_final))


@torch.no_grad()
def _key_accuracy(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """Share of queries whose own key is more similar (cosine) than every queued negative."""
    q, k = torch.nn.functional.normalize(q.float(), dim=1), torch.nn.functional.normalize(k.float(), dim=1)
    positive = (q * k).sum(1)
    if negatives.shape[0] == 0:
        return torch.ones((), device=q.device)
    hardest = (q @ torch.nn.functional.normalize(negatives.float(), dim=1).T).amax(dim=1)
    return (positive > hardest).float().mean()
