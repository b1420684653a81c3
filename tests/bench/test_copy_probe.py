"""`flashgau bench copy-probe`: the two copies are scored where they are (a model that copies perfectly scores the
second copy near 0 and the first at chance)."""

import math
import types

import pytest
import torch

from flashgau.bench import copy_probe
from flashgau.data.tokenizers import ByteTokenizer


def test_a_perfect_copier_scores_the_second_copy_only(monkeypatch):
    length = 40

    class Copier(torch.nn.Module):
        """At position t predicts the token `length` + 1 back (passage, line break, passage: the second copy's next
        token); uniform where there is none."""

        def forward(self, ids):
            logits = torch.zeros(*ids.shape, 256)
            back = ids[:, :-length]
            logits[:, length:].scatter_(-1, back[..., None], 100.0)
            return types.SimpleNamespace(logits=logits)

    trained = types.SimpleNamespace(model=Copier(), tokenizer=ByteTokenizer(), step=7)
    monkeypatch.setattr(copy_probe, "load_trained", lambda run: trained)
    step, first, second = copy_probe.copy_losses("run", rows=3, length=length)
    assert step == 7
    assert first == pytest.approx(math.log(256), rel=1e-4) and second < 1e-3
