"""Labels and masks for the classic vision pretext tasks, generated on the batch's device.

Every function takes a float image batch ``x`` ``[B, C, H, W]`` and draws its randomness from an optional
``torch.Generator`` or, without one, from torch's global RNG (which the training engine re-seeds at every
step, so the draws of a resumed run match the uninterrupted one). Nothing loops over examples: the per-image
geometry is drawn as tensors and applied with one gather.

Tasks and their papers:

- rotation: Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting Image
  Rotations".
- relative patch position: Doersch, Gupta & Efros 2015, "Unsupervised Visual Representation Learning by
  Context Prediction".
- jigsaw: Noroozi & Favaro 2016, "Unsupervised Learning of Visual Representations by Solving Jigsaw
  Puzzles".
- inpainting masks and the reconstruction loss: Pathak, Krahenbuhl, Donahue, Darrell & Efros 2016,
  "Context Encoders: Feature Learning by Inpainting".

Grid geometry shared by patch pairs and jigsaw: a ``g x g`` grid of square cells, each ``patch + 2*jitter``
pixels wide, with ``gap`` pixels between neighbouring cells. Each patch sits at its cell's centre moved by
an offset drawn uniformly from ``[-jitter, jitter]`` on each axis, so it never leaves its cell and two
neighbouring patches are always at least ``gap`` pixels apart (no shared pixel, no continuing edge). The
whole grid, ``g * (patch + 2*jitter) + (g - 1) * gap`` pixels wide, is placed at a uniformly random position
inside the image.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError

__all__ = [
    "NEIGHBOUR_OFFSETS",
    "ColourDrop",
    "GridDraw",
    "apply_colour_drop",
    "apply_rotation",
    "crop_patch_pairs",
    "cut_jigsaw_tiles",
    "drop_colour_channels",
    "grid_extent",
    "inpainting_mask",
    "jigsaw_batch",
    "masked_l2_loss",
    "maximal_hamming_permutations",
    "patch_grid_fits",
    "permutation_set_stats",
    "random_rotation",
    "rotate_batch",
    "sample_colour_drop",
    "sample_jigsaw",
    "sample_patch_pair_geometry",
    "sample_patch_pairs",
]

#: (row, column) step from the centre patch to the neighbour of each relative-position label, in raster
#: order of the 3x3 grid without its centre (Doersch et al. 2015, figure 2): 0 top-left ... 7 bottom-right.
NEIGHBOUR_OFFSETS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1), (0, 1),
    (1, -1), (1, 0), (1, 1),
)

# Doersch et al. 2015: the dropped colour channels are replaced by Gaussian noise whose standard
# deviation is about 1/100 of the kept channel's.
_COLOUR_DROP_NOISE = 0.01

# Enumerating n! permutations is the point of the greedy selection; 10! (3.6M rows) is the practical limit.
_MAX_PERMUTED_TILES = 10


# ------------------------------------------------------------------------------------------------ helpers


def _check_images(x: torch.Tensor, where: str) -> None:
    if x.dim() != 4:
        raise UserError(f"{where} expects images shaped [B, C, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UserError(f"{where} expects float images, got dtype {x.dtype}; convert with x.float()")


def _randint(high: int | torch.Tensor, size: Sequence[int], device: torch.device,
             generator: torch.Generator | None) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` (``high`` may be a tensor broadcast against ``size``), on ``device``.

    Drawn on the generator's own device (a CPU generator cannot fill a CUDA tensor) and then moved.
    """
    draw_device = generator.device if generator is not None else device
    if isinstance(high, int):
        return torch.randint(high, tuple(size), device=draw_device, generator=generator).to(device)
    u = torch.rand(tuple(size), device=draw_device, generator=generator).to(device)
    return (u * high).long().clamp_(max=high - 1)


def _rand(size: Sequence[int], device: torch.device, generator: torch.Generator | None,
          normal: bool = False) -> torch.Tensor:
    draw_device = generator.device if generator is not None else device
    fn = torch.randn if normal else torch.rand
    return fn(tuple(size), device=draw_device, generator=generator).to(device)


def _crop(x: torch.Tensor, batch_index: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
          size: int) -> torch.Tensor:
    """Square crops ``x[batch_index[n], :, top[n]:top[n]+size, left[n]:left[n]+size]`` -> ``[N, C, size, size]``.

    One advanced-indexing gather for all crops (no loop over crops).
    """
    steps = torch.arange(size, device=x.device)
    rows = (top[:, None] + steps)[:, :, None]  # [N, size, 1]
    cols = (left[:, None] + steps)[:, None, :]  # [N, 1, size]
    # Advanced indices split by the channel slice put the broadcast dims first: [N, size, size, C].
    return x[batch_index[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()


def _image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def grid_extent(patch: int, gap: int, jitter: int, grid: int = 3) -> int:
    """Side in pixels of a ``grid x grid`` patch grid (see the module docstring for the geometry)."""
    return grid * (patch + 2 * jitter) + (grid - 1) * gap


def patch_grid_fits(image_size: int | Sequence[int], patch: int, gap: int, jitter: int, grid: int = 3) -> bool:
    """Whether a ``grid x grid`` grid of ``patch``-pixel patches with ``gap`` and ``jitter`` fits the image.

    ``image_size`` is the side of a square image or ``(H, W)``.
    """
    height, width = _image_hw(image_size)
    extent = grid_extent(patch, gap, jitter, grid)
    return extent <= height and extent <= width


def _check_grid(hw: Sequence[int], patch: int, gap: int, jitter: int, grid: int, what: str) -> None:
    if patch < 1 or gap < 0 or jitter < 0:
        raise UserError(f"{what}: patch must be >= 1 and gap, jitter >= 0, got patch={patch}, gap={gap}, "
                        f"jitter={jitter}")
    height, width = int(hw[-2]), int(hw[-1])
    if not patch_grid_fits((height, width), patch, gap, jitter, grid):
        extent = grid_extent(patch, gap, jitter, grid)
        raise UserError(
            f"{what}: a {grid}x{grid} grid of {patch}px patches with gap {gap} and jitter {jitter} needs "
            f"{extent}x{extent} pixels but the images are {height}x{width}; use a smaller patch, gap or jitter")


def _grid_corners(batch: int, height: int, width: int, patch: int, gap: int, jitter: int, grid: int,
                  device: torch.device, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners ``(top [B, g*g], left [B, g*g])`` of every grid patch, cells in raster order."""
    extent = grid_extent(patch, gap, jitter, grid)
    origin_y = _randint(height - extent + 1, (batch, 1), device, generator)
    origin_x = _randint(width - extent + 1, (batch, 1), device, generator)
    stride = patch + 2 * jitter + gap
    cell = torch.arange(grid * grid, device=device)
    cell_y = (cell // grid) * stride + jitter  # un-jittered corner of each cell's patch
    cell_x = (cell % grid) * stride + jitter
    offsets = _randint(2 * jitter + 1, (2, batch, grid * grid), device, generator) - jitter
    return origin_y + cell_y + offsets[0], origin_x + cell_x + offsets[1]


class GridDraw(NamedTuple):
    """The random geometry of a patch-pair or jigsaw draw, one row per image.

    Attributes:
        label: int64 ``[B]``, the class to predict (neighbour position or permutation index).
        top, left: int64 ``[B, g*g]``, top-left corner of each grid cell's patch (cells in raster order).
    """

    label: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


# ----------------------------------------------------------------------------------------------- rotation


def _check_square(x: torch.Tensor, where: str) -> None:
    _check_images(x, where)
    if x.shape[-1] != x.shape[-2]:
        raise UserError(f"{where} needs square images (a 90-degree turn swaps H and W), got "
                        f"{x.shape[-2]}x{x.shape[-1]}; crop or resize to a square first")


def rotate_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """All four rotations of every image, for the rotation pretext (Gidaris et al. 2018).

    Label ``k`` is ``torch.rot90(image, k, dims=(-2, -1))``: a counter-clockwise turn by ``k * 90`` degrees
    as the image is displayed (row 0 at the top). The paper feeds all four rotations of each image in the
    same batch, which it found better than one random rotation per image.

    Args:
        x: ``[B, C, H, W]`` float images with ``H == W``.

    Returns:
        ``(x_rot [4B, C, H, W], labels [4B])``: block ``k`` (rows ``k*B .. k*B+B-1``) holds rotation ``k``.
    """
    _check_square(x, "rotate_batch")
    rotated = torch.cat([torch.rot90(x, k, dims=(-2, -1)) for k in range(4)])
    labels = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return rotated, labels


def random_rotation(x: torch.Tensor, generator: torch.Generator | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One uniformly drawn rotation per image (labels as in :func:`rotate_batch`).

    Args:
        x: ``[B, C, H, W]`` float images with ``H == W``.

    Returns:
        ``(x_rot [B, C, H, W], labels [B])``.
    """
    _check_square(x, "random_rotation")
    labels = _randint(4, (x.shape[0],), x.device, generator)
    return apply_rotation(x, labels), labels


def apply_rotation(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Turn image ``i`` by ``labels[i] * 90`` degrees counter-clockwise (labels as in :func:`rotate_batch`).

    Args:
        x: ``[B, C, H, W]`` float images with ``H == W``.
        labels: int64 ``[B]`` in ``0..3``.

    Returns:
        ``[B, C, H, W]``.
    """
    _check_square(x, "apply_rotation")
    if labels.shape != x.shape[:1]:
        raise UserError(f"apply_rotation: labels must be [B] = [{x.shape[0]}], got shape {tuple(labels.shape)}")
    labels = labels.to(x.device)
    out = x.clone()
    for k in range(1, 4):  # four batched rotations, not a loop over images
        chosen = labels == k
        out[chosen] = torch.rot90(x[chosen], k, dims=(-2, -1))
    return out


# --------------------------------------------------------------------------------- relative patch position


def drop_colour_channels(patches: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keep one random colour channel per patch and replace the other two by faint Gaussian noise.

    Doersch et al. 2015 ("color dropping"): chromatic aberration lets a network locate a patch
    in the lens's field from colour fringes alone; keeping one channel removes that shortcut. The noise has
    a standard deviation of 1/100 of the kept channel's (their value), around zero as in their
    mean-subtracted inputs.

    Args:
        patches: ``[N, 3, p, p]`` float patches.

    Returns:
        ``[N, 3, p, p]``.
    """
    if patches.dim() != 4 or patches.shape[1] != 3:
        raise UserError(f"colour dropping needs [N, 3, p, p] patches, got shape {tuple(patches.shape)}")
    drop = sample_colour_drop(patches.shape[0], patches.shape[-2], patches.shape[-1], device=patches.device,
                              generator=generator)
    return apply_colour_drop(patches, drop)


class ColourDrop(NamedTuple):
    """The draws of :func:`drop_colour_channels`, one row per patch.

    Attributes:
        keep: int64 ``[N]``, the colour channel each patch keeps.
        noise: float ``[N, 3, p, p]`` standard normal noise (scaled per patch when applied).
    """

    keep: torch.Tensor
    noise: torch.Tensor


def sample_colour_drop(n: int, height: int, width: int, *, device: torch.device | str = "cpu",
                       generator: torch.Generator | None = None) -> ColourDrop:
    """Draw which channel each of ``n`` RGB patches keeps and the noise of the other two (see
    :func:`drop_colour_channels`, which draws the same numbers in the same order)."""
    device = torch.device(device)
    keep = _randint(3, (n,), device, generator)
    return ColourDrop(keep, _rand((n, 3, height, width), device, generator, normal=True))


def apply_colour_drop(patches: torch.Tensor, drop: ColourDrop) -> torch.Tensor:
    """Keep channel ``drop.keep[i]`` of patch ``i`` and replace the others by its noise, scaled to 1/100 of the
    kept channel's standard deviation: ``[N, 3, p, p]`` -> ``[N, 3, p, p]``."""
    if patches.dim() != 4 or patches.shape[1] != 3 or drop.noise.shape != patches.shape:
        raise UserError(f"colour dropping needs [N, 3, p, p] patches and noise of the same shape, got "
                        f"{tuple(patches.shape)} and {tuple(drop.noise.shape)}")
    n = patches.shape[0]
    keep = drop.keep.to(patches.device)
    kept = patches[torch.arange(n, device=patches.device), keep]  # [N, p, p]
    scale = _COLOUR_DROP_NOISE * kept.flatten(1).std(dim=1)  # [N]
    noise = drop.noise.to(device=patches.device, dtype=patches.dtype) * scale[:, None, None, None]
    is_kept = F.one_hot(keep, 3).bool()[:, :, None, None]
    return torch.where(is_kept, patches, noise)


def sample_patch_pairs(x: torch.Tensor, patch: int, gap: int, jitter: int, drop_channels: bool = False,
                       generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (centre, neighbour) patch pair per image and the neighbour's position, 8-way (Doersch et al. 2015).

    The paper samples a 3x3 grid, leaves a gap of about half a patch between patches and jitters each patch
    by up to 7 pixels, so that continuing lines and textures at the borders do not give the answer away;
    geometry here as in the module docstring.

    Args:
        x: ``[B, C, H, W]`` float images.
        patch: side of a patch in pixels.
        gap: pixels between neighbouring grid cells.
        jitter: largest random offset of a patch on each axis.
        drop_channels: colour dropping (:func:`drop_colour_channels`) on each patch; only acts when ``C == 3``
            (a grey image has no chromatic aberration to hide).
        generator: optional RNG (else torch's global RNG).

    Returns:
        ``(centre [B, C, p, p], neighbour [B, C, p, p], label [B])``, label in ``0..7`` indexing
        :data:`NEIGHBOUR_OFFSETS` (raster order: 0 above-left of the centre, 7 below-right).

    Raises:
        UserError: the grid does not fit the images (:func:`patch_grid_fits`).
    """
    _check_images(x, "sample_patch_pairs")
    geometry = sample_patch_pair_geometry(x.shape[0], x.shape[-2], x.shape[-1], patch, gap, jitter,
                                          device=x.device, generator=generator)
    centre, neighbour, label = crop_patch_pairs(x, geometry, patch)
    if drop_channels and x.shape[1] == 3:
        both = drop_colour_channels(torch.cat([centre, neighbour]), generator)
        centre, neighbour = both[:x.shape[0]], both[x.shape[0]:]
    return centre, neighbour, label


def sample_patch_pair_geometry(batch: int, height: int, width: int, patch: int, gap: int, jitter: int, *,
                               device: torch.device | str = "cpu",
                               generator: torch.Generator | None = None) -> GridDraw:
    """Draw the neighbour label and the 3x3 grid of :func:`sample_patch_pairs` for ``batch`` images of
    ``height x width`` pixels, without the images (so a global batch can be drawn and sliced per process).

    Raises:
        UserError: the grid does not fit the images (:func:`patch_grid_fits`).
    """
    _check_grid((height, width), patch, gap, jitter, 3, "sample_patch_pairs")
    device = torch.device(device)
    label = _randint(8, (batch,), device, generator)
    top, left = _grid_corners(batch, height, width, patch, gap, jitter, 3, device, generator)
    return GridDraw(label, top, left)


def crop_patch_pairs(x: torch.Tensor, geometry: GridDraw, patch: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut the (centre, neighbour) pairs that ``geometry`` (:func:`sample_patch_pair_geometry`) places.

    Returns:
        ``(centre [B, C, p, p], neighbour [B, C, p, p], label [B])``.
    """
    _check_images(x, "crop_patch_pairs")
    batch, device = x.shape[0], x.device
    label, top, left = (t.to(device) for t in geometry)
    if label.shape != (batch,):
        raise UserError(f"crop_patch_pairs: geometry holds {label.shape[0]} draws for {batch} images")
    # Cells 0..8 in raster order; the labels skip the centre cell 4.
    neighbour_cell = label + (label >= 4).long()
    rows = torch.arange(batch, device=device)
    images = torch.cat([rows, rows])
    both = _crop(x, images, torch.cat([top[:, 4], top[rows, neighbour_cell]]),
                 torch.cat([left[:, 4], left[rows, neighbour_cell]]), patch)
    return both[:batch], both[batch:], label


# --------------------------------------------------------------------------------------------------- jigsaw


@functools.lru_cache(maxsize=2)
def _all_permutations(n: int) -> np.ndarray:
    """``[n!, n]`` uint8, every permutation of ``range(n)`` in lexicographic order (read-only, cached)."""
    table = np.array(list(itertools.permutations(range(n))), dtype=np.uint8)
    table.flags.writeable = False
    return table


def maximal_hamming_permutations(n_perms: int, n_tiles: int = 9, seed: int = 0,
                                 criterion: Literal["min", "mean"] = "min") -> torch.Tensor:
    """A set of tile permutations far apart in Hamming distance, chosen greedily (Noroozi & Favaro 2016).

    Start from one permutation drawn with ``seed``; then repeatedly add the unchosen permutation that is
    farthest from the chosen set. "Farthest" is, with ``criterion``:

    - ``"min"``: the largest minimum Hamming distance to the chosen permutations (max-min, farthest-point
      selection). This maximises the quantity that makes two puzzles hard to confuse, the distance to the
      nearest other class.
    - ``"mean"``: the largest sum (equivalently mean) of Hamming distances to the chosen set, as printed in
      the paper's Algorithm 1 (``D_bar = 1^T D``; ``j = argmax_k D_bar_k``). It gives a high average distance
      but leaves close pairs in the set.

    Measured for 9 tiles, seed 0 (``permutation_set_stats``): ``"mean"`` gives mean / min distance 8.08 / 2
    for 100 permutations and 8.01 / 2 for 1,000, the paper's table 3 figures for its maximal sets (8.08 / 2
    and 8.00 / 2); ``"min"`` gives 8.03 / 6 for 100 and 7.91 / 5 for 1,000.

    All ``n_tiles!`` candidates are enumerated once; each step updates a per-candidate distance in one
    vectorised pass, so 1,000 permutations of 9 tiles take seconds. Ties go to the lexicographically first
    permutation, so the set depends only on the arguments.

    Returns:
        ``[n_perms, n_tiles]`` int64; row ``k`` is the permutation of class ``k``.

    Raises:
        UserError: ``n_tiles`` outside ``2..10`` or ``n_perms`` outside ``1..n_tiles!``.
    """
    if not 2 <= n_tiles <= _MAX_PERMUTED_TILES:
        raise UserError(f"n_tiles must be in 2..{_MAX_PERMUTED_TILES} (all n_tiles! permutations are enumerated), "
                        f"got {n_tiles}")
    total = math.factorial(n_tiles)
    if not 1 <= n_perms <= total:
        raise UserError(f"n_perms must be in 1..{total} for {n_tiles} tiles, got {n_perms}")
    if criterion not in ("min", "mean"):
        raise UserError(f"criterion must be 'min' or 'mean', got {criterion!r}")
    candidates = _all_permutations(n_tiles)
    columns = np.ascontiguousarray(candidates.T)  # [n, n!]: one fast contiguous pass per tile position
    first = int(np.random.default_rng(seed).integers(total))  # a local, seeded RNG: setup, not a train step
    chosen = [first]
    score = np.zeros(total, dtype=np.int64) if criterion == "mean" else np.full(total, n_tiles + 1, np.int64)
    taken = np.zeros(total, dtype=bool)
    agree = np.empty(total, dtype=np.int64)
    for _ in range(n_perms - 1):
        last = chosen[-1]
        taken[last] = True
        agree.fill(0)
        for position in range(n_tiles):
            agree += columns[position] == candidates[last, position]
        distance = n_tiles - agree
        if criterion == "mean":
            score += distance
        else:
            np.minimum(score, distance, out=score)
        nxt = int(np.argmax(np.where(taken, -1, score)))
        chosen.append(nxt)
    return torch.from_numpy(candidates[chosen].astype(np.int64))


def permutation_set_stats(perms: torch.Tensor) -> dict[str, float]:
    """Minimum and mean pairwise Hamming distance of a permutation set (the paper's table 3 statistics).

    Args:
        perms: ``[P, n]`` permutations, ``P >= 2``.

    Returns:
        ``{"min_hamming": ..., "mean_hamming": ...}`` over all pairs of distinct rows.
    """
    if perms.dim() != 2 or perms.shape[0] < 2:
        raise UserError(f"permutation_set_stats needs a [P, n] set with P >= 2, got shape {tuple(perms.shape)}")
    distance = (perms[:, None, :] != perms[None, :, :]).sum(-1).double()
    off_diagonal = ~torch.eye(perms.shape[0], dtype=torch.bool, device=perms.device)
    pairs = distance[off_diagonal]
    return {"min_hamming": float(pairs.min()), "mean_hamming": float(pairs.mean())}


def jigsaw_batch(x: torch.Tensor, perms: torch.Tensor, grid: int = 3, *, tile: int, gap: int = 0,
                 jitter: int = 0, normalize_tiles: bool = False, generator: torch.Generator | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a ``grid x grid`` puzzle from each image and shuffle its tiles (Noroozi & Favaro 2016).

    The paper cuts 64-pixel tiles from 75-pixel cells (a random offset inside each cell, leaving gaps) so
    that the network cannot match tile borders; ``gap`` and ``jitter`` play that role here (module
    docstring). One permutation index is drawn per image; the network sees the tiles in shuffled order and
    predicts the index.

    Args:
        x: ``[B, C, H, W]`` float images.
        perms: ``[P, grid*grid]`` permutation set (:func:`maximal_hamming_permutations`).
        grid: tiles per side.
        tile: side of a tile in pixels.
        gap, jitter: grid geometry, see the module docstring.
        normalize_tiles: give each tile zero mean and unit standard deviation, as the paper does so that the
            tiles' low-level statistics do not reveal their neighbours.
        generator: optional RNG (else torch's global RNG).

    Returns:
        ``(tiles [B, grid*grid, C, tile, tile], label [B])`` with ``tiles[b, i]`` the tile of grid cell
        ``perms[label[b], i]`` (cells in raster order); so ``cells[b, perms[label[b]]] = tiles[b]``
        reassembles the puzzle.

    Raises:
        UserError: the grid does not fit the images, or ``perms`` does not match ``grid``.
    """
    _check_images(x, "jigsaw_batch")
    _check_perms(perms, grid, "jigsaw_batch")
    draw = sample_jigsaw(x.shape[0], x.shape[-2], x.shape[-1], perms.shape[0], grid, tile, gap, jitter,
                         device=x.device, generator=generator)
    return cut_jigsaw_tiles(x, perms, draw, tile, normalize_tiles=normalize_tiles), draw.label


def _check_perms(perms: torch.Tensor, grid: int, what: str) -> None:
    n_tiles = grid * grid
    if perms.dim() != 2 or perms.shape[1] != n_tiles:
        raise UserError(f"{what}: perms must be [P, {n_tiles}] for a {grid}x{grid} grid, "
                        f"got shape {tuple(perms.shape)}")


def sample_jigsaw(batch: int, height: int, width: int, n_perms: int, grid: int = 3, tile: int = 8, gap: int = 0,
                  jitter: int = 0, *, device: torch.device | str = "cpu",
                  generator: torch.Generator | None = None) -> GridDraw:
    """Draw the permutation index and the grid of :func:`jigsaw_batch` for ``batch`` images of ``height x
    width`` pixels, without the images (so a global batch can be drawn and sliced per process).

    Raises:
        UserError: the grid does not fit the images.
    """
    _check_grid((height, width), tile, gap, jitter, grid, "jigsaw_batch")
    device = torch.device(device)
    label = _randint(n_perms, (batch,), device, generator)
    top, left = _grid_corners(batch, height, width, tile, gap, jitter, grid, device, generator)
    return GridDraw(label, top, left)


def cut_jigsaw_tiles(x: torch.Tensor, perms: torch.Tensor, draw: GridDraw, tile: int, *,
                     normalize_tiles: bool = False) -> torch.Tensor:
    """The shuffled tiles ``[B, g*g, C, tile, tile]`` that ``draw`` (:func:`sample_jigsaw`) describes.

    ``tiles[b, i]`` is the tile of grid cell ``perms[draw.label[b], i]``; see :func:`jigsaw_batch`.
    """
    _check_images(x, "cut_jigsaw_tiles")
    batch, device = x.shape[0], x.device
    label, top, left = (t.to(device) for t in draw)
    n_tiles = top.shape[1]
    _check_perms(perms, math.isqrt(n_tiles), "cut_jigsaw_tiles")
    if label.shape != (batch,):
        raise UserError(f"cut_jigsaw_tiles: the draw holds {label.shape[0]} puzzles for {batch} images")
    order = perms.to(device)[label]  # [B, n]: which cell goes to each input slot
    images = torch.arange(batch, device=device).repeat_interleave(n_tiles)
    tiles = _crop(x, images, top.gather(1, order).reshape(-1), left.gather(1, order).reshape(-1), tile)
    if normalize_tiles:
        flat = tiles.flatten(1)
        tiles = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-5)).view_as(tiles)
    return tiles.view(batch, n_tiles, *tiles.shape[1:])


# ---------------------------------------------------------------------------------------- inpainting masks


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise UserError(f"inpainting_mask: fraction must be in (0, 1), got {fraction}")


def inpainting_mask(shape: Sequence[int], kind: Literal["central", "block", "region"], *,
                    fraction: float = 0.25, block_size: tuple[float, float] = (0.1, 0.3), max_blocks: int = 64,
                    region_cells: int | None = None, device: torch.device | str | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Which pixels a context encoder must fill in (Pathak et al. 2016, "region masks"). True = hidden.

    - ``"central"``: the centred rectangle covering ``fraction`` of the image (each side scaled by
      ``sqrt(fraction)``); the paper's central region is the middle 64x64 of a 128x128 image (1/4).
      The same for every image.
    - ``"block"``: random axis-aligned rectangles, possibly overlapping, added until at least ``fraction``
      of the image is hidden (the paper: several smaller blocks covering up to 1/4). Each side is drawn
      uniformly between ``block_size[0]`` and ``block_size[1]`` of the image side, so the hidden area ends
      between ``fraction`` and ``fraction`` plus one block. Gives up after ``max_blocks`` rectangles.
    - ``"region"``: free-form shapes, the paper's "random region": a coarse uniform noise grid of
      ``region_cells x region_cells`` values (default about one cell per 7 pixels) is upsampled bicubically
      and the lowest ``fraction`` of each image's smooth noise is hidden, which gives blobs of varying shape
      and exactly ``round(fraction * H * W)`` hidden pixels. The paper thresholds a large upsampled noise
      pattern the same way and crops it per image.

    Args:
        shape: ``(B, C, H, W)`` (or ``(B, H, W)``) of the images the mask is for.
        kind: ``"central"``, ``"block"`` or ``"region"``.
        fraction: share of the pixels to hide, in ``(0, 1)``.
        device: where to build the mask (default CPU).
        generator: optional RNG (else torch's global RNG).

    Returns:
        ``[B, 1, H, W]`` bool.
    """
    if len(shape) not in (3, 4):
        raise UserError(f"inpainting_mask: shape must be (B, C, H, W) or (B, H, W), got {tuple(shape)}")
    _check_fraction(fraction)
    batch, height, width = int(shape[0]), int(shape[-2]), int(shape[-1])
    device = torch.device(device) if device is not None else torch.device("cpu")
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    if kind == "central":
        side_h = max(1, round(height * math.sqrt(fraction)))
        side_w = max(1, round(width * math.sqrt(fraction)))
        top, left = (height - side_h) // 2, (width - side_w) // 2
        inside = (rows >= top) & (rows < top + side_h) & (cols >= left) & (cols < left + side_w)
        return inside.expand(batch, 1, height, width).clone()
    if kind == "block":
        low, high = block_size
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"inpainting_mask: block_size must satisfy 0 < low <= high <= 1, got {block_size}")
        mask = torch.zeros(batch, 1, height, width, dtype=torch.bool, device=device)
        target = fraction * height * width
        h_lo, h_hi = max(1, round(low * height)), max(1, round(high * height))
        w_lo, w_hi = max(1, round(low * width)), max(1, round(high * width))
        for _ in range(max_blocks):  # one batched rectangle per image and round
            unfinished = mask.sum((1, 2, 3)) < target
            if not bool(unfinished.any()):
                break
            bh = h_lo + _randint(h_hi - h_lo + 1, (batch,), device, generator)
            bw = w_lo + _randint(w_hi - w_lo + 1, (batch,), device, generator)
            top = _randint(height - bh + 1, (batch,), device, generator)
            left = _randint(width - bw + 1, (batch,), device, generator)
            rect = ((rows >= top[:, None, None]) & (rows < (top + bh)[:, None, None])
                    & (cols >= left[:, None, None]) & (cols < (left + bw)[:, None, None]))
            mask |= (rect & unfinished[:, None, None])[:, None]
        return mask
    if kind == "region":
        cells = region_cells if region_cells is not None else max(2, round(min(height, width) / 7))
        if cells < 2:
            raise UserError(f"inpainting_mask: region_cells must be >= 2, got {cells}")
        coarse = _rand((batch, 1, cells, cells), device, generator)
        smooth = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).flatten(1)
        hidden = max(1, round(fraction * height * width))
        threshold = smooth.kthvalue(hidden, dim=1).values  # the hidden-th smallest value of each image
        return (smooth <= threshold[:, None]).view(batch, 1, height, width)
    raise UserError(f"inpainting_mask: unknown kind {kind!r}; use 'central', 'block' or 'region'")


def masked_l2_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, overlap: int = 0,
                   overlap_weight: float = 10.0, per_image: bool = False) -> torch.Tensor:
    """The context encoder's reconstruction loss: mean squared error over the hidden region.

    Pathak et al. 2016, reconstruction loss: ``|| M * (x - F((1 - M) * x)) ||^2`` with ``M`` the hidden
    region. Their implementation lets the prediction overlap the visible context by a few pixels (4 at
    128x128) and weights the error there 10 times more, which makes the fill-in blend with its border.

    With ``overlap > 0`` the visible pixels within ``overlap`` pixels of the hidden region (a square
    neighbourhood, like their square ring) get weight ``overlap_weight``; hidden pixels get weight 1. The
    sum is divided by the number of weighted elements (hidden plus overlap pixels, times channels), i.e. the
    paper's weighted mean over the predicted region.

    Args:
        pred: ``[B, C, H, W]`` prediction for the whole image (only weighted pixels count).
        target: ``[B, C, H, W]`` original image.
        mask: ``[B, 1, H, W]`` bool, True where hidden (:func:`inpainting_mask`).
        overlap: width in pixels of the border of the context that also counts.
        overlap_weight: weight of the border's squared error.
        per_image: return each image's weighted mean (``[B]``) instead of the mean over the whole batch's
            weighted elements. The mean of the per-image losses does not depend on how a batch is split
            (over processes or micro-batches) even when images hide different numbers of pixels.

    Returns:
        scalar loss, or ``[B]`` with ``per_image``.
    """
    if pred.shape != target.shape or pred.dim() != 4:
        raise UserError(f"masked_l2_loss: pred and target must both be [B, C, H, W], got {tuple(pred.shape)} "
                        f"and {tuple(target.shape)}")
    if mask.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise UserError(f"masked_l2_loss: mask must be [B, 1, H, W] = {(pred.shape[0], 1, *pred.shape[2:])}, "
                        f"got {tuple(mask.shape)}")
    if overlap < 0:
        raise UserError(f"masked_l2_loss: overlap must be >= 0, got {overlap}")
    hidden = mask.to(pred.dtype)
    weight = hidden
    if overlap > 0:
        # Dilating by max-pooling marks every pixel within `overlap` (Chebyshev distance) of a hidden one.
        near = F.max_pool2d(hidden, kernel_size=2 * overlap + 1, stride=1, padding=overlap)
        weight = hidden + overlap_weight * (near - hidden)
        counted = near
    else:
        counted = hidden
    squared = weight * (pred - target).square()
    if per_image:
        elements = counted.sum(dim=(1, 2, 3)) * pred.shape[1]
        return squared.sum(dim=(1, 2, 3)) / elements.clamp(min=1.0)
    elements = counted.sum() * pred.shape[1]
    return squared.sum() / elements.clamp(min=1.0)
