"""Packed documents (documents.py): segment_ids cut a row into its documents; losses and gradients equal those of
the documents run one by one; rows of one document take the plain path; bad segment_ids get one clear error.
(That every arch's outputs equal per-document runs, causal and bidirectional, is in test_model_properties.py.)"""

import pytest
import torch

from flashgau.documents import split_documents
from model_helpers import tokens


def test_split_documents_cuts_runs_of_equal_ids_and_drops_padding_only_pieces():
    seg = torch.tensor([[3, 3, 3, 4, 4, 7], [0, 0, 0, 0, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    pieces = split_documents(seg, mask)
    x = torch.arange(12).reshape(2, 6)
    gathered = pieces.gather(x)
    assert gathered.shape == (4, 4)                      # pieces of 3, 2, 1 and 4 tokens; the padding piece dropped
    assert [row[m].tolist() for row, m in zip(gathered, pieces.mask)] == [[0, 1, 2], [3, 4], [5], [6, 7, 8, 9]]
    back = pieces.scatter(gathered)
    assert torch.equal(back[mask], x[mask]) and (back[~mask] == 0).all()
    assert split_documents(torch.zeros(2, 6, dtype=torch.long)) is None       # one document per row: nothing to cut
    assert split_documents(torch.tensor([[1, 1], [2, 2]])) is None             # ids may differ between rows


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
@pytest.mark.parametrize("causal", [True, False])
def test_loss_and_gradients_equal_those_of_separate_documents(arch, causal, build):
    model = build(arch, causal=causal).double().train()
    x = tokens(1, 20)
    labels = tokens(1, 20, seed=5)
    segment_ids = torch.tensor([[0] * 7 + [1] * 13])
    packed = model(x, labels=labels, segment_ids=segment_ids).loss
    packed.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    total = sum(model(x[:, a:b], labels=labels[:, a:b]).loss * (b - a) for a, b in [(0, 7), (7, 20)]) / 20
    total.backward()
    torch.testing.assert_close(packed, total)
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5, msg=name)   # fp32 sinusoid inside


def test_rows_of_one_document_take_the_plain_path(build):
    model = build("flash")
    x = tokens(2, 12)
    same = model(x, segment_ids=torch.tensor([[4] * 12, [0] * 12])).logits
    torch.testing.assert_close(same, model(x).logits, atol=0, rtol=0)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(2, 5, dtype=torch.long), r"segment_ids must have the shape of input_ids \(2, 6\), got \(2, 5\)"),
    (torch.zeros(2, 6), "segment_ids must be an integer tensor"),
    ([[0] * 6] * 2, "segment_ids must have the shape of input_ids"),
])
def test_bad_segment_ids_are_refused_with_one_line(bad, message, build):
    with pytest.raises(ValueError, match=message):
        build("flash")(tokens(2, 6), segment_ids=bad)
