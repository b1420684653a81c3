"""`flashgau bench quality` at tiny size: runs train through the training loop on the chosen device, reports have
the right fields, finished runs are skipped, interrupted runs resume, equal-time rows from two kinds of machine are
flagged. No assertion on wall-clock time."""

import json

import pytest

from flashgau.bench import quality
from flashgau.bench.quality import report


def _args(parse, out, corpus, *extra):
    return parse(quality, ["--preset", "tiny", "--archs", "transformer+", "flash", "--contexts", 32, "--seeds", 0,
                           "--steps", 3, "--batch-tokens", 64, "--micro-batch-tokens", 64, "--precision", "fp32",
                           "--eval-tokens", 64, "--heldout-fraction", 0.25, "--data", corpus, "--device", "cpu",
                           "--out", out, *extra])


def test_quality_writes_reports_and_skips_finished_runs(tmp_path, small_corpus, capsys, parse, monkeypatch):
    import flashgau.training.loop as loop

    devices = []
    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: devices.append(k.get("device")) or real_train(*a, **k))
    assert quality.run(_args(parse, tmp_path, small_corpus)) == 0
    assert devices == ["cpu", "cpu"]                          # the chosen device reaches the training loop
    rep = json.loads((tmp_path / "quality.json").read_text())
    md = (tmp_path / "quality.md").read_text()
    assert md.startswith("# Quality at equal training budget") and "device cpu" in md
    assert (tmp_path / "quality.png").stat().st_size > 0
    assert {"command", "packages", "machine"} <= set(rep["env"])
    assert rep["settings"]["device"] == "cpu" and rep["settings"]["precision_reason"].startswith("fp32")
    assert {r["arch"] for r in rep["runs"]} == {"transformer+", "flash"}
    run = next(r for r in rep["runs"] if r["arch"] == "flash")
    assert run["steps"] == 3 and run["tokens"] == 3 * 64 and run["seed"] == 0 and run["device"] == "cpu"
    assert run["train_config"]["seed"] == 0 and run["train_config"]["arch"] == "flash"
    assert {"loss", "perplexity", "bits_per_byte"} <= set(run["final"])
    assert [p["step"] for p in run["curve"]] == sorted(p["step"] for p in run["curve"])
    assert all(p["train_time"] >= 0 for p in run["curve"])
    assert {"flash@32", "transformer+@32"} == set(rep["summary"]["steps"])
    (cmp,) = rep["comparisons"]
    assert cmp["series"] == "steps" and cmp["rows"]["transformer+"]["speedup"] == pytest.approx(1.0)
    assert run["train_config"]["time_budget_covers"] == "training" and run["series"] == "steps"
    floor = rep["unigram_floor"]
    assert floor["tokenizer"] == "bytes" and 0 < floor["loss"] < 5.6 and "Unigram floor" in md
    assert not list(tmp_path.rglob("checkpoint.pt"))          # removed once a run is saved
    saved = sorted((tmp_path / "runs" / "quality").glob("*.json"))
    stamps = {p: p.stat().st_mtime_ns for p in saved}
    capsys.readouterr()

    assert quality.run(_args(parse, tmp_path, small_corpus)) == 0
    assert capsys.readouterr().out.count("done, skipped") == 2
    assert {p: p.stat().st_mtime_ns for p in saved} == stamps


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, small_corpus, capsys, parse):
    from flashgau.training.loop import train

    args = _args(parse, tmp_path, small_corpus, "--archs", "flash")
    s = quality.settings_from_args(args)
    key = s.run_key("flash", 32, 0)
    folder = tmp_path / "runs" / "quality" / key
    train(quality.train_config("flash", 32, 0, s, folder), stop_after=1, progress=False, log=lambda m: None)
    assert quality.run(args) == 0
    assert "resuming" in capsys.readouterr().out
    rec = json.loads((tmp_path / "runs" / "quality" / f"{key}.json").read_text())
    assert rec["steps"] == 3 and rec["final"] is not None


