"""The pre-LN masked LM (ModernBERT): sparse head = full head, its heads carry over to fine-tuning, mean pooling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.errors import UserError
from nlp_ssl.models.transformer_lm import TransformerConfig, build_lm
from nlp_ssl.objectives.lm import MaskedLMObjective, sparse_head_path
from nlp_ssl.objectives.masking import MaskingConfig, mask_tokens

TEXTS = ["the cat sat on the mat", "a dog ate the bone", "birds fly over the river", "the market fell sharply"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1))


def _modernbert(tokenizer, **overrides):
    cfg = TransformerConfig(architecture="modernbert", hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **overrides)
    torch.manual_seed(0)
    return build_lm("masked", cfg, tokenizer, block_size=32)


def test_builds_a_pre_ln_encoder_with_global_attention_and_mean_pooling(tokenizer) -> None:
    model = _modernbert(tokenizer)
    config = model.config
    assert type(model).__name__ == "ModernBertForMaskedLM"
    assert config.layer_types == ["full_attention", "full_attention"]
    assert config.classifier_pooling == "mean"
    assert config.intermediate_size == 96  # 8/3 x 32 = 85.3, rounded to a multiple of 32
    assert (config.pad_token_id, config.cls_token_id, config.sep_token_id) == (
        tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id)
    assert model.decoder.weight.data_ptr() == model.model.embeddings.tok_embeddings.weight.data_ptr()
    assert sparse_head_path(model) == ("head", "decoder")


def test_sparse_head_loss_and_gradients_equal_the_full_head(tokenizer) -> None:
    model = _modernbert(tokenizer)
    objective = MaskedLMObjective(model, tokenizer, MaskingConfig())
    ids = torch.randint(5, len(tokenizer), (4, 32), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    objective.rng.manual_seed(7)
    sparse = objective(batch)
    maskable = ~objective.special_lookup[ids]
    corrupted, selected = mask_tokens(ids, maskable, tokenizer.mask_token_id, len(tokenizer), MaskingConfig(),
                                      generator=torch.Generator().manual_seed(7))
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    assert sparse.num_items == int(selected.sum())
    full = model(input_ids=corrupted, labels=labels)  # the model's own head over every position
    torch.testing.assert_close(sparse.loss, full.loss, rtol=1e-5, atol=1e-6)
    sparse.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model(input_ids=corrupted, labels=labels).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_fine_tuning_heads_start_from_the_pretrained_transform(tokenizer, tmp_path: Path) -> None:
    model = _modernbert(tokenizer)
    with torch.no_grad():
        model.head.dense.weight.normal_()  # something a fresh initialisation would not produce
    model.save_pretrained(tmp_path / "mlm")
    for auto in (AutoModelForSequenceClassification, AutoModelForTokenClassification):
        clf, info = auto.from_pretrained(tmp_path / "mlm", num_labels=3, output_loading_info=True)
        assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]  # only the new output layer
        torch.testing.assert_close(clf.head.dense.weight, model.head.dense.weight)

    clf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "mlm", num_labels=3).eval()
    enc = tokenizer(["the cat sat", "a dog ate the bone on the mat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        states = clf.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        pooled = (states * mask).sum(1) / mask.sum(1)  # the mean over real tokens, padding excluded
        expected = clf.classifier(clf.head(pooled))
        torch.testing.assert_close(clf(**enc).logits, expected)


def test_architecture_must_fit_the_recipe(tokenizer) -> None:
    with pytest.raises(UserError, match="not a masked LM"):
        build_lm("masked", TransformerConfig(architecture="lstm"), tokenizer, 32)
    with pytest.raises(UserError, match="lstm only"):
        TransformerConfig(architecture="modernbert", softmax="adaptive")


def test_special_words_stay_whole_and_are_never_masked() -> None:
    lines = ["pierre <unk> N years old will join the board", "the <unk> fell N points"] * 30
    plain = train_tokenizer(lines, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1))
    assert plain.convert_ids_to_tokens(plain("a <unk> b")["input_ids"]) == ["[CLS]", "a", "<", "unk", ">", "b", "[SEP]"]
    tok = train_tokenizer(lines, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1, special_words=["<unk>"]))
    ids = tok("a <unk> b")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "a", "<unk>", "b", "[SEP]"]
    unk = tok.convert_tokens_to_ids("<unk>")
    assert unk == 5 and unk in tok.all_special_ids  # right after BERT's five specials, whatever the corpus
    model = _modernbert(tok)
    objective = MaskedLMObjective(model, tok, MaskingConfig(mlm_probability=0.99))
    batch = torch.tensor([tok("the <unk> fell N points <unk>")["input_ids"]] * 4)
    objective.rng.manual_seed(0)
    _, selected = objective.corrupt(batch, torch.ones_like(batch))
    assert not selected[batch == unk].any() and selected[batch == tok.convert_tokens_to_ids("fell")].all()
    with pytest.raises(UserError, match="special_words"):
        TokenizerConfig(special_words=["two words"])
