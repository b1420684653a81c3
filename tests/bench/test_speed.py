"""`flashgau bench speed` at tiny size: reports written with the right fields, resume skips finished groups, the
plan, the precisions "auto" picks, the compiled series' plumbing. Matmul peaks are timed at --peak-sizes 64 (the
default sizes take minutes in bf16 on a CPU without bf16 units). No assertion on wall-clock time."""

import json

import pytest

from flashgau.bench import speed
from flashgau.bench.speed import plan as speed_plan
from flashgau.model import LanguageModel
from flashgau.runtime import precision as precision_mod

TINY = ["--preset", "tiny", "--archs", "transformer++", "flash", "--tokens-per-step", 64, "--warmup", 0,
        "--repeats", 2, "--peak-sizes", 64, "--compile-contexts"]


def _args(parse, out, *extra):
    return parse(speed, [*TINY, "--contexts", 32, 64, "--batch-contexts", 32, "--precisions", "fp32", "--out", out,
                         *extra])


@pytest.fixture
def slow_bf16(monkeypatch):
    """This CPU runs bf16 products 50x slower than fp32 (as an AVX2-only CPU does), without timing anything."""
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", lambda: dict(
        fp32_gflops=100.0, bf16_gflops=2.0, bf16_speedup=0.02, size=256, bf16_flags=[]))


def test_speed_writes_reports_and_resumes(tmp_path, capsys, parse):
    assert speed.run(_args(parse, tmp_path, "--no-memory")) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    md = (tmp_path / "speed.md").read_text()
    assert md.startswith("# Training-step speed") and "device cpu" in md and "CPU capability" in md
    assert (tmp_path / "speed.png").stat().st_size > 0
    assert {"command", "packages", "machine"} <= set(rep["env"]) and rep["env"]["machine"]["device"] == "cpu"
    assert rep["settings"]["seed"] == 0 and rep["settings"]["peak_sizes"] == [64]
    rows = {(r["arch"], r["series"], r["context"]): r for r in rep["rows"]}
    # fixed tokens: 64 tokens per step -> batch 2 at 32, batch 1 at 64; fixed batch 1 at 32
    assert set(rows) == {(a, s, t) for a in ("transformer++", "flash")
                         for s, t in (("tokens", 32), ("tokens", 64), ("batch", 32))}
    r = rows[("flash", "tokens", 32)]
    assert r["batch"] == 2 and len(r["times"]) == 2 and r["min"] <= r["median"] <= r["max"]
    assert r["flops_source"] == "analytic" and r["flops"] > 0 and r["mfu"] > 0
    assert 0 < r["cpu_utilisation"] and r["peak_bytes"] is None          # --no-memory
    assert rep["matmul_peaks_gflops"] and set(rep["peak_used"]) == {"fp32"}
    (ratio,) = [h for h in rep["headline"] if h["name"] == "flash_vs_tfmpp_tokens_fp32"]
    assert set(ratio["values"]) == {"32", "64"}                 # context -> ratio (JSON keys are strings)
    assert "FLASH vs Transformer++ step time, fp32, eager" in md and "model-FLOP ratio" in md
    assert "target" not in md.lower() and "issue" not in md.lower()
    runs = sorted((tmp_path / "runs" / "speed").glob("*.json"))
    assert [p.stem for p in runs] == ["tiny-batch-T32-B1-fp32", "tiny-tokens-T32-B2-fp32", "tiny-tokens-T64-B1-fp32"]
    stamps = {p: p.stat().st_mtime_ns for p in runs}
    capsys.readouterr()

    assert speed.run(_args(parse, tmp_path, "--no-memory")) == 0   # everything is saved: nothing is measured again
    out = capsys.readouterr().out
    assert out.count("done, skipped") == 3 and "matmul peak" not in out
    assert {p: p.stat().st_mtime_ns for p in runs} == stamps


