"""benchmarks/targets.py: the acceptance targets of past issues, checked against the reports' JSON outside the
package."""

import json

import pytest


@pytest.fixture(scope="module")
def targets(benchmark_script):
    return benchmark_script("targets")


def _row(arch, series, T, median, flops, mfu=None, precision="fp32", batch=None):
    return dict(arch=arch, series=series, context=T, precision=precision, batch=batch or 16384 // T, median=median,
                flops=flops, mfu=mfu, peak_fp32=300e9)


def test_speed_targets_eager_and_compiled_with_flop_ratio(targets):
    rows = [_row("flash", "tokens", 8192, 4.0, 573e9, 0.3), _row("transformer++", "tokens", 8192, 6.0, 1140e9),
            _row("flash", "compiled", 8192, 3.0, 573e9, 0.45), _row("transformer++", "compiled", 8192, 6.0, 1140e9),
            _row("flash", "tokens", 8192, 2.0, 573e9, precision="bf16"),
            _row("flash", "batch", 4096, 1.0, 1, batch=1), _row("flash", "tokens", 16384, 4.2, 1, batch=1)]
    got = {t["name"]: t for t in targets.speed_targets(rows, 16384)}
    assert got["flash_vs_tfmpp_8192"]["value"] == 1.5 and not got["flash_vs_tfmpp_8192"]["met"]
    assert got["flash_vs_tfmpp_8192_compiled"]["value"] == 2.0 and got["flash_vs_tfmpp_8192_compiled"]["met"]
    assert "model-FLOP ratio 1.99x" in got["flash_vs_tfmpp_8192_compiled"]["text"]
    assert not got["flash_mfu_8k"]["met"] and got["flash_mfu_8k_compiled"]["met"]
    assert got["flash_bf16_faster_8192"]["value"] == 2.0 and got["flash_bf16_faster_8192"]["met"]
    assert got["flash_linear_4k_16k"]["value"] == pytest.approx(4.2) and got["flash_linear_4k_16k"]["met"]
    assert "flash_vs_tfmpp_16384" not in got                   # no rows, no claim


def test_quality_and_decode_targets_from_the_reports(targets, tmp_path):
    rows = {"flash": dict(delta_vs_tfmpp=-0.1, equal_time=60.0, loss_at_equal_time=2.3,
                          baseline_loss_at_equal_time=2.4)}
    quality = dict(comparisons=[dict(context=4096, seed=0, rows=rows), dict(context=512, seed=0, rows=rows),
                                dict(series="steps", context=4096, seed=1, rows=rows)])   # equal steps: no target
    flash = [dict(position=p, latency_ms=5.0, tokens_per_s=200.0) for p in (256, 8192)]
    decode = dict(results={"flash": flash, "transformer++": [dict(position=8192, latency_ms=10, tokens_per_s=90.0)]})
    (tmp_path / "quality.json").write_text(json.dumps(quality))
    (tmp_path / "decode.json").write_text(json.dumps(decode))
    got = {t["name"]: t for t in targets.check(tmp_path)}
    assert set(got) == {"flash_vs_tfmpp_quality_4k_seed0", "flash_latency_flat", "flash_vs_tfmpp_8k"}
    assert all(t["met"] for t in got.values()) and got["flash_vs_tfmpp_8k"]["value"] == pytest.approx(200 / 90)
    assert targets.check(tmp_path, quick=True) == []
