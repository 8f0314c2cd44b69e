"""The torch word2vec objective and optimizer: word2vec's SGD step, learning on a synthetic corpus, export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gensim.models import KeyedVectors

from nlp_ssl.data.word2vec_data import ChunkDataset, VocabConfig, build_vocabulary, collate_chunks, encode_corpus, window_pairs
from nlp_ssl.models.word_vectors import WordVectors
from nlp_ssl.objectives.word2vec import RowSGD, Word2VecObjective, Word2VecObjectiveConfig
from nlp_ssl.pipelines.word2vec import Word2VecConfig, train_word2vec
from nlp_ssl.config import load_config

ROOT = Path(__file__).resolve().parent.parent


class _Cfg:
    learning_rate = 0.025


def _objective(arch: str, vocab_size: int = 40, counts=None, **kw) -> Word2VecObjective:
    torch.manual_seed(0)
    counts = np.arange(vocab_size, 0, -1) * 10 if counts is None else counts
    cfg = Word2VecObjectiveConfig(architecture=arch, window=2, negative=5, sample=0.0, shared_negatives=4,
                                  negative_group=8, min_learning_rate=0.0, **kw)
    obj = Word2VecObjective(WordVectors(vocab_size, 6), counts, cfg)
    with torch.no_grad():  # non-zero output vectors, so every gradient term is exercised
        obj.vectors.output.normal_(0, 0.3)
        obj.vectors.input.normal_(0, 0.3)
    return obj


def _batch(vocab_size: int = 40, length: int = 30, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (2, length), generator=gen)
    ids[1, -3:] = -1  # chunk padding
    sentence = torch.cat([torch.zeros(1, length, dtype=torch.long), torch.ones(1, length, dtype=torch.long)])
    sentence[0, length // 2:] = 2
    return {"ids": ids, "sentence": sentence, "raw_words": torch.tensor([length, length - 3])}


def _engine_step(obj: Word2VecObjective, opt: torch.optim.Optimizer, batch) -> float:
    """What the engine does: backward of loss * items, divide by items, step."""
    out = obj(batch)
    (out.loss * out.num_items).backward()
    for p in obj.parameters():
        if p.grad is not None:
            p.grad.mul_(1.0 / out.num_items)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(out.loss)


def _naive_skipgram_sum(w_in, w_out, sample, negative: float):
    """Summed per-pair SGNS loss for a drawn step, by autograd-friendly loops."""
    n = sample.length
    ids = sample.ids
    k = sample.negatives.shape[1]
    g = sample.ids.shape[0] // sample.negatives.shape[0]
    loss = torch.zeros(())
    centre, context = window_pairs(sample.mask)
    for i, t in zip(centre.tolist(), context.tolist()):
        assert i < n and t < n
        u, v = w_in[ids[t]], w_out[ids[i]]
        loss = loss - F.logsigmoid(u @ v)
        for j in range(k):
            loss = loss - negative / k * F.logsigmoid(-(u @ w_out[sample.negatives[t // g, j]]))
    return loss, len(centre)


@pytest.mark.parametrize("sparse", [True, False])
def test_one_step_is_word2vec_sgd_on_the_summed_pair_loss(sparse):
    obj = _objective("skipgram", sparse_gradients=sparse, row_step_cap=None)
    opt = obj.configure_optimizer(_Cfg())
    batch = _batch()
    torch.manual_seed(5)
    sample = obj.draw(batch)
    w_in = obj.vectors.input.detach().clone().requires_grad_()
    w_out = obj.vectors.output.detach().clone().requires_grad_()
    loss_sum, pairs = _naive_skipgram_sum(w_in, w_out, sample, 5.0)
    loss_sum.backward()

    out = obj.step_loss(sample)
    assert out.num_items == pairs and float(out.loss) == pytest.approx(float(loss_sum) / pairs, rel=1e-5)
    (out.loss * out.num_items).backward()
    for p in obj.parameters():
        p.grad.mul_(1.0 / out.num_items)
    opt.step()
    # word2vec: every pair's gradient times the learning rate, summed (not averaged over the batch)
    assert torch.allclose(obj.vectors.input, w_in.detach() - 0.025 * w_in.grad, atol=1e-6)
    assert torch.allclose(obj.vectors.output, w_out.detach() - 0.025 * w_out.grad, atol=1e-6)


def test_row_step_cap_limits_crowded_rows_only():
    lips = torch.tensor([1.0, 100.0, 1000.0])
    opt = RowSGD([torch.nn.Parameter(torch.zeros(3, 2))], lr=0.025, min_lr=0.0, stats=None, row_step_cap=4.0)
    steps = -opt._row_steps(0.025, lips)
    assert steps.tolist() == pytest.approx([0.025, 0.025, 0.004])  # lr * L < cap: plain SGD; else cap / L


def test_learning_rate_decays_linearly_to_the_floor():
    """The step RowSGD actually takes follows gensim's decay: alpha - (alpha - min_alpha) * progress."""
    from transformers import get_scheduler

    from nlp_ssl.objectives.word2vec import _RowStats

    param = torch.nn.Parameter(torch.zeros(4, 2))
    stats = _RowStats()
    opt = RowSGD([param], lr=0.025, min_lr=1e-4, stats=stats, row_step_cap=None)
    sched = get_scheduler("linear", opt, num_warmup_steps=0, num_training_steps=10)
    taken = []
    for _ in range(10):
        before = param.detach().clone()
        param.grad = torch.ones_like(param)  # the mean gradient of one pair per row
        stats.items = 1.0
        opt.step()
        sched.step()
        taken.append(float((before - param.detach())[0, 0]))
    expected = [0.025 - (0.025 - 1e-4) * t / 10 for t in range(10)]
    assert taken == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_loss_falls_with_the_engine_update(arch):
    obj = _objective(arch)
    opt = obj.configure_optimizer(_Cfg())
    batches = [_batch(seed=s) for s in range(8)]
    first = np.mean([_engine_step(obj, opt, b) for b in batches])
    for _ in range(15):
        last = np.mean([_engine_step(obj, opt, b) for b in batches])
    assert last < first - 0.3


