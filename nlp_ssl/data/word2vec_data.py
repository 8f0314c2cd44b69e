"""The word2vec data step: tokens, vocabulary, subsampling, noise distribution, dynamic windows, chunks.

What happens to the text, in order (Mikolov et al. 2013, "Distributed Representations of Words and Phrases
and their Compositionality", and the reference C code ``word2vec.c``):

1. **Tokens.** Each example (document) is lower-cased (configurable) and split on white space, or matched
   with a user regex. A sentence is a whole document or each of its lines (``vocab.sentences``).
2. **Vocabulary.** Words seen at least ``min_count`` times, at most ``max_vocab`` of the most frequent,
   sorted by decreasing count (ties by word, so the order is reproducible). Out-of-vocabulary tokens are
   dropped from the token stream before windows are formed, as in the C code.
3. **Chunks.** The in-vocabulary token stream is cut into equal chunks; a chunk is one dataset item, so the
   engine's sampler shuffles chunks per epoch from (seed, epoch) and resume stays exact. Each token keeps
   the id of its sentence, so context windows never cross a sentence (or a chunk) boundary.
4. **On the device, per step** (in the objective, from the engine's per-step seeded RNG):
   subsampling of frequent words with word2vec's keep probability (:func:`keep_probabilities`), a dynamic
   window radius per kept centre word (:func:`sample_radii`) and the context mask (:func:`window_mask`),
   and negatives from the unigram^0.75 distribution (:class:`NoiseDistribution`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from nlp_ssl.errors import UserError

# Huge single-line documents (text8 is one 100 MB line) are tokenised in slices of about this many
# characters, so the token list of one slice, not of the whole document, is in memory at once.
_SLICE_CHARS = 1 << 22


@dataclass
class VocabConfig:
    """Tokenisation and vocabulary (section ``vocab`` of the word2vec recipe).

    Attributes:
        min_count: drop words seen fewer times (word2vec's ``-min-count``, gensim's ``min_count``).
        max_vocab: keep at most this many of the most frequent words (null: no limit).
        lowercase: lower-case the text before tokenising.
        token_pattern: a regular expression whose matches are the tokens (e.g. ``"[a-z0-9]+(?:['-][a-z0-9]+)*"``);
            null splits on white space like word2vec.
        sentences: ``document`` (an example is one sentence) or ``line`` (each line of an example is one).
    """

    min_count: int = 5
    max_vocab: int | None = None
    lowercase: bool = True
    token_pattern: str | None = None
    sentences: Literal["document", "line"] = "document"

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise UserError(f"config key 'vocab.min_count' must be >= 1, got {self.min_count}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise UserError(f"config key 'vocab.max_vocab' must be >= 1 (or null for no limit), got {self.max_vocab}")
        if self.token_pattern is not None:
            try:
                re.compile(self.token_pattern)
            except re.error as err:
                raise UserError(f"config key 'vocab.token_pattern' is not a valid regular expression: {err}") from None


class Tokenizer:
    """Turns one example into sentences of tokens, as :class:`VocabConfig` says."""

    def __init__(self, cfg: VocabConfig) -> None:
        self.cfg = cfg
        self._pattern = re.compile(cfg.token_pattern) if cfg.token_pattern else None

    def tokens(self, text: str) -> list[str]:
        if self.cfg.lowercase:
            text = text.lower()
        return self._pattern.findall(text) if self._pattern is not None else text.split()

    def sentences(self, text: str) -> Iterator[list[str]]:
        """Yield the token lists of the sentences of ``text``; empty sentences are skipped.

        A long document with ``sentences: document`` comes out as several lists (slices cut at white space)
        that belong to the same sentence; see :meth:`sentence_pieces`.
        """
        for _, tokens in self.sentence_pieces(text):
            if tokens:
                yield tokens

    def sentence_pieces(self, text: str) -> Iterator[tuple[bool, list[str]]]:
        """Yield ``(starts_sentence, tokens)``; consecutive pieces with ``starts_sentence=False`` continue one."""
        if not isinstance(text, str):
            return
        if self.cfg.sentences == "line":
            for line in text.splitlines():
                yield True, self.tokens(line)
            return
        first = True
        for piece in _slices(text):
            yield first, self.tokens(piece)
            first = False


def _slices(text: str, size: int = _SLICE_CHARS) -> Iterator[str]:
    """Cut ``text`` into pieces of about ``size`` characters at white space (never inside a token)."""
    start = 0
    while len(text) - start > size:
        cut = start + size
        while cut < len(text) and not text[cut].isspace():
            cut += 1
        yield text[start:cut]
        start = cut
    yield text[start:]


# ----------------------------------------------------------------------------------------------- vocab


@dataclass
class Vocabulary:
    """Words sorted by decreasing count.

    Attributes:
        words: the vocabulary, ``words[i]`` has id ``i``.
        counts: ``(V,)`` int64 corpus counts of the words.
        raw_words: tokens in the corpus before the vocabulary cut (what "raw words/s" counts).
    """

    words: list[str]
    counts: np.ndarray
    raw_words: int

    def __post_init__(self) -> None:
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    @property
    def total(self) -> int:
        """In-vocabulary tokens in the corpus (word2vec's ``train_words``)."""
        return int(self.counts.sum())

    def save_tsv(self, path: Path) -> None:
        """``word<TAB>count`` lines in id order (the layout of word2vec's ``-save-vocab`` with a tab)."""
        with open(path, "w", encoding="utf-8") as out:
            for word, count in zip(self.words, self.counts.tolist()):
                out.write(f"{word}\t{count}\n")

    @classmethod
    def load_tsv(cls, path: Path) -> Vocabulary:
        words, counts = [], []
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            word, _, count = line.rpartition("\t")
            words.append(word)
            counts.append(int(count))
        return cls(words, np.asarray(counts, dtype=np.int64), raw_words=int(sum(counts)))


def build_vocabulary(texts: Iterable[str], cfg: VocabConfig, source: str = "the corpus") -> Vocabulary:
    """Count tokens and keep the words that pass ``min_count`` / ``max_vocab``.

    Raises:
        UserError: when no word is left (the message says how many distinct words there were).
    """
    tokenizer = Tokenizer(cfg)
    counter: Counter[str] = Counter()
    raw = 0
    for text in texts:
        for _, tokens in tokenizer.sentence_pieces(text):
            counter.update(tokens)
            raw += len(tokens)
    kept = [(w, c) for w, c in counter.items() if c >= cfg.min_count]
    kept.sort(key=lambda wc: (-wc[1], wc[0]))
    if cfg.max_vocab is not None:
        kept = kept[: cfg.max_vocab]
    if not kept:
        top = max(counter.values(), default=0)
        raise UserError(f"empty vocabulary: none of the {len(counter):,} distinct words of {source} occurs "
                        f"vocab.min_count={cfg.min_count} times (the most frequent occurs {top}); lower "
                        "vocab.min_count or use a larger corpus")
    return Vocabulary([w for w, _ in kept], np.asarray([c for _, c in kept], dtype=np.int64), raw_words=raw)


# ------------------------------------------------------------------------------------ the token stream


@dataclass
class EncodedCorpus:
    """The corpus as one stream of in-vocabulary token ids.

    Attributes:
        ids: ``(T,)`` int32 token ids, in corpus order, out-of-vocabulary tokens removed.
        sentence: ``(T,)`` int64 sentence index of each token (non-decreasing).
        raw_before: ``(T + 1,)`` int64, raw tokens (OOV included) before each in-vocabulary token; the last
            entry is the raw total, so a slice ``[a, b)`` of the stream stands for
            ``raw_before[b] - raw_before[a]`` raw words.
    """

    ids: np.ndarray
    sentence: np.ndarray
    raw_before: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def raw_words(self) -> int:
        return int(self.raw_before[-1])


def encode_corpus(texts: Iterable[str], vocab: Vocabulary, cfg: VocabConfig) -> EncodedCorpus:
    """Map every token to its id (dropping unknown words) and record sentence ids and raw positions."""
    tokenizer = Tokenizer(cfg)
    lookup = vocab.index
    id_parts: list[np.ndarray] = []
    sent_parts: list[np.ndarray] = []
    raw_parts: list[np.ndarray] = []
    sentence = -1
    raw = 0
    for text in texts:
        for starts, tokens in tokenizer.sentence_pieces(text):
            if starts:
                sentence += 1
            if not tokens:
                continue
            ids = np.fromiter((lookup.get(t, -1) for t in tokens), dtype=np.int64, count=len(tokens))
            known = np.flatnonzero(ids >= 0)
            if known.size:
                id_parts.append(ids[known].astype(np.int32))
                sent_parts.append(np.full(known.size, sentence, dtype=np.int64))
                raw_parts.append(known + raw)
            raw += len(tokens)
    if not id_parts:
        raise UserError("no in-vocabulary token left to train on; check vocab.min_count and the corpus")
    raw_before = np.concatenate(raw_parts + [np.asarray([raw], dtype=np.int64)])
    return EncodedCorpus(np.concatenate(id_parts), np.concatenate(sent_parts), raw_before)


class ChunkDataset(Dataset):
    """Equal slices of the token stream; item ``i`` is one chunk (the unit the engine batches and shuffles).

    The number of chunks is a multiple of ``chunks_per_step`` so that the engine's ``drop_last`` batch
    sampler never drops text: every epoch covers every token exactly once. Chunks are padded to one length
    with id ``-1`` (removed on the device).

    Items: ``{"ids": (L,) int64, "sentence": (L,) int64, "raw_words": int}``.
    """

    def __init__(self, corpus: EncodedCorpus, words_per_chunk: int, chunks_per_step: int) -> None:
        total = len(corpus)
        steps = max(1, math.ceil(total / (words_per_chunk * chunks_per_step)))
        self.num_chunks = steps * chunks_per_step
        self.chunk_len = max(1, math.ceil(total / self.num_chunks))
        self.corpus = corpus
        self.ids = torch.from_numpy(corpus.ids.astype(np.int64))
        self.sentence = torch.from_numpy(corpus.sentence)
        self.steps_per_epoch = steps

    def __len__(self) -> int:
        return self.num_chunks

    def bounds(self, index: int) -> tuple[int, int]:
        total = len(self.corpus)
        return min(index * self.chunk_len, total), min((index + 1) * self.chunk_len, total)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        start, stop = self.bounds(index)
        ids = torch.full((self.chunk_len,), -1, dtype=torch.int64)
        sentence = torch.full((self.chunk_len,), -1, dtype=torch.int64)
        ids[: stop - start] = self.ids[start:stop]
        sentence[: stop - start] = self.sentence[start:stop]
        raw = int(self.corpus.raw_before[stop] - self.corpus.raw_before[start]) if stop > start else 0
        return {"ids": ids, "sentence": sentence, "raw_words": raw}


def collate_chunks(items: list[dict]) -> dict[str, torch.Tensor]:
    """Stack chunks: ``ids`` and ``sentence`` become ``(B, L)``; ``raw_words`` a ``(B,)`` tensor."""
    return {
        "ids": torch.stack([it["ids"] for it in items]),
        "sentence": torch.stack([it["sentence"] for it in items]),
        "raw_words": torch.tensor([it["raw_words"] for it in items], dtype=torch.int64),
    }


# ---------------------------------------------------------------- subsampling, noise, dynamic windows


def keep_probabilities(counts: np.ndarray | torch.Tensor, sample: float) -> torch.Tensor:
    """Probability of keeping each occurrence of a word when subsampling frequent words.

    word2vec.c's formula (not the paper's ``1 - sqrt(t / f)``): with ``f`` the word's share of the
    in-vocabulary tokens and ``t`` the threshold ``sample``,

        keep(w) = (sqrt(f / t) + 1) * t / f,   clipped to 1.

    ``sample <= 0`` disables subsampling (all ones). Returns ``(V,)`` float32.
    """
    counts = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if sample <= 0:
        return torch.ones(counts.shape[0], dtype=torch.float32)
    f = counts / counts.sum()
    keep = ((f / sample).sqrt() + 1.0) * sample / f
    return keep.clamp(max=1.0).to(torch.float32)


class NoiseDistribution:
    """Negatives drawn from the unigram distribution raised to ``exponent`` (0.75 in Mikolov et al. 2013).

    ``P(w) = count(w)^a / sum_v count(v)^a``. Sampling inverts the cumulative distribution with
    ``torch.searchsorted`` on the device (the C code fills a 10^8-entry table instead; the result is the
    same distribution, exact up to float64 rounding).
    """

    def __init__(self, counts: np.ndarray | torch.Tensor, exponent: float = 0.75) -> None:
        weights = torch.as_tensor(np.asarray(counts), dtype=torch.float64) ** exponent
        self.probs = weights / weights.sum()
        cdf = self.probs.cumsum(0)
        cdf[-1] = 1.0  # rounding must not leave a gap above the last bucket
        self.cdf = cdf

    def to(self, device: torch.device | str) -> NoiseDistribution:
        self.cdf = self.cdf.to(device)
        self.probs = self.probs.to(device)
        return self

    def sample(self, shape: tuple[int, ...] | int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw word ids of ``shape`` (int64) from the global RNG (or ``generator``)."""
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        u = torch.rand(shape, dtype=torch.float64, device=self.cdf.device, generator=generator)
        return torch.searchsorted(self.cdf, u).clamp_(max=self.cdf.shape[0] - 1)


def sample_radii(n: int, window: int, device: torch.device | str = "cpu", dynamic: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Effective window radius per centre word: uniform on ``1..window`` (word2vec's ``b = rand % window``,
    radius ``window - b``), or ``window`` everywhere with ``dynamic=False``. Returns ``(n,)`` int64."""
    if not dynamic:
        return torch.full((n,), window, dtype=torch.int64, device=device)
    return radii_from_uniform(torch.rand(n, device=device, generator=generator), window)


def radii_from_uniform(u: torch.Tensor, window: int) -> torch.Tensor:
    """:func:`sample_radii` from uniform draws ``u`` in [0, 1): ``window - floor(u * window)``, int64."""
    return window - (u * window).long().clamp_(max=window - 1)


def window_mask(sentence: torch.Tensor, radius: torch.Tensor, window: int) -> torch.Tensor:
    """Which neighbours of each token are its contexts, as a band.

    Args:
        sentence: ``(N,)`` sentence id of each (kept) token, in stream order.
        radius: ``(N,)`` effective radius of each token as a centre word (``1..window``).
        window: maximum radius ``W``.

    Returns:
        ``(N, 2W+1)`` bool: entry ``[i, j]`` is True when token ``i + j - W`` is a context of centre ``i``:
        ``1 <= |j - W| <= radius[i]``, inside the stream, and in the same sentence.
    """
    n = sentence.shape[0]
    width = 2 * window + 1
    pad = sentence.new_full((window,), -1)
    neighbours = torch.cat([pad, sentence, pad]).unfold(0, width, 1)  # (N, 2W+1) sentence ids of neighbours
    offsets = (torch.arange(width, device=sentence.device) - window).abs()
    near = (offsets[None, :] <= radius[:, None]) & (offsets[None, :] > 0)
    return near & (neighbours == sentence[:, None]) if n else near


def window_pairs(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (centre position, context position) pairs a band :func:`window_mask` stands for, row-major."""
    window = (mask.shape[1] - 1) // 2
    centre, j = mask.nonzero(as_tuple=True)
    return centre, centre + j - window
