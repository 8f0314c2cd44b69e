"""Contrastive losses against naive per-example loops (loss and gradients), the NT-Xent split identity of
data parallelism, and the momentum encoder helpers and feature queue."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nlp_ssl.errors import UserError
from nlp_ssl.eval.alignment_uniformity import alignment_uniformity
from nlp_ssl.models.momentum import FeatureQueue, ema_update_, make_momentum_copy, momentum_schedule
from nlp_ssl.objectives.contrastive_losses import (
    batch_hard_triplet_loss,
    info_nce_loss,
    moco_loss,
    nt_xent_loss,
    siamese_contrastive_loss,
    triplet_loss,
)

TOL = dict(atol=1e-5, rtol=1e-5)


def _leaves(*shapes, seed: int = 0, scale: float = 1.0):
    """Random fp32 leaf tensors that require gradients."""
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(*s, generator=gen)).requires_grad_() for s in shapes]


def _grads(loss: torch.Tensor, inputs) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, inputs))


def _assert_same(value, grads, ref_value, ref_grads) -> None:
    assert torch.allclose(value, ref_value.to(value.dtype), **TOL), (float(value), float(ref_value))
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r.to(g.dtype), **TOL), (g - r).abs().max()


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u @ v) / (u.norm() * v.norm())


# --------------------------------------------------------------------------------------- naive references


def _naive_nt_xent(z_a, z_b, t, all_a=None, all_b=None, offset=0):
    """SimCLR Algorithm 1 written anchor by anchor and candidate by candidate."""
    if all_a is None:
        all_a, all_b = z_a, z_b
    n, m = z_a.shape[0], all_a.shape[0]
    anchors = [z_a[i] for i in range(n)] + [z_b[i] for i in range(n)]
    candidates = [all_a[j] for j in range(m)] + [all_b[j] for j in range(m)]
    total = 0.0
    for k in range(2 * n):
        i, view = k % n, k // n
        own = offset + i + view * m
        positive = offset + i + (1 - view) * m
        scores = [_cos(anchors[k], candidates[j]) / t for j in range(2 * m) if j != own]
        denom = sum(torch.exp(s) for s in scores)
        total = total - torch.log(torch.exp(_cos(anchors[k], candidates[positive]) / t) / denom)
    return total / (2 * n)


def _naive_info_nce(q, p, negatives, t, normalize=True):
    sim = _cos if normalize else (lambda u, v: u @ v)
    total = 0.0
    for i in range(q.shape[0]):
        neg = negatives if negatives.dim() == 2 else negatives[i]
        pos = torch.exp(sim(q[i], p[i]) / t)
        denom = pos + sum(torch.exp(sim(q[i], neg[k]) / t) for k in range(neg.shape[0]))
        total = total - torch.log(pos / denom)
    return total / q.shape[0]


def _naive_triplet(a, p, n, margin):
    terms = [torch.clamp(((a[i] - p[i]) ** 2).sum() - ((a[i] - n[i]) ** 2).sum() + margin, min=0)
             for i in range(a.shape[0])]
    return sum(terms) / len(terms)


def _naive_batch_hard(x, labels, margin):
    terms = []
    for a in range(x.shape[0]):
        d = [((x[a] - x[j]) ** 2).sum() for j in range(x.shape[0])]
        pos = [d[j] for j in range(x.shape[0]) if j != a and labels[j] == labels[a]]
        neg = [d[j] for j in range(x.shape[0]) if labels[j] != labels[a]]
        if pos and neg:
            hardest_pos = max(pos, key=lambda v: v.item())
            hardest_neg = min(neg, key=lambda v: v.item())
            terms.append(torch.clamp(hardest_pos - hardest_neg + margin, min=0))
    return sum(terms) / len(terms), len(terms)


def _naive_siamese(x1, x2, same, margin):
    total = 0.0
    for i in range(x1.shape[0]):
        d = torch.sqrt(((x1[i] - x2[i]) ** 2).sum())
        if same[i]:
            total = total + d ** 2
        else:
            total = total + torch.clamp(margin - d, min=0) ** 2
    return total / x1.shape[0]


# ---------------------------------------------------------------------------------------------- NT-Xent


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_nt_xent_matches_naive_loop(temperature):
    z_a, z_b = _leaves((7, 5), (7, 5), seed=1, scale=3.0)
    loss = nt_xent_loss(z_a, z_b, temperature)
    ref = _naive_nt_xent(z_a.double(), z_b.double(), temperature)
    _assert_same(loss, _grads(loss, [z_a, z_b]), ref, _grads(ref, [z_a, z_b]))


def test_nt_xent_with_gathered_views_matches_naive_loop():
    all_a, all_b = _leaves((9, 4), (9, 4), seed=2)
    z_a, z_b = all_a[3:6], all_b[3:6]
    loss = nt_xent_loss(z_a, z_b, 0.2, all_a=all_a, all_b=all_b, offset=3)
    ref = _naive_nt_xent(z_a.double(), z_b.double(), 0.2, all_a.double(), all_b.double(), offset=3)
    _assert_same(loss, _grads(loss, [all_a, all_b]), ref, _grads(ref, [all_a, all_b]))


@pytest.mark.parametrize("split", [(4, 4), (3, 5), (1, 7)])
def test_nt_xent_split_over_processes_equals_global_batch(split):
    """What each of 2 processes computes, weighted by its 2N anchors, sums to the global loss times 2M."""
    all_a, all_b = _leaves((8, 6), (8, 6), seed=3)
    m = all_a.shape[0]
    global_loss = nt_xent_loss(all_a, all_b, 0.1) * (2 * m)
    summed, offset = 0.0, 0
    for n in split:  # the two "processes", each with its own slice of the batch and the gathered views
        local = nt_xent_loss(all_a[offset:offset + n], all_b[offset:offset + n], 0.1,
                             all_a=all_a, all_b=all_b, offset=offset)
        summed = summed + local * (2 * n)
        offset += n
    _assert_same(summed, _grads(summed, [all_a, all_b]), global_loss, _grads(global_loss, [all_a, all_b]))


def test_nt_xent_is_stable_and_fp32_for_half_inputs():
    z_a, z_b = _leaves((6, 8), (6, 8), seed=4, scale=100.0)
    loss = nt_xent_loss(z_a, z_b, 1e-3)  # logits up to 1000: naive exp() would overflow
    grads = _grads(loss, [z_a, z_b])
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)
    same = nt_xent_loss(z_a, z_a, 0.1)  # identical views: positives tie with the (masked) self-similarity
    assert torch.isfinite(same)

    half_a, half_b = z_a.detach().half(), z_b.detach().half()
    out = nt_xent_loss(half_a, half_b, 0.5)
    assert out.dtype == torch.float32
    assert torch.allclose(out, nt_xent_loss(half_a.float(), half_b.float(), 0.5), **TOL)


def test_nt_xent_rejects_bad_arguments():
    z_a, z_b = _leaves((4, 3), (4, 3))
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(UserError, match="temperature"):
            nt_xent_loss(z_a, z_b, bad)
    with pytest.raises(UserError, match="same"):
        nt_xent_loss(z_a, z_b[:3], 0.1)
    with pytest.raises(UserError, match="both"):
        nt_xent_loss(z_a, z_b, 0.1, all_a=z_a)
    with pytest.raises(UserError, match="offset"):
        nt_xent_loss(z_a, z_b, 0.1, all_a=z_a, all_b=z_b, offset=1)
    with pytest.raises(UserError, match="offset"):
        nt_xent_loss(z_a, z_b, 0.1, offset=2)


# ------------------------------------------------------------------------------------------ InfoNCE, MoCo


@pytest.mark.parametrize("per_query", [False, True])
@pytest.mark.parametrize("normalize", [True, False])
def test_info_nce_matches_naive_loop(per_query, normalize):
    n, k, d = 5, 4, 6
    q, p, neg = _leaves((n, d), (n, d), (n, k, d) if per_query else (k, d), seed=5)
    t = 0.2 if normalize else 2.0
    loss = info_nce_loss(q, p, neg, t, normalize=normalize)
    ref = _naive_info_nce(q.double(), p.double(), neg.double(), t, normalize)
    _assert_same(loss, _grads(loss, [q, p, neg]), ref, _grads(ref, [q, p, neg]))


def test_info_nce_without_negatives_is_zero_and_rejects_bad_shapes():
    q, p = _leaves((3, 4), (3, 4))
    assert float(info_nce_loss(q, p, torch.zeros(0, 4), 0.1).detach()) == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(UserError, match="negatives"):
        info_nce_loss(q, p, torch.zeros(5, 3), 0.1)
    with pytest.raises(UserError, match="negatives"):
        info_nce_loss(q, p, torch.zeros(2, 5, 4), 0.1)
    with pytest.raises(UserError, match="temperature"):
        info_nce_loss(q, p, torch.zeros(5, 4), 0.0)


def test_moco_loss_matches_info_nce_and_never_reaches_the_key():
    q, key, queue = _leaves((6, 8), (6, 8), (16, 8), seed=6)
    loss = moco_loss(q, key, queue, 0.07)
    ref = _naive_info_nce(q.double(), key.double(), queue.double(), 0.07)
    grad_q, grad_key, grad_queue = torch.autograd.grad(loss, [q, key, queue], allow_unused=True)
    assert grad_key is None and grad_queue is None
    assert torch.allclose(loss, ref.float(), **TOL)
    assert torch.allclose(grad_q, _grads(ref, [q])[0].float(), **TOL)
    # an encoder producing the key receives nothing either
    encoder = nn.Linear(8, 8)
    moco_loss(q, encoder(key.detach()), queue, 0.07).backward()
    assert encoder.weight.grad is None


# ---------------------------------------------------------------------------------------- metric losses


def test_triplet_matches_naive_loop():
    a, p, n = _leaves((9, 4), (9, 4), (9, 4), seed=7)
    loss = triplet_loss(a, p, n, margin=1.0)
    ref = _naive_triplet(a.double(), p.double(), n.double(), 1.0)
    assert 0 < float(ref.detach())
    _assert_same(loss, _grads(loss, [a, p, n]), ref, _grads(ref, [a, p, n]))


def test_batch_hard_matches_naive_loop():
    (x,) = _leaves((12, 5), seed=8)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 1])  # classes 2 and 4 have no positive
    loss, count = batch_hard_triplet_loss(x, labels, margin=2.0)
    ref, ref_count = _naive_batch_hard(x.double(), labels.tolist(), 2.0)
    assert int(count) == ref_count == 10
    _assert_same(loss, _grads(loss, [x]), ref, _grads(ref, [x]))


def test_batch_hard_picks_farthest_positive_and_closest_negative_by_hand():
    # 1-D points: class 0 at 0, 2, 5; class 1 at 3, 9; class 2 alone at 20 (no positive: skipped).
    x = torch.tensor([[0.0], [2.0], [5.0], [3.0], [9.0], [20.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 2])
    loss, count = batch_hard_triplet_loss(x, labels, margin=1.0)
    # (anchor, hardest positive, hardest negative) worked out on paper from the squared distances
    chosen = [(0, 2, 3), (1, 2, 3), (2, 0, 3), (3, 4, 1), (4, 3, 2)]
    terms = [25 - 9 + 1, 9 - 1 + 1, 25 - 4 + 1, 36 - 1 + 1, 36 - 16 + 1]
    assert int(count) == 5
    assert float(loss.detach()) == pytest.approx(sum(terms) / 5)
    a, p, n = (torch.tensor(idx) for idx in zip(*chosen))
    explicit = triplet_loss(x[a], x[p], x[n], margin=1.0)
    assert torch.allclose(_grads(loss, [x])[0], _grads(explicit, [x])[0])


def test_batch_hard_without_any_valid_anchor_is_zero_with_a_gradient():
    (x,) = _leaves((4, 3))
    loss, count = batch_hard_triplet_loss(x, torch.zeros(4, dtype=torch.long), margin=1.0)  # no negatives
    (grad,) = _grads(loss, [x])
    assert int(count) == 0 and float(loss.detach()) == 0.0 and torch.equal(grad, torch.zeros_like(x))


def test_siamese_matches_naive_loop_and_is_finite_at_zero_distance():
    x1, x2 = _leaves((10, 3), (10, 3), seed=9)
    same = torch.tensor([1, 0, 1, 0, 0, 1, 0, 1, 0, 0])
    loss = siamese_contrastive_loss(x1, x2, same, margin=2.5)
    ref = _naive_siamese(x1.double(), x2.double(), same.tolist(), 2.5)
    _assert_same(loss, _grads(loss, [x1, x2]), ref, _grads(ref, [x1, x2]))
    # a dissimilar pair at distance 0 gets the full margin^2 penalty and a finite (zero) gradient
    y = torch.ones(2, 3, requires_grad=True)
    out = siamese_contrastive_loss(y, y.detach().clone(), torch.tensor([False, False]), margin=1.5)
    assert float(out.detach()) == pytest.approx(1.5 ** 2)
    assert torch.isfinite(_grads(out, [y])[0]).all()


def test_margins_are_validated():
    a, p, n = _leaves((3, 2), (3, 2), (3, 2))
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(UserError, match="margin"):
            triplet_loss(a, p, n, bad)
        with pytest.raises(UserError, match="margin"):
            batch_hard_triplet_loss(a, torch.tensor([0, 0, 1]), bad)
    with pytest.raises(UserError, match="margin"):
        siamese_contrastive_loss(a, p, torch.ones(3), 0.0)
    with pytest.raises(UserError, match="labels"):
        batch_hard_triplet_loss(a, torch.tensor([0, 1]), 1.0)


# --------------------------------------------------------------------------------- alignment, uniformity


def test_alignment_uniformity_matches_naive_loop():
    z_a, z_b = (t.detach() for t in _leaves((7, 4), (7, 4), seed=10))
    alignment, uniformity = alignment_uniformity(z_a, z_b, t=2.0)
    a, b = F.normalize(z_a.double(), dim=1), F.normalize(z_b.double(), dim=1)
    ref_align = sum(float(((a[i] - b[i]) ** 2).sum()) for i in range(7)) / 7

    def ref_unif(x):
        pairs = [math.exp(-2.0 * float(((x[i] - x[j]) ** 2).sum())) for i in range(7) for j in range(i + 1, 7)]
        return math.log(sum(pairs) / len(pairs))

    assert alignment == pytest.approx(ref_align, abs=1e-5)
    assert uniformity == pytest.approx((ref_unif(a) + ref_unif(b)) / 2, abs=1e-5)
    assert alignment_uniformity(z_a, 3 * z_a)[0] == pytest.approx(0.0, abs=1e-6)  # same directions
    with pytest.raises(UserError):
        alignment_uniformity(z_a[:1], z_b[:1])


# ------------------------------------------------------------------------------- momentum encoder, queue


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.Linear(5, 3))


def test_make_momentum_copy_is_frozen_equal_and_independent():
    online = _net()
    target = make_momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for t, o in zip(target.state_dict().values(), online.state_dict().values()):
        assert torch.equal(t, o) and t.data_ptr() != o.data_ptr()


def test_ema_update_matches_the_formula_and_copies_buffers():
    online = _net()
    target = make_momentum_copy(online)
    with torch.no_grad():
        for p in target.parameters():
            p.normal_()
    online.train()(torch.randn(8, 4))  # moves the batch-norm running statistics and counter
    before = [p.clone() for p in target.parameters()]
    ema_update_(target, online, momentum=0.9)
    for t, b, o in zip(target.parameters(), before, online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o, atol=1e-6)
    for name, buf in online.named_buffers():
        assert torch.equal(dict(target.named_buffers())[name], buf), name
    ema_update_(target, online, momentum=0.0)
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))
    with pytest.raises(UserError, match="momentum"):
        ema_update_(target, online, momentum=1.5)
    with pytest.raises(ValueError):
        ema_update_(target, nn.Linear(4, 5), momentum=0.9)


def test_momentum_schedule_endpoints_and_shape():
    assert momentum_schedule(0, 100, 0.996) == pytest.approx(0.996)
    assert momentum_schedule(100, 100, 0.996) == pytest.approx(1.0)
    assert momentum_schedule(250, 100, 0.996) == pytest.approx(1.0)
    assert momentum_schedule(50, 100, 0.99, final=0.999) == pytest.approx((0.99 + 0.999) / 2)
    values = [momentum_schedule(k, 100, 0.9) for k in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    with pytest.raises(UserError):
        momentum_schedule(0, 0, 0.99)
    with pytest.raises(UserError):
        momentum_schedule(0, 10, -0.1)


def _keys(first: int, count: int) -> torch.Tensor:
    """Keys whose first feature is their arrival number, so the queue's content can be read off."""
    ids = torch.arange(first, first + count, dtype=torch.float32)
    return torch.stack([ids, -ids], dim=1)


