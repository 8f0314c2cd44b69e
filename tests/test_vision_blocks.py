"""Vision pretext building blocks: label and mask geometry, losses against naive loops, PixelCNN causality,
save/load round trips, and a few optimisation steps on real images for every loss."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlp_ssl.data.pretext import (
    NEIGHBOUR_OFFSETS,
    grid_extent,
    inpainting_mask,
    jigsaw_batch,
    masked_l2_loss,
    maximal_hamming_permutations,
    patch_grid_fits,
    permutation_set_stats,
    random_rotation,
    rotate_batch,
    sample_patch_pairs,
)
from nlp_ssl.errors import UserError
from nlp_ssl.models.generative import (
    ContextEncoderGenerator,
    ConvAutoencoder,
    ConvVAE,
    MaskedConv2d,
    PatchDiscriminator,
    PixelCNN,
    bits_per_dim,
    corrupt,
    load_generative,
    sample,
    vae_loss,
)
from nlp_ssl.models.vision import build_vision_encoder, encoder_features, feature_dim

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _real_images(n: int = 64) -> torch.Tensor:
    """``[n, 1, 28, 28]`` uint8: the first Fashion-MNIST training images, else scikit-learn digits upscaled."""
    if FASHION_MNIST.is_file():
        with gzip.open(FASHION_MNIST, "rb") as f:
            header = np.frombuffer(f.read(16), dtype=">u4")
            assert header[0] == 2051 and tuple(header[2:]) == (28, 28)
            pixels = np.frombuffer(f.read(n * 28 * 28), dtype=np.uint8)
        return torch.from_numpy(pixels.copy()).view(n, 1, 28, 28)
    from sklearn.datasets import load_digits

    digits = torch.from_numpy(load_digits().images[:n]).float()[:, None] / 16.0
    return (F.interpolate(digits, size=(28, 28), mode="bilinear", align_corners=False) * 255).round().byte()


@pytest.fixture(scope="module")
def real_uint8() -> torch.Tensor:
    return _real_images()


@pytest.fixture(scope="module")
def real(real_uint8) -> torch.Tensor:
    return real_uint8.float() / 255.0


def _coordinate_image(batch: int, height: int, width: int) -> torch.Tensor:
    """``[B, 1, H, W]`` whose pixel value is ``y * W + x`` (exact in float32), plus ``b * H * W``."""
    index = torch.arange(batch * height * width, dtype=torch.float32)
    return index.view(batch, 1, height, width)


def _decode(value: float, height: int, width: int) -> tuple[int, int, int]:
    v = int(value)
    return v // (height * width), (v % (height * width)) // width, v % width


def _steps_reduce(loss_fn, params, steps: int = 30, lr: float = 1e-3) -> tuple[float, float]:
    """Loss before and after ``steps`` Adam steps on a fixed batch."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(params, lr=lr)
    first = None
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        first = float(loss.detach()) if first is None else first
        loss.backward()
        opt.step()
    with torch.no_grad():
        return first, float(loss_fn())


# ------------------------------------------------------------------------------------------------ rotation


def test_rotate_batch_labels_undo_the_rotation(real):
    x = real[:8]
    rotated, labels = rotate_batch(x)
    assert rotated.shape == (32, 1, 28, 28) and labels.tolist() == [k for k in range(4) for _ in range(8)]
    for k in range(4):
        block = rotated[labels == k]
        assert torch.equal(torch.rot90(block, -k, dims=(-2, -1)), x)
    # Label 1 is a counter-clockwise quarter turn: the top row becomes the left column, read bottom-up.
    assert torch.equal(rotated[8, 0, :, 0], x[0, 0, 0, :].flip(0))


