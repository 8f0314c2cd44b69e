"""Self-supervised pretraining of image representations (``recipes/vision.py``): one recipe, ten pretexts.

Images (``data``: Fashion-MNIST, MNIST, digits, an image folder or a hub id) -> a validation set held out of
the training images -> the pretext's objective (``pretext.name``; its hyper-parameters in the section of the
same name) on an encoder (``model``: a transformers ResNet or ViT) or on a generative model -> the exported
representation -> its evaluation (``evaluation``: linear probe and kNN at 1% / 10% / 100% of the labels,
k-means NMI / ARI, figures; :mod:`nlp_ssl.eval.vision`), written to ``final/vision_eval.json``,
``final/eval_results.json``, ``final/plots/`` and the model card.

==========================  ============================  =============================================
pretext                     model                         objective
==========================  ============================  =============================================
rotation                    ``model`` encoder             :mod:`nlp_ssl.objectives.vision_rotation`
patch_position              ``model`` encoder             :mod:`nlp_ssl.objectives.vision_patch_position`
jigsaw                      ``model`` encoder             :mod:`nlp_ssl.objectives.vision_jigsaw`
simclr                      ``model`` encoder             :mod:`nlp_ssl.objectives.vision_simclr`
moco                        ``model`` encoder             :mod:`nlp_ssl.objectives.vision_moco`
inpainting                  context encoder (+ critic)    :mod:`nlp_ssl.objectives.vision_inpainting`
autoencoder                 ``ConvAutoencoder``           :mod:`nlp_ssl.objectives.vision_autoencoder`
denoising_autoencoder       ``ConvAutoencoder``           :mod:`nlp_ssl.objectives.vision_denoising_autoencoder`
vae                         ``ConvVAE`` (beta in section) :mod:`nlp_ssl.objectives.vision_vae`
pixelcnn                    ``PixelCNN``                  :mod:`nlp_ssl.objectives.vision_pixelcnn`
==========================  ============================  =============================================

Every input is read and checked before anything is written: the image set, its channels against the view
pipeline (a colour jitter on grey images), the patch grid against the image size, the model against the
images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from nlp_ssl.config import TrainingConfig, dump_yaml
from nlp_ssl.data.image_views import ViewConfig
from nlp_ssl.data.images import ImageData, ImageDataset, channel_stats, collate_images, hold_out, load_image_set, subset
from nlp_ssl.atomic import atomic_write_text
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome, run
from nlp_ssl.errors import UserError
from nlp_ssl.eval.vision import (VisionEvalConfig, evaluate_vision_model, flat_vision_metrics, format_vision_report,
                                 load_vision_model)
from nlp_ssl.hub.model_card import CardInfo
from nlp_ssl.objectives.base import Objective
from nlp_ssl.registry import register

PRETEXTS = ("rotation", "patch_position", "jigsaw", "inpainting", "autoencoder", "denoising_autoencoder", "vae",
            "pixelcnn", "simclr", "moco")
_ENCODER_PRETEXTS = {"rotation", "patch_position", "jigsaw", "simclr", "moco"}


# ------------------------------------------------------------------------------------------------ config


@dataclass
class VisionDataConfig:
    """The ``data`` section.

    Attributes:
        images: ``fashion_mnist``, ``mnist``, ``digits``, a local image folder or a Hugging Face Hub dataset id.
        image_size: resize every image to this side (required when a folder or hub set mixes sizes).
        hub_config, image_column, label_column: for folders and hub sets (labels are used by the evaluation
            only, never for training).
        validation_size: images held out of the train split: the engine's held-out set (pretext loss) and the
            ``evaluation.split: validation`` probe set for choosing hyper-parameters. 0 holds out nothing.
        max_samples: train on a class-proportional subset of this many of the remaining images (quick runs).
    """

    images: str = "fashion_mnist"
    image_size: int | None = None
    hub_config: str | None = None
    image_column: str = "image"
    label_column: str | None = "label"
    validation_size: int = 5000
    max_samples: int | None = None

    def __post_init__(self) -> None:
        if self.validation_size < 0:
            raise UserError(f"config key 'data.validation_size' must be >= 0, got {self.validation_size}")
        if self.max_samples is not None and self.max_samples < 1:
            raise UserError(f"config key 'data.max_samples' must be >= 1 (or null for all images), got {self.max_samples}")
        if self.image_size is not None and self.image_size < 1:
            raise UserError(f"config key 'data.image_size' must be >= 1 (or null to keep the size), got {self.image_size}")


@dataclass
class VisionModelConfig:
    """The ``model`` section: the encoder of the rotation, patch_position, jigsaw, simclr and moco pretexts.

    The generative pretexts build their own models from their sections (``width``, ``latent_dim``...).

    Attributes:
        arch: ``resnet`` or ``vit`` (:func:`nlp_ssl.models.vision.build_vision_encoder`).
        size: preset (``tiny``, ``small``).
        pooling: ViT feature pooling (``cls`` or ``mean``); ResNet always average-pools.
        overrides: ``ResNetConfig`` / ``ViTConfig`` fields over the preset, e.g. ``{hidden_sizes: [32, 64, 128]}``.
    """

    arch: Literal["resnet", "vit"] = "resnet"
    size: str = "small"
    pooling: Literal["cls", "mean"] = "cls"
    overrides: dict[str, Any] = field(default_factory=dict)


def _positive(section: str, **values: int | float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise UserError(f"config key 'pretext.{section}.{name}' must be > 0, got {value}")


@dataclass
class RotationSection:
    """Gidaris et al. 2018: ``head_hidden`` is the width of the 4-way classifier's hidden layer."""

    head_hidden: int = 256

    def __post_init__(self) -> None:
        _positive("rotation", head_hidden=self.head_hidden)


