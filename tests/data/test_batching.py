"""Training windows stay inside documents; held-out windows are fixed and score every token once."""

import pytest
import torch

from flashgau.data.batching import HeldoutWindows, WindowSampler, tokenize_documents
from flashgau.data.tokenizers import ByteTokenizer
from flashgau.errors import ConfigError


def _docs():
    # Each document's ids live in their own range, so a window that mixes documents is easy to spot.
    return [torch.arange(1000 * (i + 1), 1000 * (i + 1) + n, dtype=torch.int32) for i, n in enumerate([40, 5, 100, 9])]


def test_training_windows_are_consecutive_tokens_of_one_document():
    sampler = WindowSampler(_docs(), context=8, seed=0)
    seen_docs = set()
    for _ in range(50):
        batch = sampler.next_batch(4)
        for row_in, row_lab, row_mask in zip(batch.input_ids, batch.labels,
                                             batch.attention_mask if batch.attention_mask is not None
                                             else torch.ones_like(batch.input_ids, dtype=torch.bool)):
            real = row_in[row_mask]
            assert len(set((real // 1000).tolist())) == 1  # one document
            seen_docs.add(int(real[0]) // 1000)
            assert torch.equal(real[1:], real[:-1] + 1)  # consecutive tokens
            assert torch.equal(row_lab[row_mask], real + 1)  # labels are the next tokens
            assert (row_lab[~row_mask] == -100).all()
    assert seen_docs == {1, 2, 3, 4}  # short documents (5 and 9 tokens) are padded, not dropped


def test_sampler_state_restores_the_exact_stream():
    a = WindowSampler(_docs(), context=8, seed=3)
    a.next_batch(4)
    state = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in a.state_dict().items()}
    expected = [a.next_batch(4).input_ids for _ in range(3)]
    b = WindowSampler(_docs(), context=8, seed=99)
    b.load_state_dict(state)
    assert all(torch.equal(x, b.next_batch(4).input_ids) for x in expected)
    assert b.windows_drawn == a.windows_drawn == 16
    assert not torch.equal(WindowSampler(_docs(), 8, seed=4).next_batch(4).input_ids,
                           WindowSampler(_docs(), 8, seed=3).next_batch(4).input_ids)


def test_heldout_windows_score_each_target_exactly_once():
    docs = _docs()
    windows = HeldoutWindows(docs, context=8)
    assert windows.num_targets == sum(len(d) - 1 for d in docs)
    scored = []
    for batch in windows.batches(batch_size=3):
        keep = batch.labels != -100
        scored += batch.labels[keep].tolist()
    assert sorted(scored) == sorted(t for d in docs for t in d[1:].tolist())
    # Fixed: the same windows every time, and a limit takes a fixed, evenly spaced subset.
    first = [b.input_ids for b in windows.batches(4, limit=5)]
    second = [b.input_ids for b in HeldoutWindows(docs, context=8).batches(4, limit=5)]
    assert all(torch.equal(x, y) for x, y in zip(first, second))
    assert sum(len(x) for x in first) == 5


def test_context_longer_than_the_data_is_a_clear_error():
    with pytest.raises(ConfigError, match="longer than the training data"):
        WindowSampler(_docs(), context=100, seed=0)
    with pytest.raises(ConfigError, match="longer than the held-out data"):
        HeldoutWindows(_docs(), context=500)


def test_tokenize_documents_drops_texts_without_a_target():
    out = tokenize_documents(["ab", "x", "hello"], ByteTokenizer())
    assert [t.tolist() for t in out] == [[97, 98], [104, 101, 108, 108, 111]]
