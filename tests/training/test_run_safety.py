"""Nothing lost, nothing silently wrong: one process per run folder, replacing a run keeps the old one until the new
one has a checkpoint, stored artefacts are verified when read, a diverged model is never saved."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch

from flashgau.errors import CheckpointError, ConfigError, CorpusError, FlashgauError, TokenizerError
from flashgau.training import loop as loop_mod
from flashgau.training.checkpoint import load_checkpoint, save_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.loop import train
from flashgau.training.stopping import TrainingDiverged
from flashgau.training.run_folder import RunFolder
from flashgau.training.trained import evaluate_checkpoint


def tiny(corpus, out, **overrides):
    settings = dict(arch="flash", preset="tiny", context=32, steps=4, batch_tokens=64, micro_batch_tokens=64,
                    precision="fp32", data=str(corpus), out=str(out), eval_windows=2)
    settings.update(overrides)
    return TrainConfig(**settings)


def quiet(cfg=None, **kwargs):
    return train(cfg, progress=False, log=lambda s: None, **kwargs)


def holder(folder):
    """A separate process that owns `folder` until killed."""
    code = ("import sys, time\nfrom flashgau.training.run_folder import RunFolder\n"
            f"owner = RunFolder({str(folder)!r}).claim()\nprint('ready', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_a_run_folder_has_one_owner_and_a_killed_owner_does_not_keep_it(small_corpus, tmp_path):
    out = tmp_path / "run"
    proc = holder(out)
    try:
        with pytest.raises(ConfigError, match=rf"{out} is in use by flashgau process {proc.pid}"):
            quiet(tiny(small_corpus, out))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert quiet(tiny(small_corpus, out)).finished              # the lock died with its process


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    quiet(tiny(small_corpus, out))
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl")}

    def broken(run):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(loop_mod, "_optimizer_step", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        quiet(tiny(small_corpus, out, seed=5), overwrite=True)
    assert {name: (out / name).read_bytes() for name in before} == before       # the old run, whole
    assert not (out / ".previous").exists()
    assert "seed = 0" in (out / "config.toml").read_text()                      # its settings file too
    monkeypatch.undo()
    quiet(tiny(small_corpus, out, seed=5), overwrite=True)
    assert load_checkpoint(out)["train_config"]["seed"] == 5 and not (out / ".previous").exists()


def test_a_replacement_killed_before_its_first_checkpoint_is_undone_by_the_next_process(small_corpus, tmp_path):
    out = tmp_path / "run"
    quiet(tiny(small_corpus, out))
    old = (out / "checkpoint.pt").read_bytes()
    folder = RunFolder(out).claim()
    folder.set_aside()                                   # ... and the process dies here
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    folder.release()
    with RunFolder(out):
        assert (out / "checkpoint.pt").read_bytes() == old and not (out / ".previous").exists()
        assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["kind"] == "final"


@pytest.mark.parametrize("where", ["file", "under_file"])
def test_an_output_folder_that_cannot_be_a_folder_is_refused(small_corpus, tmp_path, where):
    (tmp_path / "f").write_text("x")
    out = tmp_path / "f" if where == "file" else tmp_path / "f" / "run"
    with pytest.raises(ConfigError, match="is a file"):
        quiet(tiny(small_corpus, out))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_an_unwritable_output_folder_is_refused(small_corpus, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="no permission to write"):
        quiet(tiny(small_corpus, locked / "run"))


def test_eval_checks_that_the_data_is_still_what_the_run_trained_on(small_corpus, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for p in small_corpus.iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    quiet(tiny(data, tmp_path / "run"))
    heldout = load_checkpoint(tmp_path / "run")["data"]["heldout_documents"]
    (data / heldout[0]).unlink()                              # a held-out file deleted
    with pytest.raises(CheckpointError, match="differs from the data this run was trained on"):
        evaluate_checkpoint(tmp_path / "run")
    for p in small_corpus.iterdir():                          # restored, then the folder moved
        (data / p.name).write_bytes(p.read_bytes())
    moved = tmp_path / "moved"
    data.rename(moved)
    with pytest.raises(CorpusError, match="no longer at .* --train-data NEW_PLACE"):
        evaluate_checkpoint(tmp_path / "run")
    result, _ = evaluate_checkpoint(tmp_path / "run", train_data=moved)
    assert result.loss > 0


def test_data_is_stored_absolute_and_resume_follows_moved_data(small_corpus, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for p in small_corpus.iterdir():
        (data / p.name).write_bytes(p.read_bytes())
    monkeypatch.chdir(tmp_path)
    quiet(tiny("data", tmp_path / "run", steps=4), stop_after=2)
    assert load_checkpoint(tmp_path / "run")["train_config"]["data"] == str(data)
    data.rename(tmp_path / "moved")
    monkeypatch.chdir("/")
    with pytest.raises(CorpusError, match="--resume PATH --data NEW_PLACE"):
        quiet(resume=tmp_path / "run")
    assert quiet(resume=tmp_path / "run", changes={"data": str(tmp_path / "moved")}).finished


def test_a_diverged_model_is_never_saved(small_corpus, tmp_path, monkeypatch):
    real = loop_mod._optimizer_step

    def poisoned(run):
        out = real(run)
        if run.step == 2:                                 # this step's update leaves NaN weights
            with torch.no_grad():
                next(run.model.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(loop_mod, "_optimizer_step", poisoned)
    with pytest.raises(TrainingDiverged, match="weights became NaN .*; its checkpoint of step 2 is kept; .* lr 0.004"):
        quiet(tiny(small_corpus, tmp_path / "run", steps=6, save_every=1, eval_every=100, lr=4e-3))
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["step"] == 2 and all(torch.isfinite(t).all() for t in ckpt["model"].values())


def test_a_checkpoint_with_nan_weights_is_refused_by_eval(small_corpus, tmp_path):
    quiet(tiny(small_corpus, tmp_path / "run"))
    state = load_checkpoint(tmp_path / "run")
    name = next(iter(state["model"]))
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "run" / "c.pt")
    with pytest.raises(CheckpointError, match="weights hold NaN or infinite values"):
        evaluate_checkpoint(tmp_path / "run" / "c.pt")


@pytest.mark.parametrize("field, value, message", [
    ("step", "seven", "checkpoint field 'step' is str"),
    ("elapsed", -5.0, "saved progress is out of range"),
    ("schedule", {"peak": 1e-3}, "saved training state does not fit this run"),
    ("sampler", {"generator": torch.zeros(3, dtype=torch.uint8), "windows_drawn": 2},
     "saved training state does not fit this run"),
    ("rng", {"torch": torch.zeros(5)}, "saved training state does not fit this run"),
    ("rng", None, "checkpoint field 'rng' is NoneType"),
    ("train_config", {"arch": "flash", "lr": "fast"}, "saved settings are not valid"),
])
def test_hand_edited_checkpoints_get_one_line_naming_the_problem(small_corpus, tmp_path, field, value, message):
    quiet(tiny(small_corpus, tmp_path / "run"), stop_after=2)
    state = load_checkpoint(tmp_path / "run")
    state[field] = value
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "version")}, tmp_path / "run" /
                    "checkpoint.pt")
    with pytest.raises(CheckpointError, match=message):
        quiet(resume=tmp_path / "run")


@pytest.mark.parametrize("overrides, error, message", [
    (dict(sample_tokens=3000), ConfigError, "exceed the model's max_seq_len 2048"),
    (dict(sample_tokens=5, sample_prompt=""), ConfigError, "the sample prompt is empty"),
    (dict(sample_tokens=5, sample_prompt="bad \udcff byte"), TokenizerError, "not valid Unicode"),
])
def test_a_bad_sample_is_refused_before_training(small_corpus, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        quiet(tiny(small_corpus, tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------- a run set aside, two starts into one folder

def killed_while_replacing(out):
    """A separate process that starts replacing the run in `out` (--overwrite sets it aside) and is killed by SIGKILL
    before its first checkpoint."""
    code = ("import os, signal\nfrom flashgau.training.run_folder import RunFolder\n"
            f"RunFolder({str(out)!r}).claim(new_run=True, overwrite=True)\n"
            f"open({str(out / 'metrics.jsonl')!r}, 'w').write('{{\"kind\": \"train\", \"step\": 1}}\\n')\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "checkpoint.pt").exists() and (out / ".previous" / "checkpoint.pt").exists()


@pytest.fixture
def set_aside(small_corpus, tmp_path):
    """A finished run in tmp_path/run, set aside by an --overwrite killed before its first checkpoint; its bytes."""
    out = tmp_path / "run"
    quiet(tiny(small_corpus, out))
    old = (out / "checkpoint.pt").read_bytes()
    killed_while_replacing(out)
    return out, old


def test_a_run_set_aside_by_a_killed_overwrite_is_not_replaced_by_a_new_run(small_corpus, set_aside):
    out, old = set_aside
    with pytest.raises(ConfigError, match=rf"{out} holds an interrupted --overwrite: the previous run is in "
                                          rf"{out}/.previous; continue it with --resume {out}"):
        quiet(tiny(small_corpus, out, seed=5))
    assert (out / ".previous" / "checkpoint.pt").read_bytes() == old and not (out / "checkpoint.pt").exists()
    result = quiet(resume=out)                       # --resume moves it back (and would continue an unfinished run)
    assert result.finished and not (out / ".previous").exists()
    assert load_checkpoint(out)["train_config"]["seed"] == 0


def test_a_run_set_aside_is_named_by_every_command_that_reads_a_run(small_corpus, set_aside, tmp_path, capsys):
    from flashgau.cli import main

    out, old = set_aside
    commands = [["eval", str(out)], ["sample", str(out / "checkpoint.pt"), "--prompt", "KING."],
                ["fill", str(out), "--text", "a<mask>"],
                ["train", "--init-from", str(out), "--data", str(small_corpus), "--out", str(tmp_path / "new")]]
    try:
        import transformers  # noqa: F401
        commands.append(["export", str(out), str(tmp_path / "hf")])
    except ImportError:
        pass
    for argv in commands:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no checkpoint" not in err, err
        assert (f"{out} holds an interrupted --overwrite: the previous run is in {out}/.previous; move it back (and "
                f"continue it) with flashgau train --resume {out}, read it where it is ({out}/.previous)") in err, err
    assert main(["eval", str(out / ".previous"), "--json"]) == 0                  # read where it is
    assert (out / ".previous" / "checkpoint.pt").read_bytes() == old and not (tmp_path / "hf").exists()


def test_a_run_being_replaced_is_named_with_its_replacer(small_corpus, tmp_path):
    out = tmp_path / "run"
    quiet(tiny(small_corpus, out))
    code = ("import time\nfrom flashgau.training.run_folder import RunFolder\n"
            f"owner = RunFolder({str(out)!r}).claim(new_run=True, overwrite=True)\nprint('ready', flush=True)\n"
            "time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        with pytest.raises(CheckpointError, match=rf"{out} is being replaced by flashgau process {proc.pid} "
                                                  rf"\(train --overwrite\): the previous run is in {out}/.previous"):
            evaluate_checkpoint(out)
        with pytest.raises(ConfigError, match=f"in use by flashgau process {proc.pid}"):
            quiet(resume=out)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def run_first_while_starting(monkeypatch, first):
    """Make the next train() run `first()` to its end after its own setup and before it claims its folder: a second
    start into one folder that is slower to start than the first."""
    real = loop_mod.settle_compile

    def slow(run):
        monkeypatch.setattr(loop_mod, "settle_compile", real)
        first()
        real(run)

    monkeypatch.setattr(loop_mod, "settle_compile", slow)


def test_a_second_start_that_claims_the_folder_after_a_first_finished_refuses(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    run_first_while_starting(monkeypatch, lambda: quiet(tiny(small_corpus, out, seed=1)))
    with pytest.raises(ConfigError, match=rf"{out} already holds a run; continue it with --resume"):
        quiet(tiny(small_corpus, out, seed=2))
    assert load_checkpoint(out)["train_config"]["seed"] == 1 and not (out / ".previous").exists()
    assert json.loads((out / "summary.json").read_text())["final"] is not None


def test_a_resume_whose_checkpoint_was_replaced_while_it_started_refuses(small_corpus, tmp_path, monkeypatch):
    out = tmp_path / "run"
    quiet(tiny(small_corpus, out), stop_after=2)
    run_first_while_starting(monkeypatch, lambda: quiet(tiny(small_corpus, out, seed=7), overwrite=True))
    with pytest.raises(ConfigError, match=r"checkpoint.pt was changed by another process while this run was "
                                          rf"starting; start it again: flashgau train --resume {out}"):
        quiet(resume=out)
    state = load_checkpoint(out)
    assert state["train_config"]["seed"] == 7 and state["step"] == 4


def test_a_run_that_diverges_before_its_first_checkpoint_says_none_is_kept(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(loop_mod, "_optimizer_step", lambda run: (float("nan"), 0.0, 64))
    with pytest.raises(TrainingDiverged, match="training diverged at step 1 .*; no checkpoint of this run was "
                                               "written; settings"):
        quiet(tiny(small_corpus, tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@pytest.mark.parametrize("where", ["metrics", "plot"])
def test_a_full_disk_in_the_run_folder_is_one_line_naming_what_is_kept(small_corpus, tmp_path, monkeypatch, where):
    from flashgau.training.metrics import MetricsLog

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "metrics":
        real = MetricsLog.append
        monkeypatch.setattr(MetricsLog, "append", lambda self, record: full() if record.get("step") == 3
                            else real(self, record))
    else:
        monkeypatch.setattr(loop_mod, "plot_losses", full)
    out = tmp_path / "run"
    step = 2 if where == "metrics" else 4
    with pytest.raises(FlashgauError, match=rf"cannot write in {out}: the disk is full .*; its checkpoint of step "
                                            rf"{step} is kept; make room, then continue with: flashgau train "
                                            rf"--resume {out}$"):
        quiet(tiny(small_corpus, out, save_every=2))
    monkeypatch.undo()
    assert load_checkpoint(out)["step"] == step and quiet(resume=out).finished
