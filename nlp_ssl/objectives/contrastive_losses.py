"""Contrastive and metric-learning losses as pure functions of embeddings (no module state).

Every loss takes projections (not models), works on whole batches at once, computes in at least fp32
(half and bfloat16 inputs are upcast, float64 stays float64) and returns a scalar MEAN over the local
anchors, so an objective can report it with ``num_items`` = the number of anchors.

Masked logits are filled with the most negative finite number of the dtype rather than ``-inf``: the
log-softmax then gives them a probability of exactly 0 with no ``inf - inf`` or ``0 * inf`` on the way.

Each function is checked against an explicit per-example loop (loss and gradients) in
``tests/test_contrastive_losses.py``.
"""

from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError

__all__ = [
    "batch_hard_triplet_loss",
    "cpc_loss",
    "info_nce_loss",
    "moco_loss",
    "nt_xent_loss",
    "siamese_contrastive_loss",
    "supervised_nt_xent_loss",
    "triplet_loss",
]


# ------------------------------------------------------------------------------------------- checks


def _check_temperature(temperature: float) -> None:
    if not (isinstance(temperature, Real) and math.isfinite(temperature) and temperature > 0):
        raise UserError(f"contrastive temperature must be a finite number > 0 (e.g. 0.1), got {temperature!r}")


