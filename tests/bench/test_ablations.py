"""`flashgau bench ablations` at tiny size: variants train through the quality benchmark's functions, a variant shared
by two groups trains once, keys follow what a variant changes, the report pairs deltas by seed and checks claims and
names the machines of an equal-time group whose runs came from more than one kind."""

import json

import pytest
import torch

from flashgau.bench import ablations
from flashgau.bench.ablations import Claim, Group, report
from flashgau.bench.ablations import _v as variant
from flashgau.bench.common import ResultStore


def _args(parse, out, corpus, *extra):
    return parse(ablations, ["--quick", "--batch-tokens", 64, "--eval-tokens", 64, "--heldout-fraction", 0.25,
                             "--data", corpus, "--device", "cpu", "--precision", "fp32", "--out", out, *extra])


def test_groups_train_their_variants_once_and_report_claims(tmp_path, small_corpus, parse, monkeypatch):
    shared = variant("base", **ablations.SHIFT)
    one = Group("one", "one", "small", (512,), "steps", 60, (shared, variant("scaled", **dict(ablations.SHIFT,
                                                                                           init="scaled"))),
                "base", claims=(Claim("scaled is not better", "scaled", "base", "not_lower"),))
    two = Group("two", "two", "small", (512,), "steps", 60, (shared, variant("lr", lr=5e-3, **ablations.SHIFT)),
                "base")
    monkeypatch.setattr(ablations, "GROUPS", {"one": one, "two": two})
    monkeypatch.setattr(ablations.quality, "unigram_floor", lambda data, f: dict(loss=1.0, margin=0.05,
                                                                                 tokenizer="bytes"))
    args = _args(parse, tmp_path, small_corpus, "--groups", "one", "two")
    plan = ablations.planned(ablations.chosen_groups(args), args, torch.device("cpu"))
    keys = [p[-1] for p in plan]
    assert len(keys) == 4 and len(set(keys)) == 3                       # "base" is one run for both groups
    assert all(k.startswith("tiny-T128-6steps-seed0-flash-") for k in keys)
    assert ablations.run(_args(parse, tmp_path, small_corpus, "--groups", "one", "two", "--max-runs", 1)) == 0
    assert len(list((tmp_path / "runs" / "ablations-quick").glob("*.json"))) == 1    # driven run by run
    assert ablations.run(args) == 0
    saved = list((tmp_path / "runs" / "ablations-quick").glob("*.json"))
    assert len(saved) == 3
    rec = json.loads(saved[0].read_text())
    assert rec["steps"] == 6 and rec["train_config"]["preset"] == "tiny" and rec["train_config"]["steps"] == 6
    rep = json.loads((tmp_path / "ablations-quick.json").read_text())
    rows = rep["groups"][0]["contexts"]["128"]
    assert rows["base"]["delta"] == [0.0] and rows["scaled"]["loss"][0] != rows["base"]["loss"][0]
    lr_run = next(r for r in rep["runs"] if r["variant"] == "lr")
    assert lr_run["train_config"]["lr"] == 5e-3 and lr_run["train_config"]["model"]["token_shift"] == 0.5
    (claim,) = rep["groups"][0]["claims"]
    assert claim["deltas"] == [pytest.approx(rows["scaled"]["loss"][0] - rows["base"]["loss"][0])]
    md = (tmp_path / "ablations-quick.md").read_text()
    assert "scaled is not better" in md and "Δ vs reference" in md
    assert (tmp_path / "ablations-quick.png").stat().st_size > 0


