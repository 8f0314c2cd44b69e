"""Load word vectors from any of the formats the toolkit meets, as a gensim ``KeyedVectors``.

Supported sources (see :func:`load_vectors`):

* a gensim native file (``KeyedVectors.save``, usually ``*.kv``; a saved full ``Word2Vec``/``FastText``
  model also works, its ``.wv`` is taken);
* a word2vec text or binary file (``*.txt``, ``*.vec``, ``*.bin``, optionally ``.gz``/``.bz2``); text vs binary
  is sniffed from the bytes, not guessed from the name, and header-less GloVe text is accepted too;
* a folder written by our word2vec export (it holds ``vectors.kv``);
* a transformers model folder or hub id: the rows of the input embedding matrix become the vectors and the
  tokenizer's whole-word tokens become the keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from gensim.models import KeyedVectors

from nlp_ssl.errors import UserError

__all__ = ["load_vectors", "vocab_to_words"]

# Suffixes that mark a path as a vectors *file*: such a source that does not exist is a missing file,
# never a hub id (otherwise "vecs.txt" would be sent to the hub and fail with a confusing message).
_VECTOR_SUFFIXES = {".kv", ".txt", ".vec", ".bin", ".w2v", ".gz", ".bz2", ".model", ".npy", ".tsv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# BERT-style vocabularies reserve placeholder rows that were never trained ("[unused12]"); they are not
# registered as special tokens, so they are filtered by shape.
_UNUSED = re.compile(r"^[\[<]unused\d+[\]>]$")


def load_vectors(source: str | Path | KeyedVectors) -> KeyedVectors:
    """Load word vectors from a file, an export folder, or a transformers model folder / hub id.

    Args:
        source: path of a ``.kv`` native file, a word2vec text/binary file, a folder holding ``vectors.kv``,
            a transformers model folder (holding ``config.json``), or a hub id such as ``bert-base-uncased``.
            An already loaded ``KeyedVectors`` is returned unchanged.

    Returns:
        ``KeyedVectors`` with ``vectors`` of shape ``(vocab_size, dim)``; for a transformers model the rows
        are the input-embedding rows of the whole-word tokens, in token-id order.

    Raises:
        UserError: the path does not exist, the file cannot be read as vectors, or the model cannot be loaded.
    """
    if isinstance(source, KeyedVectors):
        return source
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / "vectors.kv").is_file():
            return _load_native(path / "vectors.kv")
        if (path / "config.json").is_file():
            return _load_transformers(str(path))
        raise UserError(
            f"{path} is a folder without vectors.kv (word2vec export) or config.json (transformers model); "
            "pass a vectors file, an export folder or a model folder"
        )
    if path.is_file():
        return _load_file(path)
    if _looks_like_hub_id(text):
        return _load_transformers(text)
    raise UserError(
        f"vectors not found: {text} does not exist; pass a .kv or word2vec file, a word2vec export folder, "
        "or a transformers model folder / hub id"
    )


def _looks_like_hub_id(text: str) -> bool:
    """True for strings shaped like ``name`` or ``org/name`` that do not look like a vectors file name."""
    if not _HUB_ID.match(text):
        return False
    return Path(text).suffix.lower() not in _VECTOR_SUFFIXES


# --------------------------------------------------------------------------------------------- files


def _load_native(path: Path) -> KeyedVectors:
    """Load a gensim pickle (``KeyedVectors.save`` or a full model's ``save``)."""
    try:
        obj: Any = KeyedVectors.load(str(path))
    except Exception as err:  # pickle, missing companion .npy, version mismatch...: all unreadable
        raise UserError(f"cannot read gensim vectors file {path}: {_short(err)}; re-export it with gensim 4") from err
    if not isinstance(obj, KeyedVectors):
        # A full Word2Vec / FastText / Doc2Vec model pickle: its word vectors live in .wv.
        obj = getattr(obj, "wv", None)
    if not isinstance(obj, KeyedVectors):
        raise UserError(f"{path} is a gensim pickle but holds no word vectors; pass a KeyedVectors or Word2Vec file")
    return obj


def _load_file(path: Path) -> KeyedVectors:
    """Sniff ``path`` and dispatch to the native or word2vec loader."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(4)
    except OSError as err:
        raise UserError(f"cannot read vectors file {path}: {_short(err)}; check the path and permissions") from err
    if not magic:
        raise UserError(f"vectors file {path} is empty; pass a non-empty vectors file")
    if magic[:1] == b"\x80":  # pickle protocol >= 2: gensim's native save format
        return _load_native(path)
    suffix = path.suffix.lower()
    if (magic[:2] == b"\x1f\x8b" and suffix != ".gz") or (magic[:3] == b"BZh" and suffix != ".bz2"):
        # gensim/smart_open choose the decompressor from the file name only.
        kind = ".gz" if magic[:2] == b"\x1f\x8b" else ".bz2"
        raise UserError(f"vectors file {path} is compressed but its name does not end in {kind}; rename it")
    binary, no_header = _sniff_word2vec(path)
    try:
        return KeyedVectors.load_word2vec_format(str(path), binary=binary, no_header=no_header)
    except Exception as err:
        kind = "binary" if binary else "text"
        raise UserError(f"cannot read word2vec {kind} file {path}: {_short(err)}; check that it is complete") from err


def _sniff_word2vec(path: Path) -> tuple[bool, bool]:
    """Decide ``(binary, no_header)`` for a word2vec-family file from its first bytes.

    Both word2vec formats start with an ASCII ``"<count> <dim>\\n"`` header; after it the text format has a
    line ``word f1 ... f_dim`` while the binary format has ``word `` followed by ``dim`` raw float32s, which
    do not parse as ``dim`` decimal numbers. GloVe text has no header: its first line already is a vector.
    """
    from gensim import utils as gutils

    try:
        with gutils.open(str(path), "rb") as fin:
            header = fin.readline(4096)
            # A text record is at most a few dozen bytes a number; the cap keeps a binary file from being
            # read whole when its float bytes happen to contain no newline.
            first = fin.readline(1 << 20)
    except Exception as err:
        raise UserError(f"cannot read vectors file {path}: {_short(err)}; check that it is complete") from err
    head = header.split()
    if len(head) == 2 and all(tok.isdigit() for tok in head):
        dim = int(head[1])
        return (not _is_text_record(first, dim)), False
    if _is_text_record(header, None):
        return False, True
    raise UserError(
        f"{path} is not a vectors file (expected a gensim .kv, or word2vec text/binary starting with "
        "'<count> <dim>'); pass a supported file"
    )


def _is_text_record(line: bytes, dim: int | None) -> bool:
    """True if ``line`` reads as ``word v1 ... v_dim`` (any ``dim >= 1`` when ``dim`` is None)."""
    try:
        parts = line.decode("utf-8").rstrip("\r\n").split(" ")
    except UnicodeDecodeError:
        return False
    parts = [p for p in parts if p]
    if len(parts) < 2 or (dim is not None and len(parts) != dim + 1):
        return False
    try:
        for value in parts[1:]:
            float(value)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------- transformers


def _load_transformers(name: str) -> KeyedVectors:
    """Turn a transformers model's input embeddings into word vectors keyed by whole-word tokens."""
    try:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name)
        model = AutoModel.from_pretrained(name)
    except Exception as err:
        raise UserError(
            f"cannot load {name} as a transformers model: {_short(err)}; pass a local model folder, "
            "or check the hub id and the network (HF_HUB_OFFLINE)"
        ) from err
    embeddings = model.get_input_embeddings()
    if embeddings is None or not hasattr(embeddings, "weight"):
        raise UserError(f"model {name} has no input embedding matrix; pass a token-embedding model")
    matrix = embeddings.weight.detach().float().cpu().numpy()  # (num_tokens, hidden)

    special = set(getattr(tokenizer, "all_special_tokens", []) or [])
    scheme = _detect_scheme(tokenizer)
    vocab = tokenizer.get_vocab()
    words, ids = vocab_to_words(vocab, special=special, scheme=scheme)
    # Tokenizers may list added tokens beyond the embedding rows (resized-later models): keep the in-range.
    keep = [i for i, tid in enumerate(ids) if tid < matrix.shape[0]]
    words = [words[i] for i in keep]
    rows = np.asarray([ids[i] for i in keep], dtype=np.int64)
    if not words:
        raise UserError(f"the tokenizer of {name} has no whole-word tokens; use a word-level model")
    # No ``count=``: gensim would pre-allocate that many unnamed rows and append ours after them.
    kv = KeyedVectors(vector_size=matrix.shape[1], dtype=np.float32)
    kv.add_vectors(words, matrix[rows])
    return kv


