"""Masked-LM corruption (80/10/10, whole words) and the sparse LM head."""

from __future__ import annotations

import torch
from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.objectives.lm import MaskedLMObjective
from nlp_ssl.objectives.masking import MaskingConfig, mask_tokens

MASK, VOCAB = 3, 1000


def test_80_10_10_proportions_on_200k_positions():
    torch.manual_seed(0)
    ids = torch.randint(10, VOCAB, (400, 500))  # 200k positions
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False  # e.g. [CLS]
    corrupted, selected = mask_tokens(ids, maskable, MASK, VOCAB, MaskingConfig())
    n_maskable = int(maskable.sum())
    n_sel = int(selected.sum())
    # Binomial standard deviations: 0.15 +- 0.0008 over 199,600 positions; allow about 5 sigma.
    assert abs(n_sel / n_maskable - 0.15) < 0.004
    assert not selected[:, 0].any()
    masked = (corrupted == MASK) & selected
    unchanged = (corrupted == ids) & selected
    randomised = selected & ~masked & ~unchanged
    # A random replacement equals the original token with probability ~1/990: count those as "unchanged".
    frac_mask, frac_keep, frac_rand = (int(x.sum()) / n_sel for x in (masked, unchanged, randomised))
    assert abs(frac_mask - 0.8) < 0.01
    assert abs(frac_keep - 0.1) < 0.008
    assert abs(frac_rand - 0.1) < 0.008
    # Nothing outside the selection changes.
    assert torch.equal(corrupted[~selected], ids[~selected])
    # Random replacements are spread over the vocabulary.
    assert corrupted[randomised].unique().numel() > 0.9 * VOCAB * (1 - torch.exp(torch.tensor(-int(randomised.sum()) / VOCAB)))


def test_configurable_proportions():
    torch.manual_seed(1)
    ids = torch.randint(10, VOCAB, (200, 500))
    cfg = MaskingConfig(mlm_probability=0.3, mask_replace_prob=1.0, random_replace_prob=0.0)
    corrupted, selected = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), MASK, VOCAB, cfg)
    assert abs(selected.float().mean().item() - 0.3) < 0.01
    assert torch.all(corrupted[selected] == MASK)


def test_whole_word_masking_selects_every_piece_of_a_word():
    torch.manual_seed(2)
    # Words of 1-3 pieces: word_start marks the first piece.
    word_start = torch.rand(300, 200) < 0.5
    word_start[:, 0] = True
    ids = torch.randint(10, VOCAB, word_start.shape)
    _, selected = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), MASK, VOCAB, MaskingConfig(), word_start=word_start)
    word_index = torch.cumsum(word_start.long(), dim=1)
    for row in range(20):
        for word in word_index[row].unique():
            pieces = selected[row][word_index[row] == word]
            assert pieces.all() or not pieces.any()
    # Words are chosen with probability 0.15, so about 15% of tokens too.
    assert abs(selected.float().mean().item() - 0.15) < 0.01


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    texts = ["the cat sat on the mat", "a dog ate the bone", "birds fly over the river"] * 20
    return train_tokenizer(texts, "wordpiece", TokenizerConfig(vocab_size=300, min_frequency=1))


def test_sparse_head_loss_equals_full_head_loss():
    tok = _tiny_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = BertForMaskedLM(config)
    objective = MaskedLMObjective(model, tok, MaskingConfig())
    ids = torch.randint(5, len(tok), (4, 32))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    objective.rng.manual_seed(7)
    sparse = objective(batch)
    # Reference: the same corruption (same seed), the full head over every position, labels -100 elsewhere.
    maskable = ~objective.special_lookup[ids]
    corrupted, selected = mask_tokens(ids, maskable, tok.mask_token_id, len(tok), MaskingConfig(),
                                      generator=torch.Generator().manual_seed(7))
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    full = model(input_ids=corrupted, labels=labels)
    assert sparse.num_items == int(selected.sum())
    torch.testing.assert_close(sparse.loss, full.loss, rtol=1e-5, atol=1e-6)
    # And the gradients agree.
    sparse.loss.backward()
    grad_sparse = model.bert.embeddings.word_embeddings.weight.grad.clone()
    model.zero_grad()
    model(input_ids=corrupted, labels=labels).loss.backward()
    torch.testing.assert_close(grad_sparse, model.bert.embeddings.word_embeddings.weight.grad, rtol=1e-4, atol=1e-6)


def test_special_tokens_and_padding_are_never_selected():
    tok = _tiny_tokenizer()
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32))
    objective = MaskedLMObjective(model, tok, MaskingConfig(mlm_probability=0.99, mask_replace_prob=1.0, random_replace_prob=0.0))
    enc = tok(["the cat sat", "a dog"], padding="max_length", max_length=12, return_tensors="pt")
    objective.rng.manual_seed(0)
    corrupted, selected = objective.corrupt(enc["input_ids"], enc["attention_mask"])
    special = (enc["input_ids"] == tok.cls_token_id) | (enc["input_ids"] == tok.sep_token_id)
    padding = enc["attention_mask"] == 0
    assert not selected[special | padding].any()
    assert selected[~special & ~padding].all()  # at probability 0.99 every ordinary token of 7 is chosen here
    assert (corrupted[selected] == tok.mask_token_id).all() and torch.equal(corrupted[~selected], enc["input_ids"][~selected])
