"""The fused output projection + cross-entropy against a naive per-row loop, and the causal LM objective's fused
path against its unfused one on a real GPT-2."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from nlp_ssl.objectives.linear_cross_entropy import linear_cross_entropy
from nlp_ssl.objectives.lm import CausalLMObjective, causal_lm_loss, plain_head


def _naive(hidden: torch.Tensor, head: nn.Linear, targets: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """Mean of -log softmax(W h_i + b)[t_i] over the rows whose target is not -100, one row at a time."""
    terms, hits = [], 0
    for h, t in zip(hidden, targets):
        if t == -100:
            continue
        logits = head.weight @ h + (head.bias if head.bias is not None else 0)
        terms.append(-torch.log_softmax(logits, -1)[t])
        hits += int(logits.argmax() == t)
    return torch.stack(terms).mean(), len(terms), hits


@pytest.mark.parametrize("chunk", [1, 3, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_loss_counts_and_gradients_match_a_naive_loop(chunk, bias):
    torch.manual_seed(0)
    head = nn.Linear(8, 13, bias=bias)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 13, (10,))
    targets[[2, 7]] = -100
    loss, count, hits = linear_cross_entropy(hidden, head, targets, chunk_size=chunk)
    naive, naive_count, naive_hits = _naive(hidden, head, targets)
    torch.testing.assert_close(loss, naive)
    assert int(count) == naive_count and int(hits) == 0  # accuracy is an evaluation figure
    with torch.no_grad():
        assert int(linear_cross_entropy(hidden, head, targets, chunk_size=chunk)[2]) == naive_hits
    params = [hidden, head.weight, *([head.bias] if bias else [])]
    # An upstream factor (gradient accumulation scales the loss) reaches every gradient.
    fused_grads = torch.autograd.grad(2.5 * loss, params)
    naive_grads = torch.autograd.grad(2.5 * naive, params)
    for got, want in zip(fused_grads, naive_grads):
        torch.testing.assert_close(got, want)
    assert fused_grads[0][[2, 7]].abs().max() == 0  # ignored rows get no gradient


def test_without_gradients_only_the_loss_is_computed():
    torch.manual_seed(1)
    head = nn.Linear(6, 9, bias=False)
    hidden, targets = torch.randn(5, 6), torch.randint(0, 9, (5,))
    with torch.no_grad():
        loss, count, _ = linear_cross_entropy(hidden, head, targets, chunk_size=2)
    torch.testing.assert_close(loss, _naive(hidden, head, targets)[0].detach())
    assert int(count) == 5 and not loss.requires_grad
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(hidden, head, targets, chunk_size=0)


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("padded", [False, True])
def test_the_causal_objective_fused_path_equals_logits_and_cross_entropy(padded):
    model = _gpt2()
    objective = CausalLMObjective(model, tokenizer=None)
    ids = torch.randint(0, 50, (3, 12))
    mask = torch.ones_like(ids)
    if padded:
        mask[1, 9:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "padded": padded}
    assert plain_head(model) == (model.transformer, model.lm_head)
    for training in (True, False):
        objective.train(training)
        out = objective(batch)
        reference_logits = model(input_ids=ids, attention_mask=mask if padded else None).logits
        loss, count, accuracy = causal_lm_loss(reference_logits, ids, mask, padded=padded)
        torch.testing.assert_close(out.loss, loss)
        assert int(out.num_items) == int(count) == (30 if padded else 33)
        if not training:
            torch.testing.assert_close(out.metrics["accuracy"], accuracy)
            continue
        params = [p for p in model.parameters()]  # the head is tied to the token embeddings
        for got, want in zip(torch.autograd.grad(out.loss, params), torch.autograd.grad(loss, params)):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_only_heads_known_to_be_plain_projections_are_fused():
    bert = BertForMaskedLM(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=32))
    assert plain_head(bert) is None
    assert plain_head(nn.Linear(2, 2)) is None


def test_torch_compile_targets_the_body_the_objectives_call():
    """Both LM objectives call ``model.base_model`` directly (fused or sparse head): that is what gets compiled."""
    from nlp_ssl.objectives.lm import MaskedLMObjective
    from nlp_ssl.objectives.masking import MaskingConfig

    gpt2 = _gpt2()
    assert CausalLMObjective(gpt2, tokenizer=None).compiled_modules() == [gpt2.transformer]
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: index for index, token in enumerate(specials + list("abcdefgh"))}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
                                        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                        mask_token="[MASK]")
    bert = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32))
    assert MaskedLMObjective(bert, tokenizer, MaskingConfig()).compiled_modules() == [bert.bert]
