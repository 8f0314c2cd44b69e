"""Evaluate a pretrained image representation along the desiderata of a good representation.

For a vision export (a transformers ``ResNetModel`` / ``ViTModel`` folder or a generative model of
:mod:`nlp_ssl.models.generative`, each with its ``vision.json``; plain transformers image encoders work too)
the frozen features of a labelled image set are scored for:

- **downstream usability with few labels**: a linear probe (standardised features, scikit-learn's
  ``LogisticRegression``, as :mod:`nlp_ssl.eval.probes` fits them) and a k-nearest-neighbour classifier
  (cosine similarity, votes weighted by ``exp(s / t)``: Wu, Xiong, Yu & Lin 2018, "Unsupervised Feature
  Learning via Non-Parametric Instance Discrimination"), each with 1%, 10% and 100% of the training labels,
  as in the semi-supervised table of SimCLR (Chen et al. 2020). Budgets below 100% are drawn per class and
  repeated (mean and standard deviation reported);
- **semantic clusterability**: k-means with one cluster per class on the L2-normalised features, scored by
  normalised mutual information and the adjusted Rand index against the labels;
- **figures** (PNG under ``plots/``): t-SNE of the features coloured by class; for the autoencoders and the
  VAE reconstructions and decoded linear interpolations between two images (smoothness of the code); for the
  VAE latent traversals (one latent unit varied at a time: disentanglement); for the context encoder its
  fill-ins of hidden regions; for PixelCNN samples, and its negative log-likelihood in bits per dimension.

The same architecture untrained (``init="random"``) is the baseline a pretext must beat; it is evaluated
identically. Command line (``nlp-ssl eval vision``)::

    nlp-ssl eval vision runs/vision-rotation/final --images fashion_mnist --json rotation.json
    nlp-ssl eval vision runs/vision-rotation/final --init random --plots /tmp/random_plots
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from nlp_ssl.data.images import ImageData, hold_out, load_image_set, resize_images, subset
from nlp_ssl.errors import UserError, exit_on_user_error
from nlp_ssl.eval.plots import pyplot

__all__ = ["VisionEvalConfig", "VisionModel", "add_vision_parser", "budget_rows", "cmd_vision", "evaluate_features",
           "evaluate_vision_model", "extract_features", "flat_vision_metrics", "format_vision_report",
           "knn_predict", "load_eval_images", "load_vision_model", "main"]

VISION_META = "vision.json"
DPI = 120


# ------------------------------------------------------------------------------------------------- settings


@dataclass
class VisionEvalConfig:
    """What is measured on a representation (the ``evaluation`` section of the vision recipe).

    Attributes:
        enabled: evaluate at the end of a run.
        split: ``test`` (the probe trains on the train split, scores on the test split) or ``validation``
            (trains on the train split minus the held-out validation images, scores on those: for choosing
            hyper-parameters without looking at the test set).
        label_fractions: label budgets, shares of the probe's training labels in (0, 1].
        repeats: draws per budget below 100%.
        probe_c: inverse L2 strength of the logistic regression.
        probe_max_iter: iterations of its solver.
        knn_k, knn_temperature: neighbours and vote temperature of the kNN classifier.
        kmeans_n_init: k-means restarts (the best inertia is kept).
        max_train_samples, max_eval_samples: class-proportional subsets for quick runs (None: all).
        tsne_points: points in the t-SNE figure (0: no t-SNE).
        plots: write the figures.
        samples: PixelCNN samples drawn for the figure (0: none; sampling takes one network pass per pixel).
        batch_size: images per forward pass when extracting features.
        seed: seed of the budget draws, k-means, t-SNE and the figures' random choices.
    """

    enabled: bool = True
    split: Literal["test", "validation"] = "test"
    label_fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    repeats: int = 3
    probe_c: float = 1.0
    probe_max_iter: int = 1000
    knn_k: int = 20
    knn_temperature: float = 0.07
    kmeans_n_init: int = 3
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    tsne_points: int = 2000
    plots: bool = True
    samples: int = 16
    batch_size: int = 512
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.label_fractions or any(not 0 < f <= 1 for f in self.label_fractions):
            raise UserError(f"config key 'evaluation.label_fractions' must be shares in (0, 1], e.g. [0.01, 0.1, 1.0], "
                            f"got {self.label_fractions}")
        for name in ("repeats", "probe_max_iter", "knn_k", "kmeans_n_init", "batch_size"):
            if getattr(self, name) < 1:
                raise UserError(f"config key 'evaluation.{name}' must be >= 1, got {getattr(self, name)}")
        for name in ("tsne_points", "samples"):
            if getattr(self, name) < 0:
                raise UserError(f"config key 'evaluation.{name}' must be >= 0, got {getattr(self, name)}")
        for name in ("probe_c", "knn_temperature"):
            if not getattr(self, name) > 0:
                raise UserError(f"config key 'evaluation.{name}' must be > 0, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserError(f"config key 'evaluation.{name}' must be >= 1 (or null for all images), got {value}")


# --------------------------------------------------------------------------------------------------- models


@dataclass
class VisionModel:
    """A loaded representation: the module, how it reads pixels, and its ``vision.json`` metadata.

    Attributes:
        kind: ``encoder`` (transformers ResNet / ViT) or ``generative`` (a module of
            :mod:`nlp_ssl.models.generative`).
        module: the model, frozen, in eval mode.
        meta: ``vision.json`` (pretext, pixel format, statistics, training data), or what could be inferred.
        source: where it was loaded from.
        init: ``pretrained`` or ``random`` (the untrained baseline of the same architecture).
    """

    kind: str
    module: nn.Module
    meta: dict[str, Any]
    source: str
    init: str = "pretrained"

    @property
    def channels(self) -> int:
        if self.kind == "encoder":
            return int(self.module.config.num_channels)
        config = self.module.config  # type: ignore[attr-defined]
        return int(config.get("in_channels", 1))

    @property
    def image_size(self) -> int | None:
        if self.kind == "encoder":
            size = getattr(self.module.config, "image_size", None) if self.module.config.model_type == "vit" else None
            return int(size) if size else self.meta.get("image_size")
        return self.module.config.get("image_size", self.meta.get("image_size"))  # type: ignore[attr-defined]

    def adapt(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[N, C, H, W]`` with this model's channel count and (if it fixes one) size."""
        channels = self.channels
        if images.shape[1] != channels:
            if channels == 3 and images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            elif channels == 1 and images.shape[1] == 3:
                weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
                images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            else:
                raise UserError(f"{self.source} reads {channels}-channel images, the image set has {images.shape[1]}")
        size = self.image_size
        if size and tuple(images.shape[-2:]) != (size, size):
            images = resize_images(images.contiguous(), int(size))
        return images

    def model_input(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """An adapted uint8 batch as the model reads it (``vision.json``'s ``pixel_format``)."""
        fmt = self.meta.get("pixel_format", "normalized")
        if fmt == "uint8":
            return pixel_values
        x = pixel_values.float() / 255.0
        if fmt == "unit":
            return x
        mean = torch.tensor(self.meta["mean"], dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.meta["std"], dtype=torch.float32).view(1, -1, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled features ``[B, D]`` of an adapted uint8 batch."""
        x = self.model_input(pixel_values)
        if self.kind == "encoder":
            from nlp_ssl.models.vision import encoder_features

            return encoder_features(self.module, x, self.meta.get("pooling", "cls"))  # type: ignore[arg-type]
        return self.module.features(x)  # type: ignore[operator]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"cannot read {path} ({err}); re-export the model") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a JSON object; re-export the model")
    return loaded


def load_vision_model(source: str | Path, init: Literal["pretrained", "random"] = "pretrained",
                      seed: int = 0) -> VisionModel:
    """Load a vision export (or any transformers ResNet / ViT folder or hub id), frozen and in eval mode.

    ``init="random"`` builds the same architecture with fresh weights (seeded with ``seed``): the baseline.

    Raises:
        UserError: the folder holds neither a transformers image encoder nor a generative module.
    """
    if init not in ("pretrained", "random"):
        raise UserError(f"init must be 'pretrained' or 'random', got {init!r}")
    path = Path(source).expanduser()
    text = str(source)
    if not path.exists() and (path.is_absolute() or text.startswith((".", "~")) or text.count("/") > 1):
        # A hub id is 'name' or 'owner/name': anything else is a local path that is simply missing.
        raise UserError(f"model folder {text} does not exist; check the path (or give a hub id owner/name)")
    meta = _read_json(path / VISION_META) if (path / VISION_META).is_file() else {}
    if path.is_dir() and (path / "module.json").is_file():
        from nlp_ssl.models.generative import load_generative

        torch.manual_seed(seed)  # the random baseline's weights
        module: nn.Module = load_generative(path, weights=init == "pretrained")
        kind = "generative"
    else:
        module = _load_transformers_encoder(str(source), path, init, seed)
        kind = "encoder"
        if not meta and (path / "preprocessor_config.json").is_file():
            processor = _read_json(path / "preprocessor_config.json")
            if processor.get("image_mean") and processor.get("image_std"):
                meta = {"pixel_format": "normalized", "mean": processor["image_mean"], "std": processor["image_std"]}
    module.eval()
    module.requires_grad_(False)
    return VisionModel(kind, module, meta, str(source), init)


def _load_transformers_encoder(source: str, path: Path, init: str, seed: int) -> nn.Module:
    from transformers import AutoConfig, AutoModel, ResNetModel, ViTModel

    from nlp_ssl.models.checkpoint import quiet_transformers

    try:
        with quiet_transformers():
            config = AutoConfig.from_pretrained(source)
    except Exception as err:  # noqa: BLE001 - any load failure is one actionable line
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load {source!r}: it is neither a vision export of nlp_ssl (vision.json + "
                        f"module.json or config.json) nor a transformers model ({first})") from None
    if config.model_type not in ("resnet", "vit"):
        raise UserError(f"{source} is a {config.model_type!r} model; the vision evaluation reads ResNet and ViT image "
                        "encoders (or nlp_ssl's generative vision models)")
    if init == "random":
        torch.manual_seed(seed)
        return ResNetModel(config) if config.model_type == "resnet" else ViTModel(config, add_pooling_layer=False)
    kwargs = {"add_pooling_layer": False} if config.model_type == "vit" else {}
    try:
        with quiet_transformers():
            return AutoModel.from_pretrained(source, **kwargs)
    except Exception as err:  # noqa: BLE001
        first = " ".join(str(err).split())[:200] or type(err).__name__
        raise UserError(f"could not load the weights of {source!r} ({first})") from None


@torch.no_grad()
def extract_features(model: VisionModel, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
    """Features ``[N, D]`` (float32 numpy) of uint8 images ``[N, C, H, W]``, in batches."""
    adapted = model.adapt(images)
    out = [model.features(adapted[i:i + batch_size]).float().cpu() for i in range(0, len(adapted), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------------------------- data


def load_eval_images(spec: str, split: Literal["test", "validation"], *, validation_size: int | None = None,
                     image_size: int | None = None, hub_config: str | None = None, image_column: str = "image",
                     label_column: str | None = "label", max_train_samples: int | None = None,
                     max_eval_samples: int | None = None) -> tuple[ImageData, ImageData]:
    """``(probe train, probe eval)`` images: train / test, or train minus a held-out validation set / that set.

    The validation set is the one the vision recipe holds out of training (:func:`nlp_ssl.data.images.hold_out`
    with the same size), so choosing hyper-parameters on it never looks at the test split.

    Raises:
        UserError: unlabelled images, or any loading error.
    """
    kwargs = dict(image_size=image_size, hub_config=hub_config, image_column=image_column, label_column=label_column)
    train = load_image_set(spec, "train", **kwargs)
    if split == "validation":
        size = validation_size or max(1, len(train) // 10)
        train, evaluation = hold_out(train, size)
    else:
        evaluation = load_image_set(spec, "test", **kwargs)
    if train.labels is None or evaluation.labels is None:
        raise UserError(f"image set {spec} has no labels; the vision evaluation needs a labelled set "
                        "(set label_column)")
    return subset(train, max_train_samples), subset(evaluation, max_eval_samples)


def budget_rows(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted rows of a per-class label budget: ``max(1, round(fraction * n_c))`` examples of each class ``c``."""
    if fraction >= 1.0:
        return np.arange(len(labels))
    chosen = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        take = min(members.size, max(1, round(fraction * members.size)))
        chosen.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(chosen))


# --------------------------------------------------------------------------------------------- classifiers


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _linear_probe(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, c: float, max_iter: int,
                  seed: int) -> np.ndarray:
    """Predictions of a logistic regression on standardised features (as :mod:`nlp_ssl.eval.probes` fits)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if np.unique(y_train).size < 2:
        return np.full(len(x_eval), y_train[0])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=max_iter, random_state=seed))
    with warnings.catch_warnings():
        # A probe that stops at max_iter is still a probe; the setting is in the config.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x_train, y_train)
    return model.predict(x_eval)


def knn_predict(train: np.ndarray, train_labels: np.ndarray, queries: np.ndarray, k: int = 20,
                temperature: float = 0.07, num_classes: int | None = None, chunk: int = 1024) -> np.ndarray:
    """Weighted k-nearest-neighbour labels (Wu et al. 2018): cosine similarity, votes ``exp(s / t)``.

    Args:
        train: ``[N, D]`` features of the labelled examples.
        train_labels: ``[N]`` int labels.
        queries: ``[M, D]`` features to classify.
        k: neighbours (``min(k, N)`` are used).
        temperature: ``t`` of the vote weights.

    Returns:
        ``[M]`` predicted labels.
    """
    bank = torch.from_numpy(_l2_normalize(train).astype(np.float32))
    labels = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    classes = int(num_classes or (labels.max().item() + 1))
    k = min(k, len(bank))
    out = []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(_l2_normalize(queries[start:start + chunk]).astype(np.float32))
        sim, idx = (q @ bank.T).topk(k, dim=1)  # [m, k]
        votes = torch.zeros(len(q), classes).scatter_add_(1, labels[idx], (sim / temperature).exp())
        out.append(votes.argmax(dim=1))
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def _clusters(features: np.ndarray, labels: np.ndarray, n_init: int, seed: int) -> dict[str, float]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    k = int(np.unique(labels).size)
    assignment = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit_predict(_l2_normalize(features))
    return {"nmi": float(normalized_mutual_info_score(labels, assignment)),
            "ari": float(adjusted_rand_score(labels, assignment))}


def _pct(fraction: float) -> str:
    """``0.01`` -> ``1pct``, ``0.005`` -> ``0.5pct``: the budget's part of a metric name."""
    return f"{fraction * 100:g}pct"


def evaluate_features(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray,
                      settings: VisionEvalConfig) -> dict[str, Any]:
    """Linear probe and kNN at every label budget, k-means NMI / ARI: the numbers of :func:`evaluate_vision_model`."""
    classes = int(max(y_train.max(), y_eval.max()) + 1)
    probes, knns = [], []
    for fraction in settings.label_fractions:
        draws = 1 if fraction >= 1.0 else settings.repeats
        probe_scores, knn_scores, sizes = [], [], []
        for draw in range(draws):
            rows = budget_rows(y_train, fraction, np.random.default_rng([settings.seed, draw, round(fraction * 1e6)]))
            sizes.append(int(rows.size))
            predicted = _linear_probe(x_train[rows], y_train[rows], x_eval, settings.probe_c, settings.probe_max_iter,
                                      settings.seed)
            probe_scores.append(float((predicted == y_eval).mean()))
            neighbours = knn_predict(x_train[rows], y_train[rows], x_eval, settings.knn_k, settings.knn_temperature,
                                     classes)
            knn_scores.append(float((neighbours == y_eval).mean()))
        for bucket, scores in ((probes, probe_scores), (knns, knn_scores)):
            bucket.append({"fraction": fraction, "n_train": sizes, "scores": scores, "mean": float(np.mean(scores)),
                           "std": float(statistics.stdev(scores)) if len(scores) > 1 else 0.0})
    return {"linear_probe": probes, "knn": knns,
            "kmeans": _clusters(x_eval, y_eval, settings.kmeans_n_init, settings.seed)}


# ---------------------------------------------------------------------------------------------- figures


def _save_figure(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path


def _image_grid(rows: Sequence[torch.Tensor], path: Path, row_titles: Sequence[str], title: str) -> Path:
    """Save rows of images (each float ``[n, C, H, W]`` in [0, 1]) as one PNG grid."""
    plt = pyplot()
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(0.9 * n_cols + 1.2, 0.95 * n_rows + 0.5), squeeze=False)
    for r, images in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(images):
                img = images[c].detach().float().clamp(0, 1).cpu()
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(img.permute(1, 2, 0).numpy())
        axes[r][0].set_ylabel(row_titles[r], rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    return _save_figure(fig, path)


def _tsne_plot(features: np.ndarray, labels: np.ndarray, class_names: Sequence[str] | None, path: Path,
               points: int, seed: int, title: str) -> Path:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    rows = budget_rows(labels, min(1.0, points / len(labels)), np.random.default_rng(seed)) if points < len(labels) \
        else np.arange(len(labels))
    x = features[rows]
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    if x.shape[1] > 50:  # the usual PCA step before t-SNE: less noise, much faster neighbour search
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    embedded = TSNE(n_components=2, init="pca", perplexity=min(30.0, max(2.0, (len(x) - 1) / 3)),
                    random_state=seed).fit_transform(x)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    y = labels[rows]
    cmap = plt.get_cmap("tab10" if y.max() < 10 else "tab20")
    for cls in np.unique(y):
        sel = y == cls
        name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
        ax.scatter(embedded[sel, 0], embedded[sel, 1], s=4, color=cmap(int(cls) % cmap.N), label=name)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=3, fontsize=7, loc="best", frameon=False)
    ax.set_title(title, fontsize=9)
    return _save_figure(fig, path)


def _one_per_class(labels: np.ndarray, n: int = 10) -> np.ndarray:
    """The first example of each of the first ``n`` classes (a varied, reproducible row of images)."""
    rows = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)[:n]]
    return np.asarray(rows)


