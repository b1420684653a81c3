"""Training under torchrun, for real: 2 CPU processes (gloo, one thread each) run `torchrun -m flashgau train` on the
tiny preset. They train the loss curve of one process with the same global batch, rank 0 alone writes and prints,
checkpoints move between process counts, a killed or hung process stops the other with one line and --resume
finishes the curve, and FSDP trains the curve of DDP. Steps take milliseconds; the time goes to starting torchrun
and its processes, so the slower cases are marked slow (`pytest -m slow`)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.loop import train
from flashgau.training.metrics import read_metrics

TINY = dict(arch="flash", preset="tiny", context=32, batch_tokens=128, micro_batch_tokens=64, lr=3e-3,
            warmup_steps=2, precision="fp32", eval_windows=4, sample_tokens=0)
TOLERANCE = 1e-5        # fp32: the processes sum the same windows' gradients in another order


def settings(corpus, **overrides):
    return {**TINY, "data": str(corpus), **overrides}


def cli(values: dict, out: Path) -> list[str]:
    """The `flashgau train` options that say what TrainConfig(**values) says."""
    argv = ["--out", str(out), "--no-progress"]
    for name, value in values.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def one_process(values: dict, out: Path, **kwargs):
    return train(TrainConfig(**values, out=str(out)), progress=False, log=lambda s: None, **kwargs)


def torchrun(argv, *, nproc=2, timeout=300, env=None, wait=True):
    """`torchrun --standalone --nproc_per_node N -m flashgau train ARGV` (as `python -m torch.distributed.run`)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m",
           "flashgau", "train", *argv]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=environ)


def losses(out: Path) -> dict:
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


def assert_same_curve(a: Path, b: Path, steps: int) -> None:
    x, y = losses(a), losses(b)
    assert sorted(x) == sorted(y) == list(range(1, steps + 1))
    assert max(abs(x[s] - y[s]) for s in x) < TOLERANCE


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert x.keys() == y.keys()
    for name in x:
        assert x[name].shape == y[name].shape and torch.allclose(x[name], y[name], atol=TOLERANCE), name


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "flashgau train" in line and "error:" in line]


@pytest.fixture(scope="module")
def ddp_run(small_corpus, tmp_path_factory):
    """6 steps of 2 processes (DDP), held-out checks at 3 and 6, an 8-token sample at the end."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    values = settings(small_corpus, steps=6, eval_every=3, sample_tokens=8)
    proc = torchrun(cli(values, out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return values, out, proc


def test_two_processes_train_the_curve_of_one_and_rank_0_alone_writes(ddp_run, tmp_path):
    values, out, proc = ddp_run
    one = one_process(values, tmp_path / "one")
    assert_same_curve(tmp_path / "one", out, 6)
    assert_same_weights(tmp_path / "one", out)
    records = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6]           # written once, by rank 0
    held = [r["heldout_loss"] for r in records if r["kind"] in ("eval", "final")]
    mine = [r["heldout_loss"] for r in read_metrics(tmp_path / "one" / "metrics.jsonl") if r["kind"] in
            ("eval", "final")]
    assert held == pytest.approx(mine, abs=TOLERANCE)                              # scored in halves, summed
    final = [r for r in records if r["kind"] == "final"][0]
    assert final["tokens"] == one.final.tokens and final["windows"] == one.final.windows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6 and summary["tokens_seen"] == one.tokens_seen and summary["sample"]
    assert {p.name for p in out.iterdir()} == {"checkpoint.pt", "metrics.jsonl", "loss.png", "summary.json",
                                            "config.toml", ".lock"}
    assert load_checkpoint(out)["runtime"]["processes"] == 2
    assert proc.stdout.count("held-out bits per byte:") == 1 and proc.stdout.count("--- sample") == 1
    assert "2 processes (gloo, DDP" in proc.stdout and not error_lines(proc.stderr)


def test_fsdp_trains_the_curve_of_ddp_and_saves_one_checkpoint_in_the_same_layout(ddp_run, tmp_path):
    """FSDP (fully_shard) on 2 CPU processes: stopped after step 4 (the shards gathered into one file), resumed with
    FSDP (the file sharded again) and activation checkpointing (each sharded block recomputed in backward), it
    trains DDP's curve; its checkpoint is the single-process layout."""
    values, ddp, _ = ddp_run
    out = tmp_path / "fsdp"
    first = torchrun(cli(values, out) + ["--fsdp", "--stop-after", "4"])
    assert first.returncode == 0, first.stderr[-3000:]
    assert "FSDP (fully_shard)" in first.stdout and "stopped at step 4/6" in first.stdout
    saved = load_checkpoint(out)
    assert saved["runtime"]["fsdp"] and saved["step"] == 4
    layout = load_checkpoint(ddp)
    assert {k: v.shape for k, v in saved["model"].items()} == {k: v.shape for k, v in layout["model"].items()}
    groups = lambda state: [{k: v for k, v in g.items() if k != "lr"} for g in state["optimizer"]["param_groups"]]  # noqa: E731
    assert groups(saved) == groups(layout)
    assert {i: {k: v.shape for k, v in entry.items()} for i, entry in saved["optimizer"]["state"].items()} == \
        {i: {k: v.shape for k, v in entry.items()} for i, entry in layout["optimizer"]["state"].items()}
    second = torchrun(["--resume", str(out), "--fsdp", "--no-progress", "--checkpoint-activations"])
    assert second.returncode == 0, second.stderr[-3000:]
    assert "activation checkpointing" in second.stdout
    assert_same_curve(ddp, out, 6)
    assert_same_weights(ddp, out)


