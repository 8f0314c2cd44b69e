"""Context-encoder inpainting: fill in a hidden region of the image from its surroundings.

Pathak, Krahenbuhl, Donahue, Darrell & Efros 2016, "Context Encoders: Feature Learning by Inpainting" (CVPR).
A region of each image is hidden (central square, random blocks or random free-form regions:
:func:`nlp_ssl.data.pretext.inpainting_mask`, drawn per example for the global batch from
:attr:`Objective.rng`) and filled with the data mean (0 after normalisation); the generator
(:class:`nlp_ssl.models.generative.ContextEncoderGenerator`) predicts the whole image and is scored on the
hidden region (plus a thin, more heavily weighted border): the masked L2 loss. The joint loss is::

    L = lambda_rec * L_rec + lambda_adv * L_adv

with ``L_adv`` the adversarial term of a patch discriminator (:class:`~nlp_ssl.models.generative.PatchDiscriminator`)
that tells real images from images whose hidden region was filled by the generator; the paper uses
``lambda_rec = 0.999, lambda_adv = 0.001``. ``lambda_adv = 0`` trains with the reconstruction loss alone and
builds no discriminator.

How the adversarial game runs on the one-optimizer engine (simultaneous updates, one backward pass): the
step's loss is ``lambda_rec * L_rec + lambda_adv * L_G + L_D``, where

- ``L_G = -log D(composite)`` (the non-saturating generator loss of Goodfellow et al. 2014) is computed with
  the discriminator's weights *detached* (``torch.func.functional_call``), so it sends gradient to the
  generator only;
- ``L_D = -log D(real) - log(1 - D(composite))`` sees the composite *detached*, so it sends gradient to the
  discriminator only.

The two parts touch disjoint parameters, so one backward gives each network the gradient of its own
objective, and one optimizer step updates both at once (the discriminator in its own parameter group with
its own learning rate and Adam betas, :meth:`InpaintingObjective.configure_optimizer`). This is
simultaneous gradient descent on the two players rather than the alternating updates of the paper; it needs
no change to the engine and keeps a step a function of its seed. The exported artifact is the generator
(the discriminator is dropped); its encoder's pooled features are the representation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.func import functional_call

from nlp_ssl.config import TrainingConfig
from nlp_ssl.data.pretext import inpainting_mask, masked_l2_loss
from nlp_ssl.errors import UserError
from nlp_ssl.models.generative import ContextEncoderGenerator, PatchDiscriminator
from nlp_ssl.models.parameter_groups import decay_parameter_groups
from nlp_ssl.objectives.base import OptimizerSetup, StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective

__all__ = ["InpaintingObjective"]


class InpaintingObjective(VisionObjective):
    """Masked reconstruction (+ optional adversarial term); exports the context-encoder generator.

    Batch: ``{"pixel_values": uint8 [B, C, S, S]}``. Loss: per image ``lambda_rec * rec + lambda_adv * g + d``
    (``rec`` the image's masked L2 in normalised units, ``g`` / ``d`` the generator's and the discriminator's
    adversarial losses, 0 without a discriminator), averaged over images, ``num_items = B``. Metrics:
    ``rec`` and, with a discriminator, ``adv_g``, ``adv_d`` and ``d_accuracy`` (real and filled images told
    apart, per patch).

    Args:
        model: the :class:`~nlp_ssl.models.generative.ContextEncoderGenerator`.
        discriminator: a :class:`~nlp_ssl.models.generative.PatchDiscriminator`, or None (no adversarial term).
        mean, std: per-channel training statistics ``[C]`` (the generator reads and predicts normalised pixels).
        mask: ``central``, ``block`` or ``region``.
        fraction: share of the pixels hidden.
        overlap, overlap_weight: the weighted border of :func:`~nlp_ssl.data.pretext.masked_l2_loss`.
        lambda_rec, lambda_adv: the weights of the joint loss.
        disc_lr: the discriminator's learning rate (None: the run's ``learning_rate``).
        disc_betas: the discriminator's Adam betas (DCGAN's ``(0.5, 0.999)``).
        data_info: recorded in ``vision.json``.
    """

    kind = "generative"

    def __init__(self, model: ContextEncoderGenerator, discriminator: PatchDiscriminator | None, *,
                 mean: Sequence[float], std: Sequence[float], mask: Literal["central", "block", "region"] = "region",
                 fraction: float = 0.25, overlap: int = 1, overlap_weight: float = 10.0, lambda_rec: float = 0.999,
                 lambda_adv: float = 0.001, disc_lr: float | None = None,
                 disc_betas: tuple[float, float] = (0.5, 0.999), data_info: dict[str, Any] | None = None) -> None:
        super().__init__("inpainting", mean, std, "normalized", data_info)
        if lambda_rec < 0 or lambda_adv < 0 or lambda_rec + lambda_adv == 0:
            raise UserError(f"inpainting lambda_rec and lambda_adv must be >= 0 and not both 0, got "
                            f"{lambda_rec} and {lambda_adv}")
        if (lambda_adv > 0) != (discriminator is not None):
            raise UserError("inpainting needs a discriminator exactly when lambda_adv > 0")
        self.model = model
        self.discriminator = discriminator
        self.mask_kind, self.fraction = mask, fraction
        self.overlap, self.overlap_weight = overlap, overlap_weight
        self.lambda_rec, self.lambda_adv = lambda_rec, lambda_adv
        self.disc_lr, self.disc_betas = disc_lr, tuple(disc_betas)

    def draw_masks(self, shape: torch.Size) -> torch.Tensor:
        """Hidden regions ``[B, 1, H, W]`` (True = hidden) for this process's rows of the global batch."""
        _, channels, height, width = shape
        masks = self.per_example(lambda n: inpainting_mask(
            (n, channels, height, width), self.mask_kind, fraction=self.fraction, device=self.rng.device,
            generator=self.rng), shape[0])
        return masks.to(self.mean.device)

    def fill(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The generator's input: hidden pixels set to the data mean (0 in normalised units)."""
        return x.masked_fill(mask, 0.0)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.pixels(batch["pixel_values"])
        mask = self.draw_masks(x.shape)
        pred = self.model(self.fill(x, mask))
        rec = masked_l2_loss(pred, x, mask, overlap=self.overlap, overlap_weight=self.overlap_weight,
                             per_image=True)  # [B]
        metrics = {"rec": rec.mean().detach()}
        per_image = self.lambda_rec * rec
        if self.discriminator is not None:
            composite = torch.where(mask, pred, x)  # the image with its hidden region filled by the generator
            g_loss, d_loss, d_accuracy = self._adversarial(x, composite)
            per_image = per_image + self.lambda_adv * g_loss + d_loss
            metrics.update(adv_g=g_loss.mean().detach(), adv_d=d_loss.mean().detach(), d_accuracy=d_accuracy)
        return StepOutput(loss=per_image.mean(), num_items=x.shape[0], metrics=metrics)

    def _adversarial(self, real: torch.Tensor, composite: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image generator and discriminator losses ``[B]`` each, and the discriminator's accuracy."""
        disc = self.discriminator
        assert disc is not None
        frozen = {name: p.detach() for name, p in disc.named_parameters()}
        fake_for_g = functional_call(disc, frozen, (composite,))  # gradient to the generator only
        g_loss = _per_image_bce(fake_for_g, 1.0)
        real_logits = disc(real)
        fake_logits = disc(composite.detach())  # gradient to the discriminator only
        d_loss = 0.5 * (_per_image_bce(real_logits, 1.0) + _per_image_bce(fake_logits, 0.0))
        with torch.no_grad():
            accuracy = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
        return g_loss, d_loss, accuracy

    def configure_optimizer(self, config: TrainingConfig) -> OptimizerSetup | None:
        """The generator in the engine's weight-decay groups; the discriminator in its own group."""
        if self.discriminator is None:
            return None
        groups = decay_parameter_groups(self.model, config.weight_decay)
        groups.append({"params": list(self.discriminator.parameters()), "weight_decay": 0.0,
                       "lr": self.disc_lr if self.disc_lr is not None else config.learning_rate,
                       "betas": self.disc_betas})
        return OptimizerSetup(param_groups=groups)

    def vision_meta(self) -> dict[str, Any]:
        return {**super().vision_meta(), "mask": self.mask_kind, "fraction": self.fraction}


def _per_image_bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of each image's patch logits ``[B, 1, h, w]`` against ``target``: ``[B]``."""
    targets = torch.full_like(logits, target)
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").flatten(1).mean(1)
