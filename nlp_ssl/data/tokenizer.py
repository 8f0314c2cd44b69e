"""Tokenizers: train a WordPiece (BERT), byte-level BPE (GPT-2) or word-level vocabulary with ``tokenizers``, or
load one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from nlp_ssl.errors import UserError

BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
GPT_SPECIALS = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|pad|>"}
# Mikolov's PTB spells its unknown word and sentence end this way; the word-level vocabulary keeps that spelling.
WORD_SPECIALS = {"unk_token": "<unk>", "eos_token": "<eos>", "bos_token": "<eos>", "pad_token": "<pad>"}


@dataclass
class TokenizerConfig:
    """Either an existing tokenizer (``name_or_path``: a folder or hub id) or one trained on the corpus.

    ``kind`` picks what is trained: ``wordpiece`` (BERT), ``bpe`` (byte-level, GPT-2) or ``wordlevel`` (one id per
    whitespace-separated word, for per-word perplexities on a corpus that is already tokenised into words, such
    as Mikolov's PTB); None is the recipe's default (WordPiece for masked LM, BPE for causal LM).

    ``special_words`` (WordPiece) are corpus words kept whole as special tokens: never split, never chosen for
    masking. PTB spells every rare word ``<unk>``; as plain text it becomes three frequent pieces (``<``,
    ``unk``, ``>``) that a masked LM learns to predict from each other, which teaches it nothing.
    """

    name_or_path: str | None = None
    kind: Literal["wordpiece", "bpe", "wordlevel"] | None = None
    vocab_size: int = 8192
    min_frequency: int = 2
    lowercase: bool = True
    max_training_texts: int | None = None
    special_words: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise UserError(f"config key 'tokenizer.vocab_size' must be >= 300, got {self.vocab_size}")
        for word in self.special_words:
            if not word or any(ch.isspace() for ch in word):
                raise UserError(f"config key 'tokenizer.special_words' holds {word!r}; give single words, e.g. [<unk>]")


def train_tokenizer(texts: Iterable[str], kind: Literal["wordpiece", "bpe", "wordlevel"], cfg: TokenizerConfig
                    ) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` and wrap it for transformers (``save_pretrained``/``AutoTokenizer``).

    ``wordlevel`` is :func:`word_level_tokenizer`: one id per whitespace-separated word.
    """
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=cfg.lowercase, clean_text=True, handle_chinese_chars=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials_first = list(BERT_SPECIALS.values()) + [w for w in cfg.special_words if w not in BERT_SPECIALS.values()]
        trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                            special_tokens=specials_first, show_progress=False)
        tok.train_from_iterator(_limited(texts, cfg.max_training_texts), trainer=trainer)
        # The WordPiece trainer learns the same vocabulary every time but numbers it in hash-map order;
        # renumber it (specials first, then sorted) so the same corpus always gives the same ids.
        learned = tok.get_vocab()
        ordered = specials_first + sorted(t for t in learned if t not in specials_first)
        tok.model = models.WordPiece(vocab={t: i for i, t in enumerate(ordered)}, unk_token="[UNK]",
                                     continuing_subword_prefix="##")
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
        tok.decoder = decoders.WordPiece(prefix="##")
        specials = dict(BERT_SPECIALS)
        if len(specials_first) > len(BERT_SPECIALS):
            specials["additional_special_tokens"] = specials_first[len(BERT_SPECIALS):]  # type: ignore[assignment]
    elif kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=["<|endoftext|>", "<|pad|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        tok.train_from_iterator(_limited(texts, cfg.max_training_texts), trainer=trainer)
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        tok.decoder = decoders.ByteLevel()
        specials = GPT_SPECIALS
    elif kind == "wordlevel":
        tok = word_level_tokenizer(texts, cfg)
        specials = WORD_SPECIALS
    else:
        raise UserError(f"unknown tokenizer kind '{kind}'; use 'wordpiece', 'bpe' or 'wordlevel'")
    if tok.get_vocab_size() < 10:
        raise UserError("the trained tokenizer is nearly empty: the corpus has too little text")
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1_000_000, **specials)


def word_level_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """A ``WordLevel`` tokenizer over the whitespace-separated words of ``texts`` (lower-cased if ``cfg.lowercase``).

    The vocabulary is ``<unk>``, ``<eos>``, ``<pad>`` (ids 0, 1, 2) and then every word seen at least
    ``cfg.min_frequency`` times, most frequent first (ties alphabetical), up to ``cfg.vocab_size`` entries in
    all; anything else encodes as ``<unk>``. This is the word-level setting of the language-modelling
    literature (Mikolov et al. 2010; Zaremba et al. 2014): perplexity per token is perplexity per word. A corpus
    that already spells unknown words ``<unk>`` (Mikolov's PTB) keeps a single ``<unk>``. No special token is
    added on encoding: the causal-LM data step appends ``<eos>`` to every line, which rebuilds PTB's stream.

    Words are counted here rather than by ``trainers.WordLevelTrainer`` because that trainer gives a special
    token that also occurs as a corpus word (PTB's ``<unk>``) a second id, leaving the first one unreachable.
    Punctuation is not split off: the corpus is expected to be tokenised into words already, as PTB is.
    """
    specials = list(dict.fromkeys(WORD_SPECIALS.values()))
    # Count through the tokenizer's own normaliser so that counted words are exactly the ones it will look up.
    normalizer = normalizers.Lowercase() if cfg.lowercase else None
    counts: Counter[str] = Counter()
    for text in _limited(texts, cfg.max_training_texts):
        counts.update((normalizer.normalize_str(text) if normalizer else text).split())
    words = sorted((w for w, n in counts.items() if n >= cfg.min_frequency and w not in specials),
                   key=lambda w: (-counts[w], w))
    vocab = {token: index for index, token in enumerate(specials + words[: max(cfg.vocab_size - len(specials), 0)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=WORD_SPECIALS["unk_token"]))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(specials)
    return tok


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(f"could not load tokenizer '{name_or_path}' ({first[:200]}); give a folder with "
                        "tokenizer.json or a hub id, or leave tokenizer.name_or_path empty to train one") from None


def _limited(texts: Iterable[str], limit: int | None) -> Iterator[str]:
    for index, text in enumerate(texts):
        if limit is not None and index >= limit:
            return
        if text:
            yield text