@pytest.mark.slow
def test_a_run_saved_by_two_processes_resumes_on_one_and_the_reverse(small_corpus, tmp_path):
    values = settings(small_corpus, steps=8, eval_every=4)
    one_process(values, tmp_path / "full")
    two = torchrun(cli(values, tmp_path / "two-one") + ["--stop-after", "3"])
    assert two.returncode == 0 and "stopped at step 3/8" in two.stdout, two.stderr[-3000:]
    assert train(resume=tmp_path / "two-one", progress=False, log=lambda s: None).finished
    one_process(values, tmp_path / "one-two", stop_after=3)
    back = torchrun(["--resume", str(tmp_path / "one-two"), "--no-progress"])
    assert back.returncode == 0, back.stderr[-3000:]
    for name in ("two-one", "one-two"):
        assert_same_curve(tmp_path / "full", tmp_path / name, 8)
        assert_same_weights(tmp_path / "full", tmp_path / name)


def workers(agent_pid: int) -> dict:
    """{rank: pid} of the processes torchrun (process `agent_pid`) started (from /proc)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid != agent_pid:
                continue
            env = dict(item.split("=", 1) for item in (stat.parent / "environ").read_text().split("\0") if "=" in item)
        except (OSError, ValueError, IndexError):
            continue
        if "RANK" in env:
            found[int(env["RANK"])] = int(stat.parent.name)
    return found


def running(values: dict, out: Path, timeout: int, step: int = 6):
    """A 2-process run started in the background (collective timeout `timeout` s), once rank 0 has logged `step`."""
    proc = torchrun(cli(values, out), wait=False, env={"FLASHGAU_DIST_TIMEOUT": str(timeout)})
    end = time.monotonic() + 240
    while max(losses(out), default=0) < step:
        if proc.poll() is not None or time.monotonic() > end:
            proc.kill()
            pytest.fail(f"the run did not reach step {step}: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    return proc


FINDS_PROCESSES = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds them through /proc")


@pytest.mark.slow
@FINDS_PROCESSES
def test_a_killed_process_stops_the_other_with_one_line_and_resume_finishes_the_curve(small_corpus, tmp_path):
    values = settings(small_corpus, steps=60, save_every=4, eval_every=30)
    out = tmp_path / "cut"
    proc = running(values, out, timeout=60)
    try:
        os.kill(workers(proc.pid)[1], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)          # the survivor does not wait forever
    finally:
        proc.kill()
    assert proc.returncode != 0
    lines = error_lines(stderr)
    assert len(lines) == 1 and "rank 1 stopped responding (it died or closed its connection" in lines[0], stderr
    step = int(re.search(r"the last checkpoint at step (\d+) is kept in", lines[0]).group(1))
    assert step >= 4 and step % 4 == 0 and load_checkpoint(out)["step"] == step       # whole and readable
    assert f"--resume {out}" in lines[0]
    resumed = torchrun(["--resume", str(out), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    one_process(values, tmp_path / "full")
    assert_same_curve(tmp_path / "full", out, 60)
    assert_same_weights(tmp_path / "full", out)


@pytest.mark.slow
@FINDS_PROCESSES
def test_a_hung_process_is_caught_by_the_collective_timeout(small_corpus, tmp_path):
    values = settings(small_corpus, steps=400, save_every=4, eval_every=200)
    out = tmp_path / "hung"
    proc = running(values, out, timeout=8)
    victim = None
    try:
        ranks = workers(proc.pid)
        victim = ranks[1]
        os.kill(victim, signal.SIGSTOP)                     # alive, but answers nothing
        end = time.monotonic() + 120
        while Path(f"/proc/{ranks[0]}").exists() and time.monotonic() < end:   # rank 0 gives up on its own
            time.sleep(0.1)
        os.kill(victim, signal.SIGKILL)                     # (torchrun would wait 30 s for a stopped process)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if victim is not None:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
    lines = error_lines(stderr)
    assert len(lines) == 1 and "rank 1 stopped responding (no answer within the 8 s collective timeout, " \
                               "FLASHGAU_DIST_TIMEOUT" in lines[0], stderr
    assert load_checkpoint(out)["step"] % 4 == 0


@pytest.mark.slow
def test_a_setup_error_of_rank_0_is_one_line_and_the_other_process_stops_too(small_corpus, tmp_path):
    """The run folder is held by another process: rank 0 cannot claim it; rank 1 learns it and exits quietly."""
    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from flashgau.training.run_folder import RunFolder\n"
                               f"owner = RunFolder({str(out)!r}).claim()\nprint('ready', flush=True)\n"
                               "time.sleep(120)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        proc = torchrun(cli(settings(small_corpus, steps=2), out))
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert error_lines(proc.stderr) == [f"flashgau train: error: {out} is in use by flashgau process {holder.pid}; "
                                        "wait for it to finish or choose another --out"], proc.stderr[-3000:]
