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


def _heldout_before(docs, context):
    """The held-out windows as they were built before they became lazy (every window materialised): the reference."""
    from flashgau.data.batching import _pack

    rows, skips = [], []
    for doc in docs:
        n = len(doc)
        if n < context + 1:
            rows.append(doc)
            skips.append(0)
            continue
        start = 0
        while start + context + 1 <= n:
            rows.append(doc[start:start + context + 1])
            skips.append(0)
            start += context
        if start < n - 1:
            tail = n - context - 1
            rows.append(doc[tail:])
            skips.append(start - tail)
    batch = _pack(rows, context)
    for r, skip in enumerate(skips):
        batch.labels[r, :skip] = -100
    return batch


@pytest.mark.parametrize("context", [1, 3, 8, 39, 40, 99, 100])
def test_lazy_heldout_windows_equal_the_materialised_ones(context):
    gen = torch.Generator().manual_seed(context)
    lengths = [2, 5, 9, 40, 41, 100, 101, 237] + torch.randint(2, 300, (12,), generator=gen).tolist()
    docs = [torch.randint(0, 256, (n,), generator=gen, dtype=torch.int32) for n in lengths]
    windows = HeldoutWindows(docs, context)
    reference = _heldout_before(docs, context)
    assert len(windows) == reference.input_ids.shape[0] and windows.num_targets == reference.num_targets
    for limit in (None, 7):
        index = torch.arange(len(windows))
        if limit is not None:
            index = torch.linspace(0, len(windows) - 1, limit).round().long().unique()
        got = list(windows.batches(batch_size=6, limit=limit))
        for i, batch in enumerate(got):
            sel = index[6 * i:6 * i + 6]
            mask = None if reference.attention_mask is None else reference.attention_mask[sel]
            assert torch.equal(batch.input_ids, reference.input_ids[sel])
            assert torch.equal(batch.labels, reference.labels[sel])
            assert (batch.attention_mask is None) == (mask is None or bool(mask.all()))
            if batch.attention_mask is not None:
                assert torch.equal(batch.attention_mask, mask)


def test_sampler_draws_today_s_windows():
    # The stream before memory-mapped documents, written out: the same generator, picks and document lookup.
    docs, context = _docs(), 8
    sampler = WindowSampler(docs, context, seed=11)
    gen = torch.Generator().manual_seed(11)
    starts = torch.tensor([max(len(d) - context, 1) for d in docs])
    cum = torch.cumsum(starts, 0)
    for _ in range(4):
        picks = torch.randint(int(cum[-1]), (5,), generator=gen)
        doc_idx = torch.searchsorted(cum, picks, right=True)
        offsets = picks - (cum - starts)[doc_idx]
        expected = [docs[i][o:o + context + 1] for i, o in zip(doc_idx.tolist(), offsets.tolist())]
        batch = sampler.next_batch(5)
        for row, want in zip(batch.input_ids, expected):
            assert torch.equal(row[:len(want) - 1], want[:-1].long())


def test_ranks_draw_disjoint_shares_of_one_stream():
    single = WindowSampler(_docs(), 8, seed=2)
    ranks = [WindowSampler(_docs(), 8, seed=2, rank=r, world_size=3) for r in range(3)]
    for _ in range(3):
        whole = single.next_batch(6)                      # what one process drawing B * W windows sees
        parts = [s.next_batch(2) for s in ranks]
        for r, part in enumerate(parts):
            assert torch.equal(part.input_ids, whole.input_ids[r::3])
    assert all(s.windows_drawn == single.windows_drawn == 18 for s in ranks)
    assert all(torch.equal(s.state_dict()["generator"], single.state_dict()["generator"]) for s in ranks)
    with pytest.raises(ConfigError, match="rank must be in"):
        WindowSampler(_docs(), 8, seed=0, rank=3, world_size=3)


def test_packed_documents_let_windows_cross_boundaries_and_say_where():
    from flashgau.data.batching import TokenDocuments

    docs = TokenDocuments.from_tensors(_docs())
    packed = docs.packed()
    assert len(packed) == 1 and torch.equal(packed.tokens(0), torch.cat(_docs()).long())
    sampler = WindowSampler(packed, context=8, seed=0)
    crossed = 0
    for _ in range(50):
        batch = sampler.next_batch(4)
        assert batch.attention_mask is None                           # every window is full
        doc = batch.input_ids // 1000                                 # the true document of each input
        if batch.segment_ids is None:
            assert all(len(set(r.tolist())) == 1 for r in doc)
            continue
        for ids, seg, lab in zip(doc, batch.segment_ids, batch.labels):
            crossed += len(set(ids.tolist())) > 1
            assert seg[0] == 0 and torch.equal(seg[1:] != seg[:-1], ids[1:] != ids[:-1])   # segments = documents
            scored = lab != -100
            assert torch.equal(lab[scored] // 1000, ids[scored])     # never a label from the next document
            assert scored.sum() >= len(ids) - 1 - int((ids[1:] != ids[:-1]).sum())
    assert crossed > 10
