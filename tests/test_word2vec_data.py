"""The word2vec data step: tokens, vocabulary, subsampling and noise formulas, dynamic windows, chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nlp_ssl.data.word2vec_data import (
    ChunkDataset,
    NoiseDistribution,
    Tokenizer,
    VocabConfig,
    build_vocabulary,
    collate_chunks,
    encode_corpus,
    keep_probabilities,
    sample_radii,
    window_mask,
    window_pairs,
)
from nlp_ssl.errors import UserError

TEXTS = ["The cat sat on the mat\nthe dog sat", "A cat and a dog", "", "the end the end the"]


def test_tokenizer_lowercases_splits_lines_and_matches_patterns():
    assert list(Tokenizer(VocabConfig()).sentences(TEXTS[0])) == [["the", "cat", "sat", "on", "the", "mat", "the", "dog", "sat"]]
    lines = Tokenizer(VocabConfig(sentences="line")).sentences(TEXTS[0])
    assert list(lines) == [["the", "cat", "sat", "on", "the", "mat"], ["the", "dog", "sat"]]
    cased = Tokenizer(VocabConfig(lowercase=False, token_pattern=r"[A-Za-z]+")).tokens("The cat, sat.")
    assert cased == ["The", "cat", "sat"]


def test_long_documents_are_sliced_at_white_space_without_losing_tokens():
    from nlp_ssl.data import word2vec_data

    text = " ".join(f"w{i}" for i in range(5000))
    pieces = list(word2vec_data._slices(text, size=1000))
    assert len(pieces) > 5 and "".join(pieces) == text
    tokens = [t for p in pieces for t in p.split()]
    assert tokens == text.split()


def test_vocabulary_min_count_max_vocab_and_order():
    vocab = build_vocabulary(TEXTS, VocabConfig(min_count=2))
    assert vocab.words == ["the", "a", "cat", "dog", "end", "sat"]  # by count, ties by word
    assert vocab.counts.tolist() == [6, 2, 2, 2, 2, 2]
    assert vocab.raw_words == 9 + 5 + 5 and vocab.total == 16
    assert build_vocabulary(TEXTS, VocabConfig(min_count=1, max_vocab=2)).words == ["the", "a"]


def test_empty_vocabulary_is_a_user_error():
    with pytest.raises(UserError, match="empty vocabulary.*min_count=100"):
        build_vocabulary(TEXTS, VocabConfig(min_count=100))


def test_encoding_drops_unknown_words_and_keeps_sentences_and_raw_positions():
    cfg = VocabConfig(min_count=2, sentences="line")
    vocab = build_vocabulary(TEXTS, cfg)
    enc = encode_corpus(TEXTS, vocab, cfg)
    words = [vocab.words[i] for i in enc.ids]
    assert words[:6] == ["the", "cat", "sat", "the", "the", "dog"]  # "on", "mat" dropped
    assert enc.sentence.tolist()[:6] == [0, 0, 0, 0, 1, 1]
    assert enc.raw_words == vocab.raw_words
    assert enc.raw_before[:4].tolist() == [0, 1, 2, 4]  # "on" (raw position 3) was dropped


def test_keep_probability_is_word2vec_formula():
    counts = np.array([1_000_000, 10_000, 100, 1])
    t = 1e-3
    keep = keep_probabilities(counts, t).double()
    f = counts / counts.sum()
    expected = np.minimum(1.0, (np.sqrt(f / t) + 1) * t / f)
    assert np.allclose(keep.numpy(), expected, rtol=1e-6)
    assert keep[0] < 0.1 and keep[-1] == 1.0
    assert torch.all(keep_probabilities(counts, 0.0) == 1.0)


def test_subsampling_frequency_matches_the_keep_probability():
    counts = np.array([5000, 800, 50])
    keep = keep_probabilities(counts, 1e-2)
    torch.manual_seed(0)
    ids = torch.randint(0, 3, (200_000,))
    kept = torch.rand(ids.shape) < keep[ids]
    for w in range(3):
        rate = kept[ids == w].float().mean().item()
        assert rate == pytest.approx(float(keep[w]), abs=0.01)


def test_noise_distribution_matches_unigram_to_the_three_quarters():
    counts = np.array([1000, 300, 50, 7, 1])
    noise = NoiseDistribution(counts, 0.75)
    expected = counts ** 0.75 / (counts ** 0.75).sum()
    assert np.allclose(noise.probs.numpy(), expected)
    torch.manual_seed(0)
    draws = noise.sample(400_000)
    freq = torch.bincount(draws, minlength=5).double() / draws.numel()
    # Within 5 standard errors of a multinomial proportion for every word.
    se = np.sqrt(expected * (1 - expected) / draws.numel())
    assert np.all(np.abs(freq.numpy() - expected) < 5 * se)
    assert int(draws.min()) >= 0 and int(draws.max()) <= 4


def test_dynamic_window_radius_is_uniform_on_one_to_window():
    torch.manual_seed(0)
    radii = sample_radii(60_000, 5)
    freq = torch.bincount(radii, minlength=6)[1:].double() / radii.numel()
    assert radii.min() == 1 and radii.max() == 5
    assert torch.allclose(freq, torch.full((5,), 0.2, dtype=torch.float64), atol=0.01)
    assert torch.all(sample_radii(10, 5, dynamic=False) == 5)


def test_window_mask_contexts_by_radius_and_sentence():
    sentence = torch.tensor([0, 0, 0, 0, 1, 1])
    radius = torch.tensor([1, 2, 1, 3, 1, 1])
    mask = window_mask(sentence, radius, 3)
    centre, context = window_pairs(mask)
    pairs = sorted(zip(centre.tolist(), context.tolist()))
    assert pairs == [(0, 1), (1, 0), (1, 2), (1, 3), (2, 1), (2, 3), (3, 0), (3, 1), (3, 2), (4, 5), (5, 4)]


def test_mean_pairs_per_word_follow_the_dynamic_window():
    torch.manual_seed(1)
    n, window = 50_000, 5
    mask = window_mask(torch.zeros(n, dtype=torch.long), sample_radii(n, window), window)
    # a uniform radius on 1..W gives W + 1 contexts on average, away from the stream's ends
    assert mask.sum().item() / n == pytest.approx(window + 1, rel=0.01)


def test_chunks_cover_every_token_once_per_epoch():
    cfg = VocabConfig(min_count=1)
    texts = [" ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 9 + 1)) for i in range(40)]
    vocab = build_vocabulary(texts, cfg)
    enc = encode_corpus(texts, vocab, cfg)
    ds = ChunkDataset(enc, words_per_chunk=8, chunks_per_step=3)
    assert len(ds) % 3 == 0 and len(ds) == 3 * ds.steps_per_epoch
    batch = collate_chunks([ds[i] for i in range(len(ds))])
    ids = batch["ids"].reshape(-1)
    assert ids[ids >= 0].tolist() == enc.ids.tolist()
    assert int(batch["raw_words"].sum()) == enc.raw_words
    assert (batch["sentence"].reshape(-1)[ids >= 0] == torch.from_numpy(enc.sentence)).all()
    assert math.ceil(len(enc) / len(ds)) == ds.chunk_len