def test_a_run_stopped_by_a_signal_is_not_saved_and_resumes_next_time(tmp_path, small_corpus, capsys, parse,
                                                                       monkeypatch):
    import flashgau.training.loop as loop

    real_train = loop.train
    monkeypatch.setattr(loop, "train", lambda *a, **k: real_train(*a, **k, stop_after=1)
                        if "resume" not in k else real_train(*a, **k))   # the first session stops as SIGTERM would
    args = _args(parse, tmp_path, small_corpus, "--archs", "flash")
    key = quality.settings_from_args(args).run_key("flash", 32, 0)
    assert quality.run(args) == 1
    assert "interrupted after step 1 of 3" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "quality" / f"{key}.json").exists()
    assert (tmp_path / "runs" / "quality" / key / "checkpoint.pt").exists()
    assert quality.run(args) == 0                                         # resumed, finished, saved
    rec = json.loads((tmp_path / "runs" / "quality" / f"{key}.json").read_text())
    assert rec["steps"] == 3 and rec["final"] is not None


def test_a_saved_run_trained_with_other_defaults_is_named_with_what_changed(tmp_path, small_corpus, capsys, parse):
    args = _args(parse, tmp_path, small_corpus, "--archs", "transformer++", "flash-0.1.0")   # flash-0.1.0: a row
    assert quality.run(args) == 0
    path = next((tmp_path / "runs" / "quality").glob("*-transformer++.json"))
    capsys.readouterr()
    assert quality.run(args) == 0
    assert "saved run trained with" not in capsys.readouterr().out            # today's settings: nothing to say
    rec = json.loads(path.read_text())
    rec["model_config"]["token_shift"] = 0.5                                  # as before the per-arch default
    path.write_text(json.dumps(rec))
    assert quality.run(args) == 0
    out = capsys.readouterr().out
    assert "saved run trained with token_shift 0.5 (today 0.0)" in out and "done, skipped" in out


def test_quick_settings_yield_to_explicit_options(parse):
    s = quality.settings_from_args(parse(quality, ["--quick", "--precision", "fp32"]))
    assert (s.preset, s.contexts, s.seeds, s.time_budget, s.steps, s.batch_tokens, s.eval_tokens, s.series) == (
        "tiny", [128, 512], [0], 6.0, 20, 2048, 4096, ["time", "steps"])
    assert s.run_key("flash", 128, 0, "time") == "tiny-T128-6s-train-seed0-flash"
    s = quality.settings_from_args(parse(quality, ["--quick", "--precision", "bf16"]))
    assert s.run_key("flash", 128, 0, "time") == "tiny-T128-6s-train-seed0-flash-bf16"
    s = quality.settings_from_args(parse(quality, ["--time-budget", 30]))
    assert (s.series, s.time_budget, s.steps) == (["time"], 30.0, None)
    s = quality.settings_from_args(parse(quality, ["--series", "steps", "--time-budget", 30]))
    assert (s.series, s.time_budget, s.steps) == (["steps"], None, 100)
    s = quality.settings_from_args(parse(quality, ["--quick", "--preset", "small", "--batch-tokens", 8192,
                                                   "--steps", 5, "--precision", "fp32"]))
    assert (s.preset, s.batch_tokens, s.time_budget, s.steps) == ("small", 8192, None, 5)
    assert s.run_key("flash", 128, 0) == "small-T128-5steps-seed0-flash"


def test_curve_and_interpolation():
    records = [{"kind": "train", "step": 1, "tokens": 10, "elapsed": 5.0},
               {"kind": "eval", "step": 1, "elapsed": 6.0, "heldout_loss": 3.0, "heldout_bpb": 4.0},
               {"kind": "train", "step": 2, "tokens": 20, "elapsed": 7.0},
               {"kind": "train", "step": 3, "tokens": 30, "elapsed": 8.0},
               {"kind": "eval", "step": 3, "elapsed": 10.0, "heldout_loss": 2.0, "heldout_bpb": 3.0}]
    pts = quality.curve(records)
    # step time 1 s (from the gap 2 -> 3), so the clock starts at 4 s; evaluation time (1 s) is removed
    assert [p["train_time"] for p in pts] == [1.0, 3.0]
    assert report.interp_time_to(pts, 2.5) == pytest.approx(2.0)
    assert report.interp_time_to(pts, 1.0) is None
    assert report.interp_loss_at(pts, 2.0) == pytest.approx(2.5)
    # records with the loop's training clock use it as it is
    for r, t in zip([r for r in records if r["kind"] == "train"], (0.5, 1.0, 1.5)):
        r["train_seconds"] = t
    assert [p["train_time"] for p in quality.curve(records)] == [0.5, 1.5]


