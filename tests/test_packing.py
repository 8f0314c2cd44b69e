"""Packing keeps every token; streaming and in-memory packing agree."""

from __future__ import annotations

import datasets
import numpy as np
import torch

from nlp_ssl.data.packing import PackedBlocks, collate_blocks, pack_array, pack_stream


def test_pack_array_keeps_every_token_and_pads_only_the_tail():
    stream = np.arange(1, 1001)
    blocks, mask = pack_array(stream, block_size=64, pad_id=0)
    assert blocks.shape == (16, 64)  # ceil(1000 / 64)
    assert np.array_equal(blocks[mask.astype(bool)], stream)
    assert mask[:-1].all() and mask[-1].sum() == 1000 - 15 * 64
    assert (blocks[-1][~mask[-1].astype(bool)] == 0).all()


def test_packing_across_many_map_batches_drops_nothing():
    # 3,000 documents of ragged lengths: packing per 1,000-document map batch would drop up to 3 remainders.
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, 500, size=int(n))) for n in rng.integers(1, 40, size=3000)]
    ds = datasets.Dataset.from_dict({"input_ids": docs})
    packed = PackedBlocks.from_tokenized(ds, block_size=128, pad_id=0)
    flat = np.concatenate([np.asarray(d) for d in docs])
    assert packed.num_tokens == flat.size
    batch = collate_blocks(packed.__getitems__(list(range(len(packed)))))
    assert torch.equal(batch["input_ids"][batch["attention_mask"].bool()], torch.as_tensor(flat))


def test_stream_packing_equals_array_packing():
    rng = np.random.default_rng(1)
    docs = [list(map(int, rng.integers(1, 50, size=int(n)))) for n in rng.integers(1, 30, size=200)]
    streamed = list(pack_stream(docs, block_size=32, pad_id=0))
    blocks, mask = pack_array(np.concatenate([np.asarray(d) for d in docs]), block_size=32, pad_id=0)
    assert len(streamed) == blocks.shape[0]
    for item, block, m in zip(streamed, blocks, mask):
        assert torch.equal(item["input_ids"], torch.as_tensor(block))
        assert torch.equal(item["attention_mask"], torch.as_tensor(m))
