"""Intrinsic evaluation of word vectors: word similarity, word analogy, nearest neighbours.

* Similarity: Spearman (and Pearson) correlation between human scores and cosine similarities, on e.g.
  WordSim353 (Finkelstein et al. 2002) and SimLex-999 (Hill et al. 2015).
* Analogy: the Google analogy set (Mikolov et al. 2013, "Efficient Estimation of Word Representations in
  Vector Space"), solved with 3CosAdd and 3CosMul (Levy & Goldberg 2014, "Linguistic Regularities in Sparse
  and Explicit Word Representations").

Out-of-vocabulary (OOV) items are never dropped silently: every result carries the number of items, the
number covered, and the OOV words, and accuracies are given both over covered questions (the number
word2vec and gensim print) and over all questions (OOV counted as wrong).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from gensim.models import KeyedVectors

from nlp_ssl.errors import UserError

__all__ = [
    "evaluate_similarity",
    "evaluate_analogies",
    "nearest_neighbours",
    "run_intrinsic",
    "format_report",
    "default_similarity_files",
    "default_analogy_files",
]

METHODS = ("3cosadd", "3cosmul")
METHOD_LABELS = {"3cosadd": "3CosAdd", "3cosmul": "3CosMul"}
# Levy & Goldberg (2014) add this to the denominator of 3CosMul so it cannot divide by zero.
COSMUL_EPS = 1e-3
# Memory for one block of similarity rows (unique question words x candidate vocabulary), float32.
_BLOCK_BYTES = 256 << 20
# Size of one batch of per-question score rows (questions x candidate vocabulary, float32): about 1 MB
# measured fastest on a 2-core machine with a 30k vocabulary (cache-resident across the passes).
_BATCH_BYTES = 1 << 20


def default_similarity_files() -> list[Path]:
    """WordSim353 and SimLex-999 as shipped in gensim's test data."""
    from gensim.test.utils import datapath

    return [Path(datapath("wordsim353.tsv")), Path(datapath("simlex999.txt"))]


def default_analogy_files() -> list[Path]:
    """The Google analogy set (``questions-words.txt``, 19,544 questions) shipped with gensim."""
    from gensim.test.utils import datapath

    return [Path(datapath("questions-words.txt"))]


# ------------------------------------------------------------------------------------------ vocabulary