def test_random_rotation_is_recoverable_and_seeded(real):
    x = real[:40]
    out, labels = random_rotation(x, generator=torch.Generator().manual_seed(3))
    assert set(labels.tolist()) == {0, 1, 2, 3}
    for i in range(len(x)):
        assert torch.equal(torch.rot90(out[i], -int(labels[i]), dims=(-2, -1)), x[i])
    again, labels_again = random_rotation(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again, out) and torch.equal(labels_again, labels)
    with pytest.raises(UserError, match="square"):
        rotate_batch(torch.zeros(2, 1, 28, 30))


# --------------------------------------------------------------------------------- relative patch position


@pytest.mark.parametrize("gap,jitter", [(2, 2), (0, 0), (3, 1)])
def test_patch_pairs_match_the_grid_geometry(gap, jitter):
    batch, height, width, patch = 256, 40, 44, 6
    x = _coordinate_image(batch, height, width)
    centre, neighbour, label = sample_patch_pairs(x, patch, gap, jitter, generator=torch.Generator().manual_seed(0))
    assert centre.shape == neighbour.shape == (batch, 1, patch, patch)
    assert set(label.tolist()) == set(range(8))
    stride = patch + 2 * jitter + gap
    residuals = []
    for b in range(batch):
        cb, cy, cx = _decode(centre[b, 0, 0, 0], height, width)
        nb, ny, nx = _decode(neighbour[b, 0, 0, 0], height, width)
        assert cb == nb == b
        # Each patch is an intact square crop of its own image.
        steps = torch.arange(patch, dtype=torch.float32)
        assert torch.equal(centre[b, 0], b * height * width + (cy + steps)[:, None] * width + cx + steps)
        assert torch.equal(neighbour[b, 0], b * height * width + (ny + steps)[:, None] * width + nx + steps)
        dr, dc = NEIGHBOUR_OFFSETS[int(label[b])]
        res_y, res_x = (ny - cy) - dr * stride, (nx - cx) - dc * stride
        # Jitter moves each patch by at most `jitter`, so the pair's offset is off the grid by at most 2x.
        assert abs(res_y) <= 2 * jitter and abs(res_x) <= 2 * jitter
        residuals += [res_y, res_x]
        # No shared pixel, and the gap holds along every axis the neighbour is displaced on.
        assert not set(centre[b].flatten().tolist()) & set(neighbour[b].flatten().tolist())
        if dr:
            assert abs(ny - cy) >= patch + gap
        if dc:
            assert abs(nx - cx) >= patch + gap
    if jitter:
        assert min(residuals) == -2 * jitter and max(residuals) == 2 * jitter
    else:
        assert set(residuals) == {0}


def test_patch_grid_too_large_names_the_sizes():
    assert grid_extent(8, 2, 1) == 3 * 10 + 2 * 2
    assert patch_grid_fits(34, 8, 2, 1) and not patch_grid_fits(33, 8, 2, 1)
    assert patch_grid_fits((34, 40), 8, 2, 1) and not patch_grid_fits((40, 33), 8, 2, 1)
    expected = r"8px patches with gap 2 and jitter 1 needs 34x34 pixels but the images are 28x28"
    with pytest.raises(UserError, match=expected):
        sample_patch_pairs(torch.zeros(2, 1, 28, 28), 8, 2, 1)


