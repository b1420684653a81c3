"""Fine-tuning on the QA task: a tiny language model trained a few steps, then `--objective qa --init-from` it: the
loop trains on the answer tokens, scores the held-out examples with greedy answers and the floors, `eval` repeats
the score from the checkpoint, the run resumes exactly, and the command line does it end to end."""

import json

import pytest
import torch

from flashgau.cli import main
from flashgau.errors import ConfigError
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.metrics import read_metrics
from flashgau.training.trained import evaluate_checkpoint

from training_helpers import losses, quiet, tiny_config


def settings(corpus, out, **overrides):
    return tiny_config(corpus, out, **{"context": 512, "steps": 4, "batch_tokens": 1024, "micro_batch_tokens": 1024,
                                       "warmup_steps": 1, "eval_every": 2, "eval_windows": 8, **overrides})


@pytest.fixture(scope="module")
def lm_run(small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm")
    quiet(settings(small_corpus, out))
    return out


def qa_settings(corpus, lm_run, out, **overrides):
    return settings(corpus, out, objective="qa", init_from=str(lm_run), lr=1e-3, **overrides)


def test_a_qa_fine_tune_trains_on_answers_and_eval_repeats_its_score(small_corpus, lm_run, tmp_path):
    result = quiet(qa_settings(small_corpus, lm_run, tmp_path))
    assert result.finished and result.model.config.causal
    final = result.final
    assert final.windows == 200 and final.tokens > 200 and 0 <= final.exact_match <= 100
    assert 0 < final.floor_frequent_em <= 100 and 0 < final.floor_random_em <= 100
    records = read_metrics(tmp_path / "metrics.jsonl")
    checks = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in checks] == [2, 4] and all("heldout_f1" in r and "heldout_choice" in r for r in checks)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final"]["f1"] == final.f1 and summary["final"]["choice"] == final.choice
    assert 0 <= final.choice <= 100
    state = load_checkpoint(tmp_path)
    assert state["train_config"]["objective"] == "qa" and set(state["sampler"]) == {"examples_drawn"}
    again, what = evaluate_checkpoint(tmp_path)
    assert again.loss == pytest.approx(final.loss, rel=1e-5)
    assert (again.exact_match, again.f1, again.choice, again.windows) == (final.exact_match, final.f1, final.choice,
                                                                          final.windows)


def test_a_qa_run_resumes_exactly(small_corpus, lm_run, tmp_path):
    full = quiet(qa_settings(small_corpus, lm_run, tmp_path / "full"))
    part = quiet(qa_settings(small_corpus, lm_run, tmp_path / "part"), stop_after=2)
    assert part.step == 2 and load_checkpoint(tmp_path / "part")["sampler"] == {"examples_drawn": 4}
    resumed = quiet(resume=tmp_path / "part")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and max(abs(a[s] - b[s]) for s in a) < 1e-6
    for (name, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert resumed.final.loss == pytest.approx(full.final.loss, rel=1e-6)
    assert resumed.final.exact_match == full.final.exact_match


def test_qa_settings_that_make_no_sense_are_refused(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="objective qa writes no sample"):
        settings(small_corpus, tmp_path, objective="qa", sample_tokens=10)
    with pytest.raises(ConfigError, match="the QA task needs a longer context"):
        quiet(settings(small_corpus, tmp_path, objective="qa", context=128))


def test_the_command_line_fine_tunes_and_evaluates(small_corpus, lm_run, tmp_path, capsys):
    out = tmp_path / "qa"
    code = main(["train", "--objective", "qa", "--init-from", str(lm_run), "--data", str(small_corpus), "--context",
                 "512", "--steps", "2", "--batch-tokens", "1024", "--precision", "fp32", "--eval-windows", "4",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "weights from" in printed and "held-out QA: EM" in printed and "floors" in printed
    assert main(["eval", str(out)]) == 0
    report = capsys.readouterr().out
    assert "exact match:" in report and "floor, most frequent speaker:" in report and "examples: 200" in report
    assert "choice (likeliest speaker of the window):" in report and ", chosen '" in report
