"""`--init-from RUN`: a new run starts from another run's weights (weights only: new optimizer, schedule and step
count), takes its model and tokenizer, may change objective (the vocabulary gains or loses the mask token) and
data, resumes exactly, and refuses what cannot work with one line."""

import shutil

import pytest
import torch

from flashgau.cli import main
from flashgau.errors import CheckpointError, ConfigError
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.state import start_run

from training_helpers import losses, quiet, tiny_config


@pytest.fixture(scope="module")
def source(small_corpus, tmp_path_factory):
    """A tiny FLASH language model trained a few steps (qk_dim set as a model option)."""
    out = tmp_path_factory.mktemp("source")
    quiet(tiny_config(small_corpus, out, model={"qk_dim": 16}))
    return out


def test_the_weights_at_step_zero_are_the_sources_and_the_settings_come_from_it(source, small_corpus, tmp_path):
    # a default arch and preset in the library are replaced by the source's
    run = start_run(TrainConfig(context=32, steps=3, data=str(small_corpus), out=str(tmp_path), init_from=str(source),
                                seed=5, lr=1e-3), device=torch.device("cpu"))
    saved = load_checkpoint(source)
    assert run.step == 0 and run.schedule.total_steps == 3 and not run.optimizer.state
    assert run.model_config.to_dict() == saved["model_config"]
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, saved["model"][name]), name
    cfg = run.config
    assert (cfg.arch, cfg.preset, cfg.model) == ("flash", "tiny", {"qk_dim": 16})
    assert cfg.init_from == str((source / "checkpoint.pt").resolve()) and cfg.lr == 1e-3


def test_resume_after_init_from_is_exact_and_needs_no_source(source, small_corpus, tmp_path):
    copy = tmp_path / "source"
    shutil.copytree(source, copy)
    cfg = lambda out: tiny_config(small_corpus, out, init_from=str(copy), lr=1e-3)  # noqa: E731
    full = quiet(cfg(tmp_path / "full"))
    part = quiet(cfg(tmp_path / "part"), stop_after=2)
    assert part.step == 2 and load_checkpoint(tmp_path / "part")["train_config"]["init_from"]
    shutil.rmtree(copy)                                   # resume reads the run's own checkpoint only
    resumed = quiet(resume=tmp_path / "part")
    a, b = losses(tmp_path / "full"), losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 7)) and max(abs(a[s] - b[s]) for s in a) < 1e-6
    for (name, x), y in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(x, y, atol=1e-6), name


def test_an_lm_source_starts_an_mlm_run_and_back_the_mask_row_added_then_dropped(source, small_corpus, tmp_path):
    saved = load_checkpoint(source)["model"]
    mlm = start_run(tiny_config(small_corpus, tmp_path / "mlm", objective="mlm", init_from=str(source)),
                    device=torch.device("cpu"))
    assert not mlm.model_config.causal and mlm.model_config.vocab_size == 257
    emb = mlm.model.state_dict()["embed.weight"]
    assert torch.equal(emb[:256], saved["embed.weight"]) and emb.shape[0] == 257
    quiet(tiny_config(small_corpus, tmp_path / "mlm", objective="mlm", init_from=str(source), steps=2))
    back = start_run(tiny_config(small_corpus, tmp_path / "lm", init_from=str(tmp_path / "mlm")),
                     device=torch.device("cpu"))
    assert back.model_config.causal and back.model_config.vocab_size == 256
    mlm_weights = load_checkpoint(tmp_path / "mlm")["model"]
    assert torch.equal(back.model.state_dict()["embed.weight"], mlm_weights["embed.weight"][:256])


def test_other_data_is_tokenized_with_the_sources_bpe(small_corpus, tmp_path):
    quiet(tiny_config(small_corpus, tmp_path / "src", tokenizer="bpe", bpe_vocab_size=300, steps=2))
    other = tmp_path / "other.txt"
    other.write_text("A different text, about something else entirely.\n" * 200, encoding="utf-8")
    src_tok = load_checkpoint(tmp_path / "src")["tokenizer"]
    run = start_run(tiny_config(other, tmp_path / "new", init_from=str(tmp_path / "src")), device=torch.device("cpu"))
    assert run.config.tokenizer == "bpe" and run.data.tokenizer.to_dict() == src_tok


@pytest.mark.parametrize("overrides, error, message", [
    (dict(init_from="/no/such/run"), CheckpointError, "--init-from: no checkpoint at /no/such/run"),
    (dict(model={"qk_dim": 32}), ConfigError, "--model.qk_dim 32 conflicts with the model of the run"),
    (dict(context=4096), ConfigError, "context 4096 exceeds .*max_seq_len 2048"),
])
def test_bad_sources_and_conflicts_are_one_line_errors(source, small_corpus, tmp_path, overrides, error, message):
    settings = {"init_from": str(source), **overrides}
    with pytest.raises(error, match=message.replace("(", r"\(")) as info:
        start_run(tiny_config(small_corpus, tmp_path / "x", **settings), device=torch.device("cpu"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "x").exists()


def test_the_command_line_refuses_conflicting_model_settings_and_init_from_on_resume(source, small_corpus, tmp_path,
                                                                                       capsys):
    base = ["train", "--data", str(small_corpus), "--context", "32", "--steps", "2", "--batch-tokens", "64",
            "--precision", "fp32", "--no-progress", "--init-from", str(source)]
    assert main(base + ["--out", str(tmp_path / "a"), "--preset", "small"]) == 1
    err = capsys.readouterr().err
    assert "--preset small conflicts with the run given to --init-from" in err and err.count("\n") == 1
    assert main(base + ["--out", str(tmp_path / "b"), "--preset", "tiny", "--sample-tokens", "0"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "b"), "--init-from", str(source)]) == 1
    assert "--init-from cannot be given with --resume" in capsys.readouterr().err
