"""benchmarks/copy_probe.py: the two copies are scored where they are (a model that copies perfectly scores the second
copy near 0 and the first at chance)."""

import math
import types

import pytest
import torch

from flashgau.data.tokenizers import ByteTokenizer


def test_a_perfect_copier_scores_the_second_copy_only(benchmark_script, monkeypatch):
    script = benchmark_script("copy_probe")
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
    monkeypatch.setattr(script, "load_trained", lambda run: trained)
    step, first, second = script.copy_losses("run", rows=3, length=length)
    assert step == 7
    assert first == pytest.approx(math.log(256), rel=1e-4) and second < 1e-3