@dataclass
class PatchPositionSection:
    """Doersch et al. 2015: patch side, gap between grid cells, jitter per patch (pixels), colour dropping;
    ``resize`` enlarges the patches to that side before the encoder (null: as cut)."""

    patch: int = 6
    gap: int = 1
    jitter: int = 1
    drop_channels: bool = True
    head_hidden: int = 256
    resize: int | None = None

    def __post_init__(self) -> None:
        _positive("patch_position", patch=self.patch, head_hidden=self.head_hidden, resize=self.resize or 1)
        if self.gap < 0 or self.jitter < 0:
            raise UserError(f"config keys 'pretext.patch_position.gap' and '.jitter' must be >= 0, got {self.gap} "
                            f"and {self.jitter}")


@dataclass
class JigsawSection:
    """Noroozi & Favaro 2016: a ``grid x grid`` puzzle of ``tile``-pixel tiles, ``n_permutations`` classes;
    ``resize`` enlarges the tiles to that side before the encoder (null: as cut)."""

    grid: int = 3
    tile: int = 7
    gap: int = 1
    jitter: int = 0
    n_permutations: int = 100
    normalize_tiles: bool = True
    head_hidden: int = 512
    resize: int | None = None

    def __post_init__(self) -> None:
        _positive("jigsaw", tile=self.tile, n_permutations=self.n_permutations, head_hidden=self.head_hidden,
                  resize=self.resize or 1)
        if not 2 <= self.grid <= 3:
            raise UserError(f"config key 'pretext.jigsaw.grid' must be 2 or 3 (all grid^2! permutations are "
                            f"enumerated), got {self.grid}")
        if self.gap < 0 or self.jitter < 0:
            raise UserError("config keys 'pretext.jigsaw.gap' and '.jitter' must be >= 0")


@dataclass
class InpaintingSection:
    """Pathak et al. 2016: mask kind and share, the weighted border, the joint loss's weights, the critic."""

    mask: Literal["central", "block", "region"] = "region"
    fraction: float = 0.25
    overlap: int = 1
    overlap_weight: float = 10.0
    lambda_rec: float = 0.999
    lambda_adv: float = 0.001
    width: int = 16
    disc_width: int = 16
    disc_layers: int = 2
    disc_lr: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:
            raise UserError(f"config key 'pretext.inpainting.fraction' must be in (0, 1), got {self.fraction}")
        if self.lambda_rec < 0 or self.lambda_adv < 0 or self.lambda_rec + self.lambda_adv == 0:
            raise UserError("config keys 'pretext.inpainting.lambda_rec' and 'lambda_adv' must be >= 0 and not both 0")
        _positive("inpainting", width=self.width, disc_width=self.disc_width, disc_layers=self.disc_layers)
        if self.overlap < 0:
            raise UserError(f"config key 'pretext.inpainting.overlap' must be >= 0, got {self.overlap}")