def test_equal_time_comparison_is_pairwise_with_transformerpp_and_feeds_the_headline():
    def run(arch, losses, times):
        return dict(arch=arch, train_time=times[-1],
                    curve=[dict(train_time=t, heldout_loss=x) for t, x in zip(times, losses)])
    seed0 = {"flash": run("flash", [3.0, 2.0], [10.0, 80.0]),
             "transformer++": run("transformer++", [3.0, 2.4], [10.0, 60.0]),
             "transformer+": run("transformer+", [3.0, 2.2], [10.0, 70.0]),
             "performer": run("performer", [3.5, 3.4], [10.0, 20.0])}     # a short run sets only its own time
    rows = report.compare(seed0)
    f = rows["flash"]
    assert f["equal_time"] == 60.0 and f["baseline_loss_at_equal_time"] == 2.4
    assert f["delta_vs_tfmpp"] == pytest.approx((3.0 - 50 / 70) - 2.4)   # FLASH interpolated at 60 s
    assert rows["performer"]["equal_time"] == 20.0
    assert rows["performer"]["delta_vs_tfmpp"] == pytest.approx(3.4 - (3.0 - 0.6 * 10 / 50))
    assert f["time_to_target"] == pytest.approx(10 + 70 * 0.8) and f["speedup"] == pytest.approx(70 / 66)
    assert rows["transformer++"]["speedup"] is None                     # never reaches 2.2
    steps = report.compare({a: r | dict(final=dict(loss=r["curve"][-1]["heldout_loss"]), steps=7)
                            for a, r in seed0.items()}, "steps")
    assert steps["flash"]["delta_vs_tfmpp"] == pytest.approx(2.0 - 2.4) and "equal_time" not in steps["flash"]
    seed1 = {"flash": run("flash", [3.0, 2.9], [10.0, 50.0]),
             "transformer++": run("transformer++", [3.0, 2.5], [10.0, 50.0])}
    comparisons = [dict(context=4096, seed=0, rows=rows), dict(context=4096, seed=1, rows=report.compare(seed1)),
                   dict(context=512, seed=0, rows={"transformer+": {}}),          # no FLASH: no line
                   dict(series="steps", context=512, seed=0, rows=steps)]
    got = {h["name"]: h for h in report.headline(comparisons)}
    assert set(got) == {"flash_vs_tfmpp_loss_4096_seed0", "flash_vs_tfmpp_loss_4096_seed1",
                        "flash_vs_tfmpp_loss_steps_512_seed0"}
    assert "512 context, seed 0, equal steps (7): FLASH held-out loss 2.0000" in got[
        "flash_vs_tfmpp_loss_steps_512_seed0"]["text"]
    assert got["flash_vs_tfmpp_loss_4096_seed0"]["text"] == (
        "4K context, seed 0, equal training time 60 s: FLASH held-out loss 2.2857 vs Transformer++ 2.4000 "
        "(difference -0.1143 nats)")
    assert got["flash_vs_tfmpp_loss_4096_seed1"]["value"] == pytest.approx(0.4)


