"""Denoising autoencoder: rebuild the clean image from a corrupted one.

Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and Composing Robust Features with Denoising
Autoencoders" (ICML); the Gaussian corruption is from Vincent et al. 2010, "Stacked Denoising Autoencoders"
(JMLR). Undoing the corruption needs the structure of the data (a zeroed stroke is filled in from the
rest of the garment), not just a copy through the bottleneck. Corruption: masking noise (a fixed share of
each image's pixels set to 0) or additive Gaussian noise, drawn per example for the global batch from
:attr:`Objective.rng` (:func:`nlp_ssl.models.generative.corruption_noise`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from nlp_ssl.models.generative import ConvAutoencoder, corrupt_with, corruption_noise
from nlp_ssl.objectives.vision_autoencoder import AutoencoderObjective

__all__ = ["DenoisingAutoencoderObjective"]


class DenoisingAutoencoderObjective(AutoencoderObjective):
    """The autoencoder objective with corrupted inputs and clean targets; exports the autoencoder.

    Args:
        model: the :class:`~nlp_ssl.models.generative.ConvAutoencoder`.
        mean, std: per-channel training statistics ``[C]``.
        corruption: ``masking`` or ``gaussian``.
        level: share of pixels zeroed (masking) or noise standard deviation on the [0, 1] scale (gaussian).
        data_info: recorded in ``vision.json``.
    """

    def __init__(self, model: ConvAutoencoder, *, mean: Sequence[float], std: Sequence[float],
                 corruption: Literal["gaussian", "masking"] = "masking", level: float = 0.3,
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__(model, mean=mean, std=std, data_info=data_info, pretext="denoising_autoencoder")
        self.corruption, self.level = corruption, level
        corrupt_with(torch.zeros(1, 1, 1, 1), corruption, level, torch.zeros(1, 1, 1, 1))  # checks the settings

    def corrupt_inputs(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[1:]
        noise = self.per_example(lambda n: corruption_noise((n, *shape), self.corruption, device=self.rng.device,
                                                            generator=self.rng), x.shape[0])
        return corrupt_with(x, self.corruption, self.level, noise)

    def vision_meta(self) -> dict[str, Any]:
        return {**super().vision_meta(), "corruption": self.corruption, "level": self.level}
