"""Skip-gram and CBOW negative-sampling losses with their closed-form gradients, as pure functions.

The losses are those of Mikolov et al. 2013 ("Distributed Representations of Words and Phrases and their
Compositionality"): for an input vector ``u`` and a target (output) vector ``v``,

    loss = -log sigma(u . v) - sum over negatives n of log sigma(-u . n).

Orientation follows word2vec.c and gensim: in skip-gram the *context* word's input vector predicts the
*centre* word's output vector (and the negatives); in CBOW the mean of the context input vectors predicts
the centre.

Layout ("band"): the kept tokens of one training step form a stream of ``N`` positions. ``u_pad`` and
``v_pad`` hold the input and output vectors of positions ``-W .. N+W-1`` (``W`` zero rows at each end), and
``mask[i, j]`` says whether position ``i + j - W`` is a context of centre ``i``
(:func:`nlp_ssl.data.word2vec_data.window_mask`). Every (centre, context) pair is then an entry of an
``(N, 2W+1)`` band, and the per-pair dot products are a few strided passes over the stream instead of
gathers per pair.

Negatives are shared (Ji et al. 2016, "Parallelizing Word2Vec in Shared and Distributed Memory";
BlazingText, Gupta & Khare 2017): the rows that own the negative term (skip-gram: each input token with
all its pairs; CBOW: each centre) are cut into groups of ``g`` consecutive positions, and each group
shares ``K`` negatives drawn from the noise distribution, so the negative term of a group is one small
matrix product. Each of the ``K`` negatives gets weight ``negative / K``, which keeps the expected loss of
word2vec with ``negative`` negatives per pair while every pair sees ``K`` distinct negatives.

Each function returns the summed loss, the gradient rows and a Gauss-Newton curvature per row (for the
damped row update of :class:`nlp_ssl.objectives.word2vec.RowSGD`); the gradients are checked against
autograd on a naive per-pair implementation in ``tests/test_word2vec_losses.py``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class NegSamplingOutput(NamedTuple):
    """What one step of a negative-sampling loss produces (``N`` positions, ``G`` groups of ``g``, ``d`` dims).

    Attributes:
        loss: scalar, the loss summed over all pairs (skip-gram) or centres (CBOW).
        items: scalar, the number of pairs (skip-gram) or of centres with at least one context (CBOW).
        grad_in: ``(N, d)`` gradient for the input vector of each position (``u_pad[W:W+N]``).
        grad_out: ``(N, d)`` gradient for the output vector of each position (``v``).
        grad_neg: ``(G, K, d)`` gradient for each group's negative output vectors.
        curv_in, curv_out, curv_neg: ``(N,)``, ``(N,)``, ``(G, K)`` Gauss-Newton curvature of the loss for
            the same rows: the sum over the row's terms of ``sigma'(s) * |partner|^2`` (the trace of the
            row's Hessian block without the second-order part).
    """

    loss: torch.Tensor
    items: torch.Tensor
    grad_in: torch.Tensor
    grad_out: torch.Tensor
    grad_neg: torch.Tensor
    curv_in: torch.Tensor
    curv_out: torch.Tensor
    curv_neg: torch.Tensor


# ------------------------------------------------------------------------------------------ band helpers


def pad_rows(x: torch.Tensor, window: int) -> torch.Tensor:
    """``x`` with ``window`` zero rows before and after (``(N, ...)`` -> ``(N + 2W, ...)``)."""
    return F.pad(x, (0, 0) * (x.dim() - 1) + (window, window))


def _band_positions(n: int, window: int, device: torch.device) -> torch.Tensor:
    """``(N, 2W+1)`` int64 row indices ``i + j`` into a padded stream: the band's columns."""
    return torch.arange(n, device=device)[:, None] + torch.arange(2 * window + 1, device=device)[None, :]


def band_dot(a: torch.Tensor, b_pad: torch.Tensor, window: int) -> torch.Tensor:
    """``out[i, j] = a[i] . b_pad[i + j]``: ``a`` ``(N, d)``, ``b_pad`` ``(N + 2W, d)`` -> ``(N, 2W+1)``.

    A sampled dense-dense product (``torch.sparse.sampled_addmm``) on the band's sparsity pattern: only the
    ``N (2W+1)`` needed dot products are computed, in one parallel kernel, without copying the rows.
    """
    n = a.shape[0]
    width = 2 * window + 1
    if n == 0:
        return a.new_zeros((0, width))
    cols = _band_positions(n, window, a.device).reshape(-1)
    crow = torch.arange(0, n * width + 1, width, device=a.device)
    pattern = torch.sparse_csr_tensor(crow, cols, a.new_zeros(n * width), size=(n, b_pad.shape[0]))
    return torch.sparse.sampled_addmm(pattern, a, b_pad.T, beta=0.0).values().view(n, width)


def band_mix(coef: torch.Tensor, b_pad: torch.Tensor, window: int) -> torch.Tensor:
    """``out[i] = sum_j coef[i, j] * b_pad[i + j]``: ``coef`` ``(N, 2W+1)``, ``b_pad`` ``(N + 2W, d)`` -> ``(N, d)``.

    An ``embedding_bag`` with per-sample weights over the padded stream (one fused gather-and-sum kernel);
    ``b_pad`` may also be 1-D (``(N + 2W,)``), giving ``(N,)``.
    """
    n = coef.shape[0]
    if b_pad.dim() == 1:
        return (coef * b_pad.unfold(0, 2 * window + 1, 1)).sum(1)
    if n == 0:
        return b_pad.new_zeros((0, b_pad.shape[1]))
    positions = _band_positions(n, window, coef.device)
    return F.embedding_bag(positions, b_pad, per_sample_weights=coef.contiguous(), mode="sum")


def band_transpose(coef: torch.Tensor, window: int) -> torch.Tensor:
    """Re-index a band from centres to contexts.

    ``coef[i, j]`` belongs to the pair (centre ``i``, context ``t = i + j - W``). The result ``out[t, k]``
    holds the pair (centre ``t + k - W``, context ``t``), i.e. ``out[t, k] = coef[t + k - W, 2W - k]``
    (zero outside the stream), so ``band_mix(out, pad_rows(v))`` sums over the centres of each context.
    """
    width = 2 * window + 1
    n = coef.shape[0]
    padded = pad_rows(coef, window).contiguous()  # (N + 2W, 2W+1)
    # out[t, k] = padded[t + k, 2W - k] sits at flat offset (t + k) * width + (width - 1 - k)
    # = t * width + k * (width - 1) + (width - 1): one strided view, one copy.
    return padded.as_strided((n, width), (width, width - 1), padded.storage_offset() + width - 1).contiguous()


# ------------------------------------------------------------------------------------- shared negatives


LIPSCHITZ = 0.25  # sup of sigma'(s) = sigma(s) (1 - sigma(s))


def _curvature(sig: torch.Tensor, floor: float) -> torch.Tensor:
    """``max(sigma'(s), floor)``; with ``floor >= 1/4`` it is the constant 1/4 (the Lipschitz bound)."""
    hess = sig * (1.0 - sig)
    return hess.clamp(min=floor) if floor > 0 else hess


def _negative_term(inputs: torch.Tensor, weight: torch.Tensor, neg: torch.Tensor, inputs_sq: torch.Tensor,
                   floor: float, add_to: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sum_r weight[r] * sum_k -log sigma(-inputs[r] . neg[group(r), k])`` and its gradients.

    Args:
        inputs: ``(G * g, d)`` rows that own the negative term, in group order.
        weight: ``(G * g,)`` weight of each row's negative term (0 for padding rows).
        neg: ``(G, K, d)`` negative output vectors per group.
        inputs_sq: ``(G * g,)`` squared norms of ``inputs`` (for the curvature).
        floor: see :func:`_curvature`.
        add_to: optional contiguous ``(G * g, d)`` gradient that the inputs' gradient is added to, in place
            (fused into the matrix product); it is then also what ``grad_inputs`` returns.

    Returns:
        ``(loss, grad_inputs (G*g, d), grad_neg (G, K, d), curv_inputs (G*g,), curv_neg (G, K))``.
    """
    groups, k, d = neg.shape
    rows = inputs.view(groups, -1, d)  # (G, g, d)
    scores = torch.bmm(rows, neg.transpose(1, 2))  # (G, g, K)
    w = weight.view(groups, -1)
    loss = (F.softplus(scores).sum(-1) * w).sum()  # -log sigma(-s) = softplus(s)
    coef = torch.sigmoid(scores).mul_(w[:, :, None])  # d loss / d score
    if add_to is None:
        grad_inputs = torch.bmm(coef, neg).view(-1, d)
    else:
        grad_inputs = add_to.view(groups, -1, d).baddbmm_(coef, neg).view(-1, d)
    grad_neg = torch.bmm(coef.transpose(1, 2), rows)
    neg_sq = torch.linalg.vector_norm(neg, dim=-1).square()  # (G, K)
    in_sq = inputs_sq.view(groups, -1)
    if floor >= LIPSCHITZ:
        # Constant sigma' bound: the sums over K and over the group factor out (no (G, g, K) work).
        curv_inputs = (LIPSCHITZ * w * neg_sq.sum(-1, keepdim=True)).reshape(-1)
        curv_neg = (LIPSCHITZ * (w * in_sq).sum(1, keepdim=True)).expand(groups, k)
    else:
        hess = _curvature(torch.sigmoid(scores), floor) * w[:, :, None]  # sigma'(s), weighted
        curv_inputs = (hess * neg_sq[:, None, :]).sum(-1).reshape(-1)
        curv_neg = (hess * in_sq[:, :, None]).sum(1)
    return loss, grad_inputs, grad_neg, curv_inputs, curv_neg


def _grouped(x: torch.Tensor, total: int) -> torch.Tensor:
    """Zero-pad the first dimension of ``x`` to ``total`` rows (the groups' padding)."""
    extra = total - x.shape[0]
    if extra == 0:
        return x
    return torch.cat([x, x.new_zeros((extra,) + tuple(x.shape[1:]))])


# ------------------------------------------------------------------------------------------------ losses


def skipgram_ns(u_pad: torch.Tensor, v_pad: torch.Tensor, mask: torch.Tensor, neg: torch.Tensor,
                window: int, negative: float, curvature_floor: float = 0.0) -> NegSamplingOutput:
    """Skip-gram with negative sampling over one stream (Mikolov et al. 2013).

    For every pair (centre ``i``, context ``t``) in ``mask``:
    ``-log sigma(u_t . v_i) - (negative / K) * sum_k log sigma(-u_t . n_k)``, with ``n_k`` the ``K`` negatives
    of the group of ``t``.

    Args:
        u_pad: ``(N + 2W, d)`` input vectors of the stream, ``W`` zero rows at each end.
        v_pad: ``(N + 2W, d)`` output vectors of the stream, padded the same way.
        mask: ``(N, 2W+1)`` float 0/1 band of pairs (:func:`~nlp_ssl.data.word2vec_data.window_mask`).
        neg: ``(G, K, d)`` negative output vectors; group ``r`` serves input positions ``r*g .. r*g+g-1``
            with ``g = ceil(N / G)`` (the last group may be part padding).
        window: ``W``.
        negative: word2vec's number of negatives per pair (the weight of the negative term).
        curvature_floor: lower bound on ``sigma'(s)`` in the curvature outputs (0.25: the Lipschitz bound
            of the logistic loss, independent of the scores).
    """
    n, d = mask.shape[0], v_pad.shape[1]
    groups, k, _ = neg.shape
    u = u_pad[window:window + n]
    v = v_pad[window:window + n]
    scores = band_dot(v, u_pad, window)  # (N, 2W+1): v_i . u_{i+j-W}
    loss_pos = (F.softplus(-scores) * mask).sum()  # -log sigma(s) = softplus(-s)
    sig = torch.sigmoid(scores)
    coef = (sig - 1.0) * mask  # d loss / d score
    grad_out = band_mix(coef, u_pad, window)
    coef_t = band_transpose(coef, window)  # per context
    grad_in = band_mix(coef_t, v_pad, window)

    # Curvature sigma'(s) |partner|^2, summed per row.
    hess = LIPSCHITZ * mask if curvature_floor >= LIPSCHITZ else _curvature(sig, curvature_floor) * mask
    u_sq_pad = torch.linalg.vector_norm(u_pad, dim=-1).square()
    curv_out = band_mix(hess, u_sq_pad, window)
    curv_in = band_mix(band_transpose(hess, window), torch.linalg.vector_norm(v_pad, dim=-1).square(), window)

    pairs_per_input = band_transpose(mask, window).sum(1)  # how many pairs each context takes part in
    total = groups * ((n + groups - 1) // groups) if groups else n
    weight = _grouped(pairs_per_input * (negative / k), total)
    loss_neg, grad_in, grad_neg, c_in, curv_neg = _negative_term(
        _grouped(u, total), weight, neg, _grouped(u_sq_pad[window:window + n], total), curvature_floor,
        add_to=_grouped(grad_in, total))
    return NegSamplingOutput(
        loss=loss_pos + loss_neg, items=mask.sum(), grad_in=grad_in[:n], grad_out=grad_out,
        grad_neg=grad_neg, curv_in=curv_in + c_in[:n], curv_out=curv_out, curv_neg=curv_neg)


def cbow_ns(u_pad: torch.Tensor, v_pad: torch.Tensor, mask: torch.Tensor, neg: torch.Tensor,
            window: int, negative: float, word2vec_context_update: bool = True,
            curvature_floor: float = 0.0) -> NegSamplingOutput:
    """CBOW with negative sampling: the mean of the context input vectors predicts the centre (Mikolov et al. 2013).

    For every centre ``i`` with ``c_i >= 1`` contexts, ``h_i = (1/c_i) sum_t u_t`` and the loss is
    ``-log sigma(h_i . v_i) - (negative / K) * sum_k log sigma(-h_i . n_k)`` (negatives of ``i``'s group).

    ``word2vec_context_update=True`` adds the full gradient of ``h_i`` to every context vector, as
    word2vec.c and gensim do (``cbow_mean=1``); the exact gradient of the mean is ``1/c_i`` of that
    (``False``). Arguments as in :func:`skipgram_ns`; groups run over centre positions.
    """
    n, d = mask.shape[0], v_pad.shape[1]
    groups, k, _ = neg.shape
    v = v_pad[window:window + n]
    counts = mask.sum(1)  # contexts per centre
    has = (counts > 0).to(v.dtype)
    inv = has / counts.clamp(min=1.0)
    h = band_mix(mask * inv[:, None], u_pad, window)  # (N, d) mean context vector
    score = (h * v).sum(-1)
    loss_pos = (F.softplus(-score) * has).sum()
    sig = torch.sigmoid(score)
    g = (sig - 1.0) * has  # d loss / d score
    h_sq = torch.linalg.vector_norm(h, dim=-1).square()
    v_sq = torch.linalg.vector_norm(v, dim=-1).square()

    total = groups * ((n + groups - 1) // groups) if groups else n
    # d loss / d h, written between W zero rows so that the per-context sum below needs no padding copy:
    # the positive term first, the negatives' part is added in place by their matrix product.
    grad_h_pad = v.new_zeros((total + 2 * window, d))
    grad_h = grad_h_pad[window:window + total]
    torch.mul(v, g[:, None], out=grad_h[:n])
    loss_neg, _, grad_neg, c_h, curv_neg = _negative_term(
        _grouped(h, total), _grouped(has * (negative / k), total), neg, _grouped(h_sq, total), curvature_floor,
        add_to=grad_h)
    grad_out = g[:, None] * h
    hess = LIPSCHITZ * has if curvature_floor >= LIPSCHITZ else _curvature(sig, curvature_floor) * has
    curv_out = hess * h_sq
    curv_h = hess * v_sq + c_h[:n]

    # Each context gets grad_h of every centre it serves (times 1/c_i for the exact gradient).
    share = mask if word2vec_context_update else mask * inv[:, None]
    share_t = band_transpose(share, window)
    grad_in = band_mix(share_t, grad_h_pad[:n + 2 * window], window)
    curv_in = band_mix(share_t * share_t, pad_rows(curv_h[:, None], window)[:, 0], window)
    return NegSamplingOutput(
        loss=loss_pos + loss_neg, items=has.sum(), grad_in=grad_in, grad_out=grad_out, grad_neg=grad_neg,
        curv_in=curv_in, curv_out=curv_out, curv_neg=curv_neg)