def test_a_key_changes_with_what_the_variant_resolves_to(parse):
    """Keys hash the resolved model (its differences from the paper's) and the lr: a variant spelling out a default
    is the defaults' run; another value, or another lr, is another run."""
    from flashgau import ModelConfig

    s = ablations.settings(ablations.CANDIDATES, parse(ablations, ["--groups", "candidates"]), torch.device("cpu"))
    key = lambda v: ablations.run_key(v, 512, 0, s)                   # noqa: E731
    defaults = key(variant("defaults"))
    assert key(variant("spelled out", token_shift=ModelConfig().token_shift, init=ModelConfig().init)) == defaults
    assert key(variant("other", token_shift=0.3)) != defaults
    assert key(variant("lr", lr=1e-3)) != key(variant("lr", lr=2e-3)) == defaults   # 2e-3 is the benchmark's lr


def test_claim_verdicts_count_only_differences_beyond_the_noise():
    assert report.verdict("lower", [-0.1, -0.08])[0] == "agrees"
    assert report.verdict("lower", [-0.01])[0].startswith("inconclusive")
    assert report.verdict("lower", [0.2])[0] == "disagrees"
    assert report.verdict("not_lower", [-0.02, 0.03])[0] == "agrees"
    assert report.verdict("not_lower", [-0.2, -0.1])[0] == "disagrees"
    assert report.verdict("similar", [0.04])[0] == "agrees" and report.verdict("similar", [0.3])[0] == "disagrees"
    assert report.noise([0.0, 0.2]) == pytest.approx(0.1) and report.noise([0.5]) == report.NOISE


def test_an_equal_time_group_whose_runs_came_from_two_kinds_of_machine_is_flagged(tmp_path, parse, capsys):
    """A report built from saved run records (no training): in both groups the variant "other" ran on another
    machine at 512; only the equal-time group is flagged there, not its 1K context (one machine), not the
    equal-steps group."""
    pair = (variant("base"), variant("other", lr=1e-3))
    timed = Group("timed", "timed", "small", (512, 1024), "time", 60, pair, "base", seeds=(0,))
    stepped = Group("stepped", "stepped", "small", (512,), "steps", 60, pair, "base", seeds=(0,))
    device = torch.device("cpu")
    plan = ablations.planned([timed, stepped], parse(ablations, ["--data", tmp_path, "--device", "cpu",
                                                                 "--precision", "fp32"]), device)
    avx2 = dict(cpu="AMD EPYC", cpu_capability="AVX2", cores=2, device="cpu")
    amx = dict(cpu="Intel(R) Xeon(R) Platinum", cpu_capability="AVX512", cores=2, device="cpu")
    store = ResultStore(tmp_path)
    for g, _s, v, T, seed, key in plan:
        store.save(key, dict(key=key, context=T, seed=seed, steps=60, tokens=60 * 4096, train_time=60.0,
                             num_parameters=1000, final=dict(loss=2.5 if v.label == "base" else 2.4),
                             env=dict(command=f"flashgau bench ablations --groups {g.name}",
                                      machine=amx if v.label == "other" and T == 512 else avx2)))
    rep = report.build_report(store, [timed, stepped], plan, None, device)
    assert [g["mixed_machines"] for g in rep["groups"]] == [
        {"512": {"AMD EPYC (AVX2, 2 cores)": ["base seed 0"], "Intel(R) Xeon(R) Platinum (AVX512, 2 cores)":
                 ["other seed 0"]}}, {}]
    assert [line for line in capsys.readouterr().out.splitlines() if "warning" in line] == [
        "warning: ablations timed, equal time at 512: runs trained on 2 machine kinds, not comparable at equal time: "
        "AMD EPYC (AVX2, 2 cores) (1 run) vs Intel(R) Xeon(R) Platinum (AVX512, 2 cores) (1 run)"]
    md = report.markdown(rep)
    assert md.count("kinds of machine") == 1
    assert ("### Context 512\n\n⚠ **Equal time at 512: runs from 2 kinds of machine**, not comparable at equal time "
            "(one makes more steps in the same seconds): AMD EPYC (AVX2, 2 cores): base seed 0; Intel(R) Xeon(R) "
            "Platinum (AVX512, 2 cores): other seed 0.\n\n| Variant") in md
