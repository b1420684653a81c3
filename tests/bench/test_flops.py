"""Analytic FLOP formulas against torch's FlopCounterMode on real forward + backward passes."""

import pytest
import torch

from flashgau import LanguageModel, ModelConfig
from flashgau.bench.flops import FORMULA_ARCHS, analytic_flops, flop_counter


@pytest.mark.parametrize("arch", FORMULA_ARCHS)
def test_analytic_matches_flop_counter(arch):
    cfg = ModelConfig.preset("tiny", arch=arch, vocab_size=256)
    torch.manual_seed(0)
    model = LanguageModel(cfg)
    x = torch.randint(0, 256, (2, 64))
    counter = flop_counter()
    with counter:
        model(x, labels=x).loss.backward()
    counted = counter.get_total_flops()
    analytic = analytic_flops(cfg, 2, 64)["total"]
    assert analytic == pytest.approx(counted, rel=0.03)


def test_flop_ratio_of_the_speed_targets():
    """The speed targets quote model-FLOP ratios Transformer++ / FLASH of about 2x at 8K and 3.5x at 16K (small
    preset)."""
    ratio = {}
    for T in (8192, 16384):
        t = analytic_flops(ModelConfig.preset("small", arch="transformer++"), 1, T)["total"]
        f = analytic_flops(ModelConfig.preset("small", arch="flash"), 1, T)["total"]
        ratio[T] = t / f
    assert 1.8 < ratio[8192] < 2.2 and 3.2 < ratio[16384] < 3.8


def test_unknown_arch_has_no_formula():
    cfg = ModelConfig.preset("tiny", arch="flash")
    cfg.arch = "something-new"
    assert analytic_flops(cfg, 1, 64) is None
