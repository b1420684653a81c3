"""The bench dispatcher: subcommands registered, decode only when present, `all` passes --quick/--out."""

import argparse

import pytest

from flashgau.bench import cli as bench_cli
from flashgau.cli import build_parser


def test_bench_subcommands_are_registered(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    for name in ("speed", "quality", "all"):
        assert name in out
    assert ("decode" in out) == ("decode" in bench_cli.available())


def test_every_benchmark_module_has_the_interface():
    for name in bench_cli.available():
        module = bench_cli.load(name)
        assert callable(module.add_arguments) and callable(module.run)
        args = bench_cli.defaults(name, quick=True, out="somewhere")
        assert args.quick is True and args.out == "somewhere"


def test_all_runs_each_benchmark_with_quick_and_out(monkeypatch, tmp_path):
    calls = []
    for name in bench_cli.available():
        module = bench_cli.load(name)
        monkeypatch.setattr(module, "run", lambda a, name=name: calls.append((name, a.quick, a.out)) or 0)
    monkeypatch.setattr("flashgau.bench.summary.write_summary", lambda out, quick=False: None)
    args = argparse.Namespace(quick=True, out=str(tmp_path), only=None)
    assert bench_cli.run_all(args) == 0
    assert calls == [(n, True, str(tmp_path)) for n in bench_cli.available()]
