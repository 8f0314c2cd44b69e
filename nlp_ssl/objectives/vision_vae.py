"""Variational autoencoder and beta-VAE: maximise the evidence lower bound of the images.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (ICLR): a Gaussian posterior ``q(z | x)`` from
the encoder, a sample through the reparameterisation ``z = mu + sigma * eps``, a Bernoulli decoder, and the
negative ELBO ``-log p(x | z) + KL(q(z | x) || N(0, I))``. Higgins et al. 2017, "beta-VAE: Learning Basic
Visual Concepts with a Constrained Variational Framework" (ICLR), weight the KL term by ``beta > 1``, which
pushes the code towards independent (disentangled) factors at some cost in reconstruction; latent traversals
(:mod:`nlp_ssl.eval.vision`) show them. The posterior mean ``mu`` is the representation that is probed.

The reparameterisation noise ``eps`` is drawn per example for the global batch from :attr:`Objective.rng`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nlp_ssl.errors import UserError
from nlp_ssl.models.generative import ConvVAE, vae_loss
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective

__all__ = ["VAEObjective"]


class VAEObjective(VisionObjective):
    """The (beta-)VAE's negative ELBO; exports the VAE (``ConvVAE.save``).

    Batch: ``{"pixel_values": uint8 [B, C, S, S]}``. Loss: ``recon + beta * kl`` in nats per image, averaged
    over images (``num_items = B``); metrics ``recon`` and ``kl`` (nats per image) and ``elbo`` (the negative
    ELBO with beta = 1, comparable across betas).

    Args:
        model: the :class:`~nlp_ssl.models.generative.ConvVAE`.
        mean, std: per-channel training statistics ``[C]`` (recorded; the model reads pixels in [0, 1]).
        beta: weight of the KL term (1: VAE; > 1: beta-VAE).
        data_info: recorded in ``vision.json``.
    """

    kind = "generative"

    def __init__(self, model: ConvVAE, *, mean: Sequence[float], std: Sequence[float], beta: float = 1.0,
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("vae", mean, std, "unit", data_info)
        if not beta > 0:
            raise UserError(f"vae beta must be > 0 (1 for the VAE, > 1 for a beta-VAE), got {beta}")
        self.model = model
        self.beta = beta

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.unit(batch["pixel_values"])
        latent = self.model.config["latent_dim"]
        eps = self.per_example(lambda n: torch.randn(n, latent, device=self.rng.device, generator=self.rng), x.shape[0])
        logits, mu, logvar = self.model(x, eps=eps)
        loss, recon, kl = vae_loss(logits, x, mu, logvar, beta=self.beta)
        return StepOutput(loss=loss, num_items=x.shape[0], metrics={
            "recon": recon.detach(), "kl": kl.detach(), "elbo": (recon + kl).detach()})

    def vision_meta(self) -> dict[str, Any]:
        return {**super().vision_meta(), "beta": self.beta}
