"""benchmarks/normaliser_precision.py (issue 20, items 2 and 4) on tiny trained runs: FLASH-Quad's two normalisers
score the training length identically and part elsewhere; the attention op in fp32 under bf16 autocast is far
closer to float64 than in bf16."""


import pytest

from flashgau.training.config import TrainConfig
from flashgau.training.loop import train


@pytest.fixture(scope="module")
def script(benchmark_script):
    return benchmark_script("normaliser_precision")


def _run(corpus, out, arch):
    cfg = TrainConfig(arch=arch, preset="tiny", context=32, steps=3, batch_tokens=64, micro_batch_tokens=64,
                      precision="fp32", data=str(corpus), heldout_fraction=0.25, eval_windows=2, out=str(out))
    train(cfg, progress=False, log=lambda m: None)
    return out


def test_normalisers_and_attention_precision_on_trained_runs(script, small_corpus, tmp_path):
    quad = script.normaliser_transfer(_run(small_corpus, tmp_path / "quad", "flash-quad"), factors=(0.5, 1),
                                      windows=4)
    short, full = quad["rows"]
    assert quad["quad_norm_len"] == 32 and full["length"] == 32 and short["length"] == 16
    assert full["paper"] == pytest.approx(full["fixed"], abs=1e-6)      # full windows: the same n
    assert short["paper"] != short["fixed"]                            # a shorter row: n = 16 against 32
    prec = script.attention_precision(_run(small_corpus, tmp_path / "flash", "flash"), windows=1)
    assert len(prec["layers"]) == 2
    assert all(e["fp32"] < e["auto"] / 10 for e in prec["layers"])
    assert set(prec["losses"]) == {"fp32 (no autocast)", "bf16, attention auto", "bf16, attention fp32"}
    md = script.markdown(dict(env={}, normaliser=[quad], precision=prec))
    assert "paper - fixed" in md and "auto (bf16)" in md