def test_a_later_command_in_the_same_folder_keeps_the_fixed_batch_table_whole(tmp_path, parse):
    """A second command writing to the folder (here: no fixed-batch series, another context) rebuilds the report
    from every saved group: the batch-1 table keeps the first command's contexts, its batch-1 fixed-tokens group
    among them, and shows no row of a precision without batch-1 steps."""
    assert speed.run(_args(parse, tmp_path, "--no-memory")) == 0
    later = [*TINY, "--contexts", 16, "--batch-contexts", "--precisions", "fp32", "--out", tmp_path, "--no-memory"]
    assert speed.run(parse(speed, later)) == 0
    md = (tmp_path / "speed.md").read_text()
    table = md.split("## Fixed batch (batch 1): step time against context", 1)[1].split("\n## ", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("| Model"))
    assert header.split(" | ")[2:4] == ["32", "64"]          # 32: the batch series; 64: tokens at batch 1
    rows = [line for line in table.splitlines() if line.startswith("| flash") or line.startswith("| transformer")]
    assert len(rows) == 2 and all("–" not in line for line in rows)


def test_memory_and_counted_flops_of_a_step_in_a_separate_process(tmp_path, parse):
    args = parse(speed, [*TINY, "--contexts", 32, "--batch-contexts", "--precisions", "fp32", "--out", tmp_path])
    assert speed.run(args) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    for r in rep["rows"]:
        assert r["counted_flops"] > 0 and r["peak_bytes"] > 0 and r["steady_bytes"] > 0
        assert r["counted_flops"] == pytest.approx(r["analytic_flops"], rel=0.03)
    assert [g["memory"] for g in rep["log"]] == [True]
    assert "resident-set high-water mark" in (tmp_path / "speed.md").read_text()


def test_groups_and_skips(tmp_path, parse):
    s = speed.settings_from_args(_args(parse, tmp_path, "--max-attention-gib", 1e-9))
    assert [(g.series, g.context, g.batch) for g in speed.groups(s)] == [("tokens", 64, 1), ("tokens", 32, 2),
                                                                         ("batch", 32, 1)]
    cfg = speed.model_config("flash-quad", "tiny", 64)
    assert speed_plan.attention_bytes_estimate(cfg, 1, 64) > 0
    assert speed_plan.attention_bytes_estimate(speed.model_config("flash", "tiny", 64), 1, 64) == 0


def test_skipped_arch_is_reported_and_bf16_runs_on_tiny_shapes(tmp_path, parse, slow_bf16):
    args = parse(speed, [*TINY, "--archs", "flash-quad", "flash", "--contexts", 32, "--batch-contexts",
                         "--precisions", "fp32", "bf16", "--max-attention-gib", 1e-9, "--no-memory", "--out",
                         tmp_path])
    assert speed.run(args) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    assert {(r["arch"], r["precision"], bool(r["skipped"])) for r in rep["rows"]} == {
        ("flash-quad", "fp32", True), ("flash-quad", "bf16", True), ("flash", "fp32", False), ("flash", "bf16", False)}
    assert set(rep["peak_used"]) == {"fp32", "bf16"}
    assert "50x slower" in rep["settings"]["precision_reasons"]["bf16"]
    md = (tmp_path / "speed.md").read_text()
    assert "## Skipped configurations" in md and "fixed 64 tokens per step, bf16" in md and "MFU bf16" in md


def test_precisions_auto_follow_the_device(parse, tmp_path, slow_bf16, monkeypatch):
    s = speed.settings_from_args(parse(speed, ["--out", tmp_path]))          # default: auto
    assert s.precisions == ["fp32"] and "50x slower" in s.precision_reasons["fp32"]
    assert speed.settings_from_args(parse(speed, ["--precisions", "auto", "bf16"])).precisions == ["fp32", "bf16"]
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", lambda: dict(
        fp32_gflops=100.0, bf16_gflops=300.0, bf16_speedup=3.0, size=256, bf16_flags=["amx_bf16"]))
    s = speed.settings_from_args(parse(speed, []))
    assert s.precisions == ["fp32", "bf16"] and "faster" in s.precision_reasons["bf16"]


