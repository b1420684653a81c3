"""`flashgau bench speed` at tiny size: reports written with the right fields, resume skips finished groups.
No assertion on wall-clock time."""

import json

import pytest

from flashgau.bench import speed
from flashgau.model import LanguageModel


def _args(parse, out, *extra):
    return parse(speed, ["--preset", "tiny", "--archs", "transformer++", "flash", "--contexts", 32, 64,
                         "--tokens-per-step", 64, "--batch-contexts", 32, "--precisions", "fp32", "--warmup", 0,
                         "--repeats", 2, "--out", out, "--compile-contexts", *extra])


def test_speed_writes_reports_and_resumes(tmp_path, capsys, parse):
    assert speed.run(_args(parse, tmp_path)) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    assert (tmp_path / "speed.md").read_text().startswith("# Training-step speed")
    assert (tmp_path / "speed.png").stat().st_size > 0
    assert {"command", "packages", "machine"} <= set(rep["env"])
    assert rep["settings"]["seed"] == 0
    rows = {(r["arch"], r["series"], r["context"]): r for r in rep["rows"]}
    # fixed tokens: 64 tokens per step -> batch 2 at 32, batch 1 at 64; fixed batch 1 at 32
    assert set(rows) == {(a, s, t) for a in ("transformer++", "flash")
                         for s, t in (("tokens", 32), ("tokens", 64), ("batch", 32))}
    r = rows[("flash", "tokens", 32)]
    assert r["batch"] == 2 and len(r["times"]) == 2 and r["min"] <= r["median"] <= r["max"]
    assert r["flops_source"] == "analytic" and r["flops"] > 0 and r["mfu"] > 0
    assert r["counted_flops"] > 0 and r["peak_bytes"] > 0
    assert rep["matmul_peaks_gflops"]
    runs = sorted((tmp_path / "runs" / "speed").glob("*.json"))
    assert len(runs) == 3
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    capsys.readouterr()

    assert speed.run(_args(parse, tmp_path)) == 0          # everything is saved: nothing is measured again
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 3 and "matmul peak" not in out
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps


def test_groups_and_skips(tmp_path, parse):
    s = speed._settings(_args(parse, tmp_path, "--max-attention-gib", 1e-9))
    plan = speed.groups(s)
    assert [(g["series"], g["context"], g["batch"]) for g in plan] == [("tokens", 64, 1), ("tokens", 32, 2),
                                                                     ("batch", 32, 1)]
    cfg = speed.model_config("flash-quad", "tiny", 64)
    assert speed.attention_bytes_estimate(cfg, 1, 64) > 0
    assert speed.attention_bytes_estimate(speed.model_config("flash", "tiny", 64), 1, 64) == 0


def _compiled_args(parse, out, *compile_contexts):
    return parse(speed, ["--preset", "tiny", "--archs", "transformer++", "flash", "--contexts", 32,
                         "--tokens-per-step", 64, "--batch-contexts", "--precisions", "fp32", "--warmup", 0,
                         "--repeats", 2, "--no-memory", "--out", out,
                         "--compile-contexts", *(compile_contexts or [32]),
                         "--compile-archs", "transformer++", "flash"])


def test_compiled_series_compiles_each_arch_and_reports_it(tmp_path, parse, monkeypatch):
    """Plumbing of the compiled series, with Module.compile recorded instead of run (the real compile is the
    slow test below): per compiled group a fresh compile cache, then one static-shape compile per arch (code
    compiled for one context must not be recompiled with dynamic shapes for the next), a forced warm-up step, its
    own table and targets."""
    import torch._dynamo
    calls = []
    monkeypatch.setattr(LanguageModel, "compile", lambda self, *a, **k: calls.append((self.config.arch, k)))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("reset"))
    args = _compiled_args(parse, tmp_path, 32, 64)
    assert [(g["series"], g["context"]) for g in speed.groups(speed._settings(args))] == [
        ("tokens", 32), ("compiled", 64), ("compiled", 32)]
    assert speed.run(args) == 0
    assert calls == ["reset", ("transformer++", {"dynamic": False}), ("flash", {"dynamic": False})] * 2
    rep = json.loads((tmp_path / "speed.json").read_text())
    rows = {(r["arch"], r["series"]): r for r in rep["rows"]}
    r = rows[("flash", "compiled")]
    assert len(r["times"]) == 2 and r["first_step"] > 0 and r["mfu"] > 0
    assert "## Compiled (torch.compile" in (tmp_path / "speed.md").read_text()


@pytest.mark.slow
def test_compiled_series_real_compile(tmp_path, parse):
    assert speed.run(_compiled_args(parse, tmp_path)) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    assert {(r["arch"], r["series"]) for r in rep["rows"]} == {(a, s) for a in ("transformer++", "flash")
                                                               for s in ("tokens", "compiled")}


def test_targets_report_eager_and_compiled_with_flop_ratio():
    def row(arch, series, T, median, flops, mfu=None):
        return dict(arch=arch, series=series, context=T, precision="fp32", batch=16384 // T, median=median,
                    flops=flops, mfu=mfu, peak_fp32=300e9)
    rows = [row("flash", "tokens", 8192, 4.0, 573e9, 0.3), row("transformer++", "tokens", 8192, 6.0, 1140e9),
            row("flash", "compiled", 8192, 3.0, 573e9, 0.45), row("transformer++", "compiled", 8192, 6.0, 1140e9)]
    got = {t["name"]: t for t in speed.targets(rows, dict(tokens_per_step=16384))}
    assert got["flash_vs_tfmpp_8192"]["value"] == 1.5 and not got["flash_vs_tfmpp_8192"]["met"]
    assert got["flash_vs_tfmpp_8192_compiled"]["value"] == 2.0 and got["flash_vs_tfmpp_8192_compiled"]["met"]
    assert "model-FLOP ratio 1.99x" in got["flash_vs_tfmpp_8192_compiled"]["text"]
    assert not got["flash_mfu_8k"]["met"] and got["flash_mfu_8k_compiled"]["met"]
    assert "flash_vs_tfmpp_16384" not in got                   # no rows, no claim


def test_quick_has_no_compiled_series(parse, tmp_path):
    s = speed._settings(parse(speed, ["--quick", "--out", tmp_path]))
    assert s["compile_contexts"] == [] and all(g["series"] != "compiled" for g in speed.groups(s))