class _Vocab:
    """The first ``restrict`` rows of ``kv`` with optional case folding, unit-normalised.

    ``lookup`` maps a (folded) word to a canonical id; ``rows[cid]`` is the row of its first occurrence
    (gensim's rule: with case folding the most frequent variant's vector represents the word).
    ``canon[row]`` maps every row back to its canonical id, so that a case variant ('Paris' for 'paris')
    still counts as that word when it wins a search.
    """

    def __init__(self, kv: KeyedVectors, *, lowercase: bool, restrict: int | None = None, unit: bool = True):
        n = len(kv.index_to_key) if restrict is None else min(int(restrict), len(kv.index_to_key))
        self.kv = kv
        self.lowercase = lowercase
        self.size = n
        self.lookup: dict[str, int] = {}
        first_rows: list[int] = []
        canon = np.empty(n, dtype=np.int64)
        for row, key in enumerate(kv.index_to_key[:n]):
            word = self.fold(str(key))
            cid = self.lookup.get(word)
            if cid is None:
                cid = len(first_rows)
                self.lookup[word] = cid
                first_rows.append(row)
            canon[row] = cid
        self.rows = np.asarray(first_rows, dtype=np.int64)
        self.canon = canon
        self.unit = _unit_rows(kv.vectors[:n]) if unit else None

    def fold(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def get(self, word: str) -> int | None:
        return self.lookup.get(self.fold(word))

    def variant_rows(self) -> np.ndarray:
        """``(n_canonical, K)`` rows of every case variant of each word, padded by repeating the first row.

        Used to exclude all variants of the question words from the candidates at once (gensim excludes
        both the rows and any key whose folded form equals a question word).
        """
        n_canon = len(self.rows)
        counts = np.bincount(self.canon, minlength=n_canon)
        width = int(counts.max()) if n_canon else 1
        table = np.repeat(self.rows[:, None], width, axis=1)
        if width > 1:
            order = np.argsort(self.canon, kind="stable")
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            position = np.arange(self.size) - np.repeat(starts, counts)
            table[self.canon[order], position] = order
        return table


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; all-zero rows stay zero instead of becoming NaN."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    return m / np.maximum(norms, np.float32(1e-12))


# ------------------------------------------------------------------------------------------ similarity


@dataclass
class _Pair:
    line: int
    w1: str
    w2: str
    score: float


def _read_pairs(path: Path) -> list[_Pair]:
    """Parse ``w1 w2 score`` lines (tab- or space-separated, ``#`` comments, blank lines ignored)."""
    pairs: list[_Pair] = []
    for line_no, line in _read_lines(path):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        # Tabs, when present, are the separator, so multi-word expressions with spaces survive.
        parts = [p.strip() for p in text.split("\t")] if "\t" in text else text.split()
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise UserError(
                f"{path}:{line_no}: expected 'word1 word2 score' (3 fields), got {len(parts)} fields; fix the line"
            )
        try:
            score = float(parts[2])
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise UserError(f"{path}:{line_no}: score {parts[2]!r} is not a number; fix the line")
        pairs.append(_Pair(line_no, parts[0], parts[1], score))
    return pairs


def _read_lines(path: str | Path) -> Iterable[tuple[int, str]]:
    """Yield ``(1-based line number, line)``; missing or unreadable files become a UserError."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"evaluation file not found: {p}; check the path")
    try:
        with open(p, encoding="utf-8") as fin:
            lines = fin.readlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read evaluation file {p}: {err}; pass a UTF-8 text file") from err
    return enumerate(lines, start=1)


def evaluate_similarity(kv: KeyedVectors, path: str | Path, lowercase: bool = True) -> dict[str, Any]:
    """Correlate cosine similarities of word pairs with human judgements.

    The model score of a pair is ``cos(v1, v2) = v1.v2 / (|v1| |v2|)``; the metric is Spearman's rank
    correlation (scipy ``spearmanr``), with Pearson's r alongside. Pairs with an OOV word are excluded from
    the correlation and reported: ``pairs`` = ``covered`` + ``oov``.

    Args:
        kv: word vectors, ``kv.vectors`` of shape ``(vocab, dim)``.
        path: file of ``word1 word2 score`` lines (tab or space separated, ``#`` comments), e.g. gensim's
            ``wordsim353.tsv`` or ``simlex999.txt``.
        lowercase: fold words and vocabulary to lower case (the first vocabulary variant wins).

    Returns:
        dict with ``name``, ``path``, ``spearman``, ``spearman_p``, ``pearson``, ``pearson_p`` (None when fewer
        than 2 covered pairs or a constant input), ``pairs``, ``covered``, ``oov``, ``coverage``,
        ``oov_pairs`` (list of ``[w1, w2]``) and ``oov_words``.

    Raises:
        UserError: missing file, or a malformed line (message names the file and line number).
    """
    from scipy import stats

    path = Path(path)
    pairs = _read_pairs(path)
    vocab = _Vocab(kv, lowercase=lowercase, unit=False)
    gold: list[float] = []
    index_pairs: list[tuple[int, int]] = []
    oov_pairs: list[list[str]] = []
    oov_words: set[str] = set()
    for pair in pairs:
        a, b = vocab.get(pair.w1), vocab.get(pair.w2)
        if a is None or b is None:
            oov_pairs.append([pair.w1, pair.w2])
            oov_words.update(w for w, i in ((pair.w1, a), (pair.w2, b)) if i is None)
            continue
        gold.append(pair.score)
        index_pairs.append((int(vocab.rows[a]), int(vocab.rows[b])))

    result: dict[str, Any] = {
        "name": path.stem,
        "path": str(path),
        "lowercase": lowercase,
        "pairs": len(pairs),
        "covered": len(gold),
        "oov": len(oov_pairs),
        "coverage": (len(gold) / len(pairs)) if pairs else None,
        "spearman": None,
        "spearman_p": None,
        "pearson": None,
        "pearson_p": None,
        "oov_pairs": oov_pairs,
        "oov_words": sorted(oov_words),
    }
    if len(gold) >= 2:
        idx = np.asarray(index_pairs, dtype=np.int64)
        left = _unit_rows(kv.vectors[idx[:, 0]])
        right = _unit_rows(kv.vectors[idx[:, 1]])
        model = np.einsum("ij,ij->i", left.astype(np.float64), right.astype(np.float64))
        gold_arr = np.asarray(gold, dtype=np.float64)
        # Constant inputs make both correlations undefined; report None rather than NaN or a warning.
        if np.ptp(model) > 0 and np.ptp(gold_arr) > 0:
            rho = stats.spearmanr(gold_arr, model)
            r = stats.pearsonr(gold_arr, model)
            result.update(
                spearman=float(rho.statistic), spearman_p=float(rho.pvalue),
                pearson=float(r.statistic), pearson_p=float(r.pvalue),
            )
    return result


# ------------------------------------------------------------------------------------------- analogies


def _section_kind(name: str) -> str:
    """Google analogy convention: ``gram*`` sections are syntactic, the others (first five) semantic."""
    return "syntactic" if name.startswith("gram") else "semantic"


def _read_analogies(path: Path) -> list[tuple[str, list[tuple[int, list[str]]]]]:
    """Parse ``: section`` headers and ``a b c d`` lines into ``[(section, [(line_no, [a, b, c, d])])]``."""
    sections: list[tuple[str, list[tuple[int, list[str]]]]] = []
    for line_no, line in _read_lines(path):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(":"):
            name = text[1:].strip()
            if not name:
                raise UserError(f"{path}:{line_no}: empty section header; write ': section-name'")
            sections.append((name, []))
            continue
        words = text.split()
        if len(words) != 4:
            raise UserError(
                f"{path}:{line_no}: expected an analogy 'a b c d' (4 words), got {len(words)}; fix the line"
            )
        if not sections:
            raise UserError(f"{path}:{line_no}: analogy before any ': section' header; add a header line first")
        sections[-1][1].append((line_no, words))
    return sections


def _accuracy_block(total: int, covered: int, correct: dict[str, int], methods: Sequence[str]) -> dict[str, Any]:
    block: dict[str, Any] = {"total": total, "covered": covered, "oov": total - covered}
    for m in methods:
        k = int(correct[m])
        block[m] = {
            "correct": k,
            "accuracy": (k / covered) if covered else None,
            "accuracy_all": (k / total) if total else None,
        }
    return block


def _solve(
    vocab: _Vocab, questions: np.ndarray, methods: Sequence[str]
) -> dict[str, np.ndarray]:
    """Answer covered analogy questions by vectorised search over the candidate vocabulary.

    For ``a : b :: c : ?`` with unit vectors, each candidate ``x`` (row of ``U``, shape ``(V, dim)``) scores

    * 3CosAdd: ``cos(x, b) - cos(x, a) + cos(x, c)``, the same argmax as gensim's ``most_similar(positive=
      [b, c], negative=[a])`` since the query norm does not change the ranking (Mikolov et al. 2013);
    * 3CosMul: ``p(x, b) p(x, c) / (p(x, a) + eps)`` with ``p = (cos + 1) / 2`` in ``[0, 1]`` and
      ``eps = 1e-3`` (Levy & Goldberg 2014, eq. 4).

    Every case variant of ``a``, ``b``, ``c`` is excluded from the candidates, as word2vec and gensim do.
    Cosines are computed once per unique question word (``(n_unique, V)`` blocks, one matrix product) and
    gathered per question, so a batch costs elementwise work only.

    Args:
        vocab: the candidate vocabulary (``vocab.unit`` of shape ``(V, dim)``).
        questions: ``(Q, 4)`` canonical ids of ``a, b, c, d``.
        methods: subset of ``("3cosadd", "3cosmul")``.

    Returns:
        method -> boolean array ``(Q,)``, True where the top candidate is ``d`` (or a case variant of it).
    """
    unit = vocab.unit
    assert unit is not None
    n_cand = unit.shape[0]
    variants = vocab.variant_rows()  # (n_canonical, K)
    hits = {m: np.zeros(len(questions), dtype=bool) for m in methods}
    max_unique = max(3, _BLOCK_BYTES // (4 * max(n_cand, 1)))
    batch = int(max(1, min(1024, _BATCH_BYTES // (4 * max(n_cand, 1)))))

    # Reused work buffers: fresh multi-megabyte arrays per batch would be page-faulted in every time, and
    # batches of about a megabyte stay in cache across the dozen elementwise passes.
    buf_a, buf_b, buf_c, buf_s = (np.empty((batch, n_cand), dtype=np.float32) for _ in range(4))
    inputs = questions[:, :3].tolist()
    start = 0
    while start < len(questions):
        # Grow a block of consecutive questions while its unique words fit the memory budget; the Google
        # file is grouped by section, so blocks share most words and the matrix product stays small.
        stop, seen = start, set()
        while stop < len(questions):
            fresh = set(inputs[stop]) - seen
            if len(seen) + len(fresh) > max_unique and stop > start:
                break
            seen |= fresh
            stop += 1
        block = questions[start:stop]
        uniq, local = np.unique(block[:, :3], return_inverse=True)
        local = local.reshape(-1, 3)
        sims = unit[vocab.rows[uniq]] @ unit.T  # (n_unique, V) cosines

        for b0 in range(0, len(block), batch):
            qa, qb, qc = (local[b0:b0 + batch, j] for j in range(3))
            expected = block[b0:b0 + batch, 3]
            n = len(qa)
            # (n, 3K) rows of every variant of the three question words, to be excluded.
            excluded = np.concatenate([variants[block[b0:b0 + batch, j]] for j in range(3)], axis=1)
            arange = np.arange(n)[:, None]
            sa, sb, sc, score = buf_a[:n], buf_b[:n], buf_c[:n], buf_s[:n]
            np.take(sims, qa, axis=0, out=sa)
            np.take(sims, qb, axis=0, out=sb)
            np.take(sims, qc, axis=0, out=sc)
            if "3cosadd" in methods:
                np.subtract(sb, sa, out=score)
                score += sc
                score[arange, excluded] = -np.inf
                hits["3cosadd"][start + b0:start + b0 + n] = vocab.canon[score.argmax(axis=1)] == expected
            if "3cosmul" in methods:
                # In place on the gathered rows: p = (cos + 1) / 2; the constant factor 1/4 of the numerator
                # p(x,b) p(x,c) does not change the argmax, so it is dropped.
                sb += 1.0
                sc += 1.0
                sb *= sc
                sa *= 0.5
                sa += 0.5 + COSMUL_EPS
                sb /= sa
                sb[arange, excluded] = -np.inf
                hits["3cosmul"][start + b0:start + b0 + n] = vocab.canon[sb.argmax(axis=1)] == expected
        start = stop
    return hits


def evaluate_analogies(
    kv: KeyedVectors,
    path: str | Path,
    restrict_vocab: int = 300000,
    lowercase: bool = True,
    methods: Sequence[str] = METHODS,
) -> dict[str, Any]:
    """Accuracy on a Google-format analogy file, overall, semantic, syntactic and per section.

    A question ``a b c d`` asks ``a : b :: c : ?`` with answer ``d``. As in word2vec's ``compute-accuracy``
    and gensim's ``evaluate_word_analogies``, only the first ``restrict_vocab`` vocabulary rows are used both
    to look up question words and as candidates; a question is covered when all four words are found there.

    Args:
        kv: word vectors, ``kv.vectors`` of shape ``(vocab, dim)``, ideally sorted by descending frequency.
        path: analogy file (``: section`` headers, ``a b c d`` lines), e.g. gensim's ``questions-words.txt``.
        restrict_vocab: number of leading vocabulary rows used.
        lowercase: fold words and vocabulary to lower case (the first variant's vector represents a word;
            any variant counts as a correct answer).
        methods: any of ``"3cosadd"`` (Mikolov et al. 2013) and ``"3cosmul"`` (Levy & Goldberg 2014).

    Returns:
        dict with ``name``, ``path``, ``methods``, ``restrict_vocab``, ``overall``, ``semantic``, ``syntactic``
        (each ``{total, covered, oov, <method>: {correct, accuracy, accuracy_all}}``; ``accuracy`` is over
        covered questions, ``accuracy_all`` counts OOV questions as wrong, None when undefined),
        ``sections`` (list of the same blocks plus ``section`` and ``kind``), ``oov_words`` and ``seconds``.

    Raises:
        UserError: missing file, malformed line (message names the file and line number), unknown method.
    """
    methods = tuple(m.lower() for m in methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown analogy method(s) {unknown or methods}; choose from {', '.join(METHODS)}")
    if restrict_vocab is None or int(restrict_vocab) < 1:
        raise UserError(f"restrict_vocab must be a positive integer, got {restrict_vocab}; pass e.g. 300000")
    t0 = time.perf_counter()
    path = Path(path)
    parsed = _read_analogies(path)
    vocab = _Vocab(kv, lowercase=lowercase, restrict=int(restrict_vocab))

    covered_ids: list[list[int]] = []
    covered_section: list[int] = []
    totals = np.zeros(len(parsed), dtype=np.int64)
    oov_words: set[str] = set()
    for s, (_, items) in enumerate(parsed):
        totals[s] = len(items)
        for _, words in items:
            ids = [vocab.get(w) for w in words]
            if any(i is None for i in ids):
                oov_words.update(vocab.fold(w) for w, i in zip(words, ids) if i is None)
                continue
            covered_ids.append(ids)  # type: ignore[arg-type]
            covered_section.append(s)
    questions = np.asarray(covered_ids, dtype=np.int64).reshape(-1, 4)
    section_of = np.asarray(covered_section, dtype=np.int64)
    hits = _solve(vocab, questions, methods) if len(questions) else {m: np.zeros(0, bool) for m in methods}

    covered = np.bincount(section_of, minlength=len(parsed))
    correct = {m: np.bincount(section_of, weights=hits[m], minlength=len(parsed)).astype(int) for m in methods}
    sections = []
    for s, (name, _) in enumerate(parsed):
        block = _accuracy_block(int(totals[s]), int(covered[s]), {m: correct[m][s] for m in methods}, methods)
        sections.append({"section": name, "kind": _section_kind(name), **block})

    def summary(kind: str | None) -> dict[str, Any]:
        pick = [i for i, sec in enumerate(sections) if kind is None or sec["kind"] == kind]
        return _accuracy_block(
            int(totals[pick].sum()), int(covered[pick].sum()),
            {m: int(correct[m][pick].sum()) for m in methods}, methods,
        )

    return {
        "name": path.stem,
        "path": str(path),
        "methods": list(methods),
        "restrict_vocab": int(restrict_vocab),
        "candidates": vocab.size,
        "lowercase": lowercase,
        "overall": summary(None),
        "semantic": summary("semantic"),
        "syntactic": summary("syntactic"),
        "sections": sections,
        "oov_words": sorted(oov_words),
        "seconds": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------------------ neighbours


def _find(kv: KeyedVectors, word: str) -> int | None:
    """Row of ``word``: exact key first, then its lower-case form (common for uncased vocabularies)."""
    for key in (word, word.lower()):
        if key in kv.key_to_index:
            return int(kv.key_to_index[key])
    return None


def nearest_neighbours(
    kv: KeyedVectors, words: Iterable[str], topn: int = 10
) -> dict[str, list[tuple[str, float]] | None]:
    """Top-``topn`` cosine neighbours over the whole vocabulary for each word (None when OOV).

    One ``(n_words, dim) @ (dim, V)`` product for all words; the word itself is excluded.
    """
    if int(topn) < 1:
        raise UserError(f"topn must be at least 1, got {topn}; pass e.g. --topn 10")
    words = list(words)
    out: dict[str, list[tuple[str, float]] | None] = {w: None for w in words}
    found = [(w, r) for w in words if (r := _find(kv, w)) is not None]
    if not found:
        return out
    matrix = np.asarray(kv.vectors, dtype=np.float32)
    # Divide by the norms after the product instead of normalising a copy of the whole matrix, which
    # would double memory for multi-million-word vocabularies.
    norms = np.maximum(np.linalg.norm(matrix, axis=1), np.float32(1e-12))
    rows = np.asarray([r for _, r in found], dtype=np.int64)
    sims = (_unit_rows(matrix[rows]) @ matrix.T) / norms  # (n_found, V) cosines
    sims[np.arange(len(rows)), rows] = -np.inf
    k = min(int(topn), matrix.shape[0] - 1)
    if k < 1:
        return {w: ([] if _find(kv, w) is not None else None) for w in words}
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    for i, (word, _) in enumerate(found):
        order = top[i][np.argsort(-sims[i, top[i]], kind="stable")]
        out[word] = [(str(kv.index_to_key[j]), float(sims[i, j])) for j in order]
    return out


# --------------------------------------------------------------------------------------------- suite


DEFAULT_NEIGHBOURS = ("king", "france", "computer", "good", "run")


def run_intrinsic(
    source: str | Path | KeyedVectors,
    *,
    similarity_files: Sequence[str | Path] | None = None,
    analogy_files: Sequence[str | Path] | None = None,
    neighbours: Sequence[str] | None = None,
    topn: int = 10,
    restrict_vocab: int = 300000,
) -> dict[str, Any]:
    """Load vectors and run the default suite (WordSim353, SimLex-999, Google analogies) plus extra files.

    Args:
        source: anything :func:`nlp_ssl.eval.vectors.load_vectors` accepts, or a ``KeyedVectors``.
        similarity_files: extra word-pair files, evaluated after the defaults.
        analogy_files: extra analogy files, evaluated after the defaults.
        neighbours: words whose nearest neighbours to list (default: a few common words).
        topn: neighbours per word.
        restrict_vocab: analogy candidate vocabulary size (leading rows).

    Returns:
        JSON-serialisable dict: ``source``, ``vocab_size``, ``dim``, ``similarity`` (list of
        :func:`evaluate_similarity` results), ``analogy`` (list of :func:`evaluate_analogies` results),
        ``neighbours`` and ``seconds``.
    """
    from nlp_ssl.eval.vectors import load_vectors

    if int(topn) < 1:
        raise UserError(f"topn must be at least 1, got {topn}; pass e.g. --topn 10")
    # Check every user file before the (possibly slow) model load, so a typo fails at once.
    extra_sim = [Path(p) for p in (similarity_files or [])]
    extra_ana = [Path(p) for p in (analogy_files or [])]
    for p in extra_sim + extra_ana:
        if not p.is_file():
            raise UserError(f"evaluation file not found: {p}; check the path")
    t0 = time.perf_counter()
    kv = load_vectors(source)
    load_seconds = time.perf_counter() - t0
    results: dict[str, Any] = {
        "source": "<KeyedVectors>" if isinstance(source, KeyedVectors) else str(source),
        "vocab_size": len(kv.index_to_key),
        "dim": int(kv.vector_size),
        "load_seconds": load_seconds,
        "similarity": [evaluate_similarity(kv, p) for p in default_similarity_files() + extra_sim],
        "analogy": [
            evaluate_analogies(kv, p, restrict_vocab=restrict_vocab) for p in default_analogy_files() + extra_ana
        ],
        "neighbours": nearest_neighbours(kv, list(neighbours) if neighbours else list(DEFAULT_NEIGHBOURS), topn),
    }
    results["seconds"] = time.perf_counter() - t0
    return results


# -------------------------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def _coverage(covered: int, total: int) -> str:
    share = f"{100.0 * covered / total:.1f}%" if total else "n/a"
    return f"{covered}/{total} ({share})"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Fixed-width columns; numeric columns right-aligned so decimals line up."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(str(c).rjust(w) if r else str(c).ljust(w) for c, w, r in zip(cells, widths, right)).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]


def format_report(results: dict[str, Any]) -> str:
    """Render :func:`run_intrinsic` results as fixed-width tables for a terminal."""
    lines: list[str] = []
    lines.append(
        f"Intrinsic evaluation of {results.get('source', '?')}: "
        f"{results.get('vocab_size', 0):,} words x {results.get('dim', 0)} dims"
    )
    sims = results.get("similarity") or []
    if sims:
        lines += ["", "Word similarity (cosine vs human scores; OOV pairs excluded and counted)"]
        rows = []
        for r in sims:
            cov = _coverage(r["covered"], r["pairs"])
            rows.append([r["name"], "Spearman", _num(r["spearman"]), cov])
            rows.append(["", "Pearson", _num(r["pearson"]), ""])
        lines += _table(["set", "metric", "score", "coverage"], rows, [False, False, True, True])
        for r in sims:
            if r["oov"]:
                shown = ", ".join(r["oov_words"][:12]) + (" ..." if len(r["oov_words"]) > 12 else "")
                lines.append(f"  {r['name']}: {r['oov']} OOV pairs ({len(r['oov_words'])} words: {shown})")

    for a in results.get("analogy") or []:
        methods = a["methods"]
        lines += [
            "",
            f"Word analogy: {a['name']} (restrict_vocab={a['restrict_vocab']:,}; accuracy over covered questions,"
            " 'all' counts OOV as wrong)",
        ]
        rows = []
        for subset in ("overall", "semantic", "syntactic"):
            block = a[subset]
            for i, m in enumerate(methods):
                rows.append([
                    subset if i == 0 else "", METHOD_LABELS[m], _pct(block[m]["accuracy"]),
                    _pct(block[m]["accuracy_all"]), _coverage(block["covered"], block["total"]) if i == 0 else "",
                ])
        lines += _table(["subset", "method", "accuracy", "all", "coverage"], rows, [False, False, True, True, True])
        lines += ["", f"Per-section analogy accuracy: {a['name']}"]
        rows = []
        for sec in a["sections"]:
            rows.append([
                sec["section"], sec["kind"][:3], *(_pct(sec[m]["accuracy"]) for m in methods),
                _coverage(sec["covered"], sec["total"]),
            ])
        lines += _table(
            ["section", "kind", *(METHOD_LABELS[m] for m in methods), "coverage"], rows,
            [False, False, *([True] * len(methods)), True],
        )
        lines.append(f"  ({a['seconds']:.2f} s, {a['candidates']:,} candidate words)")

    neigh = results.get("neighbours") or {}
    if neigh:
        lines += ["", "Nearest neighbours (cosine)"]
        width = max(len(w) for w in neigh)
        for word, items in neigh.items():
            text = "(not in vocabulary)" if items is None else ", ".join(f"{k} {s:.2f}" for k, s in items)
            lines.append(f"  {word.ljust(width)}  {text}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