def test_mlm_objective_trains_bidirectional_models_and_measures_speedup_to_transformerpp(tmp_path, small_corpus,
                                                                                        parse):
    args = _args(parse, tmp_path, small_corpus, "--objective", "mlm", "--archs", "transformer++", "flash")
    assert quality.run(args) == 0
    rep = json.loads((tmp_path / "quality-mlm.json").read_text())
    assert rep["settings"]["objective"] == "mlm" and (tmp_path / "quality-mlm.png").stat().st_size > 0
    assert not (tmp_path / "quality.json").exists() and (tmp_path / "runs" / "quality-mlm").is_dir()
    for run in rep["runs"]:
        assert run["model_config"]["causal"] is False and run["train_config"]["objective"] == "mlm"
        assert {"loss", "accuracy"} <= set(run["final"]) and "heldout_accuracy" in run["curve"][0]
    (cmp,) = rep["comparisons"]
    assert cmp["rows"]["transformer++"]["speedup"] == pytest.approx(1.0)    # the reference of the C4 speedup
    names = {h["name"] for h in rep["headline"]}
    assert {"flash_vs_tfmpp_loss_steps_32_seed0", "flash_speedup_to_tfmpp_steps_32_seed0"} <= names
    md = (tmp_path / "quality-mlm.md").read_text()
    assert md.startswith("# Masked-language-model quality at equal training budget")
    assert "masked-token loss" in md and "speedup to Transformer++'s masked-token loss" in md
    assert "bits/byte" not in md and "quality-mlm.png" in md
    s = quality.settings_from_args(parse(quality, ["--objective", "mlm", "--precision", "fp32"]))
    assert (s.archs, s.contexts, s.preset) == (list(quality.MLM_ARCHS), [512, 2048], "tiny") and s.stem == "quality-mlm"
    assert (s.budget_for(512), s.budget_for(2048), s.budget_for(1024)) == (100.0, 240.0, 120.0)
    assert s.run_key("flash", 2048, 1, "time") == "tiny-T2048-240s-train-seed1-flash"
    s = quality.settings_from_args(parse(quality, ["--objective", "mlm", "--time-budget", 30]))
    assert s.budget_for(2048) == 30.0 and s.context_budgets == {}
    s = quality.settings_from_args(parse(quality, ["--context-budget", "4096=50", "--time-budget", 20]))
    assert (s.budget_for(4096), s.budget_for(512)) == (50.0, 20.0)
    assert quality.train_config("flash", 4096, 0, s, tmp_path).time_budget == 50.0


def test_both_series_side_by_side_with_the_unigram_flag(tmp_path, small_corpus, parse, monkeypatch):
    """--steps and --time-budget together: every (arch, context, seed) runs in both series, each with its own key
    and budget; the report compares within a series, and a row near the unigram floor is flagged."""
    args = _args(parse, tmp_path, small_corpus, "--time-budget", 1.0)
    s = quality.settings_from_args(args)
    assert s.series == ["time", "steps"]
    timed = quality.train_config("flash", 32, 0, s, tmp_path / "x", "time")
    assert (timed.time_budget, timed.steps, timed.time_budget_covers) == (1.0, None, "training")
    floor = dict(loss=100.0, margin=1000.0)                              # every tiny run is "near" it
    monkeypatch.setattr(quality, "unigram_floor", lambda data, fraction: floor | dict(tokenizer="bytes"))
    assert quality.run(args) == 0
    rep = json.loads((tmp_path / "quality.json").read_text())
    assert sorted(r["series"] for r in rep["runs"]) == ["steps", "steps", "time", "time"]
    assert {c["series"] for c in rep["comparisons"]} == {"time", "steps"}
    assert set(rep["summary"]) == {"time", "steps"}
    assert all(sm["near_unigram"] for x in rep["summary"].values() for sm in x.values())
    md = (tmp_path / "quality.md").read_text()
    assert "equal time: steps" in md and "equal steps: steps" in md and "⚠" in md


def test_rows_near_the_unigram_floor_are_flagged_and_rows_below_it_are_not():
    floor = dict(loss=3.38, margin=0.05)
    assert report.near_floor([3.40], floor) and report.near_floor([2.5, 3.35], floor)
    assert not report.near_floor([2.65, 3.45], floor) and not report.near_floor([3.0], None)


def test_the_unigram_floor_is_the_held_out_cross_entropy_of_training_frequencies(tmp_path):
    """Two documents: the held-out one is scored from its second token on, against add-one smoothed training
    counts."""
    import math

    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "a.txt").write_text("aab" * 50)
    (corpus / "b.txt").write_text("ab" * 20)
    floor = quality.unigram_floor(str(corpus), 0.3)
    # the held-out document is the smaller one by the split's rule only if its hash comes first: compute both ways
    counts = {"a.txt": {"a": 100, "b": 50}, "b.txt": {"a": 20, "b": 20}}
    options = []
    for held, train in (("a.txt", "b.txt"), ("b.txt", "a.txt")):
        n = sum(counts[train].values()) + 256
        text = (corpus / held).read_text()[1:]
        options.append(-sum(math.log((counts[train][c] + 1) / n) for c in text) / len(text))
    assert floor["vocab_size"] == 256 and any(floor["loss"] == pytest.approx(x) for x in options)