def _check_margin(margin: float, *, allow_zero: bool) -> None:
    ok = isinstance(margin, Real) and math.isfinite(margin) and (margin >= 0 if allow_zero else margin > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise UserError(f"margin must be a finite number {bound} (e.g. 1.0), got {margin!r}")


def _check_matrix(x: torch.Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"'{name}' must be a non-empty [N, D] tensor, got shape {tuple(x.shape)}")


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    _check_matrix(a, name_a)
    if a.shape != b.shape:
        raise UserError(f"'{name_a}' and '{name_b}' must have the same [N, D] shape, "
                        f"got {tuple(a.shape)} and {tuple(b.shape)}")


def _fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least fp32: half / bfloat16 are upcast (their logsumexp loses too much), float64 is kept."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _mask_value(dtype: torch.dtype) -> float:
    """The most negative finite value: exp() of it (minus any finite max) is 0, with no NaN possible."""
    return torch.finfo(dtype).min


def _pairwise_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` -> ``[B, B]`` squared Euclidean distances ``|x_i|^2 + |x_j|^2 - 2 x_i . x_j``.

    The Gram form is one matrix product (no ``[B, B, D]`` difference tensor); clamping at 0 removes the
    small negative values that cancellation leaves on the diagonal. No square root, so the gradient is
    finite at distance 0.
    """
    sq = x.square().sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp(min=0.0)


# --------------------------------------------------------------------------------------- InfoNCE family


def nt_xent_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    temperature: float,
    *,
    all_a: torch.Tensor | None = None,
    all_b: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross entropy (NT-Xent).

    Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", Algorithm 1. With ``sim(u, v) = u . v / (|u| |v|)``, each of the ``2N`` local
    anchors ``k`` (both views of every local example) is scored against all ``2M`` candidates of the global
    batch except itself; its positive ``p(k)`` is the other view of the same example::

        l(k) = -log( exp(sim(z_k, z_p(k)) / t) / sum_{j != k} exp(sim(z_k, z_j) / t) )
        loss = 1 / (2N) * sum_k l(k)

    Data parallelism: pass the views gathered from every process (with gradients, e.g. through an
    all-gather whose backward sums the gradients) as ``all_a`` / ``all_b`` and the row of this process's
    first example as ``offset``. ``all_a[offset:offset + N]`` must hold the same examples as ``z_a`` (only
    the shapes are checked, to avoid a device sync). Since each anchor's term only depends on the
    candidates, ``loss * 2N`` summed over processes equals the single-process loss over the global batch
    times ``2M``: weight by ``num_items = 2N`` when averaging across processes.

    Args:
        z_a: the first view of the local examples (any scale: normalised inside).
        z_b: the second view, row ``i`` pairs with ``z_a[i]``.
        temperature: ``t > 0``.
        all_a: the first views of the whole global batch (default ``z_a``).
        all_b: the second views of the whole global batch (default ``z_b``).
        offset: row of ``z_a[0]`` inside ``all_a`` (default 0).

    Shape:
        - z_a, z_b: ``[N, D]``
        - all_a, all_b: ``[M, D]`` with ``M >= offset + N``
        - output: scalar (fp32, or fp64 for fp64 inputs)

    Examples:
        >>> z_a, z_b = projector(encoder(view_1)), projector(encoder(view_2))
        >>> loss = nt_xent_loss(z_a, z_b, temperature=0.1)
    """
    _check_temperature(temperature)
    _check_same_shape(z_a, z_b, "z_a", "z_b")
    if (all_a is None) != (all_b is None):
        raise UserError("nt_xent_loss: pass both 'all_a' and 'all_b' (the gathered views) or neither")
    n = z_a.shape[0]
    anchors = F.normalize(_fp32(torch.cat([z_a, z_b])), dim=1)  # [2N, D]
    if all_a is None:
        if offset != 0:
            raise UserError(f"nt_xent_loss: 'offset' only applies with gathered views all_a/all_b, got {offset}")
        m, candidates = n, anchors
    else:
        _check_same_shape(all_a, all_b, "all_a", "all_b")
        m = all_a.shape[0]
        if all_a.shape[1] != z_a.shape[1]:
            raise UserError(f"nt_xent_loss: gathered views have dimension {all_a.shape[1]}, local views {z_a.shape[1]}")
        if not 0 <= offset <= m - n:
            raise UserError(f"nt_xent_loss: offset {offset} + {n} local rows does not fit in {m} gathered rows")
        candidates = F.normalize(_fp32(torch.cat([all_a, all_b])), dim=1)  # [2M, D]

    logits = anchors @ candidates.T / temperature  # [2N, 2M]
    rows = torch.arange(n, device=logits.device) + offset  # global rows of the local examples
    self_col = torch.cat([rows, rows + m])  # anchor k's own column
    positive_col = torch.cat([rows + m, rows])  # the other view of the same example
    logits = logits.scatter(1, self_col[:, None], _mask_value(logits.dtype))
    return F.cross_entropy(logits, positive_col)


def info_nce_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """InfoNCE: cross entropy of each query's positive against its negatives, the positive as class 0.

    van den Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive Coding", eq. 4::

        loss = -1/N sum_i log( exp(s(q_i, p_i) / t) / (exp(s(q_i, p_i) / t) + sum_k exp(s(q_i, n_ik) / t)) )

    with ``s`` the cosine similarity (``normalize=True``) or the raw dot product (``normalize=False``, as
    CPC's bilinear scores ``z^T W c`` once ``W c`` is the query).

    Args:
        query: one row per anchor.
        positive: row ``i`` is the positive of ``query[i]``.
        negatives: shared by every query (``[K, D]``, e.g. the rest of a batch or a queue) or per query
            (``[N, K, D]``). ``K = 0`` is allowed (the loss is then 0).
        temperature: ``t > 0``.
        normalize: compare directions (cosine) rather than dot products.

    Shape:
        - query, positive: ``[N, D]``
        - negatives: ``[K, D]`` or ``[N, K, D]``
        - output: scalar
    """
    _check_temperature(temperature)
    _check_same_shape(query, positive, "query", "positive")
    n, d = query.shape
    if not ((negatives.dim() == 2 and negatives.shape[1] == d)
            or (negatives.dim() == 3 and negatives.shape[0] == n and negatives.shape[2] == d)):
        raise UserError(f"'negatives' must be [K, {d}] or [{n}, K, {d}] for a [{n}, {d}] query, "
                        f"got {tuple(negatives.shape)}")
    q, p, neg = _fp32(query), _fp32(positive), _fp32(negatives)
    if normalize:
        q, p, neg = F.normalize(q, dim=-1), F.normalize(p, dim=-1), F.normalize(neg, dim=-1)
    pos_logit = (q * p).sum(-1, keepdim=True)  # [N, 1]
    neg_logits = q @ neg.T if neg.dim() == 2 else torch.einsum("nd,nkd->nk", q, neg)  # [N, K]
    logits = torch.cat([pos_logit, neg_logits], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=logits.device))


def moco_loss(
    query: torch.Tensor,
    key: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """MoCo's contrastive loss: InfoNCE of each query against its key and a queue of past keys.

    He, Fan, Wu, Xie & Girshick 2019, "Momentum Contrast for Unsupervised Visual Representation
    Learning", eq. 1 and Algorithm 1. The key comes from the momentum encoder and the queue from earlier
    batches, so neither receives a gradient: both are detached here, whatever the caller passes.

    Args:
        query: online-encoder projections of one view.
        key: momentum-encoder projections of the other view (positive of ``query[i]`` is ``key[i]``).
        queue: negatives (:meth:`nlp_ssl.models.momentum.FeatureQueue.negatives`); with several processes,
            the queue must be filled with the keys gathered from all of them.
        temperature: ``t > 0`` (MoCo: 0.07, MoCo v2: 0.2).
        normalize: cosine similarity (MoCo l2-normalises q and k); False uses dot products.

    Shape:
        - query, key: ``[N, D]``
        - queue: ``[K, D]``
        - output: scalar
    """
    if queue.dim() != 2:
        raise UserError(f"moco_loss: 'queue' must be [K, D], got shape {tuple(queue.shape)}")
    return info_nce_loss(query, key.detach(), queue.detach(), temperature, normalize=normalize)


def supervised_nt_xent_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    *,
    all_z: torch.Tensor | None = None,
    all_labels: torch.Tensor | None = None,
    offset: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """NT-Xent with every example of the same label as a positive (supervised contrastive, "L_out").

    Khosla et al. 2020, "Supervised Contrastive Learning", eq. 2. Each local anchor ``i`` is scored against
    every candidate ``j != i`` of the global batch; its positives ``P(i)`` are the candidates with its label::

        l(i) = -1/|P(i)| sum_{p in P(i)} log( exp(sim(z_i, z_p) / t) / sum_{j != i} exp(sim(z_i, z_j) / t) )
        loss = 1/|A| sum_{i in A} l(i)

    with ``sim`` the cosine similarity and ``A`` the anchors that have at least one positive (the others
    add nothing). With exactly one positive per anchor this is SimCLR's NT-Xent (:func:`nt_xent_loss` with
    ``z = cat(z_a, z_b)`` and the example index as the label), so pairs (anchor, positive) use it with a
    label per pair and triplets add each negative under a label of its own.

    Data parallelism: as in :func:`nt_xent_loss`, pass the gathered embeddings and labels as ``all_z`` /
    ``all_labels`` and this process's first row as ``offset``; weight by the returned anchor count.

    Args:
        z: local embeddings (any scale: normalised inside).
        labels: integer label of each local row; rows sharing a label are positives of each other.
        temperature: ``t > 0``.
        all_z, all_labels: the whole global batch (default ``z`` / ``labels``).
        offset: row of ``z[0]`` inside ``all_z``.

    Shape:
        - z: ``[N, D]``; labels: ``[N]``
        - all_z: ``[M, D]``; all_labels: ``[M]``
        - output: ``(loss, num_anchors)``: a scalar mean over ``A`` and a 0-d int64 tensor ``|A|``
    """
    _check_temperature(temperature)
    _check_matrix(z, "z")
    if labels.shape != z.shape[:1]:
        raise UserError(f"'labels' must be [N] = [{z.shape[0]}], got shape {tuple(labels.shape)}")
    if (all_z is None) != (all_labels is None):
        raise UserError("supervised_nt_xent_loss: pass both 'all_z' and 'all_labels' or neither")
    n = z.shape[0]
    anchors = F.normalize(_fp32(z), dim=1)  # [N, D]
    if all_z is None:
        candidates, cand_labels = anchors, labels
    else:
        _check_matrix(all_z, "all_z")
        if all_labels.shape != all_z.shape[:1] or all_z.shape[1] != z.shape[1]:
            raise UserError(f"supervised_nt_xent_loss: all_z {tuple(all_z.shape)} and all_labels "
                            f"{tuple(all_labels.shape)} do not fit the local [{n}, {z.shape[1]}] rows")
        if not 0 <= offset <= all_z.shape[0] - n:
            raise UserError(f"supervised_nt_xent_loss: offset {offset} + {n} rows does not fit in {all_z.shape[0]}")
        candidates, cand_labels = F.normalize(_fp32(all_z), dim=1), all_labels
    logits = anchors @ candidates.T / temperature  # [N, M]
    own = torch.arange(n, device=logits.device) + offset
    is_self = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, own[:, None], True)
    logits = logits.masked_fill(is_self, _mask_value(logits.dtype))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # [N, M]
    positive = (labels[:, None] == cand_labels[None, :]) & ~is_self
    n_pos = positive.sum(1)
    used = n_pos > 0
    # Masked by where(): the -max fill of the self column never reaches the sum, nor its gradient.
    per_anchor = -torch.where(positive, log_prob, 0.0).sum(1) / n_pos.clamp(min=1)
    count = used.sum()
    return torch.where(used, per_anchor, 0.0).sum() / count.clamp(min=1), count


def cpc_loss(
    predictions: torch.Tensor,
    encodings: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
    *,
    all_encodings: torch.Tensor | None = None,
    all_mask: torch.Tensor | None = None,
    offset: int = 0,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrastive predictive coding: InfoNCE of each k-step-ahead prediction against every other position.

    van den Oord, Li & Vinyals 2018, "Representation Learning with Contrastive Predictive Coding",
    eqs. 3-4. ``predictions[b, t, k-1] = W_k c_t`` predicts the encoding ``z_{b, t+k}`` (``k = 1 .. K``).
    Every valid position of every example of the (global) batch is a candidate: the true future encoding is
    the positive, all other candidates are negatives (other positions of the same text and the positions
    of the other texts)::

        f_k(z, c_t) = z . W_k c_t / temperature       (the paper's log-bilinear score; cosine if normalize)
        l(b, t, k) = -log( exp f_k(z_{b,t+k}, c_{b,t}) / sum_{(b',s) valid} exp f_k(z_{b',s}, c_{b,t}) )
        loss = mean over valid (b, t, k): positions t and t + k both real tokens of example b

    Data parallelism: pass the encodings and masks of every process (gathered with gradients, padded to a
    common length) as ``all_encodings`` / ``all_mask`` and this process's first example as ``offset``.

    Args:
        predictions: ``W_k c_t`` for every position and step.
        encodings: the token encodings ``z`` the predictions aim at.
        mask: True at real tokens (the positions that are predicted from and predicted).
        temperature: ``> 0``; the paper's score is a plain dot product (temperature 1).
        all_encodings, all_mask: candidates from the whole global batch (default the local ones).
        offset: index of the local first example in ``all_encodings``.
        normalize: cosine scores instead of dot products.

    Shape:
        - predictions: ``[B, T, K, D]``; encodings: ``[B, T, D]``; mask: ``[B, T]`` bool
        - all_encodings: ``[B', T', D]`` with ``T' >= T``; all_mask: ``[B', T']``
        - output: ``(loss, num_terms)``: the scalar mean and a 0-d int64 tensor (the number of valid terms)
    """
    _check_temperature(temperature)
    if predictions.dim() != 4 or encodings.dim() != 3 or predictions.shape[:2] != encodings.shape[:2] \
            or predictions.shape[3] != encodings.shape[2] or mask.shape != encodings.shape[:2]:
        raise UserError(f"cpc_loss: predictions [B, T, K, D], encodings [B, T, D] and mask [B, T] do not fit: "
                        f"{tuple(predictions.shape)}, {tuple(encodings.shape)}, {tuple(mask.shape)}")
    if (all_encodings is None) != (all_mask is None):
        raise UserError("cpc_loss: pass both 'all_encodings' and 'all_mask' or neither")
    b, t, k_max, _ = predictions.shape
    if all_encodings is None:
        all_encodings, all_mask, offset = encodings, mask, 0
    mask, all_mask = mask.bool(), all_mask.bool()
    t_all = all_encodings.shape[1]
    if t_all < t or not 0 <= offset <= all_encodings.shape[0] - b:
        raise UserError(f"cpc_loss: gathered encodings {tuple(all_encodings.shape)} cannot hold the local "
                        f"[{b}, {t}] rows at offset {offset}")
    # Candidates: every valid position of the global batch, flattened; slot[i] is its row among them.
    flat_mask = all_mask.reshape(-1)
    candidates = _fp32(all_encodings).reshape(-1, all_encodings.shape[2])[flat_mask]  # [M, D]
    slot = torch.cumsum(flat_mask.long(), 0) - 1
    queries, targets = [], []
    rows = torch.arange(b, device=encodings.device)[:, None] + offset
    for k in range(1, min(k_max, t - 1) + 1):  # K is small (a handful of steps): one batched block per step
        valid = mask[:, :-k] & mask[:, k:]  # [B, T-k]
        queries.append(_fp32(predictions[:, :-k, k - 1])[valid])
        future = rows * t_all + torch.arange(k, t, device=encodings.device)[None, :]  # flat index of z_{t+k}
        targets.append(slot[future[valid]])
    q = torch.cat(queries) if queries else candidates.new_zeros(0, candidates.shape[1])
    target = torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long, device=candidates.device)
    count = torch.as_tensor(target.numel(), device=candidates.device)
    if target.numel() == 0:
        return predictions.sum() * 0.0, count
    if normalize:
        q, candidates = F.normalize(q, dim=1), F.normalize(candidates, dim=1)
    logits = q @ candidates.T / temperature  # [Q, M]
    return F.cross_entropy(logits, target), count


# ------------------------------------------------------------------------------------- metric learning


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Triplet loss with squared Euclidean distances.

    Schroff, Kalenichenko & Philbin 2015, "FaceNet: A Unified Embedding for Face Recognition and
    Clustering", eq. 1::

        loss = 1/N sum_i max(0, |a_i - p_i|^2 - |a_i - n_i|^2 + margin)

    Args:
        anchor, positive, negative: row ``i`` of each forms one triplet.
        margin: ``alpha >= 0``.

    Shape:
        - anchor, positive, negative: ``[N, D]``
        - output: scalar
    """
    _check_margin(margin, allow_zero=True)
    _check_same_shape(anchor, positive, "anchor", "positive")
    _check_same_shape(anchor, negative, "anchor", "negative")
    a, p, n = _fp32(anchor), _fp32(positive), _fp32(negative)
    d_pos = (a - p).square().sum(1)
    d_neg = (a - n).square().sum(1)
    return F.relu(d_pos - d_neg + margin).mean()


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triplet loss with batch-hard mining, squared Euclidean distances.

    Hermans, Beyer & Leibe 2017, "In Defense of the Triplet Loss for Person Re-Identification", eq. 5:
    every example is an anchor; its triplet uses the farthest positive (same label, not itself) and the
    closest negative (different label) of the batch::

        loss = 1/|A| sum_{a in A} max(0, max_p |x_a - x_p|^2 - min_n |x_a - x_n|^2 + margin)

    ``A`` holds the anchors with at least one positive and one negative; the others are skipped. When
    ``A`` is empty the loss is 0 (still connected to ``embeddings``, so ``backward`` works).

    Args:
        embeddings: one row per example.
        labels: integer class of each example.
        margin: ``>= 0``.

    Shape:
        - embeddings: ``[B, D]``
        - labels: ``[B]``
        - output: ``(loss, num_anchors)``: a scalar mean over ``A`` and a 0-d int64 tensor ``|A|``
          (a tensor, so that reading it needs no device sync; use it as ``num_items``).
    """
    _check_margin(margin, allow_zero=True)
    _check_matrix(embeddings, "embeddings")
    if labels.shape != embeddings.shape[:1]:
        raise UserError(f"'labels' must be [B] = [{embeddings.shape[0]}], got shape {tuple(labels.shape)}")
    x = _fp32(embeddings)
    dist = _pairwise_sq_dist(x)  # [B, B]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=x.device)
    positive = same & ~eye
    negative = ~same
    finfo = torch.finfo(dist.dtype)
    hardest_pos = torch.where(positive, dist, finfo.min).amax(1)
    hardest_neg = torch.where(negative, dist, finfo.max).amin(1)
    used = positive.any(1) & negative.any(1)
    # For skipped anchors the hinge saw the finite fill values; where() cuts them out, gradient included.
    hinge = torch.where(used, F.relu(hardest_pos - hardest_neg + margin), 0.0)
    count = used.sum()
    return hinge.sum() / count.clamp(min=1), count


def siamese_contrastive_loss(x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Contrastive loss of a siamese pair: pull similar pairs together, push dissimilar ones past a margin.

    Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an Invariant Mapping", eq. 4, with
    ``y = 1`` for a similar pair (the paper writes ``Y = 0`` for similar and halves both terms)::

        d_i = |x1_i - x2_i|
        loss = 1/N sum_i y_i d_i^2 + (1 - y_i) max(0, margin - d_i)^2

    Args:
        x1, x2: the two sides of each pair.
        same: 1 (or True) where the pair is similar, 0 where dissimilar.
        margin: ``m > 0`` (with 0 the dissimilar pairs would contribute nothing).

    Shape:
        - x1, x2: ``[N, D]``
        - same: ``[N]``
        - output: scalar
    """
    _check_margin(margin, allow_zero=False)
    _check_same_shape(x1, x2, "x1", "x2")
    if same.shape != x1.shape[:1]:
        raise UserError(f"'same' must be [N] = [{x1.shape[0]}], got shape {tuple(same.shape)}")
    diff = _fp32(x1) - _fp32(x2)
    y = same.to(diff.dtype)
    sq = diff.square().sum(1)  # d^2 without a square root: finite gradient at d = 0
    # vector_norm's backward is defined as 0 at the zero vector, so identical dissimilar pairs stay finite.
    d = torch.linalg.vector_norm(diff, dim=1)
    return (y * sq + (1.0 - y) * F.relu(margin - d).square()).mean()
