"""Rotation prediction: classify by how many quarter turns an image was rotated.

Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting Image Rotations" (ICLR).
To tell 0, 90, 180 and 270 degrees apart the network has to find the objects and their usual orientation
(where the head, the sole or the handle is), which is what makes the features useful. As in the paper, each
image appears in all four rotations in the same batch (their ablation found that better than one random
rotation per image), so this pretext draws no random numbers at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from nlp_ssl.data.pretext import rotate_batch
from nlp_ssl.models.vision import encoder_features, feature_dim
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective, mlp

__all__ = ["RotationObjective"]


class RotationObjective(VisionObjective):
    """4-way rotation classification on top of an image encoder; exports the encoder.

    Batch: ``{"pixel_values": uint8 [B, C, S, S]}`` (square images). Loss: cross-entropy over the ``4B``
    rotated copies, so ``num_items = 4B``; metric ``accuracy`` (rotation accuracy).

    Args:
        encoder: a ``ResNetModel`` or ``ViTModel`` (:func:`nlp_ssl.models.vision.build_vision_encoder`).
        mean, std: per-channel training statistics ``[C]`` (on the [0, 1] scale).
        head_hidden: width of the two-layer head ``D -> head_hidden -> 4``.
        pooling: ViT pooling (``cls`` or ``mean``).
        data_info: recorded in ``vision.json``.
    """

    def __init__(self, encoder: PreTrainedModel, *, mean: Sequence[float], std: Sequence[float],
                 head_hidden: int = 256, pooling: Literal["cls", "mean"] = "cls",
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("rotation", mean, std, "normalized", data_info)
        self.model = encoder
        self.pooling = pooling
        self.head = mlp(feature_dim(encoder), head_hidden, 4)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.pixels(batch["pixel_values"])
        rotated, labels = rotate_batch(x)  # [4B, C, S, S]; block k holds rotation k
        logits = self.head(encoder_features(self.model, rotated, self.pooling))  # [4B, 4]
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return StepOutput(loss=loss, num_items=labels.numel(), metrics={"accuracy": accuracy.detach()},
                          num_inputs=x.shape[0])
