"""The draw / apply splits of the vision building blocks and the small helpers the vision recipe adds.

Each split must give exactly what the one-call function gives from the same generator (so the earlier tests
of the one-call functions still describe it), and drawing for a global batch then slicing must give each
image the same parameters as drawing for it alone among the same global batch (the per-example rule).
"""

from __future__ import annotations

import pytest
import torch

from nlp_ssl.config import load_config, to_dict
from nlp_ssl.data.image_views import ViewConfig, apply_view, make_view, sample_view_params
from nlp_ssl.data.images import ImageData, hold_out, load_image_set, subset, to_float
from nlp_ssl.data.pretext import (GridDraw, apply_rotation, crop_patch_pairs, cut_jigsaw_tiles, jigsaw_batch,
                                  masked_l2_loss, maximal_hamming_permutations, random_rotation, sample_jigsaw,
                                  sample_patch_pair_geometry, sample_patch_pairs)
from nlp_ssl.errors import UserError
from nlp_ssl.models.generative import ConvAutoencoder, ConvVAE, corrupt, corrupt_with, corruption_noise, load_generative
from nlp_ssl.objectives.vision_base import slice_rows


@pytest.fixture(scope="module")
def mnist() -> torch.Tensor:
    return to_float(load_image_set("mnist", "test", max_samples=64).images)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


GREY_VIEWS = ViewConfig(crop_scale=(0.3, 1.0), saturation=0.0, hue=0.0, grayscale_p=0.0, blur_p=0.5)


@pytest.mark.parametrize("channels, cfg", [(1, GREY_VIEWS), (3, ViewConfig())])
def test_views_split_equals_make_view_and_slices_per_example(channels, cfg):
    x = torch.rand(12, channels, 20, 20, generator=_gen(9))
    whole = make_view(x, cfg, 16, generator=_gen(1))
    params = sample_view_params(12, 20, 20, channels, cfg, generator=_gen(1))
    assert torch.equal(apply_view(x, params, cfg, 16), whole)
    # Rows 4..8 of a global draw give those images exactly the views they get within the whole batch.
    part = apply_view(x[4:8], slice_rows(params, 4, 8), cfg, 16)
    torch.testing.assert_close(part, whole[4:8], rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="drawn views"):
        apply_view(x[:3], params, cfg, 16)


def test_rotation_by_labels(mnist):
    x = mnist[:16]
    rotated, labels = random_rotation(x, generator=_gen(2))
    assert torch.equal(apply_rotation(x, labels), rotated)
    for i in range(len(x)):
        assert torch.equal(apply_rotation(x[i:i + 1], labels[i:i + 1])[0], torch.rot90(x[i], int(labels[i]), (-2, -1)))


def test_patch_pair_split_equals_the_one_call_function(mnist):
    centre, neighbour, label = sample_patch_pairs(mnist, 6, 1, 1, generator=_gen(3))
    geometry = sample_patch_pair_geometry(len(mnist), 28, 28, 6, 1, 1, generator=_gen(3))
    assert isinstance(geometry, GridDraw)
    c2, n2, l2 = crop_patch_pairs(mnist, geometry, 6)
    assert torch.equal(c2, centre) and torch.equal(n2, neighbour) and torch.equal(l2, label)
    c3, n3, l3 = crop_patch_pairs(mnist[10:20], slice_rows(geometry, 10, 20), 6)
    assert torch.equal(c3, centre[10:20]) and torch.equal(n3, neighbour[10:20]) and torch.equal(l3, label[10:20])
    with pytest.raises(UserError, match="needs 31x31 pixels but the images are 28x28"):
        sample_patch_pair_geometry(2, 28, 28, 7, 2, 1)


def test_jigsaw_split_equals_the_one_call_function(mnist):
    perms = maximal_hamming_permutations(12, 9)
    tiles, label = jigsaw_batch(mnist, perms, tile=6, gap=1, jitter=1, normalize_tiles=True, generator=_gen(4))
    draw = sample_jigsaw(len(mnist), 28, 28, 12, 3, 6, 1, 1, generator=_gen(4))
    assert torch.equal(draw.label, label)
    assert torch.equal(cut_jigsaw_tiles(mnist, perms, draw, 6, normalize_tiles=True), tiles)
    assert torch.equal(cut_jigsaw_tiles(mnist[5:9], perms, slice_rows(draw, 5, 9), 6, normalize_tiles=True),
                       tiles[5:9])


