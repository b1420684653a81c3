"""What the benchmarks share: the Markdown table, options against defaults and --quick, the machine line of every
report header and the machine kind of a run, the device's matmul peak at tiny sizes, results folders per device,
a report's files written all or none (a full disk, a kill, two writers)."""

import argparse
import errno
import os
import signal
import subprocess
import sys

import pytest
import torch

from flashgau.bench import common


def test_md_table_aligns_names_left_and_numbers_right():
    assert common.md_table(["Model", "512", "2K"], [["flash", "1 ms", 2], ["t++", "3 ms", 4]]) == [
        "| Model | 512 | 2K |", "|---|---:|---:|", "| flash | 1 ms | 2 |", "| t++ | 3 ms | 4 |"]
    assert common.md_table(["a", "b"], [], left=0)[1] == "|---:|---:|"
    assert common.md_table(["a", "b"], [], left=2)[1] == "|---|---|"


def test_options_take_the_given_value_else_quick_else_default():
    defaults, quick = dict(contexts=(512, 4096), repeats=3, seed=0), dict(contexts=(128,), repeats=2)
    ns = argparse.Namespace(contexts=None, repeats=3, seed=None, quick=True)
    assert common.options(ns, defaults, quick) == dict(contexts=(128,), repeats=3, seed=0)
    ns.quick = False
    assert common.options(ns, defaults, quick) == dict(contexts=(512, 4096), repeats=3, seed=0)
    ns = argparse.Namespace(contexts=[], repeats=None, seed=None, quick=True)     # an empty list is an answer
    assert common.options(ns, defaults, quick)["contexts"] == []


def test_machine_line_names_cpu_isa_device_and_gpu():
    cpu = common.environment(torch.device("cpu"))["machine"]
    line = common.machine_line(cpu)
    assert cpu["cpu"] in line and f"CPU capability {cpu['cpu_capability']}" in line and line.endswith("device cpu")
    gpu = dict(cpu, device="cuda:0", gpu="NVIDIA H200", gpu_memory_gib=139.8, gpu_capability="9.0", cuda="13.0")
    assert common.machine_line(gpu).endswith(
        "device cuda:0: NVIDIA H200 (139.8 GiB, compute capability 9.0, CUDA 13.0)")
    old = dict(cpu="Intel(R) Xeon(R) Processor", cores=2, threads=2, memory_gib=23.6, cpu_capability="AVX512")
    assert common.machine_line(old) == ("Intel(R) Xeon(R) Processor, CPU capability AVX512, 2 cores, 2 torch "
                                        "threads, 23.6 GiB RAM; device cpu")     # a record from before devices
    assert f"- machine: {line}\n" in common.env_markdown(common.environment())


def test_machine_kind_is_cpu_capability_and_cores_or_the_gpu_and_mixed_kinds_are_named():
    epyc = dict(cpu="AMD EPYC", cpu_capability="AVX2", cores=2, threads=2, device="cpu", cpu_flags=["avx2"])
    assert common.machine_kind(dict(machine=epyc)) == "AMD EPYC (AVX2, 2 cores)"
    assert common.machine_kind(dict(machine=dict(epyc, threads=1, memory_gib=8.0))) == "AMD EPYC (AVX2, 2 cores)"
    assert common.machine_kind(dict(machine=dict(epyc, device="cuda:0", gpu="NVIDIA H200"))) == "NVIDIA H200"
    assert common.machine_kind({}) == common.machine_kind(None) == common.UNKNOWN_MACHINE
    runs = [dict(name="a", env=dict(machine=epyc)), dict(name="b", env=dict(machine=dict(epyc, cores=4))),
            dict(name="c", env=dict(machine=epyc))]
    name = lambda r: r["name"]                                                  # noqa: E731
    kinds = common.mixed_machines(runs, name)
    assert kinds == {"AMD EPYC (AVX2, 2 cores)": ["a", "c"], "AMD EPYC (AVX2, 4 cores)": ["b"]}
    assert common.mixed_machines([runs[0], runs[2]], name) == {}                # one kind: nothing to say
    assert common.mixed_machines([dict(name="x"), dict(name="y", env={})], name) == {}   # all unknown alike
    assert common.mixed_machines([runs[0], dict(name="x")], name) == {"AMD EPYC (AVX2, 2 cores)": ["a"],
                                                                      "unknown machine": ["x"]}
    assert common.mixed_machines_line("Equal time at 512", kinds).endswith(
        "runs from 2 kinds of machine**, not comparable at equal time (one makes more steps in the same seconds): "
        "AMD EPYC (AVX2, 2 cores): a, c; AMD EPYC (AVX2, 4 cores): b.")