@torch.no_grad()
def _generative_figures(model: VisionModel, images: torch.Tensor, labels: np.ndarray, folder: Path,
                        settings: VisionEvalConfig, tag: str) -> tuple[list[Path], dict[str, float]]:
    """Reconstructions, interpolations, traversals, inpaintings or samples, by model class; PixelCNN's bits/dim."""
    from nlp_ssl.models.generative import ContextEncoderGenerator, ConvAutoencoder, ConvVAE, PixelCNN

    module, meta = model.module, model.meta
    generator = torch.Generator().manual_seed(settings.seed)
    rows = _one_per_class(labels)
    x8 = model.adapt(images[torch.as_tensor(rows)])
    paths: list[Path] = []
    numbers: dict[str, float] = {}
    if isinstance(module, (ConvAutoencoder, ConvVAE)):
        x = x8.float() / 255.0
        grid_rows, titles = [x], ["input"]
        source = x
        if meta.get("pretext") == "denoising_autoencoder":
            from nlp_ssl.models.generative import corrupt

            source = corrupt(x, meta.get("corruption", "masking"), float(meta.get("level", 0.3)), generator).clamp(0, 1)
            grid_rows.append(source)
            titles.append("corrupted")
        if isinstance(module, ConvVAE):
            mu, _ = module.encode(source)
            grid_rows.append(torch.sigmoid(module.decode(mu)))
            titles.append("recon (mu)")
        else:
            grid_rows.append(torch.sigmoid(module(source)))
            titles.append("reconstruction")
        paths.append(_image_grid(grid_rows, folder / "reconstructions.png", titles,
                                 f"{tag}: test images and their reconstructions"))
        code = (lambda v: module.encode(v)[0]) if isinstance(module, ConvVAE) else module.encode
        pairs = [(0, 1), (2, 3), (4, 5), (6, 7)]
        steps = torch.linspace(0, 1, 9).view(-1, 1)
        interp_rows = []
        for a, b in pairs:
            if b >= len(x):
                continue
            za, zb = code(x[a:a + 1]), code(x[b:b + 1])
            interp_rows.append(torch.sigmoid(module.decode((1 - steps) * za + steps * zb)))
        if interp_rows:
            paths.append(_image_grid(interp_rows, folder / "interpolations.png",
                                     [f"pair {i + 1}" for i in range(len(interp_rows))],
                                     f"{tag}: decoded linear interpolations between two test images"))
        if isinstance(module, ConvVAE):
            paths.append(_traversals(module, model.adapt(images[:2000]).float() / 255.0, x[:1], folder, tag))
    elif isinstance(module, ContextEncoderGenerator):
        from nlp_ssl.data.pretext import inpainting_mask

        x = model.model_input(x8)
        grid_rows, titles = [x8.float() / 255.0], ["input"]
        kinds = dict.fromkeys([meta.get("mask", "central"), "central"])
        for kind in kinds:
            mask = inpainting_mask(x.shape, kind, fraction=float(meta.get("fraction", 0.25)), generator=generator)
            filled = torch.where(mask, module(x.masked_fill(mask, 0.0)), x)
            grid_rows += [_to_unit(x.masked_fill(mask, 0.0), meta), _to_unit(filled, meta)]
            titles += [f"hidden ({kind})", "filled"]
        paths.append(_image_grid(grid_rows, folder / "inpainting.png", titles,
                                 f"{tag}: hidden regions and the context encoder's fill-ins"))
    elif isinstance(module, PixelCNN):
        from nlp_ssl.models.generative import bits_per_dim

        adapted = model.adapt(images)
        total, count = 0.0, 0
        for i in range(0, len(adapted), 256):
            chunk = adapted[i:i + 256]
            total += float(bits_per_dim(module(chunk), chunk)) * len(chunk)
            count += len(chunk)
        numbers["bits_per_dim"] = total / max(count, 1)
        if settings.samples:
            from nlp_ssl.models.generative import sample

            side = int(adapted.shape[-1])
            drawn = sample(module, settings.samples, (model.channels, side, side), generator=generator)
            per_row = 8
            grid = [drawn[i:i + per_row].float() / 255.0 for i in range(0, len(drawn), per_row)]
            paths.append(_image_grid(grid, folder / "pixelcnn_samples.png", [""] * len(grid),
                                     f"{tag}: samples, pixel by pixel"))
    return paths, numbers


