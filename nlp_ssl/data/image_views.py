"""Batched image augmentations on the device, for two-view (contrastive) pretraining.

The pipeline is SimCLR's (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive
Learning of Visual Representations", appendix A): a random resized crop with a random horizontal flip,
colour distortion (colour jitter with probability 0.8, then grey-scale with probability 0.2) and Gaussian
blur (probability 0.5, sigma in [0.1, 2.0], a kernel 10% of the image side). :func:`make_view` applies it
in that order under a :class:`ViewConfig`.

Every function takes float ``[B, C, H, W]`` images in [0, 1] on any device and returns the same shape
(``random_resized_crop`` changes ``H, W``). Each draws all its random numbers at once from the torch
global RNG, or from ``generator`` (which must live on the images' device), and transforms the whole batch
with tensor ops: there is no Python loop over images, and the same seed gives the same views. The number
of draws does not depend on the images' values, so a re-seeded step reproduces its views exactly.

The per-image parameters are those of torchvision's transforms (``RandomResizedCrop``, ``ColorJitter``
with a random order of its four operations, ``RandomGrayscale``, ``GaussianBlur``), which SimCLR's
reference pipeline uses; torchvision applies them to one image at a time on the CPU, and does not import
beside every torch build, hence these batched versions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError

__all__ = [
    "BRIGHTNESS",
    "CONTRAST",
    "HUE",
    "JitterParams",
    "SATURATION",
    "ViewConfig",
    "ViewParams",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "apply_jitter",
    "apply_view",
    "blur_with_sigma",
    "color_jitter",
    "default_blur_kernel_size",
    "gaussian_blur",
    "make_view",
    "random_grayscale",
    "random_horizontal_flip",
    "random_resized_crop",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "sample_jitter_params",
    "sample_view_params",
]

# ITU-R BT.601 luma weights, as PIL's convert("L") and torchvision's rgb_to_grayscale use.
_LUMA = (0.299, 0.587, 0.114)
# Order of the colour-jitter operations in JitterParams.order.
BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)


def _uniform(low: float, high: float, shape: tuple[int, ...], like: torch.Tensor,
             generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)


def _per_image(mask: torch.Tensor) -> torch.Tensor:
    """``[B]`` -> ``[B, 1, 1, 1]``, to broadcast a per-image value over an image batch."""
    return mask.reshape(-1, 1, 1, 1)


def _check_images(x: torch.Tensor, what: str) -> None:
    if x.dim() != 4 or not x.is_floating_point():
        raise UserError(f"{what} needs float images [B, C, H, W], got {x.dtype} {tuple(x.shape)}; "
                        "convert uint8 batches with nlp_ssl.data.images.to_float")


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise UserError(f"{name} is a probability and must be in [0, 1], got {p}")


def _check_range(values: Any, name: str, low: float, high: float, low_open: bool = False) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a pair [min, max], got {values!r}") from None
    if not (a > low if low_open else a >= low) or not a <= b <= high:
        bound = "(" if low_open else "["
        raise UserError(f"{name} must satisfy {low} {'<' if low_open else '<='} min <= max <= {high} "
                        f"(a range in {bound}{low}, {high}]), got {values!r}")
    return a, b


# ----------------------------------------------------------------------------------------- crop and flip


def sample_crop_boxes(batch: int, height: int, width: int, scale: tuple[float, float] = (0.08, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3), *, device: torch.device | str = "cpu",
                      generator: torch.Generator | None = None, attempts: int = 10) -> torch.Tensor:
    """Draw one Inception-style crop box per image (Szegedy et al. 2015, "Going Deeper with Convolutions").

    A box covers a fraction ``s ~ U(scale)`` of the image area with aspect ratio (width / height)
    ``r = exp(U(log ratio))``. As in torchvision's ``RandomResizedCrop``, ``attempts`` candidates are drawn
    per image and the first that fits inside the image is kept; an image with none gets the largest
    centred box whose ratio is inside ``ratio``. Boxes are continuous (sub-pixel); the position is
    uniform over the places where the box fits.

    Returns:
        float32 ``[B, 4]``: ``(top, left, box_height, box_width)`` in pixels, edges of the pixel grid at
        integers (the whole image is ``(0, 0, H, W)``).
    """
    scale = _check_range(scale, "crop scale", 0.0, 1.0, low_open=True)
    ratio = _check_range(ratio, "crop ratio", 0.0, math.inf, low_open=True)
    like = torch.empty(0, device=device)
    area = height * width
    s = _uniform(scale[0], scale[1], (batch, attempts), like, generator)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), (batch, attempts), like, generator)
    position = torch.rand((batch, 2), device=like.device, generator=generator)
    r = log_r.exp()
    w = (area * s * r).sqrt()
    h = (area * s / r).sqrt()
    fits = (w <= width) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # index of the first fitting attempt
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    # torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fb_w, fb_h = float(width), width / ratio[0]
    elif in_ratio > ratio[1]:
        fb_w, fb_h = height * ratio[1], float(height)
    else:
        fb_w, fb_h = float(width), float(height)
    any_fit = fits.any(dim=1)
    w = torch.where(any_fit, w, torch.full_like(w, fb_w))
    h = torch.where(any_fit, h, torch.full_like(h, fb_h))
    shift = torch.where(any_fit[:, None], position, torch.full_like(position, 0.5))
    top = shift[:, 0] * (height - h)
    left = shift[:, 1] * (width - w)
    return torch.stack([top, left, h, w], dim=1)


def _size_pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair):
        raise UserError(f"view size must be a positive integer or a pair (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def resized_crop(x: torch.Tensor, boxes: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Cut ``boxes`` ``[B, 4]`` (as from :func:`sample_crop_boxes`) out of ``x`` ``[B, C, H, W]``, resized to ``size``.

    One ``affine_grid`` + ``grid_sample`` (bilinear, border padding) for the whole batch. Shrinking with
    plain bilinear sampling aliases, so when an input side is larger than the output side the grid is
    supersampled ``k`` times along that axis (``k = ceil(input side / output side)``, fixed by the shapes,
    so no value is read back from the device) and averaged over blocks of ``k`` samples: an area filter, like the
    antialiased resize of torchvision's ``RandomResizedCrop``. A box of the whole image at the image's own
    size returns the input (up to float rounding).

    Returns:
        ``[B, C, size_h, size_w]``, the dtype of ``x``.
    """
    _check_images(x, "resized_crop")
    out_h, out_w = _size_pair(size)
    batch, channels, height, width = x.shape
    top, left, box_h, box_w = boxes.to(x.dtype).unbind(dim=1)
    # With align_corners=False, normalised -1 and 1 are the outer edges of the pixel grid, so box edges map
    # linearly: the output's [-1, 1] spans [left, left + box_w] of the input's [0, W].
    theta = torch.zeros(batch, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = box_w / width
    theta[:, 0, 2] = (2 * left + box_w) / width - 1
    theta[:, 1, 1] = box_h / height
    theta[:, 1, 2] = (2 * top + box_h) / height - 1
    k_h, k_w = max(1, math.ceil(height / out_h)), max(1, math.ceil(width / out_w))
    grid = F.affine_grid(theta, [batch, channels, out_h * k_h, out_w * k_w], align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, (k_h, k_w)) if k_h * k_w > 1 else out


def random_resized_crop(x: torch.Tensor, size: int | tuple[int, int], scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), *,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """A random crop of each image, resized to ``size``: ``[B, C, H, W]`` -> ``[B, C, size, size]``.

    Crop area fraction in ``scale``, aspect ratio in ``ratio`` (see :func:`sample_crop_boxes`); SimCLR uses
    the defaults (0.08-1 of the area, 3/4-4/3), Chen et al. 2020, appendix A.
    """
    _check_images(x, "random_resized_crop")
    boxes = sample_crop_boxes(x.shape[0], x.shape[2], x.shape[3], scale, ratio, device=x.device, generator=generator)
    return resized_crop(x, boxes, size)


def random_horizontal_flip(x: torch.Tensor, p: float = 0.5, *,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``: ``[B, C, H, W]`` -> ``[B, C, H, W]``."""
    _check_images(x, "random_horizontal_flip")
    _check_probability(p, "flip probability")
    flip = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(_per_image(flip), x.flip(-1), x)


# -------------------------------------------------------------------------------------------- colour


def rgb_to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of RGB images: ``[B, 3, H, W]`` -> ``[B, 1, H, W]`` (a grey image is returned as is)."""
    if x.shape[-3] == 1:
        return x
    r, g, b = x.unbind(dim=-3)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(-3)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * a + (1 - factor) * b``, clamped to [0, 1]; ``factor`` is ``[B]``."""
    f = _per_image(factor)
    return (f * a + (1 - f) * b).clamp(0.0, 1.0)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale the pixels of image ``i`` by ``factor[i]`` (``[B]``; 1 leaves it), clamped to [0, 1]."""
    return (x * _per_image(factor)).clamp(0.0, 1.0)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend each image with its mean grey level by ``factor`` ``[B]`` (0 gives a flat grey image, 1 the image)."""
    mean = rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend RGB images ``[B, 3, H, W]`` with their grey-scale version by ``factor`` ``[B]`` (0 gives grey)."""
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images ``[B, 3, H, W]`` by ``shift`` ``[B]`` turns (in [-0.5, 0.5]).

    Goes through HSV (A. R. Smith 1978, "Color Gamut Transform Pairs"); the way back uses the branch-free
    form ``c_n = v - v s max(0, min(k_n, 4 - k_n, 1))`` with ``k_n = (n + 6 h) mod 6`` and ``n = 5, 3, 1``
    for red, green and blue.
    """
    r, g, b = x.unbind(dim=-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    grey = delta == 0
    safe_delta = torch.where(grey, torch.ones_like(delta), delta)
    # Hue in sixths of a turn, on the sector of the largest component.
    h = torch.where(maxc == r, (g - b) / safe_delta,
                    torch.where(maxc == g, 2.0 + (b - r) / safe_delta, 4.0 + (r - g) / safe_delta))
    h = torch.where(grey, torch.zeros_like(h), h)
    s = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    h6 = torch.remainder(h + 6.0 * shift.reshape(-1, 1, 1), 6.0)
    channels = []
    for n in (5.0, 3.0, 1.0):
        k = torch.remainder(n + h6, 6.0)
        channels.append(maxc - maxc * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=-3)


class JitterParams(NamedTuple):
    """Per-image colour-jitter parameters, as drawn by :func:`sample_jitter_params` (all ``[B]`` except ``order``).

    Attributes:
        apply: bool, whether the image is jittered at all (probability ``p``).
        brightness, contrast, saturation: multiplicative factors (1 = unchanged).
        hue: hue shift in turns (0 = unchanged).
        order: int64 ``[B, 4]``, a permutation of (BRIGHTNESS, CONTRAST, SATURATION, HUE) per image.
    """

    apply: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    order: torch.Tensor


def _check_jitter(channels: int, brightness: float, contrast: float, saturation: float, hue: float, p: float) -> None:
    for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if value < 0:
            raise UserError(f"colour jitter {name} must be >= 0 (0 turns it off), got {value}")
    if not 0 <= hue <= 0.5:
        raise UserError(f"colour jitter hue must be in [0, 0.5] (a fraction of a turn; 0 turns it off), got {hue}")
    _check_probability(p, "colour jitter probability")
    if channels != 3 and (saturation > 0 or hue > 0):
        raise UserError(f"colour jitter saturation and hue need RGB images, these have {channels} channel(s); "
                        "set saturation and hue to 0")


def sample_jitter_params(batch: int, brightness: float, contrast: float, saturation: float, hue: float,
                         p: float = 0.8, *, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> JitterParams:
    """Draw torchvision ``ColorJitter``'s parameters for ``batch`` images.

    Factors are uniform in ``[max(0, 1 - strength), 1 + strength]``, the hue shift in ``[-hue, hue]``, the
    order of the four operations a uniform permutation per image; each image is jittered with probability
    ``p``. SimCLR uses strengths (0.8, 0.8, 0.8, 0.2) and ``p = 0.8`` (Chen et al. 2020, appendix A).
    """
    like = torch.empty(0, device=device)
    draws = torch.rand((batch, 9), device=like.device, generator=generator)

    def factor(strength: float, u: torch.Tensor) -> torch.Tensor:
        low = max(0.0, 1.0 - strength)
        return low + (1.0 + strength - low) * u

    return JitterParams(
        apply=draws[:, 0] < p,
        brightness=factor(brightness, draws[:, 1]),
        contrast=factor(contrast, draws[:, 2]),
        saturation=factor(saturation, draws[:, 3]),
        hue=hue * (2.0 * draws[:, 4] - 1.0),
        order=draws[:, 5:9].argsort(dim=1),
    )


def apply_jitter(x: torch.Tensor, params: JitterParams,
                 enabled: tuple[bool, bool, bool, bool] = (True, True, True, True)) -> torch.Tensor:
    """Apply drawn jitter ``params`` to ``x`` ``[B, C, H, W]``, each image with its own operation order.

    Step ``t`` applies to every image the operation ``params.order[:, t]`` names: each enabled operation is
    computed for the batch and kept where it is the image's ``t``-th (a ``where`` per operation rather than
    a gather of sub-batches, so nothing is read back from the device). ``enabled`` skips operations whose
    strength is 0. Images with ``apply`` False come back unchanged.
    """
    ops = (
        (BRIGHTNESS, adjust_brightness, params.brightness),
        (CONTRAST, adjust_contrast, params.contrast),
        (SATURATION, adjust_saturation, params.saturation),
        (HUE, adjust_hue, params.hue),
    )
    out = x
    for step in range(4):
        for op_id, op, value in ops:
            if not enabled[op_id]:
                continue
            active = params.apply & (params.order[:, step] == op_id)
            out = torch.where(_per_image(active), op(out, value), out)
    return out


def color_jitter(x: torch.Tensor, brightness: float = 0.8, contrast: float = 0.8, saturation: float = 0.8,
                 hue: float = 0.2, p: float = 0.8, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue changes in a random order, per image with probability ``p``.

    ``[B, C, H, W]`` -> ``[B, C, H, W]``. Brightness and contrast work on any number of channels;
    saturation and hue need ``C == 3``. See :func:`sample_jitter_params` for the distributions.
    """
    _check_images(x, "color_jitter")
    _check_jitter(x.shape[1], brightness, contrast, saturation, hue, p)
    params = sample_jitter_params(x.shape[0], brightness, contrast, saturation, hue, p, device=x.device,
                                  generator=generator)
    enabled = (brightness > 0, contrast > 0, saturation > 0, hue > 0)
    return apply_jitter(x, params._replace(
        brightness=params.brightness.to(x.dtype), contrast=params.contrast.to(x.dtype),
        saturation=params.saturation.to(x.dtype), hue=params.hue.to(x.dtype)), enabled)


def random_grayscale(x: torch.Tensor, p: float = 0.2, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each RGB image by its luma on all three channels with probability ``p``: ``[B, 3, H, W]``."""
    _check_images(x, "random_grayscale")
    _check_probability(p, "grey-scale probability")
    if x.shape[1] != 3:
        raise UserError(f"random grey-scale needs RGB images, these have {x.shape[1]} channel(s); set grayscale_p to 0")
    grey = torch.rand(x.shape[0], device=x.device, generator=generator) < p
    return torch.where(_per_image(grey), rgb_to_grayscale(x).expand_as(x), x)


# ---------------------------------------------------------------------------------------------- blur


def default_blur_kernel_size(image_size: int) -> int:
    """SimCLR's blur kernel: 10% of the image side, made odd, at least 3 (so a 28-pixel image gets 3)."""
    k = max(3, int(0.1 * image_size))
    return k if k % 2 == 1 else k + 1


def _blur_kernel_size(kernel_size: int | None, height: int, width: int) -> int:
    k = default_blur_kernel_size(height) if kernel_size is None else kernel_size
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
        raise UserError(f"blur kernel_size must be a positive odd integer, got {kernel_size!r}")
    if k // 2 >= min(height, width):  # reflect padding needs a border thinner than the image
        raise UserError(f"blur kernel_size {k} is too large for {height}x{width} images; "
                        f"use at most {2 * min(height, width) - 1}")
    return k


def blur_with_sigma(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int | None = None) -> torch.Tensor:
    """Gaussian blur of image ``i`` with standard deviation ``sigma[i]`` pixels: ``[B, C, H, W]``, ``sigma`` ``[B]``.

    The 2-D Gaussian is separable, so this is two grouped 1-D convolutions (one normalised kernel of
    ``kernel_size`` taps per image and channel) over reflected borders, as torchvision's ``GaussianBlur``.
    ``kernel_size`` (odd) defaults to :func:`default_blur_kernel_size` of the image height.
    """
    _check_images(x, "gaussian blur")
    batch, channels, height, width = x.shape
    radius = _blur_kernel_size(kernel_size, height, width) // 2
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None, :] / sigma.to(x.dtype)[:, None]).square())
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, k]
    weight = kernel.repeat_interleave(channels, dim=0)  # [B * C, k]: image b's kernel for each of its channels
    flat = x.reshape(1, batch * channels, height, width)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, weight[:, None, None, :], groups=batch * channels)  # along the width
    flat = F.conv2d(flat, weight[:, None, :, None], groups=batch * channels)  # along the height
    return flat.reshape_as(x)


