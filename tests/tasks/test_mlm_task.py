"""The masked-language-model task: BERT's corruption (15% chosen; 80% mask, 10% random, 10% kept) measured on a
large sample, the loss counted on the chosen positions only, held-out positions fixed by the window alone (any batch
size, subset, model or run), padding invariance of the bidirectional archs' held-out scores, the training stream's
exact resume and its split across processes."""

import math

import pytest
import torch

from flashgau import ARCHS, LanguageModel
from flashgau.data.batching import IGNORE_INDEX, HeldoutWindows, TokenDocuments, WindowSampler
from flashgau.data.tokenizers import ByteTokenizer
from flashgau.errors import ConfigError
from flashgau.tasks import OBJECTIVES, get_task
from flashgau.tasks.mlm import MASK_RATE, Draws, MaskedWindows, MLMHeldout, corrupt

TOK = ByteTokenizer().with_mask_token()           # V = 257, the mask token is id 256


def documents(lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return TokenDocuments.from_tensors([torch.randint(0, 256, (n,), generator=gen, dtype=torch.int32)
                                        for n in lengths])


def test_the_registry_names_the_objectives_and_their_direction():
    assert OBJECTIVES[:3] == ("lm", "mlm", "qa")
    assert get_task("lm").causal and not get_task("mlm").causal and get_task("qa").causal
    assert get_task("mlm").tokenizer(ByteTokenizer()).vocab_size == 257
    assert get_task("lm").tokenizer(ByteTokenizer()).vocab_size == 256
    with pytest.raises(ConfigError, match="unknown objective 'xx'; choose one of lm, mlm, qa"):
        get_task("xx")


def test_corruption_statistics_on_a_large_sample():
    B, T = 400, 500
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 256, (B, T), generator=gen)
    lengths = torch.randint(50, T + 1, (B,), generator=gen)
    real = torch.arange(T)[None, :] < lengths[:, None]
    inputs, labels = corrupt(ids, real, Draws.draw(B, T, gen, 256), mask_id=256)
    chosen = labels != IGNORE_INDEX
    assert not (chosen & ~real).any()                                       # padding is never chosen
    assert torch.equal(chosen.sum(1), (lengths.double() * MASK_RATE).round().long())  # 15% of each window's real tokens
    assert torch.equal(labels[chosen], ids[chosen])                          # labels: the original tokens
    assert torch.equal(inputs[~chosen], ids[~chosen])                        # the rest is untouched
    n = int(chosen.sum())
    masked = int((inputs[chosen] == 256).sum()) / n
    kept = int((inputs[chosen] == ids[chosen]).sum()) / n
    other = 1 - masked - kept
    tol = 4 * math.sqrt(0.25 / n)                                           # ~4 standard deviations
    assert abs(masked - 0.8) < tol
    assert abs(kept - (0.1 + 0.1 / 256)) < tol                              # a random token may be the original
    assert abs(other - 0.1 * 255 / 256) < tol
    assert int(inputs.max()) <= 256 and not (inputs[~chosen] == 256).any()  # random tokens are never the mask


def test_a_short_window_still_gets_one_chosen_token():
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    real = torch.tensor([[True, True, True, False, False]])
    _, labels = corrupt(ids, real, Draws.draw(1, 5, torch.Generator().manual_seed(3), 256), mask_id=256)
    assert int((labels != IGNORE_INDEX).sum()) == 1 and int((labels[:, 3:] != IGNORE_INDEX).sum()) == 0


def test_the_loss_counts_the_chosen_positions_only(build):
    model = build("flash", causal=False, vocab_size=257)
    stream = MaskedWindows(WindowSampler(documents([300, 200]), 32, seed=0), TOK, seed=0)
    batch = stream.next_batch(3)
    chosen = batch.labels != IGNORE_INDEX
    logits = model(batch.input_ids).logits.detach().requires_grad_()
    loss = LanguageModel.loss(logits, batch.labels)
    want = torch.nn.functional.cross_entropy(logits[chosen], batch.labels[chosen])
    assert torch.allclose(loss, want) and torch.allclose(model(batch.input_ids, labels=batch.labels).loss, want)
    loss.backward()
    assert logits.grad[~chosen].abs().max() == 0 and logits.grad[chosen].abs().max() > 0


def test_packed_masked_windows_keep_their_documents_apart(build):
    """--pack-documents with the MLM objective: windows crossing a boundary carry segment ids, the corruption leaves
    them alone, and a bidirectional model's loss on a packed window is the per-document runs' loss."""
    stream = MaskedWindows(WindowSampler(documents([40, 30, 50]).packed(), 32, seed=2), TOK, seed=2)
    batch = next(b for b in (stream.next_batch(4) for _ in range(50)) if b.segment_ids is not None)
    row = int((batch.segment_ids[:, -1] > 0).nonzero()[0])
    seg, ids, labels = batch.segment_ids[row], batch.input_ids[row:row + 1], batch.labels[row:row + 1]
    model = build("flash", causal=False, vocab_size=257)
    cut = int((seg > 0).nonzero()[0])
    packed = model(ids, segment_ids=seg[None]).logits
    apart = torch.cat([model(ids[:, :cut]).logits, model(ids[:, cut:]).logits], 1)
    torch.testing.assert_close(packed, apart, atol=2e-5, rtol=1e-5)
    assert (labels != IGNORE_INDEX).any()