def test_masked_l2_per_image_matches_a_loop():
    g = _gen(5)
    pred, target = torch.randn(4, 2, 9, 9, generator=g), torch.randn(4, 2, 9, 9, generator=g)
    mask = torch.rand(4, 1, 9, 9, generator=g) < torch.tensor([0.1, 0.3, 0.5, 0.7]).view(4, 1, 1, 1)
    for overlap in (0, 1):
        per_image = masked_l2_loss(pred, target, mask, overlap=overlap, overlap_weight=5.0, per_image=True)
        for i in range(4):
            expected = masked_l2_loss(pred[i:i + 1], target[i:i + 1], mask[i:i + 1], overlap=overlap,
                                      overlap_weight=5.0)
            naive_num = naive_den = 0.0
            hidden = mask[i, 0]
            for r in range(9):
                for c in range(9):
                    near = hidden[max(0, r - overlap):r + overlap + 1, max(0, c - overlap):c + overlap + 1].any()
                    weight = 1.0 if hidden[r, c] else (5.0 if near else 0.0)
                    if weight:
                        naive_num += weight * float((pred[i, :, r, c] - target[i, :, r, c]).square().sum())
                        naive_den += 2
            assert float(per_image[i]) == pytest.approx(naive_num / naive_den, rel=1e-5)
            assert float(per_image[i]) == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("kind, level", [("gaussian", 0.2), ("masking", 0.4)])
def test_corruption_split(kind, level, mnist):
    x = mnist[:8]
    noise = corruption_noise(x.shape, kind, generator=_gen(6))
    assert torch.equal(corrupt_with(x, kind, level, noise), corrupt(x, kind, level, generator=_gen(6)))
    assert torch.equal(corrupt_with(x[2:5], kind, level, noise[2:5]), corrupt(x, kind, level, generator=_gen(6))[2:5])
    with pytest.raises(UserError, match="must have the images' shape"):
        corrupt_with(x, kind, level, noise[:2])


def test_vae_reparameterisation_takes_given_noise(mnist):
    torch.manual_seed(0)
    vae = ConvVAE(1, 28, 4, 8)
    eps = torch.randn(3, 4, generator=_gen(7))
    logits, mu, logvar = vae(mnist[:3], eps=eps)
    assert torch.equal(logits, vae.decode(mu + torch.exp(0.5 * logvar) * eps))
    again, _, _ = vae(mnist[:3], generator=_gen(7))
    assert torch.equal(again, logits)


def test_load_generative_without_weights_rebuilds_the_architecture(tmp_path):
    torch.manual_seed(0)
    ConvAutoencoder(1, 28, 8, 8).save(tmp_path)
    torch.manual_seed(1)
    fresh = load_generative(tmp_path, weights=False)
    loaded = load_generative(tmp_path)
    assert isinstance(fresh, ConvAutoencoder) and fresh.config == loaded.config
    assert not torch.equal(fresh.to_code.weight, loaded.to_code.weight)


def test_hold_out_and_subset_are_deterministic_and_class_proportional():
    data = load_image_set("mnist", "train")
    rest, held = hold_out(data, 400)
    assert len(held) == 400 and len(rest) == len(data) - 400
    assert torch.bincount(held.labels).tolist() == [40] * 10
    again_rest, again_held = hold_out(data, 400)
    assert torch.equal(again_held.images, held.images) and torch.equal(again_rest.labels, rest.labels)
    # The two parts are disjoint and together the whole split.
    keys = lambda d: {bytes(img.numpy()) for img in d.images}  # noqa: E731
    assert not keys(rest) & keys(held) and len(keys(rest) | keys(held)) == len(keys(data))
    small = subset(rest, 100)
    assert len(small) == 100 and torch.bincount(small.labels).tolist() == [10] * 10
    assert subset(rest, None) is rest and subset(rest, 10**6) is rest
    with pytest.raises(UserError, match="cannot hold out"):
        hold_out(data, len(data))
    unlabelled = ImageData(images=data.images[:50], labels=None, class_names=None, source="x")
    assert len(hold_out(unlabelled, 5)[1]) == 5


def test_config_tuples_round_trip_through_yaml(tmp_path):
    """A config with tuple fields (the view ranges) equals its own config.yaml, so a killed run can resume."""
    import yaml

    from nlp_ssl.pipelines.vision import VisionConfig

    cfg = load_config(VisionConfig, None, ["views.crop_scale=[0.3, 1.0]"])
    assert cfg.views.crop_scale == (0.3, 1.0)
    plain = to_dict(cfg)
    assert plain["views"]["crop_scale"] == [0.3, 1.0]
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain
