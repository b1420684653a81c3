"""--compile off|on|auto: the "auto" rule (a pure function), the compiler check, the settings and the CLI, and runs
that choose, time and report their compile. The one test that really compiles is slow; the plumbing is tested with
a stand-in for torch.compile that records its calls."""

import json

import pytest
import torch

import flashgau.training.compiling as compiling
import flashgau.training.loop as loop
from flashgau.cli import build_parser, main
from flashgau.errors import ConfigError
from flashgau.runtime import compiler
from flashgau.training.compiling import (COMPILE_SECONDS, COMPILED_SPEEDUP, CompileChoice, ShapeRouted,
                                         break_even_seconds, decide_compile, expected_run_seconds)
from flashgau.training.config import TrainConfig
from flashgau.training.metrics import read_metrics

from training_helpers import tiny_config

# ------------------------------------------------------------------------------------------------- the rule


def test_break_even_is_compile_cost_over_the_share_saved():
    assert break_even_seconds(60.0, 1.5) == pytest.approx(180.0)       # 60 s saved back at 1/3 of each second
    assert break_even_seconds(10.0, 1.0) == float("inf")
    assert break_even_seconds() == pytest.approx(COMPILE_SECONDS * COMPILED_SPEEDUP / (COMPILED_SPEEDUP - 1))


def decide(**kw):
    args = dict(compiler=True, compiler_note="C++ compiler /usr/bin/g++", device_type="cpu", run_seconds=1e6,
                compile_seconds=60.0, speedup=1.5)
    return decide_compile(**{**args, **kw})


def test_no_compiler_means_off_and_says_what_is_missing():
    choice = decide(compiler=False, compiler_note="no C++ compiler found for torch.compile on CPU")
    assert not choice.on and choice.describe() == "compile auto: off (no C++ compiler found for torch.compile on CPU)"


def test_other_devices_are_not_compiled():
    assert not decide(device_type="mps").on


def test_a_compiler_no_faster_than_eager_is_off():
    choice = decide(speedup=0.9)
    assert not choice.on and "no faster" in choice.reason


def test_an_unknown_length_is_off():
    assert not decide(run_seconds=None).on


@pytest.mark.parametrize("seconds, on", [(60.0, False), (179.0, False), (181.0, True), (3600.0, True)])
def test_the_run_must_outlast_the_break_even(seconds, on):
    choice = decide(run_seconds=seconds)
    assert choice.on is on
    assert choice.describe().startswith(f"compile auto: {'on' if on else 'off'} (run of ~{seconds:.0f} s")
    assert "costs ~60 s" in choice.reason and "after ~180 s" in choice.reason


def test_expected_run_seconds():
    # a budget of the whole run leaves training at most 1 - eval_share of what is left
    assert expected_run_seconds(time_budget=300, covers="run", spent=100, steps_left=None, step_seconds=None,
                                eval_share=0.25) == pytest.approx(150)
    assert expected_run_seconds(time_budget=300, covers="training", spent=100, steps_left=None, step_seconds=None,
                                eval_share=0.25) == pytest.approx(200)
    assert expected_run_seconds(time_budget=None, covers="run", spent=0, steps_left=40, step_seconds=2.5,
                                eval_share=0.25) == pytest.approx(100)
    assert expected_run_seconds(time_budget=None, covers="run", spent=0, steps_left=None, step_seconds=None,
                                eval_share=0.25) is None


# ------------------------------------------------------------------------------------------ the compiler check

def test_compiler_status_on_this_cpu_and_without_one(monkeypatch):
    ok, note = compiler.compiler_status("cpu")
    assert ok == (compiler.cpp_compiler() is not None)
    monkeypatch.setattr(compiler, "cpp_compiler", lambda: None)
    assert compiler.compiler_status("cpu") == (False, "no C++ compiler found for torch.compile on CPU (install g++ "
                                                      "or set CXX)")
    assert not compiler.compiler_status("xla")[0]


def test_cpp_compiler_follows_inductors_setting(monkeypatch):
    from torch._inductor import config

    compiler.cpp_compiler.cache_clear()
    try:
        monkeypatch.setattr(config.cpp, "cxx", (None, "no-such-compiler-flashgau"))
        assert compiler.cpp_compiler() is None
    finally:
        compiler.cpp_compiler.cache_clear()


def test_cuda_needs_triton(monkeypatch):
    import importlib.util
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert compiler.compiler_status("cuda") == (False, "triton is not installed, which torch.compile needs on CUDA")


