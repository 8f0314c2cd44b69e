"""PixelCNN: an autoregressive model of images, each pixel a 256-way choice given the pixels before it.

van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks" (ICML), the PixelCNN
architecture: masked convolutions (mask A in the first layer, B after) make the prediction at a pixel depend
only on the pixels above it and to its left (:class:`nlp_ssl.models.generative.PixelCNN`). Trained by
maximum likelihood; the negative log-likelihood is reported in bits per dimension (nats per sub-pixel /
ln 2; a uniform model scores 8). Samples are drawn at export (``plots/pixelcnn_samples.png``). The
residual stream, pooled, is the representation that is probed. The objective draws no random numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from nlp_ssl.models.generative import PixelCNN
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective

__all__ = ["PixelCNNObjective"]


class PixelCNNObjective(VisionObjective):
    """Maximum likelihood of the raw 8-bit pixels; exports the PixelCNN (``PixelCNN.save``).

    Batch: ``{"pixel_values": uint8 [B, 1, H, W]}``. Loss: mean negative log-likelihood in nats per
    sub-pixel of each image, averaged over images (``num_items = B``; every image has ``C*H*W``
    sub-pixels, so this is also the mean over sub-pixels); metric ``bits_per_dim``.

    Args:
        model: the :class:`~nlp_ssl.models.generative.PixelCNN`.
        mean, std: per-channel training statistics ``[C]`` (recorded; the model reads raw levels).
        data_info: recorded in ``vision.json``.
    """

    kind = "generative"

    def __init__(self, model: PixelCNN, *, mean: Sequence[float], std: Sequence[float],
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("pixelcnn", mean, std, "uint8", data_info)
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.pixels(batch["pixel_values"])  # uint8 levels
        logits = self.model(x)  # [B, 256, C, H, W]
        nats = F.cross_entropy(logits, x.long(), reduction="none").flatten(1).mean(1)  # [B]
        loss = nats.mean()
        return StepOutput(loss=loss, num_items=x.shape[0], metrics={"bits_per_dim": loss.detach() / math.log(2.0)})