def _to_unit(x: torch.Tensor, meta: dict[str, Any]) -> torch.Tensor:
    """Normalised pixels back to [0, 1] for display."""
    mean = torch.tensor(meta.get("mean", [0.0]), dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(meta.get("std", [1.0]), dtype=torch.float32).view(1, -1, 1, 1)
    return x * std + mean


@torch.no_grad()
def _traversals(module: Any, x: torch.Tensor, anchor: torch.Tensor, folder: Path, tag: str,
                units: int = 8, span: float = 3.0, steps: int = 9) -> Path:
    """Latent traversals (Higgins et al. 2017, figure 1): the ``units`` latent dimensions with the largest
    mean KL on ``x`` are moved one at a time from ``-span`` to ``span`` around ``anchor``'s posterior mean."""
    mu, logvar = module.encode(x)
    kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp())).mean(0)  # [D]: information each unit carries
    order = kl.argsort(descending=True)[:units]
    base, _ = module.encode(anchor)
    values = torch.linspace(-span, span, steps)
    rows = []
    for d in order.tolist():
        z = base.repeat(steps, 1)
        z[:, d] = values
        rows.append(torch.sigmoid(module.decode(z)))
    titles = [f"z{d} (KL {kl[d]:.2f})" for d in order.tolist()]
    return _image_grid(rows, folder / "traversals.png", titles,
                       f"{tag}: latent traversals, {-span:g} to {span:g}, units by KL")


