"""The sentence-level losses (supervised NT-Xent, CPC) and the text views against naive per-example loops."""

from __future__ import annotations

import pytest
import torch

from nlp_ssl.data.text_views import TextViewConfig, apply_text_view, sample_view_params
from nlp_ssl.errors import UserError
from nlp_ssl.objectives.contrastive_losses import cpc_loss, nt_xent_loss, supervised_nt_xent_loss

TOL = dict(atol=1e-5, rtol=1e-5)


def _leaves(*shapes, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=gen).requires_grad_() for s in shapes]


def _cos(u, v):
    return (u @ v) / (u.norm() * v.norm())


# --- supervised NT-Xent ------------------------------------------------------------------------------------


def _naive_supcon(z, labels, t, all_z=None, all_labels=None, offset=0):
    if all_z is None:
        all_z, all_labels = z, labels
    total, anchors = 0.0, 0
    for i in range(z.shape[0]):
        own = offset + i
        others = [j for j in range(all_z.shape[0]) if j != own]
        positives = [j for j in others if int(all_labels[j]) == int(labels[i])]
        if not positives:
            continue
        denom = sum(torch.exp(_cos(z[i], all_z[j]) / t) for j in others)
        term = sum(-torch.log(torch.exp(_cos(z[i], all_z[p]) / t) / denom) for p in positives) / len(positives)
        total, anchors = total + term, anchors + 1
    return total / anchors, anchors


def test_supervised_nt_xent_matches_a_naive_loop_with_gradients():
    (z,) = _leaves((10, 5))
    labels = torch.tensor([0, 1, 0, 2, 1, 3, 0, 2, 1, 4])  # labels 3 and 4: anchors without a positive
    loss, count = supervised_nt_xent_loss(z, labels, 0.3)
    ref, ref_count = _naive_supcon(z, labels, 0.3)
    assert int(count) == ref_count == 8
    torch.testing.assert_close(loss, ref, **TOL)
    g, = torch.autograd.grad(loss, z)
    g_ref, = torch.autograd.grad(ref, z)
    torch.testing.assert_close(g, g_ref, **TOL)


def test_supervised_nt_xent_on_a_slice_of_a_gathered_batch():
    (all_z,) = _leaves((12, 4), seed=1)
    labels = torch.arange(12) % 5
    loss, count = supervised_nt_xent_loss(all_z[6:], labels[6:], 0.2, all_z=all_z, all_labels=labels, offset=6)
    ref, ref_count = _naive_supcon(all_z[6:], labels[6:], 0.2, all_z, labels, offset=6)
    assert int(count) == ref_count
    torch.testing.assert_close(loss, ref, **TOL)


def test_supervised_nt_xent_with_one_positive_each_is_simclr_nt_xent():
    z_a, z_b = _leaves((6, 8), (6, 8), seed=2)
    pair = torch.arange(6)
    loss, count = supervised_nt_xent_loss(torch.cat([z_a, z_b]), torch.cat([pair, pair]), 0.1)
    assert int(count) == 12
    torch.testing.assert_close(loss, nt_xent_loss(z_a, z_b, 0.1), **TOL)


# --- CPC -----------------------------------------------------------------------------------------------------


def _naive_cpc(pred, z, mask, t, all_z=None, all_mask=None, offset=0, normalize=False):
    if all_z is None:
        all_z, all_mask = z, mask
    score = (lambda u, v: _cos(u, v) / t) if normalize else (lambda u, v: (u @ v) / t)
    candidates = [(b, s) for b in range(all_z.shape[0]) for s in range(all_z.shape[1]) if all_mask[b, s]]
    total, terms = 0.0, 0
    b_local, t_len, k_max, _ = pred.shape
    for b in range(b_local):
        for t_pos in range(t_len):
            for k in range(1, k_max + 1):
                if t_pos + k >= t_len or not (mask[b, t_pos] and mask[b, t_pos + k]):
                    continue
                q = pred[b, t_pos, k - 1]
                positive = score(q, all_z[offset + b, t_pos + k])
                denom = sum(torch.exp(score(q, all_z[cb, cs])) for cb, cs in candidates)
                total, terms = total - torch.log(torch.exp(positive) / denom), terms + 1
    return total / terms, terms


@pytest.mark.parametrize("normalize", [False, True])
def test_cpc_loss_matches_a_naive_loop_with_gradients(normalize):
    pred, z = _leaves((3, 6, 2, 4), (3, 6, 4), seed=3)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    loss, count = cpc_loss(pred, z, mask, 0.5, normalize=normalize)
    ref, terms = _naive_cpc(pred, z, mask, 0.5, normalize=normalize)
    assert int(count) == terms == (5 + 4) + (3 + 2) + (1 + 0)
    torch.testing.assert_close(loss, ref, **TOL)
    grads = torch.autograd.grad(loss, [pred, z])
    ref_grads = torch.autograd.grad(ref, [pred, z])
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, **TOL)


