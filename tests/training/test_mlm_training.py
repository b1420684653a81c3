"""Training with the masked-language-model objective: the same loop and run state as LM (one loop, two
objectives), a bidirectional model with the mask token in its tokenizer, held-out masked-token scores that `eval`
repeats from the checkpoint, exact resume, and `fill_masks` on a model trained on trivially predictable text."""

import json

import pytest
import torch

from flashgau.errors import ConfigError
from flashgau.tasks import get_task
from flashgau.training import fill_masks, load_trained
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.metrics import read_metrics
from flashgau.training.setup import prepare_run_data
from flashgau.training.trained import evaluate_checkpoint, sample_text

from training_helpers import losses, quiet, tiny_config


def tiny(corpus, out, **overrides):
    return tiny_config(corpus, out, **{"objective": "mlm", "steps": 8, "eval_every": 4, **overrides})


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_an_mlm_run_trains_a_bidirectional_model_and_eval_repeats_its_score(small_corpus, tmp_path, tokenizer):
    result = quiet(tiny(small_corpus, tmp_path, tokenizer=tokenizer, bpe_vocab_size=300))
    assert result.finished and not result.model.config.causal
    tok = result.tokenizer
    assert tok.mask_token == "<mask>" and tok.vocab_size == tok.base_vocab_size + 1 == result.model.config.vocab_size
    state = load_checkpoint(tmp_path)
    assert state["tokenizer"]["mask_token"] == "<mask>" and state["train_config"]["objective"] == "mlm"
    assert set(state["sampler"]) == {"windows", "masking"}
    records = read_metrics(tmp_path / "metrics.jsonl")
    checks = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in checks] == [4, 8] and all(0 <= r["heldout_accuracy"] <= 1 for r in checks)
    final = next(r for r in records if r["kind"] == "final")
    assert final["heldout_loss"] == pytest.approx(result.final.loss) and "bits_per_byte" not in final
    assert json.loads((tmp_path / "summary.json").read_text())["final"]["accuracy"] == result.final.accuracy
    again, what = evaluate_checkpoint(tmp_path)                     # the objective comes from the checkpoint
    assert again.loss == pytest.approx(result.final.loss, rel=1e-5) and again.accuracy == result.final.accuracy
    assert again.tokens == result.final.tokens and "held-out split" in what


def test_an_mlm_run_resumes_exactly(small_corpus, tmp_path):
    full = quiet(tiny(small_corpus, tmp_path / "full"))
    part = quiet(tiny(small_corpus, tmp_path / "part"), stop_after=3)
    assert part.step == 3 and not part.finished
    resumed = quiet(resume=tmp_path / "part")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 9)) and max(abs(a[s] - b[s]) for s in a) < 1e-6
    for (name, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name
    assert resumed.final.loss == pytest.approx(full.final.loss, rel=1e-6)


def test_bpe_mlm_resumes_on_the_cached_data_of_its_tokenizer(small_corpus, tmp_path):
    cfg = tiny(small_corpus, tmp_path, tokenizer="bpe", bpe_vocab_size=300, steps=4)
    quiet(cfg, stop_after=2)
    assert quiet(resume=tmp_path).finished


def test_runs_of_two_archs_are_scored_on_the_same_masked_positions(small_corpus, tmp_path):
    for arch in ("flash", "transformer++"):
        quiet(tiny(small_corpus, tmp_path / arch, arch=arch, seed=3 if arch == "flash" else 5, steps=2))
    sets = []
    for arch in ("flash", "transformer++"):
        trained = load_trained(tmp_path / arch)
        data = prepare_run_data(trained.train_config, trained.tokenizer, trained.data_fingerprint, "eval")
        heldout = get_task("mlm").heldout(data.heldout_docs, trained.tokenizer, 32)
        sets.append(torch.cat([b.labels for b in heldout.batches(16)]))
    assert torch.equal(*sets)


def test_mlm_settings_that_make_no_sense_are_refused(small_corpus, tmp_path):
    with pytest.raises(ConfigError, match="objective mlm writes no sample .*flashgau fill"):
        tiny(small_corpus, tmp_path, sample_tokens=5)
    with pytest.raises(ConfigError, match="unknown objective 'clm'"):
        tiny(small_corpus, tmp_path, objective="clm")
    assert tiny(small_corpus, tmp_path).model_config(257).causal is False
    assert tiny(small_corpus, tmp_path, objective="lm").model_config(256).causal is True


def test_fill_returns_the_right_token_after_training_on_predictable_text(tmp_path):
    data = tmp_path / "abc"
    data.mkdir()
    for i in range(3):
        (data / f"{i}.txt").write_text("abcdefghijklmnopqrstuvwxyz\n" * 200)
    result = quiet(TrainConfig(arch="flash", preset="tiny", objective="mlm", context=32, steps=150, batch_tokens=1024,
                               micro_batch_tokens=1024, lr=1e-2, warmup_steps=10, precision="fp32", data=str(data),
                               out=str(tmp_path / "run"), eval_windows=4))
    assert result.final.accuracy > 0.9
    filled = fill_masks(result.model, result.tokenizer, "abcdefg<mask>ijklmn", top_k=3)
    assert filled.text == "abcdefghijklmn" and filled.masks[0].chosen.text == "h"
    assert len(filled.masks[0].candidates) == 3 and filled.masks[0].candidates[0].probability > 0.3
    trained = load_trained(tmp_path / "run")                       # the same from the checkpoint, "[MASK]" too
    two = fill_masks(trained.model, trained.tokenizer, "qrstuv[MASK][MASK]yz", top_k=2)
    assert two.text == "qrstuvwxyz" and sorted(m.order for m in two.masks) == [1, 2]
    with pytest.raises(ConfigError, match="no mask marker"):
        fill_masks(trained.model, trained.tokenizer, "abc")
    with pytest.raises(ConfigError, match="fills masks rather than continuing text"):
        sample_text(trained.model, trained.tokenizer, "abc")


def test_tokens_seen_counts_input_tokens_for_both_objectives(small_corpus, tmp_path):
    for objective in ("lm", "mlm"):
        result = quiet(tiny(small_corpus, tmp_path / objective, objective=objective, steps=3))
        assert result.tokens_seen == 3 * 128                      # 4 full windows of 32 tokens per step