def test_colour_dropping_keeps_one_channel():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 36, 36) + 1.0
    gen = torch.Generator().manual_seed(1)
    centre, _, _ = sample_patch_pairs(x, 8, 2, 1, drop_channels=True, generator=gen)
    plain, _, _ = sample_patch_pairs(x, 8, 2, 1, drop_channels=False, generator=torch.Generator().manual_seed(1))
    kept = (centre == plain).flatten(2).all(-1)  # [B, 3]: which channels are the original pixels
    assert kept.sum(1).eq(1).all()
    assert len(set(kept.float().argmax(1).tolist())) == 3
    dropped = centre[~kept]  # [2B, 8, 8] noise planes
    assert dropped.abs().mean() < 0.05 and dropped.std() > 0
    grey, _, _ = sample_patch_pairs(x[:, :1], 8, 2, 1, drop_channels=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(grey, plain[:, :1])


# --------------------------------------------------------------------------------------------------- jigsaw


def _naive_stats(perms: torch.Tensor) -> tuple[int, float]:
    rows = perms.tolist()
    dists = [sum(a != b for a, b in zip(rows[i], rows[j]))
             for i in range(len(rows)) for j in range(len(rows)) if i != j]
    return min(dists), sum(dists) / len(dists)


def test_maximal_hamming_permutations():
    perms = maximal_hamming_permutations(100, 9, seed=0)
    assert perms.shape == (100, 9) and perms.dtype == torch.int64
    assert torch.equal(perms.sort(dim=1).values, torch.arange(9).expand(100, 9))
    assert len({tuple(p) for p in perms.tolist()}) == 100
    stats = permutation_set_stats(perms)
    naive_min, naive_mean = _naive_stats(perms)
    assert stats["min_hamming"] == naive_min and stats["mean_hamming"] == pytest.approx(naive_mean)
    # Max-min selection: measured minimum distance 6 (mean 8.03) for 100 permutations of 9 tiles.
    assert stats["min_hamming"] >= 6 and stats["mean_hamming"] > 7.9
    assert torch.equal(maximal_hamming_permutations(100, 9, seed=0), perms)
    assert not torch.equal(maximal_hamming_permutations(100, 9, seed=1), perms)
    # The paper's Algorithm 1 (sum of distances) reproduces its table 3 row for 100 permutations: 8.08 / 2.
    paper = permutation_set_stats(maximal_hamming_permutations(100, 9, seed=0, criterion="mean"))
    assert paper["mean_hamming"] == pytest.approx(8.08, abs=0.005) and paper["min_hamming"] == 2
    # With 4 tiles every one of the 24 permutations can be chosen.
    assert len({tuple(p) for p in maximal_hamming_permutations(24, 4).tolist()}) == 24
    with pytest.raises(UserError, match="n_perms"):
        maximal_hamming_permutations(25, 4)
    with pytest.raises(UserError, match="n_tiles"):
        maximal_hamming_permutations(10, 16)


def test_jigsaw_tiles_reassemble_the_image(real):
    x = real[:6, :, 1:28, 1:28]  # 27x27 = 3 x 9-pixel tiles, no gap: the puzzle is the whole image
    perms = maximal_hamming_permutations(30, 9)
    tiles, label = jigsaw_batch(x, perms, tile=9, generator=torch.Generator().manual_seed(0))
    assert tiles.shape == (6, 9, 1, 9, 9) and label.shape == (6,)
    cells = torch.empty_like(tiles)
    cells[torch.arange(6)[:, None], perms[label]] = tiles
    rebuilt = cells.view(6, 3, 3, 1, 9, 9).permute(0, 3, 1, 4, 2, 5).reshape(6, 1, 27, 27)
    assert torch.equal(rebuilt, x)


def test_jigsaw_tiles_come_from_their_cells():
    batch, side, tile, gap, jitter = 64, 40, 8, 2, 2
    x = _coordinate_image(batch, side, side)
    perms = maximal_hamming_permutations(10, 9)
    tiles, label = jigsaw_batch(x, perms, tile=tile, gap=gap, jitter=jitter,
                                generator=torch.Generator().manual_seed(0))
    stride = tile + 2 * jitter + gap
    for b in range(batch):
        corners = [_decode(tiles[b, i, 0, 0, 0], side, side) for i in range(9)]
        assert all(c[0] == b for c in corners)
        cell = perms[label[b]].tolist()
        # Undo the shuffle, then every tile sits one stride (up to twice the jitter) from its grid neighbour.
        by_cell = {cell[i]: corners[i][1:] for i in range(9)}
        for k in range(9):
            r, c = divmod(k, 3)
            dy, dx = by_cell[k][0] - by_cell[4][0], by_cell[k][1] - by_cell[4][1]
            assert abs(dy - (r - 1) * stride) <= 2 * jitter and abs(dx - (c - 1) * stride) <= 2 * jitter
    normed, _ = jigsaw_batch(x, perms, tile=tile, normalize_tiles=True)
    flat = normed.flatten(2)
    assert flat.mean(-1).abs().max() < 1e-4 and (flat.std(-1) - 1).abs().max() < 1e-3
    with pytest.raises(UserError, match=r"perms must be \[P, 9\]"):
        jigsaw_batch(x, perms[:, :4], tile=tile)


# ---------------------------------------------------------------------------------------- inpainting masks


def test_central_mask_geometry():
    mask = inpainting_mask((3, 1, 28, 28), "central", fraction=0.25)
    assert mask.shape == (3, 1, 28, 28) and mask.dtype == torch.bool
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[7:21, 7:21] = True
    assert all(torch.equal(m[0], expected) for m in mask)


def test_block_and_region_masks_cover_the_fraction():
    gen = torch.Generator().manual_seed(0)
    block = inpainting_mask((64, 1, 28, 28), "block", fraction=0.25, generator=gen)
    hidden = block.float().mean((1, 2, 3))
    largest_block = (round(0.3 * 28) ** 2) / 28 ** 2
    assert (hidden >= 0.25).all() and (hidden <= 0.25 + largest_block).all()
    assert len({tuple(m.flatten().tolist()) for m in block}) == 64
    region = inpainting_mask((64, 1, 28, 28), "region", fraction=0.3, generator=gen)
    assert (region.sum((1, 2, 3)) == round(0.3 * 784)).all()
    assert len({tuple(m.flatten().tolist()) for m in region}) == 64
    # A region mask is not a rectangle: its bounding box holds visible pixels.
    rows, cols = region[0, 0].nonzero().unbind(1)
    assert region[0, 0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].float().mean() < 1.0
    again = inpainting_mask((64, 1, 28, 28), "region", fraction=0.3, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(again, region)  # the generator moved on after the block masks
    with pytest.raises(UserError, match="unknown kind"):
        inpainting_mask((2, 1, 28, 28), "ring")
    with pytest.raises(UserError, match="fraction"):
        inpainting_mask((2, 1, 28, 28), "central", fraction=1.5)


def _naive_masked_l2(pred, target, mask, overlap, overlap_weight):
    batch, channels, height, width = pred.shape
    total = torch.zeros((), dtype=pred.dtype)
    count = 0
    for b in range(batch):
        hidden = [(y, x) for y in range(height) for x in range(width) if mask[b, 0, y, x]]
        for y in range(height):
            for x in range(width):
                if mask[b, 0, y, x]:
                    w = 1.0
                elif overlap and any(max(abs(y - hy), abs(x - hx)) <= overlap for hy, hx in hidden):
                    w = overlap_weight
                else:
                    continue
                count += channels
                for c in range(channels):
                    total = total + w * (pred[b, c, y, x] - target[b, c, y, x]) ** 2
    return total / count


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_masked_l2_loss_matches_naive(overlap):
    gen = torch.Generator().manual_seed(overlap)
    pred = torch.randn(3, 2, 9, 10, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 2, 9, 10, generator=gen, dtype=torch.float64)
    mask = inpainting_mask(pred.shape, "block", fraction=0.2, generator=gen)
    loss = masked_l2_loss(pred, target, mask, overlap=overlap, overlap_weight=10.0)
    (grad,) = torch.autograd.grad(loss, pred)
    naive = _naive_masked_l2(pred, target, mask, overlap, 10.0)
    (naive_grad,) = torch.autograd.grad(naive, pred)
    assert loss.item() == pytest.approx(naive.item(), rel=1e-10)
    assert torch.allclose(grad, naive_grad)
    with pytest.raises(UserError, match="mask must be"):
        masked_l2_loss(pred, target, mask[:, :, :5])


# ------------------------------------------------------------------------------------ autoencoders and VAE


def _naive_vae_loss(logits, x, mu, logvar, beta):
    per_example = []
    for b in range(x.shape[0]):
        p = torch.sigmoid(logits[b])
        recon = -(x[b] * torch.log(p) + (1 - x[b]) * torch.log(1 - p)).sum()
        kl = sum(0.5 * (mu[b, d] ** 2 + torch.exp(logvar[b, d]) - 1 - logvar[b, d]) for d in range(mu.shape[1]))
        per_example.append((recon + beta * kl, recon, kl))
    return [sum(t[i] for t in per_example) / len(per_example) for i in range(3)]


def test_vae_loss_matches_naive(real):
    gen = torch.Generator().manual_seed(0)
    x = real[:5].double()
    logits = torch.randn(x.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    logvar = torch.randn(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    loss, recon, kl = vae_loss(logits, x, mu, logvar, beta=4.0)
    naive = _naive_vae_loss(logits, x, mu, logvar, 4.0)
    for got, want in zip((loss, recon, kl), naive):
        assert got.item() == pytest.approx(want.item(), rel=1e-10)
    grads = torch.autograd.grad(loss, (logits, mu, logvar))
    naive_grads = torch.autograd.grad(naive[0], (logits, mu, logvar))
    assert all(torch.allclose(g, n) for g, n in zip(grads, naive_grads))


def test_corruptions():
    x = torch.ones(8, 1, 28, 28)
    masked = corrupt(x, "masking", 0.3, generator=torch.Generator().manual_seed(0))
    assert ((masked == 0).flatten(1).sum(1) == round(0.3 * 784)).all()
    noisy = corrupt(x, "gaussian", 0.5, generator=torch.Generator().manual_seed(0))
    assert (noisy - x).std().item() == pytest.approx(0.5, rel=0.05)
    with pytest.raises(UserError, match="unknown corruption"):
        corrupt(x, "salt", 0.1)


def test_autoencoder_and_vae_learn(real):
    torch.manual_seed(0)
    ae = ConvAutoencoder(latent_dim=16, width=16)
    noisy = corrupt(real, "masking", 0.25, generator=torch.Generator().manual_seed(0))
    before, after = _steps_reduce(lambda: F.binary_cross_entropy_with_logits(ae(noisy), real), ae.parameters(),
                                  steps=25, lr=2e-3)
    assert after < 0.8 * before
    assert ae.features(real).shape == (64, 16)

    vae = ConvVAE(latent_dim=8, width=16)

    def vae_step():
        logits, mu, logvar = vae(real)
        return vae_loss(logits, real, mu, logvar, beta=1.0)[0]

    before, after = _steps_reduce(vae_step, vae.parameters(), steps=25, lr=2e-3)
    assert after < 0.85 * before
    assert vae.features(real).shape == (64, 8)


# ---------------------------------------------------------------------------------------- context encoder


def test_context_encoder_and_discriminator_learn(real):
    torch.manual_seed(0)
    generator = ContextEncoderGenerator(width=16)
    mask = inpainting_mask(real.shape, "central")
    filled = real.masked_fill(mask, float(real.mean()))
    before, after = _steps_reduce(lambda: masked_l2_loss(generator(filled), real, mask, overlap=1),
                                  generator.parameters(), steps=25, lr=2e-3)
    assert after < 0.7 * before
    assert generator.features(real).shape == (64, generator.encoder.out_channels)

    critic = PatchDiscriminator(width=16)
    with torch.no_grad():
        fake = torch.where(mask, torch.sigmoid(generator(filled)), real)

    def critic_step():
        real_logits, fake_logits = critic(real), critic(fake)
        return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))

    before, after = _steps_reduce(critic_step, critic.parameters(), steps=25, lr=1e-3)
    assert after < 0.7 * before
    with pytest.raises(UserError, match="at least 8x8"):
        critic(real[:, :, :6, :6])


# ------------------------------------------------------------------------------------------------ PixelCNN


def test_masked_conv_masks():
    a, b = MaskedConv2d("A", 1, 1, 5), MaskedConv2d("B", 1, 1, 5)
    assert a.mask[0, 0, 2, 2] == 0 and b.mask[0, 0, 2, 2] == 1
    assert a.mask[0, 0, :2].eq(1).all() and a.mask[0, 0, 2, :2].eq(1).all()
    assert b.mask[0, 0, 2, 3:].eq(0).all() and b.mask[0, 0, 3:].eq(0).all()
    assert a.mask.sum() == 12 and b.mask.sum() == 13


@pytest.mark.parametrize("position", [(0, 0), (3, 4), (9, 0), (9, 9)])
def test_pixelcnn_is_causal(position):
    torch.manual_seed(0)
    model = PixelCNN(hidden=8, n_residual=2, output_hidden=8).double()
    height = width = 10
    x = torch.rand(1, 1, height, width, dtype=torch.float64, requires_grad=True)
    row, col = position
    logits = model(x)
    # Every class logit of pixel i, so no class's dependence can hide behind another's.
    (grad,) = torch.autograd.grad(logits[0, :, 0, row, col].square().sum(), x)
    raster = torch.arange(height * width).view(height, width)
    i = row * width + col
    later_or_self = raster >= i
    assert grad[0, 0][later_or_self].abs().max() == 0  # mask A: not even the pixel itself
    if i > 0:
        assert grad[0, 0][~later_or_self].abs().max() > 0  # and it does see earlier pixels


def _naive_bits_per_dim(logits, x):
    total = torch.zeros((), dtype=logits.dtype)
    batch, _, channels, height, width = logits.shape
    for b in range(batch):
        for c in range(channels):
            for y in range(height):
                for w in range(width):
                    log_p = torch.log_softmax(logits[b, :, c, y, w], dim=0)[int(x[b, c, y, w])]
                    total = total - log_p / math.log(2)
    return total / (batch * channels * height * width)


def test_bits_per_dim_matches_naive():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 256, 1, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    x = torch.randint(0, 256, (2, 1, 4, 5), generator=gen, dtype=torch.uint8)
    bpd = bits_per_dim(logits, x)
    naive = _naive_bits_per_dim(logits, x)
    assert bpd.item() == pytest.approx(naive.item(), rel=1e-10)
    assert torch.allclose(torch.autograd.grad(bpd, logits)[0], torch.autograd.grad(naive, logits)[0])
    uniform = bits_per_dim(torch.zeros(2, 256, 1, 4, 5), x)
    assert uniform.item() == pytest.approx(8.0)


def test_pixelcnn_learns_and_samples(real_uint8):
    torch.manual_seed(0)
    model = PixelCNN(hidden=16, n_residual=2, output_hidden=32)
    x = real_uint8[:32]
    before, after = _steps_reduce(lambda: bits_per_dim(model(x), x), model.parameters(), steps=30, lr=1e-2)
    assert after < 0.75 * before  # from about 8 bits/dim (uniform)
    images = sample(model, 3, (1, 6, 6), generator=torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 6, 6) and images.dtype == torch.uint8 and model.training
    assert torch.equal(images, sample(model, 3, (1, 6, 6), generator=torch.Generator().manual_seed(0)))
    with pytest.raises(UserError, match="grey images"):
        PixelCNN(in_channels=3)


# ----------------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("make", [
    lambda: ConvAutoencoder(latent_dim=8, width=8),
    lambda: ConvVAE(latent_dim=4, width=8),
    lambda: ContextEncoderGenerator(width=8),
    lambda: PatchDiscriminator(width=8, n_layers=2),
    lambda: PixelCNN(hidden=8, n_residual=1, output_hidden=8),
])
def test_generative_modules_round_trip(make, tmp_path, real):
    module = make().eval()
    module.save(tmp_path / "m")
    loaded = type(module).load(tmp_path / "m")
    again = load_generative(tmp_path / "m")
    assert loaded.config == module.config and type(again) is type(module)
    x = real[:4]
    outputs = [m.features(x) if hasattr(m, "features") else m(x) for m in (module, loaded, again)]
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[0], outputs[2])
    other = ConvVAE if not isinstance(module, ConvVAE) else ConvAutoencoder
    with pytest.raises(UserError, match=f"holds a {type(module).__name__}"):
        other.load(tmp_path / "m")
    with pytest.raises(UserError, match="not found"):
        type(module).load(tmp_path / "missing")


