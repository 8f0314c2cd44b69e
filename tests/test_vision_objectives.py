"""The vision pretexts as objectives, on real MNIST images and the debug config's tiny models.

For every pretext: the loss and its gradients equal an explicit per-example reference; the loss falls over a
few optimizer steps; and splitting the batch over two (simulated) processes gives the same summed loss and
gradients as one process with the whole batch, because every random draw is made per example for the
global batch. SimCLR and MoCo, which gather across processes, are checked in two real gloo processes.
"""

from __future__ import annotations

import copy
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nlp_ssl.config import load_config
from nlp_ssl.data.images import load_image_set
from nlp_ssl.data.pretext import NEIGHBOUR_OFFSETS
from nlp_ssl.distributed import LOCAL, DistContext
from nlp_ssl.models.vision import encoder_features
from nlp_ssl.objectives.contrastive_losses import moco_loss, nt_xent_loss
from nlp_ssl.objectives.vision_simclr import draw_two_views
from nlp_ssl.pipelines.vision import PRETEXTS, VisionConfig, build_vision_objective, load_vision_inputs

from conftest import REPO, free_port

DEBUG = REPO / "recipes/configs/vision/debug.yaml"


def build(name: str, *overrides: str, seed: int = 0):
    cfg = load_config(VisionConfig, DEBUG, [f"pretext.name={name}", "evaluation.enabled=false", *overrides])
    inputs = _inputs(tuple(overrides))
    torch.manual_seed(seed)
    return build_vision_objective(cfg, inputs)


_CACHE: dict = {}


def _inputs(overrides: tuple[str, ...]):
    key = tuple(o for o in overrides if o.startswith("data."))
    if key not in _CACHE:
        cfg = load_config(VisionConfig, DEBUG, ["evaluation.enabled=false", *key])
        _CACHE[key] = load_vision_inputs(cfg)
    return _CACHE[key]


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    return load_image_set("mnist", "test", max_samples=64).images  # uint8 [64, 1, 28, 28]


def _run(objective, pixel_values: torch.Tensor, seed: int = 1, world: int = 1, rank: int = 0):
    """(summed loss = loss * num_items, num_items, {param: grad of the summed loss}) of one forward."""
    objective.dist = DistContext(rank, world) if world > 1 else LOCAL
    objective.rng.manual_seed(seed)
    torch.manual_seed(seed)
    objective.zero_grad(set_to_none=True)
    out = objective({"pixel_values": pixel_values})
    total = out.loss * out.num_items
    total.backward()
    grads = {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}
    return float(total.detach()), float(out.num_items), grads


# ------------------------------------------------------------------------------ per-example draws / processes


@pytest.mark.parametrize("name", [p for p in PRETEXTS if p != "simclr"])
def test_two_processes_with_half_batches_equal_one_process(name, pixels):
    """Eval mode, so batch norm uses running statistics and every image's loss is its own (MoCo: no queue
    update; a ViT, since its keys are always batch-normalised in groups). The per-example draws then give the
    same summed loss and gradients for any split."""
    objective = build(name, *(["model.arch=vit"] if name == "moco" else []))
    objective.eval()
    x = pixels[:8]
    single = _run(objective, x)
    halves = [_run(objective, x[4 * r:4 * r + 4], world=2, rank=r) for r in range(2)]
    assert halves[0][1] + halves[1][1] == single[1]
    assert halves[0][0] + halves[1][0] == pytest.approx(single[0], rel=1e-5, abs=1e-5)
    assert single[2].keys() == halves[0][2].keys()
    for key, grad in single[2].items():
        torch.testing.assert_close(halves[0][2][key] + halves[1][2][key], grad, rtol=1e-4, atol=1e-5)


