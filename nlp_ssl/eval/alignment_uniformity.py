"""Alignment and uniformity of embeddings on the unit hypersphere (Wang & Isola 2020): how close positive pairs
land, and how evenly the embeddings spread."""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError

__all__ = ["alignment_uniformity"]


@torch.no_grad()
def alignment_uniformity(z_a: torch.Tensor, z_b: torch.Tensor, t: float = 2.0) -> tuple[float, float]:
    """Alignment and uniformity of normalised features (lower is better for both).

    Wang & Isola 2020, "Understanding Contrastive Representation Learning through Alignment and
    Uniformity on the Hypersphere", section 4, with ``f`` the l2-normalised features::

        alignment  = E_i |f(a_i) - f(b_i)|^2                          (positive pairs)
        uniformity = log E_{i < j} exp(-t |f(x_i) - f(x_j)|^2)         (distinct pairs of one view)

    Uniformity is the mean of its value over ``z_a`` and over ``z_b`` (both are samples of the data
    distribution, as in the paper's reference code), computed with a logsumexp in at least fp32.

    Shape:
        - z_a, z_b: ``[N, D]`` with ``N >= 2``
        - output: ``(alignment, uniformity)`` Python floats
    """
    if z_a.dim() != 2 or z_a.shape != z_b.shape or z_a.shape[1] == 0:
        raise UserError(f"alignment_uniformity needs two [N, D] tensors of one shape, got {tuple(z_a.shape)} and "
                        f"{tuple(z_b.shape)}")
    if z_a.shape[0] < 2:
        raise UserError("alignment_uniformity needs at least 2 examples (uniformity is over pairs)")
    if not (isinstance(t, Real) and math.isfinite(t) and t > 0):
        raise UserError(f"alignment_uniformity: t must be a finite number > 0 (the paper uses 2), got {t!r}")
    a = F.normalize(z_a.to(torch.promote_types(z_a.dtype, torch.float32)), dim=1)
    b = F.normalize(z_b.to(torch.promote_types(z_b.dtype, torch.float32)), dim=1)
    alignment = (a - b).square().sum(1).mean()

    def uniformity(x: torch.Tensor) -> torch.Tensor:
        sq = torch.pdist(x).square()  # the N(N-1)/2 distinct pairs
        return torch.logsumexp(-t * sq, 0) - math.log(sq.numel())

    return float(alignment), float((uniformity(a) + uniformity(b)) / 2)
