"""The training loop: it learns, resumes exactly, survives a crash, refuses bad input without writing."""

import json

import pytest
import torch

from flashgau.errors import CheckpointError, ConfigError, CorpusError
from flashgau.training import budget as budget_mod
from flashgau.training import loop as loop_mod
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.trained import evaluate_checkpoint
from flashgau.training.loop import train
from flashgau.training.metrics import read_metrics


def tiny(corpus, out, **overrides):
    settings = dict(arch="flash", preset="tiny", context=32, steps=8, batch_tokens=128, micro_batch_tokens=64,
                    lr=3e-3, warmup_steps=2, precision="fp32", data=str(corpus), out=str(out), eval_every=4,
                    eval_windows=4)
    settings.update(overrides)
    return TrainConfig(**settings)


def losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}


def test_a_run_learns_and_leaves_checkpoint_metrics_and_plot(small_corpus, tmp_path):
    result = train(tiny(small_corpus, tmp_path, steps=20, lr=1e-2), progress=False, log=lambda s: None)
    assert result.finished and result.step == 20 and result.tokens_seen == 20 * 128
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.pt", "metrics.jsonl", "loss.png"}
    curve = losses(tmp_path)
    assert sorted(curve) == list(range(1, 21))
    assert sum(list(curve.values())[-4:]) / 4 < sum(list(curve.values())[:4]) / 4 - 0.5  # it learns
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [4, 8, 12, 16, 20]
    final = [r for r in records if r["kind"] == "final"][0]
    assert final["bits_per_byte"] == pytest.approx(result.final.bits_per_byte)
    state = load_checkpoint(tmp_path)
    assert state["step"] == 20 and state["schedule"]["total_steps"] == 20
    # `eval` on the checkpoint reproduces the run's final held-out number (same fixed windows).
    again, _ = evaluate_checkpoint(tmp_path)
    assert again.bits_per_byte == pytest.approx(result.final.bits_per_byte, rel=1e-5)