def test_quick_settings_yield_to_explicit_options(parse, tmp_path, slow_bf16):
    s = speed.settings_from_args(parse(speed, ["--quick"]))
    assert (s.contexts, s.tokens_per_step, s.repeats, s.batch_contexts, s.compile_contexts) == (
        [512, 2048], 2048, 2, [], [])
    assert all(g.series != "compiled" for g in speed.groups(s))
    # an option given explicitly wins over --quick, also when it equals the full run's default
    s = speed.settings_from_args(parse(speed, ["--quick", "--tokens-per-step", 16384, "--repeats", 3]))
    assert (s.tokens_per_step, s.repeats, s.contexts) == (16384, 3, [512, 2048])
    s = speed.settings_from_args(parse(speed, []))
    assert (s.contexts[-1], s.tokens_per_step, s.repeats, s.peak_sizes) == (16384, 16384, 3, [1024, 2048])


def test_options_that_cannot_run_are_one_line_errors(tmp_path, capsys):
    assert speed.main(["--preset", "tiny", "--contexts", "48", "--tokens-per-step", "64", "--out", str(tmp_path)]) == 2
    assert "not a multiple of context 48" in capsys.readouterr().err
    assert speed.main(["--precisions", "fp16", "--device", "cpu", "--out", str(tmp_path)]) == 2
    assert "fp16 needs a CUDA device" in capsys.readouterr().err
    assert speed.main(["--device", "tpu", "--out", str(tmp_path)]) == 2
    assert "device must be" in capsys.readouterr().err


@pytest.mark.parametrize("option, value, says", [
    ("--contexts", "0", "--contexts must be positive integers, got 0"),
    ("--contexts", "-5", "--contexts must be positive integers, got -5"),
    ("--tokens-per-step", "0", "--tokens-per-step must be a positive integer, got 0"),
    ("--batch-contexts", "-1", "--batch-contexts must be positive integers, got -1"),
    ("--compile-contexts", "0", "--compile-contexts must be positive integers, got 0"),
    ("--peak-sizes", "0", "--peak-sizes must be positive integers, got 0"),
    ("--repeats", "0", "--repeats must be a positive integer, got 0"),
    ("--warmup", "-1", "--warmup must be an integer >= 0, got -1"),
    ("--seed", "-3", "--seed must be an integer >= 0, got -3"),
    ("--max-attention-gib", "nan", "--max-attention-gib must be a number of GiB >= 0, got nan"),
])
def test_an_option_out_of_range_is_one_line_naming_it(tmp_path, capsys, option, value, says):
    assert speed.main(["--preset", "tiny", "--out", str(tmp_path), option, value]) == 2
    assert capsys.readouterr().err == f"flashgau bench speed: error: {says}\n"
    assert not list(tmp_path.iterdir())


def _compiled_args(parse, out, *compile_contexts):
    return parse(speed, ["--preset", "tiny", "--archs", "transformer++", "flash", "--contexts", 32,
                         "--tokens-per-step", 64, "--batch-contexts", "--precisions", "fp32", "--warmup", 0,
                         "--repeats", 2, "--no-memory", "--peak-sizes", 64, "--out", out,
                         "--compile-contexts", *(compile_contexts or [32]),
                         "--compile-archs", "transformer++", "flash"])