def _planted_corpus(path: Path, sentences: int = 3000, seed: int = 0) -> list[tuple[str, str, str, str]]:
    """Words ``x_<gender>_<role>`` always appear with markers of their gender and role (plus noise).

    The contexts of ``x_g_r`` are those of gender ``g`` plus those of role ``r``, so its vector is about
    ``a_g + b_r``: ``x_0_r : x_1_r :: x_0_s : x_1_s`` is the planted analogy.
    """
    rng = random.Random(seed)
    roles = 5
    lines = []
    for _ in range(sentences):
        g, r = rng.randrange(2), rng.randrange(roles)
        words = [f"x_{g}_{r}", f"gen{g}_{rng.randrange(3)}", f"role{r}_{rng.randrange(3)}",
                 f"filler{rng.randrange(20)}"]
        rng.shuffle(words)
        lines.append(" ".join(words))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [(f"x_0_{r}", f"x_1_{r}", f"x_0_{s}", f"x_1_{s}") for r in range(roles) for s in range(roles) if r != s]


@pytest.mark.parametrize("kernel", ["fused", "torch"])
@pytest.mark.parametrize("arch", ["skipgram", "cbow"])
def test_planted_analogy_resolves_and_loss_falls(tmp_path, arch, kernel):
    corpus = tmp_path / "planted.txt"
    questions = _planted_corpus(corpus)
    cfg = load_config(Word2VecConfig, None, [f"word2vec.kernel={kernel}", f"word2vec.architecture={arch}",
        f"output_dir={tmp_path / 'run'}", f"data.corpus={corpus}", "num_train_epochs=15", "report_to=[]",
        "per_device_train_batch_size=4", "logging_steps=5", "save_steps=100000", "vocab.min_count=1",
        "word2vec.vector_size=16", "word2vec.window=3", "word2vec.sample=0", "word2vec.words_per_chunk=256",
        "word2vec.negative_group=16", "word2vec.shared_negatives=8", "evaluation.enabled=false", "seed=3",
    ])
    summary = train_word2vec(cfg)
    losses = [json.loads(line)["train/loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0] - 0.5
    kv = KeyedVectors.load(str(summary.final_dir / "vectors.kv"))
    solved = sum(kv.most_similar(positive=[b, c], negative=[a], topn=1)[0][0] == d for a, b, c, d in questions)
    assert solved >= 0.9 * len(questions)


def test_export_round_trips_through_gensim(tmp_path):
    corpus = tmp_path / "planted.txt"
    _planted_corpus(corpus, sentences=300)
    cfg = load_config(Word2VecConfig, None, [
        f"output_dir={tmp_path / 'run'}", f"data.corpus={corpus}", "num_train_epochs=1", "report_to=[]",
        "per_device_train_batch_size=2", "vocab.min_count=1", "word2vec.vector_size=8",
        "word2vec.words_per_chunk=256", "evaluation.neighbours=[x_0_0]",
    ])
    summary = train_word2vec(cfg)
    final = summary.final_dir
    native = KeyedVectors.load(str(final / "vectors.kv"))
    text = KeyedVectors.load_word2vec_format(str(final / "vectors.txt"), binary=False)
    binary = KeyedVectors.load_word2vec_format(str(final / "vectors.bin"), binary=True)
    vocab = [line.split("\t") for line in (final / "vocab.tsv").read_text(encoding="utf-8").splitlines()]
    words = [w for w, _ in vocab]
    assert native.index_to_key == text.index_to_key == binary.index_to_key == words
    assert np.allclose(native.vectors, binary.vectors) and np.allclose(native.vectors, text.vectors, atol=1e-5)
    assert [native.get_vecattr(w, "count") for w in words] == [int(c) for _, c in vocab]
    counts = [int(c) for _, c in vocab]
    assert counts == sorted(counts, reverse=True)
    results = json.loads((final / "eval_results.json").read_text())
    assert {"wordsim353/spearman", "questions-words/3cosadd/overall_accuracy", "questions-words/coverage"} <= set(results) or \
        "questions-words/coverage" in results
    assert (final / "README.md").is_file() and (final / "intrinsic.json").is_file()