def test_cpc_loss_against_gathered_candidates_of_a_longer_batch():
    pred, = _leaves((2, 4, 3, 5), seed=4)
    all_z, = _leaves((4, 6, 5), seed=5)
    all_mask = torch.ones(4, 6, dtype=torch.bool)
    all_mask[3, 3:] = False
    local_mask = all_mask[2:, :4]
    loss, count = cpc_loss(pred, all_z[2:, :4], local_mask, 1.0, all_encodings=all_z, all_mask=all_mask, offset=2)
    ref, terms = _naive_cpc(pred, all_z[2:, :4], local_mask, 1.0, all_z, all_mask, offset=2)
    assert int(count) == terms
    torch.testing.assert_close(loss, ref, **TOL)


def test_cpc_loss_rejects_mismatched_shapes_and_bad_temperature():
    with pytest.raises(UserError, match="do not fit"):
        cpc_loss(torch.zeros(2, 5, 3, 4), torch.zeros(2, 6, 4), torch.ones(2, 6, dtype=torch.bool))
    with pytest.raises(UserError, match="temperature"):
        cpc_loss(torch.zeros(2, 5, 3, 4), torch.zeros(2, 5, 4), torch.ones(2, 5, dtype=torch.bool), 0.0)


# --- text views ----------------------------------------------------------------------------------------------

SPECIAL = {0, 1, 2}  # pad, [CLS], [SEP]
CONTINUATION = {17, 18}  # "##" pieces
PAD, CLS, SEP = 0, 1, 2


def _lookups(vocab: int = 30):
    special = torch.zeros(vocab, dtype=torch.bool)
    special[list(SPECIAL)] = True
    word_start = torch.ones(vocab, dtype=torch.bool)
    word_start[list(CONTINUATION)] = False
    return special, word_start


def _naive_view(ids: list[int], u_crop, u_del, u_reorder, cfg: TextViewConfig) -> list[int]:
    """One sentence, position by position: [CLS] content [SEP] -> crop, delete words, reorder, pack."""
    content = [(pos, tok) for pos, tok in enumerate(ids) if tok not in SPECIAL]
    c = len(content)
    kept = list(range(c))
    if cfg.crop_min < 1:
        length = max(1, int(torch.round(torch.tensor(c * (cfg.crop_min + (1 - cfg.crop_min) * float(u_crop[0]))))))
        start = min(int(float(u_crop[1]) * (c - length + 1)), c - length)
        kept = [j for j in kept if start <= j < start + length]
    if cfg.word_deletion > 0:
        word_pos, survivors = None, []
        for j in range(c):
            pos, tok = content[j]
            if tok not in CONTINUATION or word_pos is None:
                word_pos = pos
            if j in kept and not float(u_del[word_pos]) < cfg.word_deletion:
                survivors.append(j)
        kept = survivors or kept
    keys = []
    for rank, j in enumerate(kept):
        noise = float(u_reorder[content[j][0]]) * (cfg.reorder_window + 1) if cfg.reorder_window else 0.0
        keys.append((rank + noise, rank, content[j][1]))
    body = [tok for _, _, tok in sorted(keys)]
    leading = [tok for tok in ids[:1] if tok == CLS]
    trailing = [tok for tok in ids[1:] if tok == SEP]
    return leading + body + trailing


@pytest.mark.parametrize("cfg", [TextViewConfig(word_deletion=0.3), TextViewConfig(crop_min=0.4),
                                 TextViewConfig(reorder_window=2),
                                 TextViewConfig(word_deletion=0.2, crop_min=0.6, reorder_window=3)],
                         ids=["deletion", "crop", "reorder", "all"])
def test_text_views_match_a_naive_loop(cfg):
    gen = torch.Generator().manual_seed(0)
    rows = []
    for length in (12, 9, 3, 5, 14, 1):
        body = torch.randint(3, 20, (length,), generator=gen).tolist()
        rows.append([CLS] + body + [SEP])
    t = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (t - len(r)) for r in rows])
    mask = (ids != PAD).long()
    special, word_start = _lookups()
    for seed in range(5):
        params = sample_view_params(len(rows), 20, torch.Generator().manual_seed(seed))
        out_ids, out_mask = apply_text_view(ids, mask, params, cfg, special, word_start, PAD)
        for b, row in enumerate(rows):
            expected = _naive_view(row, params.crop[b], params.deletion[b], params.reorder[b], cfg)
            got = out_ids[b][out_mask[b].bool()].tolist()
            assert got == expected, (seed, b, row, got, expected)
            assert (out_ids[b][~out_mask[b].bool()] == PAD).all()
            assert sum(1 for x in got if x not in SPECIAL) >= 1  # never an empty view


def test_text_views_keep_the_multiset_when_only_reordering_and_respect_the_window():
    ids = torch.tensor([[CLS] + list(range(3, 15)) + [SEP]])
    out, _ = apply_text_view(ids, torch.ones_like(ids), sample_view_params(1, 16, torch.Generator().manual_seed(1)),
                             TextViewConfig(reorder_window=2), *_lookups(), PAD)
    body = out[0, 1:-1].tolist()
    assert sorted(body) == list(range(3, 15)) and body != list(range(3, 15))
    assert all(abs(body.index(tok) - (tok - 3)) <= 2 for tok in body)


def test_text_view_parameters_must_cover_the_batch():
    ids = torch.ones(2, 10, dtype=torch.long)
    with pytest.raises(UserError, match="max_length"):
        apply_text_view(ids, ids, sample_view_params(2, 8), TextViewConfig(word_deletion=0.1), *_lookups(), PAD)
