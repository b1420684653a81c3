"""`flashgau bench scaling`: its configurations, the numbers it derives from the runs, and its report. The runs
themselves (torchrun processes) are replaced by recorded figures here; tests/training/test_torchrun.py runs
torchrun for real."""

import json

import pytest
import torch

from flashgau.bench import cli as bench_cli
from flashgau.bench import scaling
from flashgau.errors import ConfigError

CPU = torch.device("cpu")
FIGURES = {(1, 1): 1000.0, (1, 2): 1800.0, (2, 1): 1700.0}        # tokens/s of each (processes, threads)


def test_scaling_is_a_command_of_its_own_not_part_of_all():
    assert "scaling" not in bench_cli.available()
    from flashgau.cli import build_parser

    parsed = build_parser().parse_args(["bench", "scaling", "--quick", "--device", "cpu"])
    assert parsed.bench_name == "scaling" and parsed.quick


def test_cpu_configurations_use_the_same_cores_by_threads_or_by_processes(parse):
    s = scaling.settings_from_args(parse(scaling, ["--processes", "2", "--device", "cpu"]))
    assert s.configs == [[1, 1], [1, 2], [2, 1]] and (s.preset, s.context, s.batch_tokens) == ("small", 2048, 4096)
    with pytest.raises(ConfigError, match="3 windows does not split over 2 processes"):
        scaling.settings_from_args(parse(scaling, ["--processes", "2", "--batch-tokens", "6144", "--device", "cpu"]))
    with pytest.raises(ConfigError, match="--warmup must be at least 1"):
        scaling.settings_from_args(parse(scaling, ["--warmup", "0", "--device", "cpu"]))


def test_efficiency_and_the_threads_comparison_from_the_runs(parse, tmp_path, monkeypatch):
    def fake(s, processes, threads, out):
        tps = FIGURES[(processes, threads)]
        return {"tokens_per_s": tps, "step_seconds": s.batch_tokens / tps, "timed_steps": s.steps,
                "timed_seconds": s.steps * s.batch_tokens / tps}

    monkeypatch.setattr(scaling, "measure", fake)
    assert scaling.run(parse(scaling, ["--processes", "2", "--repeats", "2", "--device", "cpu", "--out",
                                       tmp_path])) == 0
    report = json.loads((tmp_path / "scaling.json").read_text())
    assert len(report["runs"]) == 6 and [r["processes"] for r in report["runs"][:3]] == [1, 1, 2]   # turns
    two = report["summary"][2]
    assert two["label"] == "2 processes x 1 thread" and two["efficiency"] == pytest.approx(0.85)
    assert two["vs_threads"] == pytest.approx(1700 / 1800) and two["vs_one"] == pytest.approx(1.7)
    assert report["env"]["machine"]["cpu"] and report["settings"]["configs"] == [[1, 1], [1, 2], [2, 1]]
    text = (tmp_path / "scaling.md").read_text()
    assert "| 2 processes x 1 thread | 1,700 |" in text and "85%" in text and "not FlashAttention" in text
    assert "scaling efficiency 85%); 0.94x 1 process x 2 threads (-6%)" in report["headline"][0]["text"]