@dataclass
class AutoencoderSection:
    """Hinton & Salakhutdinov 2006: the code size and the width of the convolutional trunk."""

    latent_dim: int = 64
    width: int = 16

    def __post_init__(self) -> None:
        _positive("autoencoder", latent_dim=self.latent_dim, width=self.width)


@dataclass
class DenoisingAutoencoderSection:
    """Vincent et al. 2008: as the autoencoder, plus the corruption (``masking`` share or ``gaussian`` std)."""

    latent_dim: int = 64
    width: int = 16
    corruption: Literal["masking", "gaussian"] = "masking"
    level: float = 0.3

    def __post_init__(self) -> None:
        _positive("denoising_autoencoder", latent_dim=self.latent_dim, width=self.width)
        if self.level < 0 or (self.corruption == "masking" and self.level > 1):
            raise UserError("config key 'pretext.denoising_autoencoder.level' must be in [0, 1] for masking "
                            f"(the share of pixels zeroed) and >= 0 for gaussian (the noise std), got {self.level}")


@dataclass
class VAESection:
    """Kingma & Welling 2014; ``beta > 1`` is the beta-VAE of Higgins et al. 2017."""

    latent_dim: int = 16
    width: int = 16
    beta: float = 1.0

    def __post_init__(self) -> None:
        _positive("vae", latent_dim=self.latent_dim, width=self.width, beta=self.beta)


@dataclass
class PixelCNNSection:
    """van den Oord et al. 2016: residual-stream channels (even), residual blocks, width before the logits."""

    hidden: int = 32
    n_residual: int = 4
    output_hidden: int = 64

    def __post_init__(self) -> None:
        _positive("pixelcnn", hidden=self.hidden, n_residual=self.n_residual, output_hidden=self.output_hidden)
        if self.hidden % 2:
            raise UserError(f"config key 'pretext.pixelcnn.hidden' must be even, got {self.hidden}")


@dataclass
class SimCLRSection:
    """Chen et al. 2020: NT-Xent temperature and the projection head ``D -> hidden -> dim`` (dropped at export)."""

    temperature: float = 0.5
    projection_hidden: int = 256
    projection_dim: int = 128

    def __post_init__(self) -> None:
        _positive("simclr", temperature=self.temperature, projection_hidden=self.projection_hidden,
                  projection_dim=self.projection_dim)


@dataclass
class MoCoSection:
    """He et al. 2020 / MoCo v2: temperature, queue size, EMA momentum (start and end of a cosine rise), head,
    and the groups of the key batch's batch normalisation (shuffling BN, see :mod:`nlp_ssl.objectives.vision_moco`)."""

    temperature: float = 0.2
    queue_size: int = 4096
    momentum: float = 0.99
    momentum_final: float = 0.99
    projection_hidden: int = 256
    projection_dim: int = 128
    key_bn_splits: int = 4

    def __post_init__(self) -> None:
        _positive("moco", temperature=self.temperature, queue_size=self.queue_size, key_bn_splits=self.key_bn_splits,
                  projection_hidden=self.projection_hidden, projection_dim=self.projection_dim)
        for name in ("momentum", "momentum_final"):
            if not 0 <= getattr(self, name) <= 1:
                raise UserError(f"config key 'pretext.moco.{name}' must be in [0, 1], got {getattr(self, name)}")


@dataclass
class PretextConfig:
    """The ``pretext`` section: ``name`` picks the pretext; the section of that name holds its settings."""

    name: Literal["rotation", "patch_position", "jigsaw", "inpainting", "autoencoder", "denoising_autoencoder", "vae",
                  "pixelcnn", "simclr", "moco"] = "rotation"
    rotation: RotationSection = field(default_factory=RotationSection)
    patch_position: PatchPositionSection = field(default_factory=PatchPositionSection)
    jigsaw: JigsawSection = field(default_factory=JigsawSection)
    inpainting: InpaintingSection = field(default_factory=InpaintingSection)
    autoencoder: AutoencoderSection = field(default_factory=AutoencoderSection)
    denoising_autoencoder: DenoisingAutoencoderSection = field(default_factory=DenoisingAutoencoderSection)
    vae: VAESection = field(default_factory=VAESection)
    pixelcnn: PixelCNNSection = field(default_factory=PixelCNNSection)
    simclr: SimCLRSection = field(default_factory=SimCLRSection)
    moco: MoCoSection = field(default_factory=MoCoSection)

    @property
    def section(self) -> Any:
        return getattr(self, self.name)


