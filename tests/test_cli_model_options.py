"""`flashgau train --model.FIELD VALUE` and `--model-config FILE.json`: every ModelConfig field a run does not set
itself is an option, typed and documented from the dataclass; the options are checked before anything is written
and recorded with the run (TrainConfig.model, the checkpoint, summary.json)."""

import dataclasses
import json

import pytest

from flashgau import ModelConfig
from flashgau.cli import build_parser, main
from flashgau.config import field_docs
from flashgau.errors import ConfigError
from flashgau.flags import model_options
from flashgau.training.config import NOT_MODEL_OPTIONS, TrainConfig

TINY = ["--preset", "tiny", "--context", "32", "--batch-tokens", "128", "--precision", "fp32", "--eval-windows", "2",
        "--no-progress", "--sample-tokens", "0"]


def parse(*argv):
    return model_options(build_parser().parse_args(["train", *argv]))


def test_every_model_field_is_an_option_with_its_docstring_in_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    docs = field_docs()
    for name in (f.name for f in dataclasses.fields(ModelConfig)):
        assert name in docs, f"ModelConfig's docstring does not document {name}"
        if name in NOT_MODEL_OPTIONS:
            assert f"--model.{name} " not in help_text
        else:
            assert f"--model.{name} " in help_text
            assert " ".join(docs[name].split()[:6]) in help_text, name
    assert "--model-config FILE.json" in help_text


def test_values_are_typed_from_the_dataclass():
    assert parse("--model.qk_dim", "512", "--model.chunk_size", "128", "--model.token_shift", "0.5",
                 "--model.scaled_sinusoid", "false", "--model.ffn_dim", "none", "--model.norm", "scalenorm",
                 "--model.combiner_chunk_size", "auto", "--model.performer_chunk_size", "64",
                 "--model.first_to_all", "true") == dict(
        qk_dim=512, chunk_size=128, token_shift=0.5, scaled_sinusoid=False, ffn_dim=None, norm="scalenorm",
        combiner_chunk_size="auto", performer_chunk_size=64, first_to_all=True)
    assert parse() == {}


@pytest.mark.parametrize("argv, message", [
    (["--model.qk_dim", "big"], "expected an integer"),
    (["--model.token_shift", "half"], "expected a number"),
    (["--model.tie_embeddings", "maybe"], "expected true or false"),
    (["--model.norm", "rmsnorm"], "invalid choice: 'rmsnorm'"),
    (["--model.arch", "flash"], "unrecognized arguments"),
    (["--model.qk_dim", "none"], "expected an integer"),                 # qk_dim is not optional
    (["--model.performer_chunk_size", "auto"], "expected an integer"),   # only Combiner's chunk has an "auto"
])
def test_a_bad_value_is_a_usage_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    (["--model.qk_dim", "15"], "qk_dim must be even"),
    (["--model.n_heads", "3"], "divisible by n_heads"),
    (["--model.max_seq_len", "16"], "context 32 exceeds max_seq_len 16"),
    (["--model.quad_norm_len", "0"], "quad_norm_len must be a positive integer"),
    (["--arch", "flash-quad", "--model.first_to_all", "true"], "flash-quad already attends to every token"),
])
def test_options_that_do_not_fit_are_refused_before_anything_is_written(argv, message, tmp_path, small_corpus,
                                                                          capsys):
    out = tmp_path / "out"
    code = main(["train", *TINY, "--steps", "1", "--data", str(small_corpus), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 1 and message in err and err.count("\n") == 1 and not out.exists()


def test_model_config_file(tmp_path, capsys):
    good = tmp_path / "m.json"
    good.write_text(json.dumps({"qk_dim": 512, "chunk_size": 128}))
    assert parse("--model-config", str(good), "--model.chunk_size", "64") == dict(qk_dim=512, chunk_size=64)
    for text, message in (("[1, 2]", "must hold a JSON object"), ("{qk_dim: 1}", "is not valid JSON"),
                          (json.dumps({"vocab_size": 9}), "vocab_size is not a model option of a run"),
                          (json.dumps({"widht": 9}), "unknown model option(s): widht")):
        good.write_text(text)
        assert main(["train", *TINY, "--model-config", str(good), "--out", str(tmp_path / "o")]) == 1
        assert message in capsys.readouterr().err
    assert main(["train", *TINY, "--model-config", str(tmp_path / "none.json")]) == 1
    assert "no file at" in capsys.readouterr().err


def test_train_config_checks_and_round_trips_its_model_options():
    cfg = TrainConfig(arch="flash-quad", preset="tiny", context=64, model={"qk_dim": 512})
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    model = cfg.model_config(vocab_size=300)
    assert (model.qk_dim, model.quad_norm_len, model.vocab_size, model.causal) == (512, 64, 300, True)
    for options, message in (({"causal": False}, "the objective sets it"),
                             ({"arch": "flash"}, "--arch"), ({"rel_pos": "t5"}, "rel_pos must be one of")):
        with pytest.raises(ConfigError, match=message):
            TrainConfig(model=options)


def test_options_are_recorded_with_the_run_and_kept_on_resume(tmp_path, small_corpus, capsys):
    from flashgau.training.checkpoint import load_checkpoint

    out = tmp_path / "run"
    argv = ["train", *TINY, "--data", str(small_corpus), "--out", str(out), "--arch", "flash", "--steps", "3",
            "--model.qk_dim", "16", "--model.token_shift", "0.5", "--model.linear_normalizer", "sum"]
    assert main(argv + ["--stop-after", "2"]) == 0
    state = load_checkpoint(out)
    assert state["train_config"]["model"] == dict(qk_dim=16, token_shift=0.5, linear_normalizer="sum")
    assert (state["model_config"]["qk_dim"], state["model_config"]["token_shift"]) == (16, 0.5)
    assert main(["train", "--resume", str(out), "--model.qk_dim", "32"]) == 1
    assert "--model.qk_dim cannot be given with --resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--no-progress", "--sample-tokens", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model_options"]["token_shift"] == 0.5 and summary["model_config"]["qk_dim"] == 16
    assert "qk_dim=16" in capsys.readouterr().out