def test_heldout_positions_depend_on_the_window_alone():
    docs = documents([70, 10, 40, 33])                     # full windows, a padded one, documents' tail windows
    heldout = MLMHeldout(HeldoutWindows(docs, 16), TOK)
    one = {int(j): (b.input_ids[r], b.labels[r]) for b in heldout.batches(1) for r, j in enumerate(b.index)}
    for size, limit in ((5, None), (3, 4), (8, 7)):
        for b in heldout.batches(size, limit):
            for r, j in enumerate(b.index):
                assert torch.equal(b.input_ids[r], one[int(j)][0]) and torch.equal(b.labels[r], one[int(j)][1])
    again = MLMHeldout(HeldoutWindows(docs, 16), ByteTokenizer().with_mask_token())    # another run, same data
    assert all(torch.equal(b.labels[0], one[int(b.index[0])][1]) for b in again.batches(1))
    # every window scores at least one token, and never one an earlier window of its document already scored
    windows = HeldoutWindows(docs, 16)
    for plain, masked in zip(windows.batches(1), heldout.batches(1)):
        chosen = masked.labels[0] != IGNORE_INDEX
        first_new = int((plain.labels[0] != IGNORE_INDEX).long().argmax())
        assert chosen.any() and not chosen[:first_new].any()


@pytest.mark.parametrize("arch", ARCHS)
def test_heldout_scores_do_not_depend_on_padding_or_batching(arch, build):
    """Bidirectional archs: a batch of padded and unpadded windows scores each window as it scores alone."""
    model = build(arch, causal=False, vocab_size=257)
    heldout = MLMHeldout(HeldoutWindows(documents([70, 10, 40, 5, 33]), 16), TOK)
    assert any(b.attention_mask is not None for b in heldout.batches(8))
    alone, batched = heldout.evaluate(model, batch_size=1), heldout.evaluate(model, batch_size=8)
    assert batched.tokens == alone.tokens and batched.windows == alone.windows == len(heldout)
    assert batched.loss == pytest.approx(alone.loss, rel=1e-5) and batched.accuracy == alone.accuracy


def test_heldout_metric_of_a_uniform_and_a_perfect_model():
    heldout = MLMHeldout(HeldoutWindows(documents([70, 40]), 16), TOK)

    class Fixed(torch.nn.Module):
        def __init__(self, perfect):
            super().__init__()
            self.perfect = perfect

        def forward(self, input_ids, attention_mask=None):
            from flashgau import LMOutput
            logits = torch.zeros(*input_ids.shape, 257)
            if self.perfect:
                logits.scatter_(-1, self.truth[:, :, None], 50.0)
            return LMOutput(logits=logits)

    uniform = heldout.evaluate(Fixed(False), batch_size=4)
    assert uniform.loss == pytest.approx(math.log(257), rel=1e-6) and uniform.perplexity == pytest.approx(257)
    perfect = Fixed(True)
    for batch in heldout.batches(len(heldout)):
        perfect.truth = torch.where(batch.labels == IGNORE_INDEX, 0, batch.labels)
    result = heldout.evaluate(perfect, batch_size=len(heldout))
    assert result.accuracy == 1.0 and result.loss < 1e-6
    assert result.record() == {"heldout_loss": result.loss, "heldout_accuracy": 1.0}
    assert "masked-token loss" in result.describe() and "accuracy: 1.0000" in result.report()


def test_the_training_stream_resumes_exactly_and_splits_across_processes():
    docs = documents([300, 200, 90])
    stream = MaskedWindows(WindowSampler(docs, 32, seed=4), TOK, seed=4)
    stream.next_batch(2)
    saved = stream.state_dict()
    want = [stream.next_batch(2) for _ in range(3)]
    again = MaskedWindows(WindowSampler(docs, 32, seed=99), TOK, seed=99)
    again.load_state_dict(saved)
    for a, b in zip(want, (again.next_batch(2) for _ in range(3))):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    # rank r of W takes rows r, r + W, ... of what one process drawing W times as many windows sees
    whole = MaskedWindows(WindowSampler(docs, 32, seed=1), TOK, seed=1).next_batch(6)
    for rank in range(3):
        part = MaskedWindows(WindowSampler(docs, 32, seed=1, rank=rank, world_size=3), TOK, seed=1).next_batch(2)
        assert torch.equal(part.input_ids, whole.input_ids[rank::3]) and torch.equal(part.labels, whole.labels[rank::3])


def test_a_tokenizer_without_a_mask_token_is_refused():
    with pytest.raises(ConfigError, match="mask token"):
        MLMHeldout(HeldoutWindows(documents([70]), 16), ByteTokenizer())