# ---------------------------------------------------------------------------------------------- the report


def evaluate_vision_model(model: VisionModel, train: ImageData, evaluation: ImageData, settings: VisionEvalConfig,
                          plots_dir: Path | None = None, split_name: str | None = None) -> dict[str, Any]:
    """Every measurement of the module docstring for ``model`` on labelled ``train`` / ``evaluation`` images.

    Returns:
        A JSON-ready dict: model, data sizes, ``linear_probe`` and ``knn`` (one entry per label budget),
        ``kmeans`` (NMI, ARI), ``bits_per_dim`` (PixelCNN), the figures written and the seconds taken.
    """
    if train.labels is None or evaluation.labels is None:
        raise UserError("the vision evaluation needs labelled images (set label_column)")
    started, cpu_started = time.perf_counter(), time.process_time()
    split = split_name or settings.split
    x_train = extract_features(model, train.images, settings.batch_size)
    x_eval = extract_features(model, evaluation.images, settings.batch_size)
    y_train, y_eval = train.labels.numpy(), evaluation.labels.numpy()
    result: dict[str, Any] = {
        "source": model.source, "init": model.init, "kind": model.kind, "pretext": model.meta.get("pretext"),
        "feature_dim": int(x_train.shape[1]), "train": {"source": train.source, "images": len(train)},
        "eval": {"source": evaluation.source, "images": len(evaluation), "split": split},
        "settings": asdict(settings)}
    result.update(evaluate_features(x_train, y_train, x_eval, y_eval, settings))
    plots: list[Path] = []
    if settings.plots and plots_dir is not None:
        tag = f"{model.meta.get('pretext') or Path(model.source).name}" + (" (random init)" if model.init == "random" else "")
        if settings.tsne_points:
            plots.append(_tsne_plot(x_eval, y_eval, evaluation.class_names, Path(plots_dir) / "tsne.png",
                                    settings.tsne_points, settings.seed, f"{tag}: t-SNE of {split} features"))
    if model.kind == "generative":
        figures, numbers = _generative_figures(model, evaluation.images, y_eval, Path(plots_dir or "."),
                                               settings, str(model.meta.get("pretext", "model"))) \
            if settings.plots and plots_dir is not None else _numbers_only(model, evaluation.images, settings)
        plots += figures
        result.update(numbers)
    result["plots"] = [str(p) for p in plots]
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    return result


