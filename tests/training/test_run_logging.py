"""`--log tensorboard` / `--log wandb`: the metrics of a run where users already look, read back with the loggers' own
readers; one line when a logger's package is missing; only the process that writes the metrics log logs."""

import json
import math

import pytest

from flashgau.cli import main
from flashgau.training import metrics
from flashgau.training.metrics import NoMetricsLog, read_metrics, scalars
from training_helpers import quiet, tiny_config


def test_tensorboard_event_file_holds_the_curves_and_settings(small_corpus, tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="--log tensorboard needs the optional extra: pip install 'flashgau[tensorboard]'")
    from tensorboard.plugins.hparams import plugin_data_pb2

    out = tmp_path / "run"
    quiet(tiny_config(small_corpus, out, log=("tensorboard",), model={"qk_dim": 16}))
    records = read_metrics(out / "metrics.jsonl")
    reader = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    reader.Reload()

    def curve(tag):
        return {e.step: e.value for e in reader.Scalars(tag)}

    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    final = next(r for r in records if r["kind"] == "final")
    assert len(train) == 6 and len(evals) == 2
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("train/tokens_per_s", "tokens_per_s"),
                     ("train/grad_norm", "grad_norm")):
        assert curve(tag) == pytest.approx({r["step"]: r[key] for r in train}, rel=1e-6), tag
    assert curve("tokens/train_loss") == pytest.approx({r["tokens"]: r["loss"] for r in train}, rel=1e-6)
    tokens_at = {r["step"]: r["tokens"] for r in train}
    for name in ("loss", "bpb"):
        assert curve(f"heldout/{name}") == pytest.approx({r["step"]: r[f"heldout_{name}"] for r in evals}, rel=1e-6)
        assert curve(f"tokens/heldout_{name}") == pytest.approx(
            {tokens_at[r["step"]]: r[f"heldout_{name}"] for r in evals}, rel=1e-6)
        assert curve(f"final/{name}") == pytest.approx({6: final[f"heldout_{name}"]}, rel=1e-6)
    start = plugin_data_pb2.HParamsPluginData.FromString(
        reader.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info.hparams
    assert start["lr"].number_value == pytest.approx(3e-3) and start["model.qk_dim"].number_value == 16
    assert start["arch"].string_value == "flash" and start["log"].string_value == "tensorboard"


@pytest.mark.slow
def test_wandb_offline_run_is_written_in_the_run_folder(small_corpus, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="--log wandb needs the optional extra: pip install 'flashgau[wandb]'")
    monkeypatch.delenv("WANDB_MODE", raising=False)          # offline unless asked otherwise
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    quiet(tiny_config(small_corpus, out, log=("wandb",), steps=2, eval_every=1))
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))


def test_a_missing_logger_package_is_one_line_before_anything_is_written(small_corpus, tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(metrics, "_installed", lambda package: package != "wandb")
    out = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--context", "32", "--steps", "2", "--data", str(small_corpus),
                 "--out", str(out), "--log", "wandb", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "--log wandb needs the wandb package: pip install 'flashgau[wandb]'" in err
    assert not out.exists()


def test_only_the_writing_process_logs(tmp_path):
    """Under torchrun every rank but 0 holds a NoMetricsLog: it opens no logger and writes nothing."""
    log = NoMetricsLog(tmp_path / "metrics.jsonl")
    log.open_sinks(["tensorboard", "wandb"], hparams={}, config_text="", name="x", step=0)
    log.append({"kind": "train", "step": 1, "loss": 1.0, "tokens": 8})
    log.close()
    assert log.sinks == [] and list(tmp_path.iterdir()) == []


def test_scalars_of_each_kind_of_record():
    assert scalars({"kind": "train", "step": 3, "loss": 2.0, "lr": 1e-3, "grad_norm": 0.5, "tokens": 96,
                    "tokens_per_s": 10.0, "elapsed": 1.0}) == (
        {"train/loss": 2.0, "train/lr": 1e-3, "train/tokens_per_s": 10.0, "train/grad_norm": 0.5},
        {"tokens/train_loss": 2.0})
    by_step, by_tokens = scalars({"kind": "eval", "step": 3, "elapsed": 1.0, "heldout_loss": 1.5,
                                  "heldout_f1": 40.0, "heldout_exact_match": math.nan})
    assert by_step == {"heldout/loss": 1.5, "heldout/f1": 40.0}            # a NaN score is left out
    assert by_tokens == {"tokens/heldout_loss": 1.5, "tokens/heldout_f1": 40.0}
    assert scalars({"kind": "plan", "step": 2, "total_steps": 9}) == ({}, {})
    json.dumps(scalars({"kind": "final", "step": 1, "heldout_loss": 1.0}))


def test_a_resumed_run_continues_its_tensorboard_curve(small_corpus, tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="--log tensorboard needs the optional extra: pip install 'flashgau[tensorboard]'")
    out = tmp_path / "run"
    quiet(tiny_config(small_corpus, out, log=("tensorboard",)), stop_after=3)
    quiet(resume=out)
    reader = event_accumulator.EventAccumulator(str(out / "tensorboard"))
    reader.Reload()
    train = {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}
    assert [e.step for e in reader.Scalars("train/loss")] == list(range(1, 7))
    assert {e.step: e.value for e in reader.Scalars("train/loss")} == pytest.approx(train, rel=1e-6)
    assert (out / "config.toml").read_text().count('log = ["tensorboard"]') == 1


def test_logging_may_be_switched_on_when_a_run_is_resumed_and_a_failed_replacement_keeps_its_curves(
        small_corpus, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="--log tensorboard needs the optional extra: "
                        "pip install 'flashgau[tensorboard]'")
    from flashgau.training import loop as loop_mod

    out = tmp_path / "run"
    quiet(tiny_config(small_corpus, out), stop_after=3)
    assert not (out / "tensorboard").exists()
    quiet(resume=out, changes={"log": ("tensorboard",)})
    assert 'log = ["tensorboard"]' in (out / "config.toml").read_text()
    events = sorted(p.name for p in (out / "tensorboard").iterdir())
    assert events

    def broken(run):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(loop_mod, "_optimizer_step", broken)
    with pytest.raises(RuntimeError, match="out of memory"):        # a replacement that fails before its checkpoint
        quiet(tiny_config(small_corpus, out, seed=5), overwrite=True)
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == events     # the old run's curves, back
    assert 'log = ["tensorboard"]' in (out / "config.toml").read_text()