def _detect_scheme(tokenizer: Any) -> str:
    """Name the sub-word marking scheme: ``wordpiece``, ``bytelevel``, ``metaspace``, ``endofword`` or ``plain``.

    Prefers the fast tokenizer's own description (model type, decoder, pre-tokenizer); falls back to counting
    marker prefixes in the vocabulary when that is unavailable (slow tokenizers).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        try:
            spec = json.loads(backend.to_str())
        except Exception:
            spec = None
        if spec:
            blob = json.dumps([spec.get("pre_tokenizer"), spec.get("decoder")])
            model = spec.get("model") or {}
            if '"ByteLevel"' in blob:
                return "bytelevel"
            if '"Metaspace"' in blob:
                return "metaspace"
            if model.get("type") == "WordPiece":
                return "wordpiece"
            if model.get("end_of_word_suffix") == "</w>":
                return "endofword"
    return _scheme_from_vocab(tokenizer.get_vocab())


def _scheme_from_vocab(vocab: Iterable[str]) -> str:
    """Guess the scheme from marker frequencies; a marker on >= 5% of tokens is taken as deliberate."""
    tokens = list(vocab)
    n = max(len(tokens), 1)
    counts = {
        "bytelevel": sum(t.startswith("\u0120") for t in tokens),
        "metaspace": sum(t.startswith("\u2581") for t in tokens),
        "wordpiece": sum(t.startswith("##") for t in tokens),
        "endofword": sum(t.endswith("</w>") for t in tokens),
    }
    scheme, count = max(counts.items(), key=lambda kv: kv[1])
    return scheme if count >= 0.05 * n else "plain"


def _byte_decoder() -> dict[str, int]:
    """Inverse of byte-level BPE's byte -> printable-character table.

    Byte-level BPE (GPT-2 style) shows each byte as one printable character: bytes that are already
    printable and not whitespace stand for themselves, the other 68 are moved to code points 256, 257, ...
    in byte order (so a space is 'Ġ' = U+0120).
    """
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    table: dict[str, int] = {chr(b): b for b in printable}
    shift = 0
    for b in range(256):
        if b not in table.values():
            table[chr(256 + shift)] = b
            shift += 1
    return table


def vocab_to_words(
    vocab: dict[str, int], *, special: Iterable[str] = (), scheme: str = "wordpiece"
) -> tuple[list[str], list[int]]:
    """Select whole-word tokens of a sub-word vocabulary and turn them into plain words.

    Rules by scheme: ``wordpiece`` drops ``##`` continuation pieces; ``bytelevel`` keeps only tokens that start
    a word (leading 'Ġ', i.e. a space byte), decodes the byte-level characters to UTF-8 and drops tokens that
    are not valid UTF-8 on their own; ``metaspace`` keeps tokens with a leading '▁' and strips it;
    ``endofword`` keeps tokens ending in ``</w>`` and strips it. All schemes drop special tokens, unused
    placeholders, empty or whitespace-containing results, and later duplicates.

    Args:
        vocab: token -> id mapping (``tokenizer.get_vocab()``).
        special: special tokens to skip.
        scheme: one of ``wordpiece``, ``bytelevel``, ``metaspace``, ``endofword``, ``plain``.

    Returns:
        ``(words, ids)``, parallel lists in increasing id order.
    """
    special = set(special)
    decoder = _byte_decoder() if scheme == "bytelevel" else None
    words: list[str] = []
    ids: list[int] = []
    seen: set[str] = set()
    for token, tid in sorted(vocab.items(), key=lambda item: item[1]):
        if token in special or _UNUSED.match(token):
            continue
        word: str | None
        if scheme == "wordpiece":
            word = None if token.startswith("##") else token
        elif scheme == "bytelevel":
            word = None
            if token.startswith("\u0120") and decoder is not None:
                try:
                    word = bytes(decoder[ch] for ch in token).decode("utf-8")[1:]
                except (KeyError, UnicodeDecodeError):
                    word = None  # a fragment of a multi-byte character, or not byte-level at all
        elif scheme == "metaspace":
            word = token[1:] if token.startswith("\u2581") else None
        elif scheme == "endofword":
            word = token[: -len("</w>")] if token.endswith("</w>") else None
        else:
            word = token
        if not word or any(ch.isspace() for ch in word) or word in seen:
            continue
        seen.add(word)
        words.append(word)
        ids.append(tid)
    return words, ids


def _short(err: BaseException) -> str:
    """First line of an exception message, so UserError messages stay on one line."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300]