def test_feature_queue_fifo_with_wrap_around():
    queue = FeatureQueue(size=5, dim=2)
    assert queue.negatives().shape == (0, 2)
    arrived = 0
    for batch in (3, 3, 3, 1, 4):  # 3 does not divide 5: every write after the first wraps somewhere
        queue.enqueue(_keys(arrived, batch))
        arrived += batch
        held = sorted(queue.negatives()[:, 0].tolist())
        assert held == list(range(max(arrived - 5, 0), arrived))  # exactly the newest min(arrived, 5)
        assert int(queue.pointer) == arrived % 5
    # storage after 14 keys: row r holds the key that arrived last among those with number = r (mod 5)
    assert queue.queue[:, 0].tolist() == [10.0, 11.0, 12.0, 13.0, 9.0]


def test_feature_queue_batch_larger_than_queue_keeps_the_newest():
    queue = FeatureQueue(size=4, dim=2)
    queue.enqueue(_keys(0, 2))
    queue.enqueue(_keys(2, 7))  # keys 2..8: only 5..8 survive
    assert sorted(queue.negatives()[:, 0].tolist()) == [5.0, 6.0, 7.0, 8.0]
    assert int(queue.pointer) == 9 % 4 and int(queue.filled) == 4
    queue.enqueue(_keys(9, 1))  # the next write replaces the oldest (5)
    assert sorted(queue.negatives()[:, 0].tolist()) == [6.0, 7.0, 8.0, 9.0]


def test_feature_queue_state_dict_round_trip_and_validation():
    queue = FeatureQueue(size=6, dim=2)
    queue.enqueue(_keys(0, 4).requires_grad_())
    assert not queue.queue.requires_grad
    state = queue.state_dict()
    assert set(state) == {"queue", "pointer", "filled"}
    restored = FeatureQueue(size=6, dim=2)
    restored.load_state_dict(state)
    assert torch.equal(restored.negatives(), queue.negatives())
    for q in (queue, restored):  # both continue identically
        q.enqueue(_keys(4, 5))
    assert torch.equal(restored.queue, queue.queue) and int(restored.pointer) == int(queue.pointer) == 3
    with pytest.raises(UserError, match="size"):
        FeatureQueue(size=0, dim=2)
    with pytest.raises(UserError, match="keys"):
        queue.enqueue(torch.zeros(3, 5))
