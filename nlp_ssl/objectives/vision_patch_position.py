"""Relative patch position: which of the 8 neighbours of a centre patch is the second patch?

Doersch, Gupta & Efros 2015, "Unsupervised Visual Representation Learning by Context Prediction" (ICCV).
Both patches go through the same encoder (a siamese pair, shared weights); their features, concatenated,
feed a small classifier over the 8 positions. Telling "above-left" from "below" needs the parts of objects
and how they are laid out. Against trivial shortcuts the paper leaves a gap between the patches and jitters
each by a few pixels (edges and textures do not continue across the border), and drops two of the three
colour channels at random (chromatic aberration would tell a patch's place in the lens's field); see
:mod:`nlp_ssl.data.pretext` for the geometry. Colour dropping acts on RGB images only.

Every draw (label, grid position, jitter, channel dropping) is made for the global batch from
:attr:`Objective.rng` and sliced to this process's rows.

Small images: a 3x3 grid of patches with gaps fits a 28-pixel image only with 6-pixel patches, which a
ResNet's stem (4x down-sampling) reduces to a single position, while the features that are evaluated come
from whole images. ``resize`` enlarges every patch to the encoder's input size first (bilinear), so the
encoder works at the resolution it is used at, as a SimCLR crop does; None keeps the paper's raw patches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from nlp_ssl.data.pretext import (ColourDrop, apply_colour_drop, crop_patch_pairs, sample_colour_drop,
                                  sample_patch_pair_geometry)
from nlp_ssl.models.vision import encoder_features, feature_dim
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective, enlarge, mlp

__all__ = ["PatchPositionObjective"]


class PatchPositionObjective(VisionObjective):
    """8-way relative-position classification of patch pairs; exports the encoder.

    Batch: ``{"pixel_values": uint8 [B, C, H, W]}``. One (centre, neighbour) pair per image; loss: the
    cross-entropy of the neighbour's position, ``num_items = B``; metric ``accuracy``.

    Args:
        encoder: a ``ResNetModel`` or ``ViTModel``; it sees ``patch x patch`` crops during training and
            whole images when its features are used.
        mean, std: per-channel training statistics ``[C]``.
        patch, gap, jitter: the grid geometry (:func:`nlp_ssl.data.pretext.sample_patch_pairs`).
        drop_channels: colour dropping on RGB patches.
        head_hidden: width of the classifier ``2D -> head_hidden -> 8``.
        resize: side the patches are enlarged to before the encoder (None: as cut).
        pooling: ViT pooling.
        data_info: recorded in ``vision.json``.
    """

    def __init__(self, encoder: PreTrainedModel, *, mean: Sequence[float], std: Sequence[float], patch: int,
                 gap: int, jitter: int, drop_channels: bool = True, head_hidden: int = 256,
                 resize: int | None = None, pooling: Literal["cls", "mean"] = "cls",
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("patch_position", mean, std, "normalized", data_info)
        self.model = encoder
        self.pooling = pooling
        self.patch, self.gap, self.jitter, self.drop_channels = patch, gap, jitter, drop_channels
        self.resize = resize
        self.head = mlp(2 * feature_dim(encoder), head_hidden, 8)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.pixels(batch["pixel_values"])
        rows, channels, height, width = x.shape
        geometry = self.draw_for_batch(lambda n: sample_patch_pair_geometry(
            n, height, width, self.patch, self.gap, self.jitter, device=self.rng.device, generator=self.rng), rows)
        centre, neighbour, label = crop_patch_pairs(x, geometry, self.patch)
        pairs = torch.cat([centre, neighbour])  # [2B, C, p, p]: one encoder pass for both sides
        if self.drop_channels and channels == 3:
            pairs = apply_colour_drop(pairs, self._colour_drop(rows))
        features = encoder_features(self.model, enlarge(pairs, self.resize), self.pooling)  # [2B, D]
        logits = self.head(torch.cat([features[:rows], features[rows:]], dim=1))  # [B, 8]
        loss = F.cross_entropy(logits, label)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return StepOutput(loss=loss, num_items=rows, metrics={"accuracy": accuracy.detach()})

    def _colour_drop(self, rows: int) -> ColourDrop:
        """Channel dropping for this process's ``[centre; neighbour]`` patches, drawn per example: each
        example's two patches take rows ``2i`` and ``2i + 1`` of the global draw."""
        p = self.patch

        def draw(n: int) -> ColourDrop:
            drop = sample_colour_drop(2 * n, p, p, device=self.rng.device, generator=self.rng)
            return ColourDrop(drop.keep.view(n, 2), drop.noise.view(n, 2, 3, p, p))

        mine = self.draw_for_batch(draw, rows)
        # [centre of every example; neighbour of every example], as the patches are stacked
        return ColourDrop(mine.keep.T.reshape(-1), mine.noise.transpose(0, 1).reshape(-1, 3, p, p))
