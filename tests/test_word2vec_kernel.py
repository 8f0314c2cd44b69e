"""The fused CPU word2vec kernels against a naive per-word reference written from word2vec.c's algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nlp_ssl.errors import UserError
from nlp_ssl.models.word_vectors import WordVectors
from nlp_ssl.objectives import word2vec_kernel
from nlp_ssl.objectives.word2vec import Word2VecObjective, Word2VecObjectiveConfig
from nlp_ssl.pipelines.word2vec import use_fused_kernel

MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def draw(seed: int, counter: int, accept: np.ndarray, alias: np.ndarray) -> int:
    """Noise word number ``counter`` of a step: a bucket from the high 32 bits, accepted by the low 32."""
    r = splitmix64((splitmix64(seed) + counter) & MASK)
    bucket = ((r >> 32) * len(accept)) >> 32
    return bucket if (r & 0xFFFFFFFF) * 2.0**-32 < accept[bucket] else int(alias[bucket])


def neg_log_sigmoid(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(-x, 0.0)


def train_terms(h: np.ndarray, out: np.ndarray, terms: list[tuple[int, float, bool]], lr: float) -> tuple[float, np.ndarray]:
    """word2vec's inner loop for one input vector: every score first, then each term's update in order."""
    scores = [float(h @ out[row]) for row, _, _ in terms]
    loss, err = 0.0, np.zeros_like(h)
    for (row, weight, positive), f in zip(terms, scores):
        loss += weight * neg_log_sigmoid(f if positive else -f)
        g = (float(positive) - 1.0 / (1.0 + math.exp(-f))) * lr * weight
        err += g * out[row]
        out[row] += g * h
    return loss, err


def window(i: int, ids, sentence, radius) -> list[int]:
    return [t for t in range(max(0, i - radius[i]), min(len(ids), i + radius[i] + 1))
            if t != i and sentence[t] == sentence[i]]


def reference_cbow(ids, sentence, radius, w_in, w_out, noise, negative, lr, seed, full=True):
    accept, alias = (x.numpy() for x in noise)
    loss, items = 0.0, 0
    for i in range(len(ids)):
        contexts = window(i, ids, sentence, radius)
        if not contexts:
            continue
        h = w_in[[ids[t] for t in contexts]].mean(0)
        noises = [draw(seed, i * negative + k, accept, alias) for k in range(negative)]
        terms = [(ids[i], 1.0, True)] + [(n, 1.0, False) for n in noises if n != ids[i]]
        term_loss, err = train_terms(h, w_out, terms, lr)
        for t in contexts:
            w_in[ids[t]] += err if full else err / len(contexts)
        loss, items = loss + term_loss, items + 1
    return loss, items


def reference_skipgram(ids, sentence, radius, w_in, w_out, noise, negative, window_size, pairs_per_draw, lr, seed):
    accept, alias = (x.numpy() for x in noise)
    loss, items = 0.0, 0
    for t in range(len(ids)):
        # the centres whose (dynamic) window holds t
        centres = [i for i in range(max(0, t - window_size), min(len(ids), t + window_size + 1))
                   if i != t and sentence[i] == sentence[t] and abs(i - t) <= radius[i]]
        if not centres:
            continue
        draws = negative * math.ceil(len(centres) / pairs_per_draw)
        weight = len(centres) * negative / draws
        terms = [(ids[i], 1.0, True) for i in centres]
        terms += [(draw(seed, t * negative * 2 * window_size + k, accept, alias), weight, False) for k in range(draws)]
        term_loss, err = train_terms(w_in[ids[t]].copy(), w_out, terms, lr)
        w_in[ids[t]] += err
        loss, items = loss + term_loss, items + len(centres)
    return loss, items


def _stream(n: int = 60, vocab: int = 12, window_size: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n,), generator=g)
    sentence = torch.cumsum((torch.rand(n, generator=g) < 0.1).long(), 0)  # runs of positions
    radius = torch.randint(1, window_size + 1, (n,), generator=g)
    w_in = torch.randn(vocab, 5, generator=g) * 0.3
    w_out = torch.randn(vocab, 5, generator=g) * 0.3
    probs = torch.rand(vocab, generator=g, dtype=torch.float64) ** 2
    return ids, sentence, radius, w_in, w_out, word2vec_kernel.alias_table(probs / probs.sum())


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the reference is sequential; with threads the kernel runs Hogwild
    yield
    torch.set_num_threads(threads)


def test_alias_table_is_the_distribution_exactly():
    probs = torch.tensor([0.5, 0.0, 0.125, 0.25, 0.0625, 0.0625], dtype=torch.float64)
    accept, alias = word2vec_kernel.alias_table(probs)
    implied = accept.clone() / len(probs)
    implied.index_add_(0, alias, (1 - accept) / len(probs))
    assert torch.allclose(implied, probs, atol=1e-12)
    # and the draw formula samples it
    counts = np.bincount([draw(3, c, accept.numpy(), alias.numpy()) for c in range(40_000)], minlength=len(probs))
    assert counts[1] == 0 and counts[5] > 0
    assert np.allclose(counts / counts.sum(), probs.numpy(), atol=0.01)


@pytest.mark.parametrize("full", [True, False])
def test_cbow_kernel_is_word2vec_sgd(full):
    ids, sentence, radius, w_in, w_out, noise = _stream()
    ref_in, ref_out = w_in.double().numpy().copy(), w_out.double().numpy().copy()
    loss, items = word2vec_kernel.cbow_step(ids, sentence, radius, w_in, w_out, noise, 4, 0.1, 99,
                                            full_context_update=full)
    ref_loss, ref_items = reference_cbow(ids.tolist(), sentence.tolist(), radius.tolist(), ref_in, ref_out, noise,
                                         4, 0.1, 99, full)
    assert items == ref_items > 0
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(w_in.numpy(), ref_in, atol=2e-5)
    np.testing.assert_allclose(w_out.numpy(), ref_out, atol=2e-5)


@pytest.mark.parametrize("pairs_per_draw", [1, 3])
def test_skipgram_kernel_is_per_input_word_sgd(pairs_per_draw):
    ids, sentence, radius, w_in, w_out, noise = _stream()
    ref_in, ref_out = w_in.double().numpy().copy(), w_out.double().numpy().copy()
    loss, items = word2vec_kernel.skipgram_step(ids, sentence, radius, w_in, w_out, noise, 4, 3, pairs_per_draw,
                                                0.05, 7)
    ref_loss, ref_items = reference_skipgram(ids.tolist(), sentence.tolist(), radius.tolist(), ref_in, ref_out,
                                             noise, 4, 3, pairs_per_draw, 0.05, 7)
    assert items == ref_items > 0
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(w_in.numpy(), ref_in, atol=2e-5)
    np.testing.assert_allclose(w_out.numpy(), ref_out, atol=2e-5)


def test_scoring_only_changes_nothing_and_does_not_depend_on_threads():
    ids, sentence, radius, w_in, w_out, noise = _stream(n=3000, vocab=50)
    before = (w_in.clone(), w_out.clone())
    one = word2vec_kernel.cbow_step(ids, sentence, radius, w_in, w_out, noise, 5, 0.1, 1, update=False)
    torch.set_num_threads(2)
    two = word2vec_kernel.cbow_step(ids, sentence, radius, w_in, w_out, noise, 5, 0.1, 1, update=False)
    assert one[1] == two[1] and one[0] == pytest.approx(two[0], rel=1e-9)
    assert torch.equal(before[0], w_in) and torch.equal(before[1], w_out)


def _fused_objective(arch: str) -> Word2VecObjective:
    counts = np.arange(30, 0, -1) * 10
    cfg = Word2VecObjectiveConfig(architecture=arch, window=2, negative=3, sample=0.0, fused=True,
                                  min_learning_rate=0.0)
    obj = Word2VecObjective(WordVectors(30, 6), counts, cfg)
    with torch.no_grad():
        obj.vectors.output.normal_(0, 0.3)
    return obj


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_fused_objective_trains_in_forward_and_evaluation_changes_nothing(arch):
    obj = _fused_objective(arch)

    class Cfg:
        learning_rate = 0.05

    optimizer = obj.configure_optimizer(Cfg())
    g = torch.Generator().manual_seed(0)
    batch = {"ids": torch.randint(0, 30, (4, 40), generator=g), "sentence": torch.zeros(4, 40, dtype=torch.long),
             "raw_words": torch.full((4,), 40)}
    before = obj.vectors.input.detach().clone()
    with torch.no_grad():
        obj.eval()
        scored = obj.evaluate_batch(batch)
    assert not scored.updated and torch.equal(before, obj.vectors.input.detach())
    obj.train()
    losses = []
    for step in range(30):
        obj.rng.manual_seed(step % 3)
        out = obj(batch)
        assert out.updated and out.num_inputs == 160 and out.num_items > 0
        optimizer.step()  # keeps the schedule, applies nothing
        losses.append(float(out.loss))
    assert not torch.equal(before, obj.vectors.input.detach())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.2


def test_kernel_choice():
    word2vec_kernel.load_kernel()
    assert not word2vec_kernel.needs_build()  # built and cached: no "building" message on the next run
    assert use_fused_kernel("torch", True) is False
    assert use_fused_kernel("auto", False) is False
    assert use_fused_kernel("auto", True) is True
    with pytest.raises(UserError, match="word2vec.kernel=torch"):
        use_fused_kernel("fused", False)


def test_a_kernel_that_cannot_be_built_falls_back_or_is_a_user_error(monkeypatch):
    def broken():
        raise word2vec_kernel.KernelUnavailable("the fused word2vec kernel could not be built (no compiler)")

    monkeypatch.setattr(word2vec_kernel, "load_kernel", broken)
    said: list[str] = []
    assert use_fused_kernel("auto", True, said.append) is False
    assert said and "batched torch" in said[0] and "no compiler" in said[0]
    with pytest.raises(UserError, match="install a C\\+\\+ compiler"):
        use_fused_kernel("fused", True)