def _numbers_only(model: VisionModel, images: torch.Tensor, settings: VisionEvalConfig
                  ) -> tuple[list[Path], dict[str, float]]:
    """PixelCNN's bits/dim without figures (other generative models have no extra numbers)."""
    from nlp_ssl.models.generative import PixelCNN

    if not isinstance(model.module, PixelCNN):
        return [], {}
    quiet = VisionEvalConfig(**{**asdict(settings), "samples": 0})
    return _generative_figures(model, images, np.zeros(len(images), np.int64), Path("."), quiet, "")


def flat_vision_metrics(result: dict[str, Any]) -> dict[str, float]:
    """Headline numbers as flat metric names, e.g. ``test/probe_1pct_accuracy``, ``test/kmeans_nmi``."""
    split = result["eval"]["split"]
    flat: dict[str, float] = {}
    for name in ("linear_probe", "knn"):
        short = "probe" if name == "linear_probe" else "knn"
        for entry in result[name]:
            flat[f"{split}/{short}_{_pct(entry['fraction'])}_accuracy"] = entry["mean"]
    flat[f"{split}/kmeans_nmi"] = result["kmeans"]["nmi"]
    flat[f"{split}/kmeans_ari"] = result["kmeans"]["ari"]
    if "bits_per_dim" in result:
        flat[f"{split}/bits_per_dim"] = result["bits_per_dim"]
    return flat