def _spawn_worker(rank: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        pixels = load_image_set("mnist", "test", max_samples=64).images[:12]
        for name in ("simclr", "moco"):
            objective = build(name, "model.arch=vit")
            total, items, grads = _run(objective, pixels[6 * rank:6 * rank + 6], world=2, rank=rank)
            for g in grads.values():
                dist.all_reduce(g)  # what DDP does
            summed = DistContext(rank, 2).all_reduce(torch.tensor([total, items]))
            queue_rows = objective.queue.negatives().tolist() if name == "moco" else None
            queue.put((name, rank, summed.tolist(), {k: v.tolist() for k, v in grads.items()}, queue_rows))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_contrastive_objectives_in_two_real_processes_equal_one_process(pixels):
    """Negatives gathered with gradients (SimCLR), keys gathered into the queue (MoCo): two gloo processes
    with 6 images each give the loss, gradients and queue of one process with the 12 (a ViT: no batch norm)."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    # Read before joining: the gradients are larger than a pipe's buffer, so a worker's put waits for the reader.
    workers = mp.spawn(_spawn_worker, args=(free_port(), queue), nprocs=2, join=False)
    results = [queue.get() for _ in range(4)]
    workers.join()
    for name in ("simclr", "moco"):
        objective = build(name, "model.arch=vit")
        total, items, grads = _run(objective, pixels[:12])
        for _, _, (got_total, got_items), got_grads, queue_rows in [r for r in results if r[0] == name]:
            assert got_items == items
            assert got_total == pytest.approx(total, rel=1e-5)
            assert got_grads.keys() == grads.keys()
            for key, grad in grads.items():
                torch.testing.assert_close(torch.tensor(got_grads[key]), grad, rtol=1e-4, atol=1e-6)
            if name == "moco":  # both processes hold the keys of all 12 images, in global order
                torch.testing.assert_close(torch.tensor(queue_rows), objective.queue.negatives(), rtol=1e-5,
                                           atol=1e-6)


# ------------------------------------------------------------------------------------------ the loss falls


def _eval_loss(objective, x: torch.Tensor, metric: str | None = None) -> float:
    """The training loss on ``x`` with fixed draws, in training mode (batch statistics, as optimised), with
    the state a training forward changes (MoCo's queue, batch-norm running statistics) restored."""
    state = copy.deepcopy(objective.state_dict())
    objective.rng.manual_seed(123)
    torch.manual_seed(123)
    with torch.no_grad():
        out = objective({"pixel_values": x})
    objective.load_state_dict(state)
    return float(out.metrics[metric] if metric else out.loss)


@pytest.mark.parametrize("name, steps, lr, metric", [
    ("rotation", 15, 3e-3, None), ("patch_position", 20, 3e-3, None), ("jigsaw", 20, 3e-3, None),
    ("inpainting", 15, 3e-3, "rec"), ("autoencoder", 15, 3e-3, None), ("denoising_autoencoder", 15, 3e-3, None),
    ("vae", 15, 3e-3, None), ("pixelcnn", 15, 1e-2, None), ("simclr", 15, 3e-3, None), ("moco", 40, 3e-3, None)])
def test_each_loss_falls_on_real_images(name, steps, lr, metric, pixels):
    objective = build(name)
    start = copy.deepcopy(objective)
    optimizer = torch.optim.AdamW(objective.parameters(), lr=lr)
    x = pixels[:32]
    for step in range(steps):
        objective.rng.manual_seed(step)
        torch.manual_seed(step)
        out = objective({"pixel_values": x})
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        objective.on_optimizer_step(step + 1, steps)
    if name == "moco":  # the untrained model scored against a full queue of its own keys, as the trained one is
        with torch.no_grad():
            for step in range(start.queue.size // len(x)):
                start.rng.manual_seed(1000 + step)
                start({"pixel_values": x})
    before, after = _eval_loss(start, x, metric), _eval_loss(objective, x, metric)
    assert math.isfinite(after) and after < 0.9 * before, (before, after)


# --------------------------------------------------------------------------------- naive references


def _features(objective, x: torch.Tensor) -> torch.Tensor:
    return encoder_features(objective.model, x, objective.pooling)


def _assert_same_loss_and_grads(objective, x8: torch.Tensor, naive_fn, grad_tolerance: float = 1e-4) -> None:
    """The objective's summed loss and gradients equal ``naive_fn``'s (a loop over examples) with the same
    draws; gradients within ``grad_tolerance`` of their largest entry."""
    total, items, grads = _run(objective, x8)
    objective.zero_grad(set_to_none=True)
    objective.rng.manual_seed(1)
    naive_total, naive_items = naive_fn(objective, objective.pixels(x8))
    naive_total.backward()
    assert naive_items == items
    assert float(naive_total.detach()) == pytest.approx(total, rel=1e-5)
    assert grads.keys() == {n for n, p in objective.named_parameters() if p.grad is not None}
    for name, param in objective.named_parameters():
        if name in grads:
            scale = float(grads[name].abs().max()) + 1e-8
            torch.testing.assert_close(param.grad, grads[name], rtol=0, atol=grad_tolerance * scale, msg=name)


def test_rotation_loss_is_the_mean_over_every_image_and_turn(pixels):
    objective = build("rotation").eval()

    def naive(obj, x):
        total = 0.0
        for i in range(len(x)):
            for k in range(4):
                logits = obj.head(_features(obj, torch.rot90(x[i], k, dims=(-2, -1))[None]))
                total = total + F.cross_entropy(logits, torch.tensor([k]))
        return total, 4 * len(x)

    _assert_same_loss_and_grads(objective, pixels[:6], naive)


def test_patch_position_pairs_the_centre_with_the_labelled_neighbour(pixels):
    from nlp_ssl.data.pretext import sample_patch_pair_geometry

    objective = build("patch_position").eval()
    p = objective.patch

    def naive(obj, x):
        geometry = sample_patch_pair_geometry(len(x), 28, 28, p, obj.gap, obj.jitter, generator=obj.rng)
        total = 0.0
        for i in range(len(x)):
            label = int(geometry.label[i])
            dy, dx = NEIGHBOUR_OFFSETS[label]
            cell = (1 + dy) * 3 + (1 + dx)
            top, left = geometry.top[i], geometry.left[i]
            centre = x[i, :, top[4]:top[4] + p, left[4]:left[4] + p]
            other = x[i, :, top[cell]:top[cell] + p, left[cell]:left[cell] + p]
            features = torch.cat([_features(obj, centre[None]), _features(obj, other[None])], dim=1)
            total = total + F.cross_entropy(obj.head(features), torch.tensor([label]))
        return total, len(x)

    _assert_same_loss_and_grads(objective, pixels[:6], naive)


def test_jigsaw_feeds_the_tiles_in_permuted_order(pixels):
    from nlp_ssl.data.pretext import sample_jigsaw

    # float64: per-tile normalisation divides nearly flat tiles (MNIST's black background) by a tiny deviation,
    # which turns float32 rounding into visible gradient differences between any two summation orders.
    objective = build("jigsaw").eval().double()
    t = objective.tile

    def naive(obj, x):
        draw = sample_jigsaw(len(x), 28, 28, obj.perms.shape[0], 3, t, obj.gap, obj.jitter, generator=obj.rng)
        total = 0.0
        for i in range(len(x)):
            label = int(draw.label[i])
            tiles = []
            for cell in obj.perms[label].tolist():  # slot s shows grid cell perms[label, s]
                tile = x[i, :, draw.top[i, cell]:draw.top[i, cell] + t, draw.left[i, cell]:draw.left[i, cell] + t]
                tiles.append((tile - tile.mean()) / (tile.std() + 1e-5))
            features = _features(obj, torch.stack(tiles)).reshape(1, -1)
            total = total + F.cross_entropy(obj.head(features), torch.tensor([label]))
        return total, len(x)

    _assert_same_loss_and_grads(objective, pixels[:4], naive)


def test_inpainting_joint_loss_and_its_split_gradients(pixels):
    """lambda_rec * rec + lambda_adv * L_G + L_D per image; L_G reaches only the generator and L_D only the
    discriminator, so each network gets the gradient of its own objective."""
    from nlp_ssl.data.pretext import inpainting_mask

    objective = build("inpainting", "pretext.inpainting.lambda_adv=0.1", "pretext.inpainting.lambda_rec=0.9")
    gen, disc = objective.model, objective.discriminator

    def naive(obj, x):
        masks = inpainting_mask(x.shape, obj.mask_kind, fraction=obj.fraction, generator=obj.rng)
        total = 0.0
        for i in range(len(x)):
            xi, mi = x[i:i + 1], masks[i:i + 1]
            pred = gen(xi.masked_fill(mi, 0.0))
            near = F.max_pool2d(mi.float(), 2 * obj.overlap + 1, 1, obj.overlap)
            weight = mi.float() + obj.overlap_weight * (near - mi.float())
            rec = (weight * (pred - xi).square()).sum() / near.sum()
            composite = torch.where(mi, pred, xi)
            # The generator's loss through a frozen copy of the critic; the critic's on a detached composite.
            frozen = copy.deepcopy(disc).requires_grad_(False)
            scored = frozen(composite)
            g = F.binary_cross_entropy_with_logits(scored, torch.ones_like(scored))
            real, fake = disc(xi), disc(composite.detach())
            d = 0.5 * (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                       + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
            total = total + obj.lambda_rec * rec + obj.lambda_adv * g + d
        return total, len(x)

    _assert_same_loss_and_grads(objective, pixels[:4], naive)
    optimizer = objective.configure_optimizer(load_config(VisionConfig, DEBUG))
    groups = optimizer.param_groups
    assert {id(p) for p in groups[-1]["params"]} == {id(p) for p in disc.parameters()}
    assert groups[-1]["betas"] == (0.5, 0.999)


def test_autoencoders_reconstruct_the_clean_image(pixels):
    from nlp_ssl.models.generative import corrupt

    for name in ("autoencoder", "denoising_autoencoder"):
        objective = build(name)

        def naive(obj, x):
            noisy = corrupt(x, obj.corruption, obj.level, obj.rng) if name != "autoencoder" else x
            total = 0.0
            for i in range(len(x)):
                logits = obj.model(noisy[i:i + 1])
                total = total + F.binary_cross_entropy_with_logits(logits, x[i:i + 1])
            return total, len(x)

        _assert_same_loss_and_grads(objective, pixels[:5], naive)


def test_vae_loss_is_the_per_image_negative_elbo(pixels):
    objective = build("vae", "pretext.vae.beta=3.0")
    latent = objective.model.config["latent_dim"]

    def naive(obj, x):
        eps = torch.randn(len(x), latent, generator=obj.rng)
        total = 0.0
        for i in range(len(x)):
            mu, logvar = obj.model.encode(x[i:i + 1])
            logits = obj.model.decode(mu + torch.exp(0.5 * logvar) * eps[i:i + 1])
            recon = F.binary_cross_entropy_with_logits(logits, x[i:i + 1], reduction="sum")
            kl = sum(-0.5 * (1 + logvar[0, d] - mu[0, d] ** 2 - logvar[0, d].exp()) for d in range(latent))
            total = total + recon + 3.0 * kl
        return total, len(x)

    _assert_same_loss_and_grads(objective, pixels[:4], naive)


def test_pixelcnn_loss_is_the_mean_pixel_nll(pixels):
    objective = build("pixelcnn")
    x8 = pixels[:2, :, 10:16, 10:16].contiguous()  # 6x6 crops keep the pixel loop short

    def naive(obj, x):
        total = 0.0
        for i in range(len(x)):
            logp = F.log_softmax(obj.model(x[i:i + 1]), dim=1)  # [1, 256, 1, 6, 6]
            nll = -sum(logp[0, int(x[i, 0, r, c]), 0, r, c] for r in range(6) for c in range(6)) / 36
            total = total + nll
        return total, len(x)

    _assert_same_loss_and_grads(objective, x8, naive)
    out = objective({"pixel_values": x8})
    assert float(out.metrics["bits_per_dim"]) == pytest.approx(float(out.loss.detach()) / math.log(2), rel=1e-6)


def test_simclr_and_moco_score_the_two_views_of_each_image(pixels):

    objective = build("simclr").eval()
    x = pixels[:6]
    objective.rng.manual_seed(1)
    view_a, view_b = draw_two_views(objective, objective.unit(x), objective.views)
    assert view_a.shape == (6, 1, 28, 28) and not torch.equal(view_a, view_b)
    objective.rng.manual_seed(1)
    out = objective({"pixel_values": x})
    z_a, z_b = objective.net(view_a), objective.net(view_b)
    assert out.loss.item() == pytest.approx(nt_xent_loss(z_a, z_b, objective.temperature).item(), rel=1e-5)
    assert out.num_items == 12

    moco = build("moco").train()
    for seed in (2, 3):  # the second step scores its queries against the first step's keys
        queued = moco.queue.negatives().clone()
        moco.rng.manual_seed(seed)
        q_view, k_view = draw_two_views(moco, moco.unit(x), moco.views)
        torch.manual_seed(seed)  # the shuffle of the key batch norm's groups
        with torch.no_grad():
            keys = copy.deepcopy(moco).keys(k_view)
            expected = moco_loss(copy.deepcopy(moco.query)(q_view), keys, queued, moco.temperature)
        moco.rng.manual_seed(seed)
        torch.manual_seed(seed)
        out = moco({"pixel_values": x})
        assert float(out.loss) == pytest.approx(float(expected), rel=1e-5)
        torch.testing.assert_close(moco.queue.negatives()[-6:], keys)  # enqueued after the loss
    assert int(moco.queue.filled) == 12 and float(out.loss) > 0
    moco.eval()
    moco({"pixel_values": x})
    assert int(moco.queue.filled) == 12  # evaluation never touches the queue
