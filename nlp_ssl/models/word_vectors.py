"""Word2vec's two embedding tables and the exported word-vector artifacts.

The model is two ``(V, d)`` matrices (Mikolov et al. 2013): *input* vectors (word2vec.c's ``syn0``, the
word vectors everyone uses) and *output* vectors (``syn1neg``, the targets of negative sampling).
Initialisation follows word2vec.c: input rows uniform in ``[-0.5/d, 0.5/d)``, output rows zero.

Both backends (torch and gensim) export the same files with :func:`export_word_vectors`:

* ``vectors.kv``: gensim ``KeyedVectors`` native file (``KeyedVectors.load``), with word counts;
* ``vectors.txt`` / ``vectors.bin``: word2vec text / binary format (``KeyedVectors.load_word2vec_format``);
* ``vocab.tsv``: ``word<TAB>count`` in vocabulary order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gensim.models import KeyedVectors
from torch import nn

from nlp_ssl.data.word2vec_data import Vocabulary

VECTOR_FILES = ("vectors.kv", "vectors.txt", "vectors.bin", "vocab.tsv")


class WordVectors(nn.Module):
    """Input and output embedding tables, ``(V, d)`` each."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.empty(vocab_size, dim))
        self.output = nn.Parameter(torch.empty(vocab_size, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """word2vec.c: ``syn0`` uniform in [-0.5/d, 0.5/d), ``syn1neg`` zero (draws from the global RNG)."""
        dim = self.input.shape[1]
        with torch.no_grad():
            self.input.uniform_(-0.5 / dim, 0.5 / dim)
            self.output.zero_()

    @property
    def vocab_size(self) -> int:
        return int(self.input.shape[0])

    @property
    def dim(self) -> int:
        return int(self.input.shape[1])


def keyed_vectors(words: list[str], vectors: np.ndarray | torch.Tensor, counts: np.ndarray | None = None) -> KeyedVectors:
    """A gensim ``KeyedVectors`` holding ``vectors`` (``(V, d)``, float32) under ``words`` (with counts)."""
    matrix = vectors.detach().float().cpu().numpy() if isinstance(vectors, torch.Tensor) else np.asarray(vectors, np.float32)
    kv = KeyedVectors(vector_size=matrix.shape[1], count=0, dtype=np.float32)
    kv.add_vectors(list(words), matrix)
    if counts is not None:
        # Stored in the .kv file and used by save_word2vec_format to keep frequency order.
        kv.expandos["count"] = np.asarray(counts, dtype=np.int64).copy()
    return kv


def export_word_vectors(kv: KeyedVectors, vocab: Vocabulary, folder: Path) -> list[Path]:
    """Write :data:`VECTOR_FILES` into ``folder``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kv.save(str(folder / "vectors.kv"))
    kv.save_word2vec_format(str(folder / "vectors.txt"), binary=False)
    kv.save_word2vec_format(str(folder / "vectors.bin"), binary=True)
    vocab.save_tsv(folder / "vocab.tsv")
    return [folder / name for name in VECTOR_FILES]
