"""Image encoders built from transformers configs (ResNet, ViT), so the pretrained artifact is a plain
``save_pretrained`` folder that ``transformers.AutoModel.from_pretrained`` loads without this package.

Presets are sized for 28x28 .. 64x64 images on a small CPU:

- ResNet (He et al. 2016, "Deep Residual Learning for Image Recognition"), ``ResNetModel``. Its stem is
  fixed in transformers: a 7x7 stride-2 convolution and a 3x3 stride-2 max-pool (4x down-sampling) that
  ``ResNetConfig`` cannot switch off; ``embedding_size`` sets only the stem's width and
  ``downsample_in_first_stage`` only the first stage's stride. Replacing the stem modules after
  construction would make a checkpoint that ``AutoModel`` rebuilds with the standard stem (wrong shapes),
  so the presets keep the stem and compensate with few stages: the first stage keeps the stem's resolution
  (``downsample_in_first_stage=False``) and each later stage halves it, so a 28x28 image runs at 7x7, 7x7,
  4x4, 2x2 in the "small" preset and a 64x64 image at 16, 16, 8, 4. Basic (two 3x3 convolutions) blocks,
  not bottlenecks, because the widths are small. Users who want more resolution upsample the input.
- ViT (Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"), ``ViTModel`` without its pooler
  (a dense+tanh layer on the CLS token that no pretext uses: left in, it would hold parameters without
  gradients, which distributed data parallel rejects). Patch size 4 up to 32-pixel images (7x7 = 49
  tokens at 28x28) and 8 above (8x8 tokens at 64x64). ``AutoModel.from_pretrained(path,
  add_pooling_layer=False)`` loads such a folder as saved; without that argument transformers adds a
  freshly initialised pooler (and reports it missing) that :func:`encoder_features` does not use.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, ResNetConfig, ResNetModel, ViTConfig, ViTModel

from nlp_ssl.errors import UserError

__all__ = ["VISION_PRESETS", "build_vision_encoder", "encoder_features", "feature_dim"]

# "tiny" is for tests and smoke runs; "small" for real runs on 28..64-pixel images on a CPU.
VISION_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "resnet": {
        "tiny": dict(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic"),
        "small": dict(embedding_size=32, hidden_sizes=[64, 128, 256], depths=[2, 2, 2], layer_type="basic"),
    },
    "vit": {
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
        "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=3, intermediate_size=768),
    },
}

_CONFIG_CLASSES = {"resnet": ResNetConfig, "vit": ViTConfig}
# Keys that describe the data, set from the arguments, not overridable.
_FIXED_KEYS = {"num_channels", "image_size"}


def _config_keys(config_class: type) -> set[str]:
    params = inspect.signature(config_class.__init__).parameters
    return {name for name, p in params.items() if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD}


def _default_patch_size(image_size: int) -> int:
    return 4 if image_size <= 32 else 8


def build_vision_encoder(arch: Literal["resnet", "vit"], *, image_size: int, num_channels: int,
                         size: str = "small", **overrides: Any) -> PreTrainedModel:
    """A freshly initialised ``ResNetModel`` or ``ViTModel`` for ``[B, num_channels, image_size, image_size]``.

    Args:
        arch: ``"resnet"`` or ``"vit"``.
        image_size: side of the (square) training images in pixels.
        num_channels: 1 for grey, 3 for colour.
        size: preset name in :data:`VISION_PRESETS` (``"tiny"``, ``"small"``).
        **overrides: any field of ``ResNetConfig`` / ``ViTConfig`` (e.g. ``hidden_sizes=[32, 64]``,
            ``patch_size=7``), applied over the preset.

    Raises:
        UserError: unknown arch, preset or config key; sizes that do not fit together.
    """
    if arch not in VISION_PRESETS:
        raise UserError(f"unknown vision encoder {arch!r}; use one of {sorted(VISION_PRESETS)}")
    presets = VISION_PRESETS[arch]
    if size not in presets:
        raise UserError(f"unknown {arch} size {size!r}; use one of {sorted(presets)}")
    if image_size < 1 or num_channels < 1:
        raise UserError(f"image_size and num_channels must be >= 1, got {image_size} and {num_channels}")
    config_class = _CONFIG_CLASSES[arch]
    allowed = _config_keys(config_class) - _FIXED_KEYS
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise UserError(f"unknown {config_class.__name__} key(s) {unknown}; valid keys: {sorted(allowed)}")
    fields = {**presets[size], **overrides}
    if arch == "resnet":
        hidden, depths = list(fields["hidden_sizes"]), list(fields["depths"])
        if len(hidden) != len(depths) or not hidden or min(hidden + depths) < 1:
            raise UserError(f"resnet hidden_sizes {hidden} and depths {depths} must be non-empty, positive and "
                            "of equal length")
        return ResNetModel(ResNetConfig(num_channels=num_channels, **fields))
    fields.setdefault("patch_size", _default_patch_size(image_size))
    patch = fields["patch_size"]
    if image_size % patch:
        raise UserError(f"vit patch_size {patch} does not divide image_size {image_size}; pick a divisor "
                        f"(e.g. patch_size=4 or 7 for 28x28 images)")
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise UserError(f"vit hidden_size {fields['hidden_size']} must be divisible by num_attention_heads "
                        f"{fields['num_attention_heads']}")
    config = ViTConfig(image_size=image_size, num_channels=num_channels, **fields)
    return ViTModel(config, add_pooling_layer=False)


def _model_type(model: PreTrainedModel) -> str:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ("resnet", "vit"):
        raise UserError(f"expected a ResNetModel or ViTModel encoder, got {type(model).__name__} "
                        f"(model_type {model_type!r})")
    return model_type


def encoder_features(model: PreTrainedModel, pixel_values: torch.Tensor,
                     pooling: Literal["cls", "mean"] = "cls") -> torch.Tensor:
    """Pooled image features ``[B, D]`` from an encoder of :func:`build_vision_encoder` (or any loaded one).

    ResNet: the global average pool of the last stage (``pooler_output``, flattened); ``pooling`` does not
    apply. ViT: the final-layer-normed CLS token (``"cls"``, as the ViT paper's classifier reads it) or the
    mean of the patch tokens (``"mean"``). Images of another size than the ViT was built for (crops,
    tiles) go through with interpolated position embeddings.

    Args:
        model: a ``ResNetModel`` or ``ViTModel``.
        pixel_values: ``[B, C, H, W]`` float images.
        pooling: ``"cls"`` or ``"mean"`` (ViT only).

    Returns:
        ``[B, feature_dim(model)]``.
    """
    if pooling not in ("cls", "mean"):
        raise UserError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
    if pixel_values.dim() != 4:
        raise UserError(f"encoder_features expects images shaped [B, C, H, W], got {tuple(pixel_values.shape)}")
    if _model_type(model) == "resnet":
        return model(pixel_values=pixel_values).pooler_output.flatten(1)
    configured = model.config.image_size
    configured = tuple(configured) if isinstance(configured, (list, tuple)) else (configured, configured)
    resize = tuple(pixel_values.shape[-2:]) != configured
    hidden = model(pixel_values=pixel_values, interpolate_pos_encoding=resize).last_hidden_state
    # contiguous: the CLS slice is a strided view, and callers reshape features (e.g. tiles -> per image)
    return hidden[:, 0].contiguous() if pooling == "cls" else hidden[:, 1:].mean(dim=1)


def feature_dim(model: PreTrainedModel) -> int:
    """``D`` of :func:`encoder_features`: the last ResNet stage's width or the ViT hidden size."""
    if _model_type(model) == "resnet":
        return int(model.config.hidden_sizes[-1])
    return int(model.config.hidden_size)
