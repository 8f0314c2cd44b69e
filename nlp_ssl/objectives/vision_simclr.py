"""SimCLR on images: two augmented views of each image, NT-Xent with negatives from every process.

Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of Visual
Representations" (ICML). Each image gets two random views (crop, flip, colour distortion, blur:
:mod:`nlp_ssl.data.image_views`, drawn on the device inside the step); encoder and projection head map both
views; the NT-Xent loss (:func:`nlp_ssl.objectives.contrastive_losses.nt_xent_loss`) asks each view to find
its partner among the ``2M - 1`` other views of the global batch. With several processes the projections are
gathered from all of them with gradients (``self.dist.all_gather``), so every process scores its anchors
against the whole global batch, as the paper's global batch does. The projection head is dropped at export
(the paper's features come from before it).

View parameters are drawn for the global batch from :attr:`Objective.rng` and sliced per process, so two
processes with batch ``B`` train on exactly the views one process with ``2B`` would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from transformers import PreTrainedModel

from nlp_ssl.data.image_views import ViewConfig, apply_view, sample_view_params
from nlp_ssl.models.vision import feature_dim
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.contrastive_losses import nt_xent_loss
from nlp_ssl.objectives.vision_base import EncoderWithHead, VisionObjective, mlp

__all__ = ["SimCLRObjective", "draw_two_views"]


def draw_two_views(objective: VisionObjective, x: torch.Tensor, views: ViewConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random views of each image of ``x`` (float ``[B, C, H, W]`` in [0, 1]), drawn per example for the
    global batch from ``objective.rng``; returns them normalised, ``[B, C, H, W]`` each (same size as ``x``)."""
    rows, channels, height, width = x.shape

    def draw(n: int):
        first = sample_view_params(n, height, width, channels, views, device=objective.rng.device,
                                   generator=objective.rng)
        second = sample_view_params(n, height, width, channels, views, device=objective.rng.device,
                                    generator=objective.rng)
        return first, second

    first, second = objective.draw_for_batch(draw, rows)
    size = (height, width)
    return (objective.normalize(apply_view(x, first, views, size)),
            objective.normalize(apply_view(x, second, views, size)))


class SimCLRObjective(VisionObjective):
    """NT-Xent between two views of every image; exports the encoder.

    Batch: ``{"pixel_values": uint8 [B, C, H, W]}``. Loss: NT-Xent over the ``2B`` local anchors against the
    global batch, ``num_items = 2B``; metric ``accuracy`` (the share of anchors whose most similar other view
    is their partner, within this process's rows).

    Args:
        encoder: a ``ResNetModel`` or ``ViTModel``.
        mean, std: per-channel training statistics ``[C]``.
        views: the augmentations (:class:`~nlp_ssl.data.image_views.ViewConfig`).
        temperature: NT-Xent's ``t`` (the paper: 0.1 to 0.5).
        projection_hidden, projection_dim: the projection head ``D -> hidden -> dim``.
        pooling: ViT pooling.
        data_info: recorded in ``vision.json``.
    """

    def __init__(self, encoder: PreTrainedModel, *, mean: Sequence[float], std: Sequence[float], views: ViewConfig,
                 temperature: float = 0.5, projection_hidden: int = 256, projection_dim: int = 128,
                 pooling: Literal["cls", "mean"] = "cls", data_info: dict[str, Any] | None = None) -> None:
        super().__init__("simclr", mean, std, "normalized", data_info)
        self.views = views
        self.temperature = temperature
        self.net = EncoderWithHead(encoder, mlp(feature_dim(encoder), projection_hidden, projection_dim), pooling)

    @property
    def model(self) -> PreTrainedModel:  # the exported encoder
        return self.net.encoder

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.unit(batch["pixel_values"])
        rows = x.shape[0]
        view_a, view_b = draw_two_views(self, x, self.views)
        z = self.net(torch.cat([view_a, view_b]))  # one pass over both views: [2B, d]
        z_a, z_b = z[:rows], z[rows:]
        if self.dist.distributed:
            loss = nt_xent_loss(z_a, z_b, self.temperature, all_a=self.dist.all_gather(z_a),
                                all_b=self.dist.all_gather(z_b), offset=self.dist.offset(rows))
        else:
            loss = nt_xent_loss(z_a, z_b, self.temperature)
        return StepOutput(loss=loss, num_items=2 * rows, metrics={"accuracy": _pair_accuracy(z_a, z_b)},
                          num_inputs=rows)


@torch.no_grad()
def _pair_accuracy(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
    """Share of the ``2B`` views whose nearest other view (cosine, local rows) is their partner."""
    z = torch.nn.functional.normalize(torch.cat([z_a, z_b]).float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-2.0)
    n = z_a.shape[0]
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return (sim.argmax(dim=1) == partner).float().mean()