def test_matmul_peak_at_tiny_sizes():
    peak = common.matmul_peak("bf16", torch.device("cpu"), sizes=(32, 48), repeats=2)
    assert peak["flops_per_s"] > 0 and set(peak["per_size"]) == {"32", "48"} and peak["device"] == "cpu"


def test_results_folder_and_run_keys_per_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert str(common.results_folder(None, cpu)) == "benchmarks/results"
    assert str(common.results_folder(None, gpu)) == "benchmarks/results/gpu"
    assert str(common.results_folder("x", gpu)) == "x"
    assert (common.device_tag(cpu, "fp32"), common.device_tag(gpu, "fp32")) == ("", "-cuda")
    assert common.device_tag(cpu, "bf16") == "-bf16"


@pytest.mark.parametrize("speedup, tag", [(3.1, "-bf16"), (1 / 14, "")])
def test_run_keys_name_the_precision_auto_resolves_to(monkeypatch, speedup, tag):
    """A CPU whose bf16 products are fast trains "auto" runs in bf16: their keys say so, so an fp32 run of another
    machine in the same results folder never stands in for them (nor the other way round)."""
    from flashgau.runtime import precision
    monkeypatch.setattr(precision, "cpu_bf16_probe", lambda: dict(bf16_speedup=speedup, bf16_flags=[]))
    assert common.device_tag(torch.device("cpu"), "auto") == tag


def test_command_line_names_the_module(monkeypatch):
    from pathlib import Path
    path = Path(common.__file__).parent / "speed" / "__main__.py"
    assert path.exists()
    monkeypatch.setattr("sys.argv", [str(path), "--quick", "--out", "a b"])
    assert common.command_line() == "python -m flashgau.bench.speed --quick --out 'a b'"
    monkeypatch.setattr("sys.argv", ["/usr/bin/flashgau", "bench", "all"])
    assert common.command_line() == "flashgau bench all"


def report_writer(stem, value, plot=None):
    """write_reports of a report {"value": value}: its Markdown and its "plot" (the value again) as text."""
    def default_plot(report, path):
        common.write_text(path, f"plot {report['value']}")

    return lambda out: common.write_reports(out, stem, {"value": value}, lambda r: f"md {r['value']}",
                                            plot or default_plot)


def reports(out, stem="speed"):
    return {ext: (out / f"{stem}.{ext}").read_text() for ext in ("json", "md", "png")
            if (out / f"{stem}.{ext}").exists()}


def test_a_full_disk_while_writing_reports_is_one_line_and_leaves_the_earlier_ones(tmp_path, capsys):
    out = tmp_path / "results"
    report_writer("speed", 1)(out)
    before = reports(out)

    def full(report, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(common.WriteFailed, match=rf"cannot write {out}/speed.json, .md and .png: the disk is full "
                                                 r"\(\d+ MiB free\); the reports there are as they were"):
        report_writer("speed", 2, full)(out)
    assert reports(out) == before and os.listdir(tmp_path) == ["results"]
    assert common.run_checked("speed", lambda args: report_writer("speed", 2, full)(out), None) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "a-file").write_text("")
    with pytest.raises(common.WriteFailed, match=rf"cannot write {tmp_path}/a-file/k.json: "):
        common.ResultStore(tmp_path / "a-file").save("k", {})                # any OSError, one line


def test_a_report_writer_killed_midway_leaves_the_earlier_reports_and_the_next_cleans_up(tmp_path):
    out = tmp_path / "results"
    report_writer("speed", 1)(out)
    before = reports(out)
    code = ("import os, signal\nfrom flashgau.bench import common\n"
            "def killed(report, path):\n    os.kill(os.getpid(), signal.SIGKILL)\n"
            f"common.write_reports(common.Path({str(out)!r}), 'speed', {{'value': 2}}, str, killed)\n")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == -signal.SIGKILL
    assert reports(out) == before and len(os.listdir(tmp_path)) == 2       # the results and a dead staging folder
    report_writer("speed", 3)(out)
    assert reports(out)["md"] == "md 3" and os.listdir(tmp_path) == ["results"]


def test_two_writers_of_one_report_never_mix_their_files(tmp_path):
    out = tmp_path / "results"

    def meanwhile(report, path):                   # another writer writes the same report while this one plots
        report_writer("speed", 2)(out)
        common.write_text(path, f"plot {report['value']}")

    report_writer("speed", 1, meanwhile)(out)
    assert reports(out) == {"json": '{\n "value": 1\n}\n', "md": "md 1", "png": "plot 1"}
