"""GLUE / seqeval metrics against hand computations and the GLUE leaderboard convention."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nlp_ssl.errors import UserError
from nlp_ssl.eval.metrics import (
    compute_metric,
    glue_metric,
    glue_score,
    primary_metric,
    seqeval_metric,
    task_score,
)

# A binary confusion matrix small enough to do by hand: TP=3, FN=1, TN=2, FP=1.
REFS = [1, 1, 1, 1, 0, 0, 0]
PREDS = [1, 1, 1, 0, 0, 0, 1]


def test_cola_matthews_by_hand():
    # MCC = (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (6 - 1) / sqrt(4*4*3*3) = 5/12
    out = glue_metric("cola", PREDS, REFS)
    assert list(out) == ["matthews_correlation"]
    assert out["matthews_correlation"] == pytest.approx(5 / 12, abs=1e-12)


def test_mrpc_and_qqp_accuracy_and_f1_by_hand():
    # precision 3/4, recall 3/4 -> F1 0.75; 5 of 7 right.
    for task in ("mrpc", "qqp", "MRPC"):
        out = glue_metric(task, PREDS, REFS)
        assert list(out) == ["accuracy", "f1"]
        assert out["accuracy"] == pytest.approx(5 / 7)
        assert out["f1"] == pytest.approx(0.75)


def test_accuracy_tasks_and_aliases():
    for task in ("sst2", "SST-2", "mnli", "mnli_matched", "MNLI-mm", "qnli", "rte", "wnli", "hans"):
        assert glue_metric(task, [1, 0, 1, 1], [1, 1, 1, 0]) == {"accuracy": 0.5}
    assert glue_metric("mnli", np.array([0, 1, 2]), np.array([0, 2, 2])) == {"accuracy": pytest.approx(2 / 3)}


def test_stsb_pearson_spearman_by_hand():
    x = [1.0, 2.0, 3.0, 4.0]
    y = [1.0, 3.0, 2.0, 10.0]
    # Pearson: sum(dx*dy) = 13, sum(dx^2) = 5, sum(dy^2) = 50 -> 13 / sqrt(250).
    # Spearman: ranks of y are 1, 3, 2, 4 -> 1 - 6*2 / (4*15) = 0.8.
    out = glue_metric("sts-b", x, y)
    assert list(out) == ["pearson", "spearmanr"]
    assert out["pearson"] == pytest.approx(13 / math.sqrt(250), abs=1e-6)
    assert out["spearmanr"] == pytest.approx(0.8, abs=1e-9)


def test_stsb_is_computed_in_float32_like_evaluate():
    # evaluate stores STS-B predictions in a float32 column before scipy sees them.
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    a = rng.normal(size=40)
    b = a + rng.normal(size=40)
    out = glue_metric("stsb", a, b)
    assert out["pearson"] == float(pearsonr(a.astype(np.float32), b.astype(np.float32))[0])
    assert isinstance(out["pearson"], float)


def test_classification_rejects_fractional_predictions():
    with pytest.raises(ValueError):
        glue_metric("sst2", [0.5, 1.0], [0, 1])
    assert glue_metric("sst2", [0.0, 1.0], [0, 1]) == {"accuracy": 1.0}


def test_unknown_task_lists_valid_ones():
    with pytest.raises(UserError, match="unknown GLUE task 'sst5'.*cola.*stsb"):
        glue_metric("sst5", [0], [0])
    with pytest.raises(UserError):
        primary_metric("squad")


def test_f1_kind_needs_binary_labels():
    with pytest.raises(UserError, match="accuracy"):
        compute_metric("f1", [0, 1, 2], [0, 1, 2])


def test_primary_metric():
    assert primary_metric("cola") == "matthews_correlation"
    assert primary_metric("MRPC") == "f1"
    assert primary_metric("qqp") == "f1"
    assert primary_metric("sts-b") == "spearmanr"
    assert primary_metric("mnli") == "accuracy"
    assert primary_metric("rte") == "accuracy"


def test_task_score_means_two_metrics():
    assert task_score("mrpc", {"accuracy": 0.8, "f1": 0.9}) == pytest.approx(0.85)
    assert task_score("stsb", {"pearson": 0.7, "spearmanr": 0.9}) == pytest.approx(0.8)
    with pytest.raises(UserError, match="missing"):
        task_score("mrpc", {"f1": 0.9})


def test_glue_score_by_hand():
    per_task = {
        "cola": {"matthews_correlation": 0.5},
        "mrpc": {"accuracy": 0.8, "f1": 0.9},
        "stsb": {"pearson": 0.7, "spearmanr": 0.9},
        "mnli_matched": {"accuracy": 0.8},
        "mnli_mismatched": {"accuracy": 0.6},
    }
    # Leaderboard: cola .5, mrpc .85, stsb .8, mnli (.8+.6)/2 = .7 -> 2.85 / 4
    assert glue_score(per_task) == pytest.approx(0.7125)
    # BERT paper: .5, f1 .9, spearman .9, m .8, mm .6 -> 3.7 / 5
    assert glue_score(per_task, convention="bert") == pytest.approx(0.74)
    # A single MNLI entry counts once.
    single = {"mnli": {"accuracy": 0.7}, "sst2": {"accuracy": 0.9}}
    assert glue_score(single) == pytest.approx(0.8)


def _bert_large_test_row() -> dict[str, dict[str, float]]:
    # BERT-large's published GLUE test-set row (percent), as the leaderboard lists it.
    return {
        "CoLA": {"matthews_correlation": 60.5},
        "SST-2": {"accuracy": 94.9},
        "MRPC": {"f1": 89.3, "accuracy": 85.4},
        "STS-B": {"pearson": 87.6, "spearmanr": 86.5},
        "QQP": {"f1": 72.1, "accuracy": 89.3},
        "MNLI-m": {"accuracy": 86.7},
        "MNLI-mm": {"accuracy": 85.9},
        "QNLI": {"accuracy": 92.7},
        "RTE": {"accuracy": 70.1},
        "WNLI": {"accuracy": 65.1},
    }


def test_glue_score_reproduces_published_numbers():
    row = _bert_large_test_row()
    assert round(glue_score(row), 1) == 80.5  # GLUE leaderboard score of BERT-large
    assert round(glue_score(row, convention="bert"), 1) == 82.1  # "Average" in the BERT paper, table 1


def test_glue_score_errors():
    with pytest.raises(UserError):
        glue_score({})
    with pytest.raises(UserError, match="unknown GLUE task"):
        glue_score({"squad": {"f1": 0.9}})
    with pytest.raises(UserError, match="not both"):
        glue_score({"mnli": {"accuracy": 0.8}, "mnli_matched": {"accuracy": 0.8}})
    with pytest.raises(UserError, match="twice"):
        glue_score({"sst2": {"accuracy": 0.8}, "SST-2": {"accuracy": 0.8}})
    with pytest.raises(UserError):
        glue_score({"sst2": {"accuracy": 0.8}}, convention="superglue")


def test_seqeval_entity_level_by_hand():
    refs = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    preds = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "I-ORG", "O", "O"]]
    out = seqeval_metric(preds, refs)
    # Gold entities: PER, LOC, ORG(3 tokens). Predicted: PER, ORG(2 tokens). Only PER matches exactly:
    # the ORG span is partial and counts as wrong.
    assert list(out) == ["LOC", "ORG", "PER", "overall_precision", "overall_recall", "overall_f1", "overall_accuracy"]
    assert out["overall_precision"] == pytest.approx(1 / 2)
    assert out["overall_recall"] == pytest.approx(1 / 3)
    assert out["overall_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert out["overall_accuracy"] == pytest.approx(6 / 8)
    assert out["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1}
    assert out["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert out["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}
    assert isinstance(out["PER"]["number"], int) and isinstance(out["overall_f1"], float)


def test_seqeval_evaluate_docstring_example():
    # The example in evaluate's seqeval card: overall F1 0.5, PER F1 1.0.
    preds = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    refs = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    out = seqeval_metric(preds, refs)
    assert out["overall_f1"] == 0.5
    assert out["PER"]["f1"] == 1.0
    assert out["MISC"]["number"] == 1


def test_seqeval_strict_mode_and_bad_scheme():
    # conlleval mode reads a leading I- as an entity start; strict IOB2 does not.
    refs = [["B-PER", "I-PER", "O"]]
    preds = [["I-PER", "I-PER", "O"]]
    assert seqeval_metric(preds, refs)["overall_f1"] == 1.0
    assert seqeval_metric(preds, refs, scheme="IOB2", mode="strict")["overall_f1"] == 0.0
    with pytest.raises(UserError, match="IOB2"):
        seqeval_metric(preds, refs, scheme="BIO")
    with pytest.raises(UserError):
        seqeval_metric(preds, refs, mode="lenient")
    with pytest.raises(ValueError):
        seqeval_metric([["O"]], [["O", "O"]])