# ---------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("arch,pooling", [("resnet", "cls"), ("vit", "cls"), ("vit", "mean")])
def test_encoder_round_trips_through_automodel(arch, pooling, tmp_path, real):
    from transformers import AutoModel

    model = build_vision_encoder(arch, image_size=28, num_channels=1, size="tiny").eval()
    with torch.no_grad():
        features = encoder_features(model, real[:4], pooling=pooling)
    assert features.shape == (4, feature_dim(model))
    model.save_pretrained(tmp_path)
    kwargs = {"add_pooling_layer": False} if arch == "vit" else {}
    loaded = AutoModel.from_pretrained(tmp_path, **kwargs).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        assert torch.equal(encoder_features(loaded, real[:4], pooling=pooling), features)


def test_encoder_presets_and_errors(real):
    small = build_vision_encoder("resnet", image_size=28, num_channels=1)
    assert small.config.hidden_sizes == [64, 128, 256] and not small.config.downsample_in_first_stage
    vit = build_vision_encoder("vit", image_size=28, num_channels=3, size="small")
    assert vit.config.patch_size == 4 and vit.config.hidden_size == 192 and vit.pooler is None
    assert build_vision_encoder("vit", image_size=64, num_channels=1, size="tiny").config.patch_size == 8
    tiny = build_vision_encoder("vit", image_size=28, num_channels=1, size="tiny", patch_size=7)
    assert encoder_features(tiny, real[:2, :, :14, :14]).shape == (2, 64)  # a crop: interpolated positions
    with pytest.raises(UserError, match="unknown vision encoder"):
        build_vision_encoder("vgg", image_size=28, num_channels=1)
    with pytest.raises(UserError, match="unknown ViTConfig key"):
        build_vision_encoder("vit", image_size=28, num_channels=1, hidden=3)
    with pytest.raises(UserError, match="does not divide"):
        build_vision_encoder("vit", image_size=28, num_channels=1, patch_size=5)
    with pytest.raises(UserError, match="expected a ResNetModel or ViTModel"):
        encoder_features(nn.Linear(2, 2), real[:2])