def gaussian_blur(x: torch.Tensor, p: float = 0.5, sigma: tuple[float, float] = (0.1, 2.0),
                  kernel_size: int | None = None, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur with a per-image ``sigma ~ U(sigma)``, applied to each image with probability ``p``.

    ``[B, C, H, W]`` -> ``[B, C, H, W]``; see :func:`blur_with_sigma`. SimCLR blurs ImageNet views with
    ``p = 0.5``, ``sigma`` in [0.1, 2.0] and a kernel 10% of the image side (Chen et al. 2020, appendix A).
    """
    _check_images(x, "gaussian_blur")
    _check_probability(p, "blur probability")
    low, high = _check_range(sigma, "blur sigma", 0.0, math.inf, low_open=True)
    _blur_kernel_size(kernel_size, x.shape[2], x.shape[3])
    draws = torch.rand((x.shape[0], 2), device=x.device, generator=generator)
    if p == 0:
        return x
    sigmas = low + (high - low) * draws[:, 1]
    return torch.where(_per_image(draws[:, 0] < p), blur_with_sigma(x, sigmas, kernel_size), x)


# ----------------------------------------------------------------------------------------- the pipeline


@dataclass
class ViewConfig:
    """Augmentations of one view, SimCLR's ImageNet settings by default (Chen et al. 2020, appendix A).

    For grey-scale (1-channel) sets set ``saturation``, ``hue`` and ``grayscale_p`` to 0; for small
    images SimCLR's CIFAR-10 runs also drop the blur (``blur_p: 0``).

    Attributes:
        crop_scale: range of the crop's share of the image area.
        crop_ratio: range of the crop's aspect ratio (width / height).
        flip: probability of a horizontal flip.
        brightness, contrast, saturation: jitter strengths (factor in ``[1 - s, 1 + s]``; 0 = off).
        hue: hue jitter strength in turns, in [0, 0.5] (0 = off).
        jitter_p: probability of the colour jitter.
        grayscale_p: probability of turning an RGB view grey.
        blur_p: probability of the Gaussian blur.
        blur_sigma: range of the blur's standard deviation in pixels.
        blur_kernel_size: odd kernel size; None for 10% of the view's side.
    """

    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.8
    contrast: float = 0.8
    saturation: float = 0.8
    hue: float = 0.2
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel_size: int | None = None

    def __post_init__(self) -> None:
        self.crop_scale = _check_range(self.crop_scale, "config key 'crop_scale'", 0.0, 1.0, low_open=True)
        self.crop_ratio = _check_range(self.crop_ratio, "config key 'crop_ratio'", 0.0, math.inf, low_open=True)
        self.blur_sigma = _check_range(self.blur_sigma, "config key 'blur_sigma'", 0.0, math.inf, low_open=True)
        for name in ("flip", "jitter_p", "grayscale_p", "blur_p"):
            _check_probability(getattr(self, name), f"config key '{name}'")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise UserError(f"config key '{name}' must be >= 0 (0 turns it off), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise UserError(f"config key 'hue' must be in [0, 0.5] (0 turns it off), got {self.hue}")
        k = self.blur_kernel_size
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0):
            raise UserError(f"config key 'blur_kernel_size' must be a positive odd integer or null, got {k!r}")

    def validate_for(self, channels: int) -> None:
        """Raise a :class:`UserError` if a colour-only augmentation is asked of images with ``channels != 3``."""
        if channels == 3:
            return
        wrong = [name for name in ("saturation", "hue", "grayscale_p") if getattr(self, name) > 0]
        if wrong:
            keys = ", ".join(f"{name}: 0" for name in wrong)
            raise UserError(f"{', '.join(wrong)} need RGB images but this image set has {channels} channel(s); "
                            f"set {keys}")


class ViewParams(NamedTuple):
    """Every random choice behind one view of each image, as drawn by :func:`sample_view_params`.

    Row ``i`` of each field belongs to image ``i``, so the parameters of a global batch can be drawn once
    and sliced per process (``Objective.per_example``) before :func:`apply_view` uses them.

    Attributes:
        boxes: float32 ``[B, 4]`` crop boxes (:func:`sample_crop_boxes`).
        flip: bool ``[B]``, mirror left-right.
        jitter: the colour-jitter parameters (:class:`JitterParams`).
        grey: bool ``[B]``, turn the (RGB) view grey; all False for other channel counts.
        blur: bool ``[B]``, blur the view.
        sigma: float32 ``[B]``, the blur's standard deviation in pixels.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: JitterParams
    grey: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor


def sample_view_params(batch: int, height: int, width: int, channels: int, cfg: ViewConfig, *,
                       device: torch.device | str = "cpu", generator: torch.Generator | None = None) -> ViewParams:
    """Draw the parameters of one view of ``batch`` images of ``channels x height x width`` pixels.

    The draws come in :func:`make_view`'s order (crop, flip, jitter, grey-scale for RGB only, blur) and
    their number depends on the shapes alone, so ``apply_view(x, sample_view_params(..., generator=g))``
    gives exactly ``make_view(x, cfg, size, generator=g)``.
    """
    cfg.validate_for(channels)
    boxes = sample_crop_boxes(batch, height, width, cfg.crop_scale, cfg.crop_ratio, device=device, generator=generator)
    flip = torch.rand(batch, device=device, generator=generator) < cfg.flip
    jitter = sample_jitter_params(batch, cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, cfg.jitter_p,
                                  device=device, generator=generator)
    if channels == 3:
        grey = torch.rand(batch, device=device, generator=generator) < cfg.grayscale_p
    else:
        grey = torch.zeros(batch, dtype=torch.bool, device=device)
    draws = torch.rand((batch, 2), device=device, generator=generator)
    low, high = cfg.blur_sigma
    return ViewParams(boxes, flip, jitter, grey, draws[:, 0] < cfg.blur_p, low + (high - low) * draws[:, 1])


def apply_view(x: torch.Tensor, params: ViewParams, cfg: ViewConfig, size: int | tuple[int, int]) -> torch.Tensor:
    """The views of ``x`` ``[B, C, H, W]`` (float in [0, 1]) under drawn ``params``: ``[B, C, size, size]``.

    SimCLR's order: crop and resize, flip, colour jitter, grey-scale (RGB only), blur. ``params`` must hold
    ``B`` rows (see :func:`sample_view_params`); ``cfg`` gives which operations are switched on.
    """
    _check_images(x, "apply_view")
    cfg.validate_for(x.shape[1])
    if params.boxes.shape[0] != x.shape[0]:
        raise UserError(f"apply_view: {params.boxes.shape[0]} drawn views for a batch of {x.shape[0]} images")
    device = x.device
    x = resized_crop(x, params.boxes.to(device), size)
    x = torch.where(_per_image(params.flip.to(device)), x.flip(-1), x)
    jitter = JitterParams(*(t.to(device=device, dtype=x.dtype if t.is_floating_point() else t.dtype)
                            for t in params.jitter))
    x = apply_jitter(x, jitter, (cfg.brightness > 0, cfg.contrast > 0, cfg.saturation > 0, cfg.hue > 0))
    if x.shape[1] == 3:
        x = torch.where(_per_image(params.grey.to(device)), rgb_to_grayscale(x).expand_as(x), x)
    _blur_kernel_size(cfg.blur_kernel_size, x.shape[2], x.shape[3])
    if cfg.blur_p == 0:
        return x
    blurred = blur_with_sigma(x, params.sigma.to(device=device, dtype=x.dtype), cfg.blur_kernel_size)
    return torch.where(_per_image(params.blur.to(device)), blurred, x)


def make_view(x: torch.Tensor, cfg: ViewConfig, size: int | tuple[int, int], *,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of each image, SimCLR's order: crop, flip, colour jitter, grey-scale, blur.

    Args:
        x: ``[B, C, H, W]`` float in [0, 1] (uint8 is converted by dividing by 255).
        cfg: the augmentations; checked against ``C`` with :meth:`ViewConfig.validate_for`.
        size: the view's side (or ``(height, width)``).
        generator: optional, on ``x``'s device; otherwise torch's global RNG.

    Returns:
        float ``[B, C, size, size]`` in [0, 1]; normalise afterwards (``nlp_ssl.data.images.normalize``).
    """
    if x.dtype == torch.uint8:
        x = x.to(torch.float32) / 255.0
    _check_images(x, "make_view")
    params = sample_view_params(x.shape[0], x.shape[2], x.shape[3], x.shape[1], cfg, device=x.device,
                                generator=generator)
    return apply_view(x, params, cfg, size)