def test_flash_against_its_0_1_0_defaults_at_60_steps_and_at_the_end():
    """The flash-0.1.0 row trains FLASH with flashgau 0.1.0's defaults, and the report compares
    it with FLASH at the end of both series and, at equal steps, after the first 60 steps on the curves."""
    assert quality.VARIANT_ROWS["flash-0.1.0"] == ("flash", quality.TODAY) and "flash-0.1.0" in quality.ROWS
    curve = lambda losses: [dict(step=s, train_time=s / 10, heldout_loss=x) for s, x in zip((50, 70, 100), losses)]  # noqa: E731
    runs = [dict(arch="flash", series="steps", context=512, seed=0, steps=100, final=dict(loss=2.0), train_time=10,
                 curve=curve([2.6, 2.4, 2.0])),
            dict(arch="flash-0.1.0", series="steps", context=512, seed=0, steps=100, final=dict(loss=2.1),
                 train_time=10, curve=curve([3.0, 2.8, 2.1])),
            dict(arch="flash", series="time", context=512, seed=0, train_time=8.0, curve=curve([2.6, 2.4, 2.0])),
            dict(arch="flash-0.1.0", series="time", context=512, seed=0, train_time=10.0,
                 curve=curve([3.0, 2.8, 2.1]))]
    steps, timed = report.against_before(runs)
    assert steps["end"] == pytest.approx(-0.1) and steps["early"] == pytest.approx(2.5 - 2.9)
    assert timed["equal_time"] == 8.0 and timed["end"] == pytest.approx((2.4 - 0.4 / 3) - (2.8 - 0.7 / 3))
    assert "after the first 60 steps 2.5000 vs 2.9000 (-0.4000 nats)" in report._before_text(steps)


def test_flash_against_each_earlier_release_is_its_own_line():
    """flash-0.2.0 is FLASH with the tied embedding and head of 0.2.0 (its embedding at init_std); each earlier
    release's row gets its own comparison line, named by the release."""
    from flashgau import ModelConfig

    arch, options = quality.VARIANT_ROWS["flash-0.2.0"]
    cfg = ModelConfig.preset("small", arch=arch, **options)
    assert arch == "flash" and (cfg.tie_embeddings, cfg.embedding_std) == (True, cfg.init_std)
    assert quality.TODAY["tie_embeddings"] is True
    run = lambda name, loss: dict(arch=name, series="steps", context=512, seed=1, steps=100,  # noqa: E731
                                  final=dict(loss=loss), train_time=10, curve=[])
    lines = report.against_before([run("flash", 2.0), run("flash-0.2.0", 2.3), run("flash-0.1.0", 2.6)])
    assert [(b["release"], round(b["end"], 6)) for b in lines] == [("0.2.0", -0.3), ("0.1.0", -0.6)]
    assert "vs FLASH 0.2.0 2.3000 (-0.3000 nats)" in report._before_text(lines[0])


