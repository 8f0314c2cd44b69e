"""What every vision objective shares: pixel preparation, per-example draws of structured parameters, the
encoder-with-head pattern and the export of the artifact.

Batches are ``{"pixel_values": uint8 [B, C, H, W], "labels": int64 [B]}`` (:func:`nlp_ssl.data.images.collate_images`);
labels are never used for training. Pixels stay uint8 up to the objective, which converts them on the device
(:meth:`VisionObjective.pixels`), so the data loader neither copies floats nor draws random numbers.

Two kinds of artifact (the pretrained representation; heads and projectors are dropped):

- an image encoder from transformers (``ResNetModel`` / ``ViTModel``, :mod:`nlp_ssl.models.vision`), saved
  with ``save_pretrained`` (``transformers.AutoModel`` loads it) plus a ``preprocessor_config.json`` holding
  the normalisation, so ``pipeline("image-feature-extraction", model=folder)`` works too;
- a generative model of :mod:`nlp_ssl.models.generative` (autoencoders, VAE, context encoder, PixelCNN),
  saved with its own ``save()`` (safetensors + json).

Both get ``vision.json`` (:data:`VISION_META`): the pretext, the kind, the pixel format the model expects and
the data it was trained on; :mod:`nlp_ssl.eval.vision` reads it to extract features the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from nlp_ssl.data.images import to_float
from nlp_ssl.models.vision import encoder_features
from nlp_ssl.objectives.base import Objective

__all__ = ["EncoderWithHead", "VISION_META", "VisionObjective", "enlarge", "mlp", "slice_rows", "write_vision_meta"]

#: The metadata file of every vision export.
VISION_META = "vision.json"

#: How a model reads pixels: ``normalized`` = (x / 255 - mean) / std, ``unit`` = x / 255, ``uint8`` = raw levels.
PixelFormat = Literal["normalized", "unit", "uint8"]


def slice_rows(tree: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of every tensor in ``tree`` (a tensor, or tuples / NamedTuples / dicts of them)."""
    if isinstance(tree, torch.Tensor):
        return tree[start:stop]
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a NamedTuple keeps its type
        return type(tree)(*(slice_rows(t, start, stop) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(slice_rows(t, start, stop) for t in tree)
    if isinstance(tree, dict):
        return {k: slice_rows(v, start, stop) for k, v in tree.items()}
    raise TypeError(f"slice_rows: cannot slice {type(tree).__name__}")


def enlarge(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Patches ``[N, C, p, p]`` resized (bilinear) to ``[N, C, size, size]``; unchanged when ``size`` is None."""
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear``: the small heads and projectors of the pretexts (``[N, in]`` -> ``[N, out]``)."""
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class EncoderWithHead(nn.Module):
    """An image encoder followed by a head: ``[B, C, H, W]`` -> pooled features ``[B, D]`` -> head ``[B, K]``.

    One module, so that a momentum copy (MoCo) copies encoder and projector together.
    """

    def __init__(self, encoder: PreTrainedModel, head: nn.Module, pooling: Literal["cls", "mean"] = "cls") -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.pooling = pooling

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, D]`` (:func:`nlp_ssl.models.vision.encoder_features`)."""
        return encoder_features(self.encoder, x, self.pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def write_vision_meta(folder: Path, meta: dict[str, Any]) -> None:
    (Path(folder) / VISION_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


class VisionObjective(Objective):
    """Base of the vision pretexts: pixel conversion, per-example draws of structured parameters, export.

    Args:
        pretext: the pretext's name (``rotation``, ``simclr``...), recorded in ``vision.json``.
        mean, std: per-channel statistics of the training images on the [0, 1] scale (``[C]`` each).
        pixel_format: what the model reads (see :data:`PixelFormat`).
        data_info: what ``vision.json`` records about the training data (image set, size, splits).
    """

    throughput_unit = "images"
    #: ``encoder`` (a transformers model in ``self.model``) or ``generative`` (a ``SavableModule``).
    kind: str = "encoder"

    def __init__(self, pretext: str, mean: Sequence[float], std: Sequence[float], pixel_format: PixelFormat,
                 data_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.pretext = pretext
        self.pixel_format = pixel_format
        self.data_info = dict(data_info or {})
        # Constants of the data, rebuilt from it on every start: not part of the checkpoint.
        self.register_buffer("mean", torch.as_tensor(list(mean), dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(list(std), dtype=torch.float32), persistent=False)

    # ----------------------------------------------------------------------------------------------- pixels
    def unit(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` -> float32 in [0, 1] on the objective's device."""
        return to_float(pixel_values.to(self.mean.device))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """float ``[B, C, H, W]`` in [0, 1] -> ``(x - mean) / std`` per channel."""
        return (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)

    def pixels(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The batch as the model reads it (:attr:`pixel_format`)."""
        if self.pixel_format == "uint8":
            return pixel_values.to(self.mean.device)
        x = self.unit(pixel_values)
        return self.normalize(x) if self.pixel_format == "normalized" else x

    # -------------------------------------------------------------------------------------------- randomness
    def draw_for_batch(self, draw: Callable[[int], Any], rows: int) -> Any:
        """:meth:`Objective.per_example` for draws that return several tensors (NamedTuples of ``[n, ...]``).

        ``draw(n)`` draws the parameters of ``n`` examples from :attr:`rng`; it is called for the global batch
        and this process's rows are returned, so one process with batch ``2B`` and two with ``B`` see the
        same numbers for the same example.
        """
        start = self.dist.offset(rows)
        return slice_rows(draw(rows * self.dist.world_size), start, start + rows)

    # ------------------------------------------------------------------------------------------------ export
    def vision_meta(self) -> dict[str, Any]:
        """What ``vision.json`` says about this artifact."""
        return {"pretext": self.pretext, "kind": self.kind, "pixel_format": self.pixel_format,
                "mean": [float(v) for v in self.mean.tolist()], "std": [float(v) for v in self.std.tolist()],
                **self.data_info}

    def export(self, output_dir: Path) -> None:
        """The pretrained representation only (heads, projectors, discriminators and momentum copies are dropped)."""
        output_dir = Path(output_dir)
        model = self.model  # type: ignore[attr-defined]
        if self.kind == "encoder":
            model.save_pretrained(output_dir)
            _save_image_processor(output_dir, self.data_info.get("image_size"), self.mean.tolist(), self.std.tolist())
        else:
            model.save(output_dir)
        write_vision_meta(output_dir, self.vision_meta())


def _save_image_processor(folder: Path, size: int | None, mean: list[float], std: list[float]) -> None:
    """``preprocessor_config.json``: resize to the training size, rescale to [0, 1], normalise with the
    training set's statistics, so transformers' image pipelines prepare images as training did."""
    # The PIL backend: the default one needs torchvision, which this toolkit does not depend on.
    from transformers import ViTImageProcessorPil

    processor = ViTImageProcessorPil(do_resize=size is not None, size={"height": size, "width": size} if size else None,
                                  image_mean=mean, image_std=std)
    processor.save_pretrained(folder)