# ------------------------------------------------------------------------------------- settings and the CLI

@pytest.mark.parametrize("given, stored", [(True, "on"), (False, "off"), ("on", "on"), ("off", "off"),
                                           ("auto", "auto")])
def test_compile_setting_normalises(given, stored):
    assert TrainConfig(steps=1, compile=given).compile == stored
    assert TrainConfig.from_dict({**TrainConfig(steps=1).to_dict(), "compile": given}).compile == stored


@pytest.mark.parametrize("bad", ["yes", 1, None, "AUTO"])
def test_a_bad_compile_setting_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"^compile must be one of off, on, auto \(or true / false\), got ") as err:
        TrainConfig(steps=1, compile=bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("argv, value", [([], None), (["--compile"], "on"), (["--compile", "on"], "on"),
                                         (["--compile", "off"], "off"), (["--compile", "auto"], "auto"),
                                         (["--compile", "--steps", "3"], "on")])
def test_cli_compile_values(argv, value):
    assert build_parser().parse_args(["train", *argv]).compile == value


def test_cli_bad_compile_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--compile", "sometimes"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "invalid choice: 'sometimes'" in err and err.count("\n") == 1


# -------------------------------------------------------------------------------------------------- runs

def run_logged(cfg, **kwargs):
    lines = []
    result = loop.train(cfg, progress=False, log=lines.append, **kwargs)
    return result, lines


def test_auto_on_a_two_step_run_chooses_off_and_says_why(small_corpus, tmp_path):
    result, lines = run_logged(tiny_config(small_corpus, tmp_path / "r", steps=2, compile="auto"))
    said = [line for line in lines if line.startswith("compile auto:")]
    assert len(said) == 1 and said[0].startswith("compile auto: off (run of ~0 s of training; compiling costs ~")
    assert not any("| torch.compile" in line for line in lines)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["compile_seconds"] is None
    assert summary["compile"]["mode"] == "auto" and summary["compile"]["on"] is False
    assert summary["compile"]["reason"] == said[0][len("compile auto: off ("):-1]


def test_auto_without_a_compiler_is_off(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(compiling, "compiler_status", lambda device_type: (False, "no C++ compiler found (test)"))
    _, lines = run_logged(tiny_config(small_corpus, tmp_path / "r", steps=2, compile="auto"))
    assert "compile auto: off (no C++ compiler found (test))" in lines


def test_on_without_a_compiler_is_one_line_before_anything_is_compiled_or_written(small_corpus, tmp_path, capsys,
                                                                                 monkeypatch):
    monkeypatch.setattr(compiling, "compiler_status", lambda device_type: (False, "no C++ compiler found (test)"))
    monkeypatch.setattr(compiling, "compile_model", lambda model: pytest.fail("compiled"))
    out = tmp_path / "r"
    assert main(["train", "--data", str(small_corpus), "--steps", "1", "--compile", "on", "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err == ("flashgau train: error: --compile on cannot compile here: no C++ compiler found (test); train "
                   "with --compile off (or auto, which compiles only where it can)\n")
    assert not out.exists()


class FakeCompiled:
    """Stands in for torch.compile's wrapper: calls the model, records (training?, grad enabled?, shape)."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __call__(self, input_ids, **kwargs):
        self.calls.append((self.model.training, torch.is_grad_enabled(), tuple(input_ids.shape)))
        return self.model(input_ids, **kwargs)


@pytest.fixture
def fake_compiles(monkeypatch):
    """compiling.compile_model replaced by FakeCompiled (and a compiler found); the list of those made."""
    made = []
    monkeypatch.setattr(compiling, "compiler_status", lambda device_type: (True, "test"))

    def fake(model):
        made.append(FakeCompiled(model))
        return made[-1]

    monkeypatch.setattr(compiling, "compile_model", fake)
    return made


def test_compiled_run_times_its_compile_and_scores_full_batches_compiled(small_corpus, tmp_path, fake_compiles):
    made = fake_compiles
    # 4 windows of 32 per step in micro-batches of 2; 5 held-out windows per check: batches of 2, 2 and 1
    cfg = tiny_config(small_corpus, tmp_path / "r", steps=3, compile="on", eval_every=3, eval_windows=5)
    result, lines = run_logged(cfg)
    assert len(made) == 1
    calls = made[0].calls
    assert [c for c in calls if c[0]] == [(True, True, (2, 32))] * 6            # 3 steps x 2 micro-batches
    scoring = [c for c in calls if not c[0]]
    assert scoring and set(scoring) == {(False, False, (2, 32))}                # the odd last batch ran eager
    assert any(line.startswith("torch.compile: first step took ") for line in lines)
    record = [r for r in read_metrics(tmp_path / "r" / "metrics.jsonl") if r["kind"] == "compile"]
    assert len(record) == 1 and record[0]["step"] == 2 and record[0]["compile_seconds"] >= 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["compile"]["on"] is True and summary["compile_seconds"] == record[0]["compile_seconds"]
    assert summary["compile"]["eval_compile_seconds"] is not None


def test_auto_on_turns_compile_on_before_the_first_step(small_corpus, tmp_path, monkeypatch):
    made = []
    monkeypatch.setattr(compiling, "compile_model", lambda model: made.append(FakeCompiled(model)) or made[-1])
    monkeypatch.setattr(compiling, "decide_compile", lambda **kw: CompileChoice(True, "test"))
    _, lines = run_logged(tiny_config(small_corpus, tmp_path / "r", steps=2, compile="auto"))
    assert "compile auto: on (test)" in lines and any("| torch.compile" in line for line in lines)
    assert len(made) == 1 and made[0].calls[0] == (True, True, (2, 32))


def test_resume_may_switch_to_auto(small_corpus, tmp_path):
    cfg = tiny_config(small_corpus, tmp_path / "r", steps=4, compile=True)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(compiling, "compile_model", FakeCompiled)
    try:
        run_logged(cfg, stop_after=2)
    finally:
        monkey.undo()
    result, lines = run_logged(None, resume=tmp_path / "r", compile="auto")
    assert result.step == 4 and any(line.startswith("compile auto: off") for line in lines)


def test_shape_routed_sends_other_shapes_to_the_eager_model():
    model = torch.nn.Linear(3, 3)
    compiled = FakeCompiled(model)
    routed = ShapeRouted(model, compiled, (2, 3))
    routed(torch.zeros(2, 3))
    routed(torch.zeros(1, 3))
    routed(torch.zeros(2, 3))
    assert [c[2] for c in compiled.calls] == [(2, 3), (2, 3)]
    assert routed.compile_seconds is not None and next(routed.parameters()) is model.weight
    routed.eval()
    assert not model.training


# -------------------------------------------------------------------------------------------- a real compile

@pytest.mark.slow
def test_a_real_compiled_run_matches_eager_and_does_not_recompile_on_each_check(small_corpus, tmp_path):
    if not compiler.compiler_status("cpu")[0]:
        pytest.skip("no C++ compiler for torch.compile on this CPU")
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = loop.train(tiny_config(small_corpus, tmp_path / "eager", steps=4, eval_every=1), progress=False,
                       log=lambda s: None)
    compiled, lines = run_logged(tiny_config(small_corpus, tmp_path / "compiled", steps=4, eval_every=1,
                                             compile="on"))
    # four held-out checks alternate with four steps: one training graph and one scoring graph, no more
    assert counters["stats"]["unique_graphs"] <= 3
    assert compiled.final.loss == pytest.approx(eager.final.loss, rel=1e-3)
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    assert summary["compile_seconds"] > 0


def test_a_budgeted_compiled_run_plans_without_counting_the_scoring_compile(small_corpus, tmp_path, fake_compiles):
    made = fake_compiles
    _, lines = run_logged(tiny_config(small_corpus, tmp_path / "r", steps=None, time_budget=4.0, compile="on",
                                      eval_every=None))
    assert any(line.startswith("time budget 4 s") for line in lines) or \
        any(r["kind"] == "plan" for r in read_metrics(tmp_path / "r" / "metrics.jsonl"))
    scoring = [c for c in made[0].calls if not c[0]]
    assert len(scoring) >= 2              # the untimed warm-up call (the compile) and the timed one


def test_auto_with_a_time_budget_judges_its_training_share(small_corpus, tmp_path, monkeypatch):
    seen = {}

    def spy(**kw):
        seen.update(kw)
        return CompileChoice(False, "spy")

    monkeypatch.setattr(compiling, "decide_compile", spy)
    run_logged(tiny_config(small_corpus, tmp_path / "r", steps=None, time_budget=4.0, compile="auto"))
    assert seen["run_seconds"] == pytest.approx(3.0) and seen["speedup"] == COMPILED_SPEEDUP