def format_vision_report(result: dict[str, Any]) -> str:
    """The table ``nlp-ssl eval vision`` prints."""
    lines = [f"Vision representation of {result['source']} ({result['kind']}, pretext {result.get('pretext')}, "
             f"{result['feature_dim']}-d features{', init=random' if result['init'] == 'random' else ''})",
             f"  probe train: {result['train']['source']} ({result['train']['images']:,} images); "
             f"scored on {result['eval']['source']} ({result['eval']['images']:,})",
             f"  {'labels':>7}  {'linear probe':>17}  {'kNN':>17}"]
    for probe, knn in zip(result["linear_probe"], result["knn"]):
        def cell(entry: dict[str, Any]) -> str:
            spread = f" ± {entry['std']:.3f}" if len(entry["scores"]) > 1 else ""
            return f"{entry['mean']:.4f}{spread}"
        lines.append(f"  {_pct(probe['fraction']).replace('pct', '%'):>7}  {cell(probe):>17}  {cell(knn):>17}")
    lines.append(f"  k-means: NMI {result['kmeans']['nmi']:.4f}, ARI {result['kmeans']['ari']:.4f}")
    if "bits_per_dim" in result:
        lines.append(f"  bits per dimension: {result['bits_per_dim']:.4f}")
    for plot in result.get("plots", []):
        lines.append(f"  figure: {plot}")
    lines.append(f"  ({result['seconds']:.0f} s, {result['cpu_seconds']:.0f} s CPU)")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- command line


