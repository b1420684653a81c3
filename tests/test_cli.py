"""The `flashgau` command: smoke runs on tiny configs, --help, and one clear line for each bad input."""

import json
import re
import subprocess
import sys

import pytest

from flashgau.cli import COMMANDS, build_parser, main

TINY = ["--preset", "tiny", "--context", "32", "--batch-tokens", "128", "--lr", "1e-2", "--precision", "fp32",
        "--eval-windows", "4", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tiny"
    assert main(["train", *TINY, "--steps", "6", "--data", str(small_corpus), "--out", str(out),
                 "--sample-tokens", "20", "--prompt", "KING.\n"]) == 0
    return out


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_train_leaves_its_outputs_and_reports(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= {"checkpoint.pt", "metrics.jsonl", "loss.png", "summary.json"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["step"] == summary["total_steps"] == 6
    assert summary["final"]["bits_per_byte"] > 0
    if summary["sample"] is not None:
        assert summary["sample"].startswith("KING.\n")


def test_train_prints_bits_per_byte_and_sample(small_corpus, tmp_path, capsys):
    code, out, err = run(["train", *TINY, "--steps", "3", "--data", str(small_corpus), "--out", str(tmp_path / "r"),
                          "--sample-tokens", "10"], capsys)
    assert code == 0
    assert "held-out bits per byte:" in out and "bits/byte" in out
    assert "--- sample" in out or "no generate()" in out


def test_eval_reports_loss_bpb_and_perplexity(run_dir, small_corpus, capsys):
    code, out, _ = run(["eval", str(run_dir), "--json"], capsys)
    result = json.loads(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert code == 0 and result["bits_per_byte"] == pytest.approx(summary["final"]["bits_per_byte"], rel=1e-5)
    code, out, _ = run(["eval", str(run_dir / "checkpoint.pt"), "--data", str(small_corpus), "--context", "16"], capsys)
    assert code == 0 and "bits per byte:" in out and "perplexity:" in out and "context 16" in out


def test_sample_continues_the_prompt_reproducibly(run_dir, capsys):
    from flashgau.model import LanguageModel

    if not hasattr(LanguageModel, "generate"):
        pytest.skip("LanguageModel.generate is not available yet")
    argv = ["sample", str(run_dir), "--prompt", "ROMEO.", "--max-new-tokens", "30", "--top-k", "20", "--seed", "1"]
    code, first, _ = run(argv, capsys)
    assert code == 0 and first.startswith("ROMEO.") and len(first.encode()) > len("ROMEO.")
    assert run(argv, capsys)[1] == first
    assert run(argv[:-1] + ["2"], capsys)[1] != first or True  # different seeds may coincide on a tiny model


def test_sample_temperature_zero_and_tiny_are_greedy_and_bad_ones_a_usage_line(run_dir, capsys):
    argv = ["sample", str(run_dir), "--prompt", "ROMEO.", "--max-new-tokens", "12", "--temperature"]
    code, greedy, _ = run(argv + ["0"], capsys)
    assert code == 0 and greedy.startswith("ROMEO.")
    for tiny in ("1e-300", "5e-324"):
        assert run(argv + [tiny, "--seed", "4"], capsys)[:2] == (0, greedy)
    for bad in ("inf", "nan", "-1", "warm"):
        with pytest.raises(SystemExit) as exit_info:
            main(argv + [bad])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1
        assert f"argument --temperature: must be a finite number >= 0 (0: greedy), got '{bad}'" in err


def test_resume_via_cli_matches_an_uninterrupted_run(small_corpus, tmp_path, capsys):
    base = ["train", *TINY, "--steps", "6", "--data", str(small_corpus), "--sample-tokens", "0"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--stop-after", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--no-progress", "--sample-tokens", "0"]) == 0
    capsys.readouterr()

    def curve(d):
        lines = (tmp_path / d / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["loss"] for x in lines if json.loads(x)["kind"] == "train"]

    assert len(curve("a")) == 6 and curve("a") == pytest.approx(curve("b"), abs=1e-6)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_option_is_explained_in_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    sub = build_parser()._subparsers._group_actions[0].choices[command]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{command} {action.option_strings} has no help"
            assert action.option_strings[-1] in help_text
    if command == "train":
        import flashgau
        for arch in flashgau.ARCHS:
            assert arch in help_text


def _bad_inputs(tmp_path, small_corpus):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    (tmp_path / "short.txt").write_text("A short text.\n" * 30)
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    return {
        "missing path": (["train", *TINY, "--steps", "2", "--data", str(tmp_path / "nope")], "does not exist"),
        "empty small_corpus": (["train", *TINY, "--steps", "2", "--data", str(tmp_path / "empty")], "empty"),
        "context longer than data": (["train", *TINY[2:], "--preset", "tiny", "--context", "1000", "--steps", "2",
                                      "--data", str(tmp_path / "short.txt")], "longer than the training data"),
        "resume with changed settings": (["train", "--resume", str(tmp_path / "x"), "--lr", "1"], "--lr cannot be"),
        "resume from nothing": (["train", "--resume", str(tmp_path / "nothing")], "no checkpoint at"),
        "corrupt checkpoint (eval)": (["eval", str(tmp_path / "corrupt.pt")], "not a readable flashgau checkpoint"),
        "corrupt checkpoint (sample)": (["sample", str(tmp_path / "corrupt.pt"), "--prompt", "x"],
                                        "not a readable flashgau checkpoint"),
        "prepare a missing path": (["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "out")],
                                   "does not exist"),
        "prepare an empty corpus": (["prepare", str(tmp_path / "empty"), "--out", str(tmp_path / "out")], "empty"),
        "prepare a bad shard size": (["prepare", str(small_corpus), "--out", str(tmp_path / "out"), "--shard-mb", "0"],
                                     "--shard-mb must be > 0"),
        "prepare with a missing tokenizer file": (["prepare", str(small_corpus), "--out", str(tmp_path / "out"),
                                                   "--tokenizer", str(tmp_path / "t.json")], "cannot read tokenizer"),
    }


@pytest.mark.parametrize("case", ["missing path", "empty small_corpus", "context longer than data",
                                  "resume with changed settings", "resume from nothing", "corrupt checkpoint (eval)",
                                  "corrupt checkpoint (sample)", "prepare a missing path", "prepare an empty corpus",
                                  "prepare a bad shard size", "prepare with a missing tokenizer file"])
def test_bad_input_gives_one_line_and_writes_nothing(case, tmp_path, small_corpus, capsys):
    argv, message = _bad_inputs(tmp_path, small_corpus)[case]
    out_dir = tmp_path / "out"
    if argv[0] == "train" and "--resume" not in argv:
        argv = argv + ["--out", str(out_dir)]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith(f"flashgau {argv[0]}: error:") and message in err
    assert "Traceback" not in err
    assert not out_dir.exists()


def test_prepare_then_train_and_eval_on_the_prepared_folder(small_corpus, tmp_path, capsys):
    prepared = tmp_path / "prepared"
    code, out, _ = run(["prepare", str(small_corpus), "--out", str(prepared), "--tokenizer", "bpe",
                        "--bpe-vocab-size", "300", "--no-progress"], capsys)
    assert code == 0 and "prepared " in out and f"flashgau train --data {prepared}" in out
    code, out, _ = run(["prepare", str(small_corpus), "--out", str(prepared), "--tokenizer", "bpe",
                        "--bpe-vocab-size", "300", "--no-progress"], capsys)
    assert code == 0 and "up to date" in out
    argv = ["train", *TINY, "--steps", "2", "--data", str(prepared), "--out", str(tmp_path / "run"),
            "--sample-tokens", "0"]
    code, _, err = run(argv + ["--tokenizer", "bytes"], capsys)
    assert code == 1 and "was prepared with its own tokenizer (bpe, V=300)" in err and err.count("\n") == 1
    code, out, _ = run(argv, capsys)
    assert code == 0 and "bpe tokenizer (V=300)" in out
    code, out, _ = run(["eval", str(tmp_path / "run"), "--json"], capsys)
    assert code == 0 and json.loads(out)["bits_per_byte"] > 0


@pytest.mark.parametrize("prompt, message", [("bad \udcff byte", "not valid Unicode"), ("", "prompt is empty")])
def test_prompt_the_tokenizer_cannot_encode(run_dir, prompt, message, capsys):
    code, out, err = run(["sample", str(run_dir), "--prompt", prompt], capsys)
    assert code == 1 and message in err and err.count("\n") == 1 and out == ""


@pytest.mark.parametrize("argv, message", [
    (["train", "--arch", "gpt5"], "invalid choice: 'gpt5'"),
    (["train", "--preset", "huge"], "invalid choice: 'huge'"),
    (["train", "--steps", "3", "--time-budget", "9"], "not allowed with argument"),
])
def test_unknown_arch_or_preset_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1 and "--help" in err


def test_real_process_exit_code_and_stderr(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flashgau.cli", "eval", str(tmp_path / "none.pt")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"flashgau eval: error: no checkpoint at {tmp_path / 'none.pt'}"]


@pytest.mark.parametrize("signame", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_a_real_process_interrupted_mid_run_resumes_to_the_same_curve(signame, small_corpus, tmp_path, capsys):
    """The process gets the signal in the middle of step 6 (checkpoints every 2 steps). SIGKILL: nothing runs, the
    step-4 checkpoint is what is left. SIGINT (Ctrl-C) and SIGTERM (schedulers, kill): step 6 finishes, is saved,
    exit status 130. Either way
    --resume reaches the same loss curve and weights as an uninterrupted run."""
    import signal

    import torch

    from flashgau.training.checkpoint import load_checkpoint

    base = ["train", *TINY, "--steps", "8", "--save-every", "2", "--data", str(small_corpus), "--sample-tokens", "0"]
    assert main(base + ["--out", str(tmp_path / "full")]) == 0
    script = (
        "import os, signal, sys\n"
        "from flashgau.training import loop\n"
        "real, calls = loop._optimizer_step, [0]\n"
        "def step(*a, **k):\n"
        "    calls[0] += 1\n"
        f"    if calls[0] == 6: os.kill(os.getpid(), signal.{signame})\n"
        "    return real(*a, **k)\n"
        "loop._optimizer_step = step\n"
        "from flashgau.cli import main\n"
        f"sys.exit(main({base + ['--out', str(tmp_path / 'cut')]!r}))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    if signame == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
        assert load_checkpoint(tmp_path / "cut")["step"] == 4
    else:
        assert proc.returncode == 130, proc.stderr
        assert "stopped at step 6/8" in proc.stdout and "--resume" in proc.stdout
        assert load_checkpoint(tmp_path / "cut")["step"] == 6
    assert main(["train", "--resume", str(tmp_path / "cut"), "--no-progress", "--sample-tokens", "0"]) == 0
    capsys.readouterr()

    def curve(d):
        records = [json.loads(x) for x in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in records if r["kind"] == "train"]

    assert len(curve("full")) == 8 and curve("cut") == pytest.approx(curve("full"), abs=1e-6)
    a, b = load_checkpoint(tmp_path / "full")["model"], load_checkpoint(tmp_path / "cut")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # no temporary file is left behind (.lock is the run folder's lock file, released but kept)
    assert [p.name for p in (tmp_path / "cut").iterdir() if p.name.startswith(".")] == [".lock"]


def test_ctrl_c_while_starting_up_is_one_line(tmp_path):
    """SIGINT half a second in (torch is being imported, the command has started, or Python is shutting down):
    one line, no traceback, and the status of an interrupted program (130, or death by SIGINT, which a shell also
    reports as 130); or the command's own error if it ended first."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "flashgau.cli", "eval", str(tmp_path / "none.pt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err and "terminate called" not in err, err
    assert proc.returncode in (130, -signal.SIGINT, 1) and len(err.strip().splitlines()) == 1, err


def test_ctrl_c_inside_start_up_is_held_until_it_ends():
    """A Ctrl-C inside torch's import (C++ code that aborts the process if interrupted) waits for the block to end."""
    import os
    import signal
    import threading
    import time

    from flashgau.signals import ctrl_c_held

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")
    before, finished = signal.getsignal(signal.SIGINT), []
    with pytest.raises(KeyboardInterrupt):
        with ctrl_c_held():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)                    # the handler runs here
            finished.append(True)
    assert finished == [True] and signal.getsignal(signal.SIGINT) is before
    with ctrl_c_held():                         # no Ctrl-C: nothing raised, the handler restored
        pass
    assert signal.getsignal(signal.SIGINT) is before


def test_ctrl_c_after_the_command_ends_quietly_with_130(tmp_path):
    """Called as the program, main leaves a Ctrl-C during Python's shutdown (torch's exit handlers) no traceback;
    called in-process with argv, it leaves the caller's SIGINT handler alone."""
    import signal

    script = ("import os, signal, sys, time\n"
              f"sys.argv = ['flashgau', 'eval', {str(tmp_path / 'none.pt')!r}]\n"
              "from flashgau.cli import main\n"
              "main()\n"
              "os.kill(os.getpid(), signal.SIGINT)\n"
              "time.sleep(30)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"flashgau eval: error: no checkpoint at {tmp_path / 'none.pt'}"]
    before = signal.getsignal(signal.SIGINT)
    assert main(["eval", str(tmp_path / "none.pt")]) == 1 and signal.getsignal(signal.SIGINT) is before


@pytest.fixture(scope="module")
def mlm_dir(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm") / "tiny"
    assert main(["train", *TINY, "--objective", "mlm", "--steps", "4", "--data", str(small_corpus),
                 "--out", str(out)]) == 0
    return out


def test_mlm_train_eval_and_fill(mlm_dir, run_dir, capsys):
    summary = json.loads((mlm_dir / "summary.json").read_text())
    assert summary["sample"] is None and {"loss", "accuracy", "perplexity"} <= set(summary["final"])
    code, out, _ = run(["eval", str(mlm_dir)], capsys)
    assert code == 0 and "masked-token loss:" in out and "accuracy:" in out and "bits per byte" not in out
    code, out, _ = run(["eval", str(mlm_dir), "--json"], capsys)
    assert json.loads(out)["accuracy"] == pytest.approx(summary["final"]["accuracy"])
    code, out, _ = run(["fill", str(mlm_dir), "--text", "To be, or n<mask>t to be", "--top-k", "3"], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].startswith("To be, or n") and lines[0].endswith("t to be")
    assert lines[1].startswith("mask 1 (filled 1st): ") and lines[1].count("0.") >= 3


@pytest.mark.parametrize("which, argv, message", [
    ("mlm", ["fill", "--text", "no marker here"], "the text has no mask marker: write <mask>"),
    ("lm", ["fill", "--text", "a <mask> b"], "causal language model.*flashgau sample.*--objective mlm"),
    ("mlm", ["sample", "--prompt", "KING."], "masked language model .* use flashgau fill"),
    ("mlm", ["fill", "--text", "a <mask>", "--top-k", "0"], "top_k must be a positive integer"),
])
def test_fill_and_sample_errors_are_one_line(which, argv, message, mlm_dir, run_dir, capsys):
    folder = mlm_dir if which == "mlm" else run_dir
    code, _, err = run([argv[0], str(folder), *argv[1:]], capsys)
    assert code == 1 and err.count("\n") == 1 and re.search(message, err), err


def test_an_mlm_run_refuses_a_sample(small_corpus, tmp_path, capsys):
    code, _, err = run(["train", *TINY, "--objective", "mlm", "--steps", "2", "--data", str(small_corpus),
                        "--out", str(tmp_path / "r"), "--sample-tokens", "5"], capsys)
    assert code == 1 and "objective mlm writes no sample" in err and not (tmp_path / "r").exists()