@dataclass
class VisionConfig(TrainingConfig):
    """``recipes/vision.py``: engine keys at the top level, then ``data``, ``model``, ``pretext``, ``views``
    (the augmentations of simclr and moco) and ``evaluation``."""

    output_dir: str = "runs/vision"
    learning_rate: float = 1e-3
    per_device_train_batch_size: int = 128
    per_device_eval_batch_size: int = 256
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    lr_scheduler_type: str = "cosine"
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
    pretext: PretextConfig = field(default_factory=PretextConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    evaluation: VisionEvalConfig = field(default_factory=VisionEvalConfig)


# ------------------------------------------------------------------------------------------------ inputs


@dataclass
class VisionInputs:
    """The images of a run, read and checked before anything is written.

    Attributes:
        train: the images the pretext trains on (the train split minus ``validation``, maybe subsampled).
        validation: the held-out images (the engine's eval set), or None.
        mean, std: per-channel statistics of ``train`` on the [0, 1] scale.
        probe: the evaluation's ``(probe train, scored)`` labelled images (:func:`probe_sets`), or None when
            the evaluation is switched off.
    """

    train: ImageData
    validation: ImageData | None
    mean: list[float]
    std: list[float]
    probe: tuple[ImageData, ImageData] | None = None

    @property
    def channels(self) -> int:
        return self.train.channels

    @property
    def size(self) -> tuple[int, int]:
        return int(self.train.images.shape[-2]), int(self.train.images.shape[-1])


def load_vision_inputs(cfg: VisionConfig) -> VisionInputs:
    """Load the train split, hold out the validation images, subsample, compute the statistics; check the rest."""
    d = cfg.data
    full = load_image_set(d.images, "train", image_size=d.image_size, hub_config=d.hub_config,
                          image_column=d.image_column, label_column=d.label_column)
    if d.validation_size >= len(full):
        raise UserError(f"config key 'data.validation_size' ({d.validation_size}) must be smaller than the "
                        f"{len(full):,} training images of {d.images}")
    train, validation = hold_out(full, d.validation_size) if d.validation_size else (full, None)
    train = subset(train, d.max_samples)
    mean, std = channel_stats(train.images)
    inputs = VisionInputs(train, validation, mean.tolist(), std.tolist())
    check_pretext_fits(cfg, inputs)
    if cfg.evaluation.enabled:
        inputs.probe = probe_sets(cfg, full)
    return inputs


def check_pretext_fits(cfg: VisionConfig, inputs: VisionInputs) -> None:
    """One-line errors for settings the images cannot take (grid too large, colour jitter on grey images...)."""
    from nlp_ssl.data.pretext import sample_jigsaw, sample_patch_pair_geometry

    name, section = cfg.pretext.name, cfg.pretext.section
    height, width = inputs.size
    if name in ("simclr", "moco"):
        try:
            cfg.views.validate_for(inputs.channels)
        except UserError as err:
            raise UserError(f"views: {err}") from None
    if name == "rotation" and height != width:
        raise UserError(f"the rotation pretext needs square images, these are {height}x{width}; set data.image_size")
    if name == "patch_position":
        try:
            sample_patch_pair_geometry(1, height, width, section.patch, section.gap, section.jitter)
        except UserError as err:
            raise UserError(f"pretext.patch_position: {str(err).split(': ', 1)[1]}") from None
    if name == "jigsaw":
        try:
            sample_jigsaw(1, height, width, 1, section.grid, section.tile, section.gap, section.jitter)
        except UserError as err:
            raise UserError(f"pretext.jigsaw: {str(err).split(': ', 1)[1]} (tile, gap, jitter)") from None
    if name == "pixelcnn" and inputs.channels != 1:
        raise UserError(f"the pixelcnn pretext models grey images only and {cfg.data.images} has {inputs.channels} "
                        "channels; pick another pretext or a grey image set")
    if name in ("inpainting", "autoencoder", "denoising_autoencoder", "vae") and height != width:
        raise UserError(f"the {name} models need square images, these are {height}x{width}; set data.image_size")
    with torch.random.fork_rng():  # building a throwaway model checks the sizes; the run's seed is set later
        build_model(cfg, inputs)


# -------------------------------------------------------------------------------------------- the models


def build_model(cfg: VisionConfig, inputs: VisionInputs) -> torch.nn.Module:
    """The network the pretext trains: the ``model`` encoder, or the pretext's generative model."""
    from nlp_ssl.models import generative
    from nlp_ssl.models.vision import build_vision_encoder

    name, section = cfg.pretext.name, cfg.pretext.section
    channels, (size, _) = inputs.channels, inputs.size
    if name in _ENCODER_PRETEXTS:
        m = cfg.model
        return build_vision_encoder(m.arch, image_size=size, num_channels=channels, size=m.size, **m.overrides)
    if name == "inpainting":
        return generative.ContextEncoderGenerator(channels, size, section.width)
    if name in ("autoencoder", "denoising_autoencoder"):
        return generative.ConvAutoencoder(channels, size, section.latent_dim, section.width)
    if name == "vae":
        return generative.ConvVAE(channels, size, section.latent_dim, section.width)
    return generative.PixelCNN(channels, section.hidden, section.n_residual, section.output_hidden)


def build_vision_objective(cfg: VisionConfig, inputs: VisionInputs) -> Objective:
    """The objective of ``cfg.pretext.name`` on a freshly initialised model (seed the global RNG first)."""
    from nlp_ssl.models.generative import PatchDiscriminator
    from nlp_ssl.objectives.vision_autoencoder import AutoencoderObjective
    from nlp_ssl.objectives.vision_denoising_autoencoder import DenoisingAutoencoderObjective
    from nlp_ssl.objectives.vision_inpainting import InpaintingObjective
    from nlp_ssl.objectives.vision_jigsaw import JigsawObjective
    from nlp_ssl.objectives.vision_moco import MoCoObjective
    from nlp_ssl.objectives.vision_patch_position import PatchPositionObjective
    from nlp_ssl.objectives.vision_pixelcnn import PixelCNNObjective
    from nlp_ssl.objectives.vision_rotation import RotationObjective
    from nlp_ssl.objectives.vision_simclr import SimCLRObjective
    from nlp_ssl.objectives.vision_vae import VAEObjective

    name, s = cfg.pretext.name, cfg.pretext.section
    model = build_model(cfg, inputs)
    common = dict(mean=inputs.mean, std=inputs.std, data_info=_data_info(cfg, inputs))
    pooling = cfg.model.pooling
    if name == "rotation":
        return RotationObjective(model, head_hidden=s.head_hidden, pooling=pooling, **common)
    if name == "patch_position":
        return PatchPositionObjective(model, patch=s.patch, gap=s.gap, jitter=s.jitter, drop_channels=s.drop_channels,
                                      head_hidden=s.head_hidden, resize=s.resize, pooling=pooling, **common)
    if name == "jigsaw":
        return JigsawObjective(model, grid=s.grid, tile=s.tile, gap=s.gap, jitter=s.jitter,
                               n_permutations=s.n_permutations, normalize_tiles=s.normalize_tiles,
                               head_hidden=s.head_hidden, resize=s.resize, pooling=pooling, **common)
    if name == "simclr":
        return SimCLRObjective(model, views=cfg.views, temperature=s.temperature,
                               projection_hidden=s.projection_hidden, projection_dim=s.projection_dim, pooling=pooling,
                               **common)
    if name == "moco":
        return MoCoObjective(model, views=cfg.views, temperature=s.temperature, queue_size=s.queue_size,
                             momentum=s.momentum, momentum_final=s.momentum_final,
                             projection_hidden=s.projection_hidden, projection_dim=s.projection_dim,
                             key_bn_splits=s.key_bn_splits, pooling=pooling, **common)
    if name == "inpainting":
        critic = (PatchDiscriminator(inputs.channels, s.disc_width, s.disc_layers) if s.lambda_adv > 0 else None)
        return InpaintingObjective(model, critic, mask=s.mask, fraction=s.fraction, overlap=s.overlap,
                                   overlap_weight=s.overlap_weight, lambda_rec=s.lambda_rec, lambda_adv=s.lambda_adv,
                                   disc_lr=s.disc_lr, **common)
    if name == "autoencoder":
        return AutoencoderObjective(model, **common)
    if name == "denoising_autoencoder":
        return DenoisingAutoencoderObjective(model, corruption=s.corruption, level=s.level, **common)
    if name == "vae":
        return VAEObjective(model, beta=s.beta, **common)
    return PixelCNNObjective(model, **common)


def _data_info(cfg: VisionConfig, inputs: VisionInputs) -> dict[str, Any]:
    """What ``vision.json`` records, so that ``nlp-ssl eval vision`` finds the same images and held-out set."""
    d = cfg.data
    return {"image_size": inputs.size[0], "channels": inputs.channels, "pooling": cfg.model.pooling,
            "data": {"images": d.images, "image_size": d.image_size, "validation_size": d.validation_size or None,
                     "hub_config": d.hub_config, "image_column": d.image_column, "label_column": d.label_column}}


_DESCRIPTIONS = {
    "rotation": "rotation prediction over 0/90/180/270 degrees (Gidaris et al. 2018)",
    "patch_position": "relative position of a neighbouring patch, 8 classes (Doersch et al. 2015)",
    "jigsaw": "jigsaw puzzles over a maximal-Hamming permutation set (Noroozi & Favaro 2016)",
    "inpainting": "context-encoder inpainting (Pathak et al. 2016)",
    "autoencoder": "undercomplete autoencoder (Hinton & Salakhutdinov 2006)",
    "denoising_autoencoder": "denoising autoencoder (Vincent et al. 2008)",
    "vae": "variational autoencoder (Kingma & Welling 2014)",
    "pixelcnn": "autoregressive PixelCNN (van den Oord et al. 2016)",
    "simclr": "SimCLR, NT-Xent between two augmented views (Chen et al. 2020)",
    "moco": "MoCo v2, momentum encoder and a queue of keys (He et al. 2020; Chen et al. 2020)",
}


def describe_pretext(cfg: VisionConfig) -> str:
    """One line: the pretext, its paper and its main settings."""
    name, s = cfg.pretext.name, cfg.pretext.section
    text = _DESCRIPTIONS[name]
    if name == "vae" and s.beta != 1:
        text = f"beta-VAE with beta = {s.beta:g} (Higgins et al. 2017)"
    settings = ", ".join(f"{k} {v}" for k, v in asdict(s).items())
    return f"{text}; {settings}"


# ------------------------------------------------------------------------------------------------ pipeline


class VisionPipeline(Pipeline[VisionConfig]):
    """Images -> held-out split -> pretext objective -> exported representation -> its evaluation."""

    def prepare_inputs(self, cfg: VisionConfig) -> VisionInputs:
        return load_vision_inputs(cfg)

    def build_data(self, ctx: RunContext[VisionConfig]) -> RunData:
        inputs: VisionInputs = ctx.inputs
        cfg = ctx.config
        held = f", {len(inputs.validation):,} held out" if inputs.validation is not None else ""
        size = "x".join(map(str, inputs.size))
        return RunData(ImageDataset(inputs.train), ImageDataset(inputs.validation) if inputs.validation else None,
                       collate_images,
                       description=f"data: {cfg.data.images}: {len(inputs.train):,} training images{held} "
                                   f"({inputs.channels} x {size}); pretext {cfg.pretext.name}")

    def build_objective(self, ctx: RunContext[VisionConfig], data: RunData) -> Objective:
        return build_vision_objective(ctx.config, ctx.inputs)

    def describe_objective(self, objective: Objective) -> str:
        model = objective.model  # type: ignore[attr-defined]
        trained = sum(p.numel() for p in objective.parameters() if p.requires_grad)
        exported = sum(p.numel() for p in model.parameters())
        return (f"model: {type(model).__name__} ({exported / 1e6:.2f}M parameters exported; "
                f"{trained / 1e6:.2f}M trained with heads)")

    def on_export(self, ctx: RunContext[VisionConfig], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        """Evaluate the exported representation (``vision_eval.json``, ``plots/``); its headline numbers join
        the run's evaluation results."""
        settings = ctx.config.evaluation
        if not settings.enabled:
            return metrics
        train, evaluation = ctx.inputs.probe
        model = load_vision_model(folder)
        result = evaluate_vision_model(model, train, evaluation, settings, plots_dir=folder / "plots")
        result["source"] = "final"
        result["plots"] = [Path(p).relative_to(folder).as_posix() for p in result["plots"]]
        atomic_write_text(folder / "vision_eval.json", json.dumps(result, indent=2) + "\n")
        return {**metrics, **flat_vision_metrics(result)}

    def card(self, ctx: RunContext[VisionConfig], folder: Path, metrics: dict[str, float]) -> CardInfo:
        cfg = ctx.config
        encoder = cfg.pretext.name in _ENCODER_PRETEXTS
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        if encoder:
            usage = ("from transformers import AutoModel\n\n"
                     f"encoder = AutoModel.from_pretrained('{Path(cfg.output_dir).name}/final')\n"
                     "# pixel_values: [B, C, H, W], normalised as in preprocessor_config.json\n"
                     "features = encoder(pixel_values=pixel_values).pooler_output.flatten(1)")
        else:
            usage = ("from nlp_ssl.models.generative import load_generative\n\n"
                     f"model = load_generative('{Path(cfg.output_dir).name}/final')\n"
                     "features = model.features(x)  # x: [B, C, H, W] as vision.json's pixel_format says")
        what = (f"a {cfg.model.arch} image encoder" if encoder else "a generative image model")
        return CardInfo(
            model_name=Path(cfg.output_dir).name, objective=describe_pretext(cfg), task_type="image-feature-extraction",
            dataset_name=cfg.data.images, dataset_type=cfg.data.images, steps=state["step"], command=ctx.command,
            config_yaml=dump_yaml(cfg), usage=usage, metrics=metrics, tags=["vision", "self-supervised", cfg.pretext.name],
            dataset_split=cfg.evaluation.split, items_name="images",
            library_name="transformers" if encoder else "pytorch",
            description=(f"{what[0].upper()}{what[1:]} pretrained from scratch on {cfg.data.images} with "
                         f"{_DESCRIPTIONS[cfg.pretext.name]}. Scores: frozen features, linear probe and kNN at "
                         f"{', '.join(f'{f:.0%}' for f in cfg.evaluation.label_fractions)} of the labels, "
                         "k-means NMI / ARI (see vision_eval.json and plots/)."))

    def outcome_extra(self, ctx: RunContext[VisionConfig], final_dir: Path) -> dict[str, Any]:
        path = final_dir / "vision_eval.json"
        return {"vision_eval": json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None}

    def summary(self, ctx: RunContext[VisionConfig], outcome: RunOutcome) -> str:
        metrics = outcome.eval_metrics
        lines = [f"Pretext {ctx.config.pretext.name} after {outcome.step} steps (held-out images):"]
        lines += [f"  {k}: {v:.4f}" for k, v in sorted(metrics.items())
                  if k.startswith("eval/") and k != "eval/items"]
        report = outcome.extra.get("vision_eval")
        if report:
            report = {**report, "source": str(outcome.final_dir)}
            lines.append(format_vision_report(report))
        state = " (stopped by max_time_minutes; rerun to continue)" if outcome.stopped_by_time else ""
        lines.append(f"Exported: {outcome.final_dir.resolve()}{state}")
        return "\n".join(lines)


def probe_sets(cfg: VisionConfig, full_train: ImageData) -> tuple[ImageData, ImageData]:
    """The evaluation's ``(probe train, scored)`` images: the train split / the test split, or (``evaluation.split:
    validation``) the train split minus the held-out images / those images.

    Raises:
        UserError: the images have no labels, or no validation images are held out.
    """
    settings, d = cfg.evaluation, cfg.data
    if full_train.labels is None:
        raise UserError(f"{d.images} has no labels, so the representation cannot be evaluated; set "
                        "evaluation.enabled=false or data.label_column")
    if settings.split == "validation":
        if not d.validation_size:
            raise UserError("evaluation.split is 'validation' but data.validation_size is 0; hold out some images")
        train, scored = hold_out(full_train, d.validation_size)
    else:
        train = full_train
        scored = load_image_set(d.images, "test", image_size=d.image_size, hub_config=d.hub_config,
                                image_column=d.image_column, label_column=d.label_column)
        if scored.labels is None:
            raise UserError(f"the test split of {d.images} has no labels; set evaluation.split=validation")
    return subset(train, settings.max_train_samples), subset(scored, settings.max_eval_samples)


register("vision", "self-supervised image representations: rotation, patch position, jigsaw, inpainting, "
         "autoencoders, VAE, PixelCNN, SimCLR, MoCo", VisionConfig, lambda cfg: run(VisionPipeline(), cfg))