def test_encoders_learn_rotation_and_jigsaw(real):
    """A tiny ResNet with a linear head fits rotation labels, and a tiny ViT jigsaw labels, of 64 real images."""
    torch.manual_seed(0)
    resnet = build_vision_encoder("resnet", image_size=28, num_channels=1, size="tiny")
    head = nn.Linear(feature_dim(resnet), 4)
    rotated, labels = rotate_batch(real)
    before, after = _steps_reduce(lambda: F.cross_entropy(head(encoder_features(resnet, rotated)), labels),
                                  [*resnet.parameters(), *head.parameters()], steps=20, lr=3e-3)
    assert after < 0.7 * before

    perms = maximal_hamming_permutations(8, 9)
    tiles, label = jigsaw_batch(real, perms, tile=8, gap=1, jitter=0, generator=torch.Generator().manual_seed(0))
    vit = build_vision_encoder("vit", image_size=8, num_channels=1, size="tiny")
    jigsaw_head = nn.Linear(9 * feature_dim(vit), len(perms))

    def jigsaw_step():
        # The paper's siamese set-up: one shared encoder per tile, features concatenated in input order.
        feats = encoder_features(vit, tiles.flatten(0, 1)).view(len(tiles), -1)
        return F.cross_entropy(jigsaw_head(feats), label)

    before, after = _steps_reduce(jigsaw_step, [*vit.parameters(), *jigsaw_head.parameters()], steps=20, lr=3e-3)
    assert after < 0.7 * before
