"""Downstream comparison pieces: the sparse baselines, TREC fine-tuning and the classifier's pooling choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nlp_ssl.errors import UserError
from nlp_ssl.eval.sparse_baselines import _shape, tfidf_baseline, word_features
from nlp_ssl.models.checkpoint import TaskSpec, load_model_config


def test_word_features_describe_the_word_and_its_neighbours() -> None:
    assert [_shape(w) for w in ("London", "G20", "@bob", "iPhone", "...")] == ["Xx", "Xd", "@x", "xXx", "."]
    feats = word_features(["I", "love", "#Paris", "today"], 2)
    assert {"w=#paris", "shape=#Xx", "hashtag", "-1:w=love", "-2:w=i", "1:w=today", "2:pad", "suf3=ris",
            "pre3=#pa"} <= set(feats)
    assert "title" in feats and "first" not in feats and "upper" not in feats
    first = word_features(["Obama", "spoke"], 0)
    assert {"title", "first", "-1:pad", "-2:pad", "1:shape=x"} <= set(first)


def test_tfidf_baseline_picks_c_on_validation_and_scores_test_once() -> None:
    pytest.importorskip("sklearn")
    result = tfidf_baseline("trec", c_grid=(0.1, 10.0))
    scores = {float(c): s for c, s in result["validation"].items()}
    assert result["C"] == max(scores, key=lambda c: (scores[c], -c))
    assert result["validation_accuracy"] == scores[result["C"]]
    # Surface features already solve much of TREC (question words): far above the 6-class majority share.
    assert 0.7 < result["test_accuracy"] <= 1.0
    with pytest.raises(UserError, match="unknown sentence task"):
        tfidf_baseline("sst2")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import BertConfig, BertForMaskedLM

    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
    from nlp_ssl.models.transformer_lm import TransformerConfig, build_lm

    texts = ["what is the capital of france ?", "who wrote hamlet ?", "how many feet are in a mile ?"] * 30
    tokenizer = train_tokenizer(texts, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1))
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    modern = build_lm("masked", TransformerConfig(architecture="modernbert", hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=2), tokenizer, 64)
    bert = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64))
    for name, model in (("modernbert", modern), ("bert", bert)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return {"modernbert": root / "modernbert", "bert": root / "bert"}


def test_pooling_is_set_where_the_classifier_offers_it(checkpoints: dict[str, Path]) -> None:
    spec = TaskSpec("trec", "sequence", "accuracy", ["A", "B"], "trec", None, "", "TREC", "test")
    assert load_model_config(str(checkpoints["modernbert"]), spec).classifier_pooling == "mean"
    assert load_model_config(str(checkpoints["modernbert"]), spec, "cls").classifier_pooling == "cls"
    assert not hasattr(load_model_config(str(checkpoints["bert"]), spec), "classifier_pooling")
    with pytest.raises(UserError, match="always pools its own way"):
        load_model_config(str(checkpoints["bert"]), spec, "mean")


def test_trec_fine_tuning_runs_offline_and_scores_validation_and_test(checkpoints: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    from nlp_ssl.config import load_config
    from nlp_ssl.pipelines.finetune import GlueFinetuneConfig, run_glue

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(GlueFinetuneConfig, repo / "recipes/configs/glue/trec.yaml",
                      [f"model={checkpoints['modernbert']}", f"output_dir={tmp_path / 'trec'}", "num_train_epochs=1",
                       "max_train_samples=64", "max_eval_samples=32", "per_device_train_batch_size=16"])
    summary = run_glue(cfg)[0].summary
    assert summary["task"] == "trec" and summary["data_sizes"]["train"] == 64
    for split in ("validation", "test"):
        accuracy = summary["median"][split]["accuracy"]
        assert 0.0 <= accuracy <= 1.0 and np.isfinite(accuracy)
    assert (tmp_path / "trec" / "final" / "config.json").is_file()