def test_compiled_series_compiles_each_arch_and_reports_it(tmp_path, parse, monkeypatch):
    """Plumbing of the compiled series, with Module.compile recorded instead of run (the real compile is the
    slow test below): per compiled group a fresh compile cache, then one static-shape compile per arch (code
    compiled for one context must not be recompiled with dynamic shapes for the next), a forced warm-up step, its
    own table and ratio line."""
    import torch._dynamo
    calls = []
    monkeypatch.setattr(LanguageModel, "compile", lambda self, *a, **k: calls.append((self.config.arch, k)))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: calls.append("reset"))
    args = _compiled_args(parse, tmp_path, 32, 64)
    assert [(g.series, g.context) for g in speed.groups(speed.settings_from_args(args))] == [
        ("tokens", 32), ("compiled", 64), ("compiled", 32)]
    assert speed.run(args) == 0
    assert calls == ["reset", ("transformer++", {"dynamic": False}), ("flash", {"dynamic": False})] * 2
    rep = json.loads((tmp_path / "speed.json").read_text())
    rows = {(r["arch"], r["series"], r["context"]): r for r in rep["rows"]}
    r = rows[("flash", "compiled", 32)]
    assert len(r["times"]) == 2 and r["first_step"] > 0 and r["mfu"] > 0
    md = (tmp_path / "speed.md").read_text()
    assert "## Compiled (torch.compile" in md and "fp32, torch.compile, 64 tokens per step: 32: " in md


@pytest.mark.slow
def test_compiled_series_real_compile(tmp_path, parse):
    assert speed.run(_compiled_args(parse, tmp_path)) == 0
    rep = json.loads((tmp_path / "speed.json").read_text())
    assert {(r["arch"], r["series"]) for r in rep["rows"]} == {(a, s) for a in ("transformer++", "flash")
                                                               for s in ("tokens", "compiled")}


def test_checkpointed_series_measures_batch_1_with_recompute(tmp_path, parse, monkeypatch):
    """--checkpoint-activations: every batch-1 configuration again with activation checkpointing (timed in this
    process, memory and FLOPs in the memory process, whose count includes the recomputed forward), its own table
    and per-token lines; --name names the report and its saved runs."""
    import flashgau.model as model_module

    calls = []
    real = model_module.checkpointed
    monkeypatch.setattr(model_module, "checkpointed", lambda *a: calls.append(1) or real(*a))
    args = parse(speed, [*TINY, "--contexts", 32, 64, "--batch-contexts", 32, "--precisions", "fp32", "--out",
                         tmp_path, "--checkpoint-activations", "--name", "memory-test", "--repeats", 1])
    s = speed.settings_from_args(args)
    assert [(g.series, g.context, g.batch) for g in speed.groups(s)] == [
        ("tokens", 64, 1), ("tokens", 32, 2), ("batch", 32, 1), ("checkpointed", 64, 1), ("checkpointed", 32, 1)]
    assert speed.run(args) == 0
    assert calls                                                 # the timed checkpointed steps recomputed
    rep = json.loads((tmp_path / "memory-test.json").read_text())
    assert rep["settings"]["checkpoint_activations"] and rep["settings"]["name"] == "memory-test"
    rows = {(r["arch"], r["series"], r["context"]): r for r in rep["rows"]}
    for arch in ("transformer++", "flash"):
        for T, plain_series in ((32, "batch"), (64, "tokens")):
            plain, ckpt = rows[(arch, plain_series, T)], rows[(arch, "checkpointed", T)]
            assert ckpt["batch"] == 1 and ckpt["peak_bytes"] > 0 and ckpt["activation_bytes"] is not None
            assert ckpt["counted_flops"] > plain["counted_flops"]          # the recomputed forward
    names = {h["name"] for h in rep["headline"]}
    assert {"activation_bytes_per_token_flash_fp32", "activation_bytes_per_token_transformer++_fp32"} <= names
    md = (tmp_path / "memory-test.md").read_text()
    assert "## Activation checkpointing: batch 1, with and without recompute" in md and "act./token 64 ÷ 32" in md
    assert sorted(p.stem for p in (tmp_path / "runs" / "memory-test").glob("*.json"))[:2] == [
        "tiny-batch-T32-B1-fp32", "tiny-checkpointed-T32-B1-fp32"]
    with pytest.raises(Exception, match="--name"):
        speed.settings_from_args(parse(speed, ["--name", "../x"]))
