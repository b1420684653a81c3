"""checkpoint_activations (`flashgau train --checkpoint-activations`): it reaches the model, is recorded in the run,
trains the same curve as a run without it, and may be switched on or off on resume."""

import pytest

from flashgau.cli import main
from flashgau.errors import ConfigError
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig

from training_helpers import losses, quiet, tiny_config

CLI = ["--preset", "tiny", "--context", "32", "--batch-tokens", "128", "--micro-batch-tokens", "64", "--lr", "3e-3",
       "--warmup-steps", "2", "--precision", "fp32", "--eval-every", "3", "--eval-windows", "4", "--no-progress",
       "--sample-tokens", "0", "--steps", "6"]


def test_the_flag_reaches_the_model_and_the_run_and_changes_nothing_it_computes(small_corpus, tmp_path, capsys):
    plain = quiet(tiny_config(small_corpus, tmp_path / "plain"))
    assert not plain.model.gradient_checkpointing
    assert main(["train", *CLI, "--data", str(small_corpus), "--out", str(tmp_path / "ckpt"),
                 "--checkpoint-activations"]) == 0
    assert "activation checkpointing" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "ckpt")["train_config"]["checkpoint_activations"] is True
    a, b = losses(tmp_path / "plain"), losses(tmp_path / "ckpt")
    assert sorted(a) == sorted(b) == list(range(1, 7))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6


@pytest.mark.parametrize("first, then", [(True, False), (False, True)])
def test_resume_may_switch_it_and_continues_the_same_curve(small_corpus, tmp_path, first, then):
    full = tiny_config(small_corpus, tmp_path / "full")
    quiet(full)
    quiet(tiny_config(small_corpus, tmp_path / "part", checkpoint_activations=first), stop_after=3)
    kept = quiet(resume=tmp_path / "part", stop_after=4)                    # no change: kept as saved
    assert kept.model.gradient_checkpointing is first
    resumed = quiet(resume=tmp_path / "part", changes={"checkpoint_activations": then})
    assert resumed.finished and resumed.model.gradient_checkpointing is then
    assert load_checkpoint(tmp_path / "part")["train_config"]["checkpoint_activations"] is then
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(b) == list(range(1, 7)) and max(abs(a[s] - b[s]) for s in a) < 1e-6


def test_cli_resume_takes_the_switch_and_a_bad_value_is_refused(small_corpus, tmp_path):
    assert main(["train", *CLI, "--data", str(small_corpus), "--out", str(tmp_path / "r"), "--stop-after", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress", "--checkpoint-activations"]) == 0
    assert load_checkpoint(tmp_path / "r")["train_config"]["checkpoint_activations"] is True
    with pytest.raises(ConfigError, match="checkpoint_activations must be true or false"):
        TrainConfig(checkpoint_activations="yes", steps=1)