def test_equal_time_rows_from_two_kinds_of_machine_are_flagged_and_equal_steps_are_not(tmp_path, parse, capsys):
    """A report built from saved run records (no training): at 32 the equal-time runs come from two machines, and
    so do the equal-steps runs; at 64 one machine trained every run. Only equal time at 32 is flagged."""
    from flashgau.bench.common import ResultStore

    s = quality.settings_from_args(parse(quality, ["--archs", "transformer++", "flash", "--contexts", 32, 64,
                                                   "--seeds", 0, "--time-budget", 1, "--steps", 3, "--device", "cpu",
                                                   "--precision", "fp32"]))
    avx2 = dict(cpu="AMD EPYC", cpu_capability="AVX2", cores=2, device="cpu")
    avx512 = dict(avx2, cpu_capability="AVX512")
    store = ResultStore(tmp_path)
    for series in ("time", "steps"):
        for T in (32, 64):
            for arch in ("transformer++", "flash"):
                other = T == 32 and arch == "flash"
                curve = [dict(step=step, train_time=t, tokens=64 * step, heldout_loss=x)
                         for step, t, x in ((1, 0.5, 3.0), (3, 1.0, 2.5 if arch == "flash" else 2.6))]
                store.save(s.run_key(arch, T, 0, series), dict(
                    key=s.run_key(arch, T, 0, series), arch=arch, context=T, seed=0, steps=3, tokens=192,
                    train_time=1.0, num_parameters=1000, curve=curve,
                    final=dict(loss=curve[-1]["heldout_loss"], perplexity=13.0, bits_per_byte=3.7),
                    env=dict(command="flashgau bench quality", machine=avx512 if other else avx2)))
    rep = report.build_report(store, s)
    assert rep["mixed_machines"] == {"32": {"AMD EPYC (AVX2, 2 cores)": ["transformer++ seed 0"],
                                            "AMD EPYC (AVX512, 2 cores)": ["flash seed 0"]}}
    (warning,) = [line for line in capsys.readouterr().out.splitlines() if "warning" in line]
    assert warning == ("warning: quality, equal time at 32: runs trained on 2 machine kinds, not comparable at equal "
                       "time: AMD EPYC (AVX2, 2 cores) (1 run) vs AMD EPYC (AVX512, 2 cores) (1 run)")
    md = report.markdown(rep)
    assert md.count("kinds of machine") == 1
    assert ("**Equal time at 32: runs from 2 kinds of machine**, not comparable at equal time (one makes more steps "
            "in the same seconds): AMD EPYC (AVX2, 2 cores): transformer++ seed 0; AMD EPYC (AVX512, 2 cores): flash "
            "seed 0.") in md
    steps_only = quality.settings_from_args(parse(quality, ["--archs", "transformer++", "flash", "--contexts", 32,
                                                            "--seeds", 0, "--steps", 3, "--device", "cpu",
                                                            "--precision", "fp32"]))
    assert report.build_report(store, steps_only)["mixed_machines"] == {}
    assert "warning" not in capsys.readouterr().out


def test_a_run_set_aside_by_an_interrupted_replacement_is_resumed_not_replaced(tmp_path, small_corpus, capsys, parse):
    from flashgau.training.loop import train
    from flashgau.training.run_folder import RunFolder

    args = _args(parse, tmp_path, small_corpus, "--archs", "flash")
    s = quality.settings_from_args(args)
    key = s.run_key("flash", 32, 0)
    folder = tmp_path / "runs" / "quality" / key
    train(quality.train_config("flash", 32, 0, s, folder), stop_after=1, progress=False, log=lambda m: None)
    with RunFolder(folder) as claimed:          # an --overwrite killed after setting the run aside
        claimed.set_aside()
    assert not (folder / "checkpoint.pt").exists()
    assert quality.run(args) == 0
    assert "resuming" in capsys.readouterr().out
    rec = json.loads((tmp_path / "runs" / "quality" / f"{key}.json").read_text())
    assert rec["steps"] == 3 and rec["final"] is not None
    assert json.loads((folder / "summary.json").read_text())["step"] == 3


@pytest.mark.parametrize("objective, contexts", [("lm", (512, 1024, 4096)), ("mlm", (512, 2048))])
def test_the_runs_are_the_experiment_files_of_configs(objective, contexts, parse, tmp_path):
    """Each run of the benchmark at a context of configs/ is that file's run (but for arch, seed and folder): the
    settings live in the files, and `flashgau train --config lm-4096` trains what the benchmark does."""
    from flashgau.training.config import TrainConfig
    from flashgau.training.run_config import read_run_config

    s = quality.settings_from_args(parse(quality, ["--objective", objective, "--series", "time", "--contexts",
                                                   *contexts]))
    for T in contexts:
        run = quality.train_config("flash", T, 0, s, tmp_path / "x", "time")
        assert run == TrainConfig(**{**read_run_config(f"{objective}-{T}"), "out": str(tmp_path / "x")}), T