def _fraction(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100.0 if text.endswith("%") else 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1] or a percentage like 10%, got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in (0, 1] or a percentage like 10%, got {text!r}")
    return value


def add_vision_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``vision`` sub-command to an argparse ``subparsers`` object; its ``func`` is :func:`cmd_vision`."""
    p = subparsers.add_parser(
        "vision", help="linear probe, kNN, k-means and figures of a pretrained image representation",
        description="Score the frozen features of MODEL (a vision export: transformers ResNet/ViT folder or a "
                    "generative model folder) on a labelled image set: linear probe and kNN at label budgets, "
                    "k-means NMI/ARI, t-SNE and the model's own figures.")
    p.add_argument("model", metavar="MODEL", help="export folder (e.g. runs/vision-rotation/final) or hub id")
    p.add_argument("--images", help="image set: fashion_mnist | mnist | digits | folder | hub id "
                                    "(default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="score on the test split, or on the validation images held out of training (default test)")
    p.add_argument("--init", default="pretrained", choices=["pretrained", "random"],
                   help="'random' evaluates the same architecture untrained (the baseline)")
    p.add_argument("--label-fractions", nargs="+", type=_fraction, default=None, metavar="F",
                   help="label budgets as shares or percentages (default 1%% 10%% 100%%)")
    p.add_argument("--repeats", type=int, default=3, help="draws per budget below 100%% (default 3)")
    p.add_argument("--knn-k", type=int, default=20, help="neighbours of the kNN classifier (default 20)")
    p.add_argument("--max-train-samples", type=int, help="use a class-proportional subset of N training images")
    p.add_argument("--max-eval-samples", type=int, help="score on a class-proportional subset of N images")
    p.add_argument("--image-size", type=int, help="resize the images (default: as in training)")
    p.add_argument("--plots", metavar="DIR", help="write the figures into DIR")
    p.add_argument("--samples", type=int, default=16, help="PixelCNN samples in the figure (default 16; 0: none)")
    p.add_argument("--seed", type=int, default=0, help="seed of budgets, k-means, t-SNE and random init")
    p.add_argument("--json", metavar="FILE", help="write the full results as JSON to FILE")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_vision)
    return p


def cmd_vision(args: argparse.Namespace) -> int:
    """Run the evaluation described by parsed ``args``, print the report, write JSON. Returns 0."""
    from nlp_ssl.atomic import atomic_write_text

    json_path = Path(args.json) if args.json else None
    if json_path is not None and json_path.exists() and not args.overwrite:
        raise UserError(f"{json_path} already exists; pass --overwrite to replace it or choose another --json file")
    settings = VisionEvalConfig(split=args.split, repeats=args.repeats, knn_k=args.knn_k,
                                max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples,
                                plots=args.plots is not None, samples=args.samples, seed=args.seed,
                                **({"label_fractions": list(args.label_fractions)} if args.label_fractions else {}))
    model = load_vision_model(args.model, args.init, args.seed)
    data = model.meta.get("data", {}) if isinstance(model.meta.get("data"), dict) else {}
    spec = args.images or data.get("images")
    if not spec:
        raise UserError(f"{args.model} does not say which images it was trained on; pass --images "
                        "(e.g. --images fashion_mnist)")
    same_data = spec == data.get("images")
    train, evaluation = load_eval_images(
        spec, args.split, validation_size=data.get("validation_size") if same_data else None,
        image_size=args.image_size or (data.get("image_size") if same_data else None),
        hub_config=data.get("hub_config") if same_data else None,
        image_column=data.get("image_column", "image") if same_data else "image",
        label_column=data.get("label_column", "label") if same_data else "label",
        max_train_samples=settings.max_train_samples, max_eval_samples=settings.max_eval_samples)
    result = evaluate_vision_model(model, train, evaluation, settings, Path(args.plots) if args.plots else None)
    print(format_vision_report(result))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")
    return 0


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m nlp_ssl.eval.vision MODEL ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m nlp_ssl.eval.vision")
    sub = parser.add_subparsers(dest="command", required=True)
    add_vision_parser(sub)
    if not argv or argv[0] != "vision":
        argv = ["vision", *argv]
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
