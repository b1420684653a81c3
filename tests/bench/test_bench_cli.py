"""The bench dispatcher: subcommands registered, decode only when present, `all` passes --quick, --out, --device
and --precision, and user errors are one line."""

import argparse

import pytest

from flashgau.bench import cli as bench_cli
from flashgau.cli import build_parser


def test_bench_subcommands_are_registered(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    for name in ("speed", "quality", "all", "scaling", "qa", "profile-step", "perf-fastpath", "compile-cost",
                 "copy-probe", "data-scale"):
        assert name in out
    assert ("decode" in out) == ("decode" in bench_cli.available())


def test_every_benchmark_module_has_the_interface():
    for name in bench_cli.available():
        module = bench_cli.load(name)
        assert callable(module.add_arguments) and callable(module.run)
        args = bench_cli.defaults(name, quick=True, out="somewhere", device="cpu")
        assert args.quick is True and args.out == "somewhere" and args.device == "cpu"


def _record_runs(monkeypatch):
    calls = []
    for name in bench_cli.available():
        module = bench_cli.load(name)
        monkeypatch.setattr(module, "run", lambda a, name=name: calls.append(
            (name, a.quick, a.out, a.device, getattr(a, "precision", None), getattr(a, "precisions", None))) or 0)
    monkeypatch.setattr("flashgau.bench.summary.write_summary", lambda out, quick=False: None)
    return calls


def test_all_runs_each_benchmark_with_quick_out_and_device(monkeypatch, tmp_path):
    calls = _record_runs(monkeypatch)
    args = argparse.Namespace(quick=True, out=str(tmp_path), only=None, device="cpu", precision=None)
    assert bench_cli.run_all(args) == 0
    assert calls == [(n, True, str(tmp_path), "cpu", None, None) for n in bench_cli.available()]
    calls.clear()
    args = argparse.Namespace(quick=False, out=str(tmp_path), only=["speed", "quality"], device="cpu",
                              precision="fp32")
    assert bench_cli.run_all(args) == 0
    assert calls == [("speed", False, str(tmp_path), "cpu", None, ["fp32"]),
                     ("quality", False, str(tmp_path), "cpu", "fp32", None)]


def test_a_user_error_is_one_line_and_exit_2(capsys):
    assert bench_cli.main(["decode", "--positions", "0"]) == 2
    assert capsys.readouterr().err.startswith("flashgau bench decode: error: ")
