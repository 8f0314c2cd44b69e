"""Jigsaw puzzles: which permutation of a fixed set shuffled the 3x3 tiles of an image?

Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles" (ECCV).
Each tile goes through the same encoder (the paper's context-free network: no tile sees another before the
features are concatenated), then a classifier over the concatenated tile features predicts the index of the
permutation in a fixed set chosen to be far apart in Hamming distance
(:func:`nlp_ssl.data.pretext.maximal_hamming_permutations`). Gaps and jitter between tiles and per-tile
normalisation remove the low-level shortcuts (continuing edges, matching brightness) that the paper lists.

The permutation index and the grid of every image are drawn for the global batch from
:attr:`Objective.rng` and sliced to this process's rows. The permutation set is a persistent buffer, so a
checkpoint carries it. ``resize`` enlarges every tile to the encoder's input size before encoding (see
:mod:`nlp_ssl.objectives.vision_patch_position` for why small images need it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from nlp_ssl.data.pretext import cut_jigsaw_tiles, maximal_hamming_permutations, sample_jigsaw
from nlp_ssl.models.vision import encoder_features, feature_dim
from nlp_ssl.objectives.base import StepOutput
from nlp_ssl.objectives.vision_base import VisionObjective, enlarge, mlp

__all__ = ["JigsawObjective"]


class JigsawObjective(VisionObjective):
    """Permutation classification of shuffled tiles; exports the encoder.

    Batch: ``{"pixel_values": uint8 [B, C, H, W]}``. One puzzle per image; loss: cross-entropy over the
    ``n_permutations`` classes, ``num_items = B``; metric ``accuracy``.

    Args:
        encoder: a ``ResNetModel`` or ``ViTModel`` (sees ``tile x tile`` crops in training).
        mean, std: per-channel training statistics ``[C]``.
        grid, tile, gap, jitter: the puzzle geometry (:func:`nlp_ssl.data.pretext.jigsaw_batch`).
        n_permutations: size of the permutation set (the paper: 100 to 1,000).
        normalize_tiles: zero mean and unit variance per tile.
        head_hidden: width of the classifier ``grid^2 * D -> head_hidden -> n_permutations``.
        permutation_seed: seed of the greedy permutation selection.
        resize: side the tiles are enlarged to before the encoder (None: as cut).
        pooling: ViT pooling.
        data_info: recorded in ``vision.json``.
    """

    perms: torch.Tensor

    def __init__(self, encoder: PreTrainedModel, *, mean: Sequence[float], std: Sequence[float], grid: int = 3,
                 tile: int = 7, gap: int = 1, jitter: int = 0, n_permutations: int = 100,
                 normalize_tiles: bool = True, head_hidden: int = 512, permutation_seed: int = 0,
                 resize: int | None = None, pooling: Literal["cls", "mean"] = "cls",
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__("jigsaw", mean, std, "normalized", data_info)
        self.model = encoder
        self.pooling = pooling
        self.grid, self.tile, self.gap, self.jitter = grid, tile, gap, jitter
        self.normalize_tiles = normalize_tiles
        self.resize = resize
        self.register_buffer("perms", maximal_hamming_permutations(n_permutations, grid * grid, seed=permutation_seed))
        self.head = mlp(grid * grid * feature_dim(encoder), head_hidden, n_permutations)

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        x = self.pixels(batch["pixel_values"])
        rows, _, height, width = x.shape
        n_perms = self.perms.shape[0]
        draw = self.draw_for_batch(lambda n: sample_jigsaw(
            n, height, width, n_perms, self.grid, self.tile, self.gap, self.jitter, device=self.rng.device,
            generator=self.rng), rows)
        tiles = cut_jigsaw_tiles(x, self.perms, draw, self.tile, normalize_tiles=self.normalize_tiles)
        n_tiles = tiles.shape[1]
        features = encoder_features(self.model, enlarge(tiles.flatten(0, 1), self.resize), self.pooling)  # [B*n, D]
        logits = self.head(features.view(rows, n_tiles * features.shape[1]))  # tiles in shuffled slot order
        label = draw.label.to(x.device)
        loss = F.cross_entropy(logits, label)
        accuracy = (logits.argmax(dim=1) == label).float().mean()
        return StepOutput(loss=loss, num_items=rows, metrics={"accuracy": accuracy.detach()})
