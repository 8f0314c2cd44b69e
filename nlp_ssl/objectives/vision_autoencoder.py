"""Undercomplete autoencoder: squeeze each image through a small code and rebuild it.

Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data with Neural Networks" (Science). The code
(:class:`nlp_ssl.models.generative.ConvAutoencoder`, ``latent_dim`` well below the number of pixels) must keep
what the decoder needs to redraw the image, so it keeps the image's main factors of variation; it is the
representation that is probed. Pixels in [0, 1] are read as Bernoulli probabilities and the decoder's
outputs as their logits, so the reconstruction loss is the binary cross-entropy per pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nlp_ssl.models.generative import ConvAutoencoder
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective

__all__ = ["AutoencoderObjective"]


class AutoencoderObjective(VisionObjective):
    """Reconstruction of every image from its code; exports the autoencoder (``ConvAutoencoder.save``).

    Batch: ``{"pixel_values": uint8 [B, C, S, S]}``. Loss: mean binary cross-entropy per pixel of each image,
    averaged over images (``num_items = B``); metric ``mse`` (squared error of the sigmoid outputs, [0, 1]
    scale).

    Args:
        model: the :class:`~nlp_ssl.models.generative.ConvAutoencoder`.
        mean, std: per-channel training statistics ``[C]`` (recorded; the model reads pixels in [0, 1]).
        data_info: recorded in ``vision.json``.
    """

    kind = "generative"

    def __init__(self, model: ConvAutoencoder, *, mean: Sequence[float], std: Sequence[float],
                 data_info: dict[str, Any] | None = None, pretext: str = "autoencoder") -> None:
        super().__init__(pretext, mean, std, "unit", data_info)
        self.model = model

    def corrupt_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder sees; the plain autoencoder sees the clean image."""
        return x

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.unit(batch["pixel_values"])
        logits = self.model(self.corrupt_inputs(x))
        per_image = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).mean(1)  # [B]
        mse = (torch.sigmoid(logits) - x).square().mean().detach()
        return StepOutput(loss=per_image.mean(), num_items=x.shape[0], metrics={"mse": mse})
