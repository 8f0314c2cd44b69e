"""The skip-gram and CBOW losses against naive per-pair references (loss, gradients, curvature)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nlp_ssl.data.word2vec_data import sample_radii, window_mask, window_pairs
from nlp_ssl.objectives.word2vec_losses import (
    band_dot,
    band_mix,
    band_transpose,
    cbow_ns,
    pad_rows,
    skipgram_ns,
)

WINDOW = 3
NEGATIVE = 5.0


def _problem(n: int = 23, d: int = 6, groups: int = 4, k: int = 3, seed: int = 0):
    """A random stream with three sentences, a dynamic-window mask and per-group negatives (float64)."""
    gen = torch.Generator().manual_seed(seed)
    sentence = torch.tensor([0] * 7 + [1] * 1 + [2] * (n - 8))
    torch.manual_seed(seed)
    radius = sample_radii(n, WINDOW)
    mask = window_mask(sentence, radius, WINDOW).double()
    u = torch.randn(n, d, generator=gen, dtype=torch.float64)
    v = torch.randn(n, d, generator=gen, dtype=torch.float64)
    neg = torch.randn(groups, k, d, generator=gen, dtype=torch.float64)
    return u, v, mask, neg


def _group_of(position: int, n: int, groups: int) -> int:
    return position // -(-n // groups)


def _naive_skipgram(u, v, mask, neg, floor: float = 0.0):
    """Loop over pairs; returns loss, pair count, autograd gradients and explicit curvatures."""
    u, v, neg = (t.clone().requires_grad_() for t in (u, v, neg))
    n, groups, k = v.shape[0], neg.shape[0], neg.shape[1]
    loss = torch.zeros((), dtype=torch.float64)
    curv_u, curv_v, curv_n = torch.zeros(n), torch.zeros(n), torch.zeros(groups, k)
    centres, contexts = window_pairs(mask.bool())
    for i, t in zip(centres.tolist(), contexts.tolist()):
        s = u[t] @ v[i]
        loss = loss - F.logsigmoid(s)
        with torch.no_grad():
            h = max(float(torch.sigmoid(s) * (1 - torch.sigmoid(s))), floor)
            curv_u[t] += float(h * (v[i] @ v[i]))
            curv_v[i] += float(h * (u[t] @ u[t]))
        r = _group_of(t, n, groups)
        for j in range(k):
            sn = u[t] @ neg[r, j]
            loss = loss - NEGATIVE / k * F.logsigmoid(-sn)
            with torch.no_grad():
                hn = NEGATIVE / k * max(float(torch.sigmoid(sn) * (1 - torch.sigmoid(sn))), floor)
                curv_u[t] += float(hn * (neg[r, j] @ neg[r, j]))
                curv_n[r, j] += float(hn * (u[t] @ u[t]))
    loss.backward()
    return loss.detach(), len(centres), u.grad, v.grad, neg.grad, curv_u, curv_v, curv_n


def _naive_cbow(u, v, mask, neg, word2vec_update: bool):
    u, v, neg = (t.clone().requires_grad_() for t in (u, v, neg))
    n, groups, k = v.shape[0], neg.shape[0], neg.shape[1]
    centres, contexts = window_pairs(mask.bool())
    loss = torch.zeros((), dtype=torch.float64)
    hs, n_items = {}, 0
    for i in range(n):
        ctx = contexts[centres == i]
        if len(ctx) == 0:
            continue
        n_items += 1
        h = u[ctx].mean(0)
        h.retain_grad()
        hs[i] = (h, ctx)
        r = _group_of(i, n, groups)
        loss = loss - F.logsigmoid(h @ v[i]) - NEGATIVE / k * F.logsigmoid(-(neg[r] @ h)).sum()
    loss.backward()
    grad_u = u.grad.clone()
    if word2vec_update:  # word2vec.c: dL/dh is added to every context vector, not divided by the count
        grad_u = torch.zeros_like(grad_u)
        for h, ctx in hs.values():
            grad_u[ctx] += h.grad
    return loss.detach(), n_items, grad_u, v.grad, neg.grad


def test_band_helpers_match_explicit_indexing():
    n, d = 9, 4
    a, b = torch.randn(n, d), torch.randn(n + 2 * WINDOW, d)
    coef = torch.randn(n, 2 * WINDOW + 1)
    dots = band_dot(a, b, WINDOW)
    mixed = band_mix(coef, b, WINDOW)
    for i in range(n):
        for j in range(2 * WINDOW + 1):
            assert torch.allclose(dots[i, j], a[i] @ b[i + j], atol=1e-5)
        assert torch.allclose(mixed[i], sum(coef[i, j] * b[i + j] for j in range(2 * WINDOW + 1)), atol=1e-5)
    t = band_transpose(coef, WINDOW)
    for ctx in range(n):
        for k in range(2 * WINDOW + 1):
            centre = ctx + k - WINDOW
            expected = coef[centre, 2 * WINDOW - k] if 0 <= centre < n else 0.0
            assert float(t[ctx, k]) == pytest.approx(float(expected))


@pytest.mark.parametrize("groups,floor", [(1, 0.0), (4, 0.0), (23, 0.0), (4, 0.1), (5, 0.25)])
def test_skipgram_matches_naive_per_pair_loss(groups, floor):
    u, v, mask, neg = _problem(groups=groups)
    out = skipgram_ns(pad_rows(u, WINDOW), pad_rows(v, WINDOW), mask, neg, WINDOW, NEGATIVE, curvature_floor=floor)
    loss, pairs, gu, gv, gn, cu, cv, cn = _naive_skipgram(u, v, mask, neg, floor)
    assert int(out.items) == pairs > 0
    assert torch.allclose(out.loss, loss, rtol=1e-10)
    assert torch.allclose(out.grad_in, gu, atol=1e-10)
    assert torch.allclose(out.grad_out, gv, atol=1e-10)
    assert torch.allclose(out.grad_neg, gn, atol=1e-10)
    assert torch.allclose(out.curv_in, cu.double(), atol=1e-6)
    assert torch.allclose(out.curv_out, cv.double(), atol=1e-6)
    assert torch.allclose(out.curv_neg, cn.double(), atol=1e-6)


@pytest.mark.parametrize("word2vec_update", [True, False])
def test_cbow_matches_naive_reference(word2vec_update):
    u, v, mask, neg = _problem(groups=5)
    out = cbow_ns(pad_rows(u, WINDOW), pad_rows(v, WINDOW), mask, neg, WINDOW, NEGATIVE,
                  word2vec_context_update=word2vec_update)
    loss, items, gu, gv, gn = _naive_cbow(u, v, mask, neg, word2vec_update)
    assert int(out.items) == items
    assert torch.allclose(out.loss, loss, rtol=1e-10)
    assert torch.allclose(out.grad_in, gu, atol=1e-10)
    assert torch.allclose(out.grad_out, gv, atol=1e-10)
    assert torch.allclose(out.grad_neg, gn, atol=1e-10)


def test_pairs_never_cross_sentences_and_respect_radius():
    torch.manual_seed(3)
    sentence = torch.repeat_interleave(torch.arange(50), torch.randint(1, 9, (50,)))
    radius = sample_radii(len(sentence), 5)
    mask = window_mask(sentence, radius, 5)
    centre, context = window_pairs(mask)
    assert (sentence[centre] == sentence[context]).all()
    gap = (context - centre).abs()
    assert (gap >= 1).all() and (gap <= radius[centre]).all()
    # every in-sentence neighbour within the radius is a context (nothing else is dropped)
    expected = sum(
        int(((sentence == sentence[i]) & ((torch.arange(len(sentence)) - i).abs() <= radius[i])).sum()) - 1
        for i in range(len(sentence))
    )
    assert len(centre) == expected