def test_resume_continues_exactly(small_corpus, tmp_path):
    full = train(tiny(small_corpus, tmp_path / "full"), progress=False, log=lambda s: None)
    part = train(tiny(small_corpus, tmp_path / "part"), stop_after=3, progress=False, log=lambda s: None)
    assert part.step == 3 and part.final is None and not part.finished
    assert load_checkpoint(tmp_path / "part")["step"] == 3
    resumed = train(resume=tmp_path / "part", progress=False, log=lambda s: None)
    assert resumed.step == 8 and resumed.finished
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    assert max(abs(a[s] - b[s]) for s in a) < 1e-6
    for (name, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert resumed.final.bits_per_byte == pytest.approx(full.final.bits_per_byte, rel=1e-5)


def test_resume_after_a_crash_drops_the_unsaved_steps(small_corpus, tmp_path, monkeypatch):
    reference = train(tiny(small_corpus, tmp_path / "full"), progress=False, log=lambda s: None)
    real_step = loop_mod._optimizer_step
    calls = {"n": 0}

    def crash_on_sixth(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("power cut")
        return real_step(*args)

    monkeypatch.setattr(loop_mod, "_optimizer_step", crash_on_sixth)
    with pytest.raises(RuntimeError, match="power cut"):
        train(tiny(small_corpus, tmp_path / "crash", save_every=2), progress=False, log=lambda s: None)
    assert load_checkpoint(tmp_path / "crash")["step"] == 4
    assert max(losses(tmp_path / "crash")) == 5  # step 5 was logged but not saved
    monkeypatch.setattr(loop_mod, "_optimizer_step", real_step)
    train(resume=tmp_path / "crash", progress=False, log=lambda s: None)
    a, b = losses(tmp_path / "full"), losses(tmp_path / "crash")
    assert sorted(b) == list(range(1, 9)) and max(abs(a[s] - b[s]) for s in a) < 1e-6
    assert reference.finished


def test_resume_refuses_changed_data(small_corpus, tmp_path):
    train(tiny(small_corpus, tmp_path / "run"), stop_after=2, progress=False, log=lambda s: None)
    state = load_checkpoint(tmp_path / "run")
    (small_corpus / "extra.txt").write_text("new text\n" * 100)
    try:
        with pytest.raises(CheckpointError, match="differs from the data this run was trained on"):
            train(resume=tmp_path / "run", progress=False, log=lambda s: None)
    finally:
        (small_corpus / "extra.txt").unlink()
    assert load_checkpoint(tmp_path / "run")["step"] == state["step"]


def test_an_existing_run_is_not_overwritten_by_accident(small_corpus, tmp_path):
    train(tiny(small_corpus, tmp_path, steps=2), progress=False, log=lambda s: None)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(tiny(small_corpus, tmp_path, steps=2), progress=False, log=lambda s: None)
    assert train(tiny(small_corpus, tmp_path, steps=3), overwrite=True, progress=False, log=lambda s: None).step == 3
    assert max(losses(tmp_path)) == 3  # the old metrics log was replaced, not appended to


@pytest.mark.parametrize("overrides, error, message", [
    (dict(context=1000, data="short.txt"), ConfigError, "longer than the training data"),
    (dict(context=5000), ConfigError, "exceeds the tiny preset's max_seq_len 2048"),
    (dict(data="/no/such/place"), CorpusError, "does not exist"),
    (dict(data="empty"), CorpusError, "empty"),
])
def test_bad_input_writes_nothing(small_corpus, tmp_path, overrides, error, message):
    (tmp_path / "short.txt").write_text("Short text.\n" * 40)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("\n\n")
    if overrides.get("data") in ("short.txt", "empty"):
        overrides = {**overrides, "data": str(tmp_path / overrides["data"])}
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        train(tiny(small_corpus, out, **overrides), progress=False, log=lambda s: None)
    assert not out.exists()


def test_time_budget_sets_the_step_count(small_corpus, tmp_path):
    logs = []
    result = train(tiny(small_corpus, tmp_path, steps=None, time_budget=6.0), progress=False, log=logs.append)
    assert result.finished and result.total_steps >= 1
    assert len(losses(tmp_path)) == result.total_steps == load_checkpoint(tmp_path)["schedule"]["total_steps"]
    plans = [r for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "plan"]
    assert plans and plans[0]["step"] == budget_mod.TIMED_STEPS + 1     # planned after timing the first steps
    saved = load_checkpoint(tmp_path)["plan"]
    assert saved["total_steps"] == result.total_steps and saved["step_seconds"] > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["plan"]["total_steps"] == result.total_steps and summary["time_budget_s"] == 6.0


def test_a_step_that_cannot_fit_the_budget_is_refused_before_training(small_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_mod, "one_window_seconds", lambda run: 10.0)      # 4 windows/step: ~40 s a step
    with pytest.raises(ConfigError, match=r"one training step takes about 40 s .* raise --time-budget to 100"):
        train(tiny(small_corpus, tmp_path / "run", steps=None, time_budget=60.0), progress=False,
              log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_bf16_and_bpe(small_corpus, tmp_path):
    result = train(tiny(small_corpus, tmp_path, precision="bf16", tokenizer="bpe", bpe_vocab_size=320, steps=6),
                   progress=False, log=lambda s: None)
    assert result.tokenizer.kind == "bpe" and result.tokenizer.vocab_size == 320
    assert load_checkpoint(tmp_path)["tokenizer"]["kind"] == "bpe"
    assert result.final.bytes > result.final.tokens and torch.isfinite(torch.tensor(result.final.bits_per_byte))
    written = json.loads((tmp_path / "summary.json").read_text())["final"]
    assert written["bits_per_byte"] == pytest.approx(result.final.bits_per_byte)


def test_a_time_budget_of_training_seconds_excludes_evaluation(small_corpus, tmp_path, monkeypatch):
    """time_budget_covers="training": held-out checks, however slow, take nothing from the steps; the training
    seconds are recorded per step, in the checkpoint and in summary.json, and the run stops at the budget in
    training seconds."""
    real_score = loop_mod._Session.score
    checks = []

    def slow_score(*args, **kwargs):
        import time
        checks.append(1)
        time.sleep(0.3)
        return real_score(*args, **kwargs)

    monkeypatch.setattr(loop_mod._Session, "score", slow_score)
    result = train(tiny(small_corpus, tmp_path, steps=None, time_budget=2.0, time_budget_covers="training",
                        eval_every=8), progress=False, log=lambda s: None)
    records = read_metrics(tmp_path / "metrics.jsonl")
    train_records = [r for r in records if r["kind"] == "train"]
    trained = train_records[-1]["train_seconds"]
    assert result.finished and len(train_records) == result.total_steps
    assert [r["train_seconds"] for r in train_records] == sorted(r["train_seconds"] for r in train_records)
    assert trained <= 2.0 * 1.2                                  # the budget bounds the training seconds
    assert len(checks) >= 2 and result.elapsed > trained + 0.3 * len(checks)   # every check (0.3 s) came on top
    plans = [r for r in records if r["kind"] == "plan"]
    assert plans[0]["covers"] == "training" and plans[0]["deadline"] == 2.0
    assert load_checkpoint(tmp_path)["train_seconds"] == pytest.approx(trained, abs=1e-3)
    assert json.loads((tmp_path / "summary.json").read_text())["train_step_s"] == pytest.approx(trained, abs=0.1)
