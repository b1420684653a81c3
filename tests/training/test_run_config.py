"""`flashgau train --config FILE`: a run's settings as a TOML file, the resolved config.toml every run folder holds,
the order in which the file and the command line set a setting, and one line for each bad key or value."""

import pytest
import torch

from flashgau.cli import build_parser, main, new_run_config
from flashgau.config import ModelConfig
from flashgau.training.checkpoint import load_checkpoint
from flashgau.training.config import TrainConfig
from flashgau.training.run_config import (CONFIG_NAME, bundled_configs, format_run_config, read_run_config,
                                          resolved_settings)
from training_helpers import losses

TINY_FILE = """
preset = "tiny"
context = 32
steps = 4
batch_tokens = 128
micro_batch_tokens = 64
lr = 3e-3
warmup_steps = 1
precision = "fp32"
eval_every = 2
eval_windows = 2
sample_tokens = 0
seed = 3

[model]
qk_dim = 16
"""


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_a_run_repeats_from_its_config_toml(small_corpus, tmp_path, capsys):
    """file -> run -> the run's config.toml -> a second run: the same settings, model, losses and weights."""
    first = write(tmp_path / "tiny.toml", f'data = "{small_corpus}"\n' + TINY_FILE)
    assert main(["train", "--config", str(first), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    saved = tmp_path / "a" / CONFIG_NAME
    assert main(["train", "--config", str(saved), "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    assert a["train_config"]["seed"] == 3 and a["model_config"]["qk_dim"] == 16       # the file's settings took
    same = {"out": None, "model": None}          # b's model options are every field of the model a built
    assert {**a["train_config"], **same} == {**b["train_config"], **same}
    assert a["model_config"] == b["model_config"]
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 4
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    # the second run's file is the first's but for where it is
    text_a, text_b = saved.read_text(), (tmp_path / "b" / CONFIG_NAME).read_text()
    assert text_a.replace(str(tmp_path / "a"), "X") == text_b.replace(str(tmp_path / "b"), "X")
    capsys.readouterr()


def test_the_written_file_holds_every_setting_and_the_model_as_built(tmp_path):
    cfg = TrainConfig(arch="flash", preset="tiny", steps=5, log=("tensorboard",), sample_prompt='say "hi"\n\x7f',
                      model={"qk_dim": 16})
    model = cfg.model_config(256)
    text = format_run_config(resolved_settings(cfg, model))
    back = read_run_config(write(tmp_path / "c.toml", text))
    for name, value in cfg.to_dict().items():
        if name != "model" and value is not None:
            assert back[name] == value, name
    assert "time_budget" not in back and "# not set (None): time_budget" in text
    unset = {name for name, value in model.to_dict().items() if value is None}     # TOML has no null: left out
    assert {"ffn_dim", "performer_chunk_size", "combiner_chunk_size", "embed_init_std"} <= unset
    assert set(back["model"]) == set(model.to_dict()) - {"arch", "vocab_size", "causal"} - unset
    assert TrainConfig(**back).model_config(256) == model


def test_context_tied_model_fields_follow_a_new_context(tmp_path):
    """FLASH-Quad's quad_norm_len and combiner_chunk_size "auto" are left to the context, so a changed --context
    builds the model a fresh run at that context would."""
    for arch, options in (("flash-quad", {}), ("combiner", {"combiner_chunk_size": "auto"})):
        cfg = TrainConfig(arch=arch, preset="tiny", context=64, steps=1, model=options)
        path = write(tmp_path / f"{arch}.toml", format_run_config(resolved_settings(cfg, cfg.model_config(256))))
        args = build_parser().parse_args(["train", "--config", str(path), "--context", "256"])
        fresh = TrainConfig(arch=arch, preset="tiny", context=256, steps=1, model=options).model_config(256)
        assert new_run_config(args).model_config(256) == fresh


def test_the_command_line_wins_over_the_file(tmp_path):
    path = write(tmp_path / "c.toml", 'lr = 1e-2\nsteps = 5\nseed = 7\n[model]\nqk_dim = 16\nchunk_size = 8\n')
    model_json = write(tmp_path / "m.json", '{"chunk_size": 4, "expansion": 3}')
    args = build_parser().parse_args(["train", "--config", str(path), "--preset", "tiny", "--lr", "2e-2",
                                      "--time-budget", "10", "--model-config", str(model_json),
                                      "--model.qk_dim", "32"])
    cfg = new_run_config(args)
    assert (cfg.lr, cfg.seed, cfg.steps, cfg.time_budget) == (2e-2, 7, None, 10.0)   # --time-budget drops steps
    assert cfg.model == {"qk_dim": 32, "chunk_size": 4, "expansion": 3}
    assert cfg.sample_tokens == 300                   # the command's default where neither says
    assert new_run_config(build_parser().parse_args(["train", "--config", str(path)])).steps == 5


@pytest.mark.parametrize("text, message", [
    ("lrr = 1e-3", "unknown setting lrr; did you mean lr?"),
    ("batch-tokens = 256", "unknown setting batch-tokens; did you mean batch_tokens?"),
    ("[model]\nqk_dmi = 64", "unknown model option model.qk_dmi; did you mean model.qk_dim?"),
    ("qk_dim = 64", "qk_dim is a model option: put it in the [model] table"),
    ("[model]\nlr = 1e-3", "model.lr is a training setting, not a model option"),
    ("[model]\narch = \"flash\"", "model.arch is not a model option of a run: give it as the run's arch"),
    ("device = \"cpu\"", "device is an option of the command, not a setting of the run: give --device"),
    ("steps = \"10\"", 'steps must be an integer, got "10" (text)'),
    ("lr = \"fast\"", 'lr must be a number, got "fast" (text)'),
    ("pack_documents = 1", "pack_documents must be true or false, got 1 (an integer)"),
    ("log = \"tensorboard\"", "log must be a list of names"),
    ("arch = 3", "arch must be text in quotes, got 3 (an integer)"),
    ("[model]\nqk_dim = 1.5", "model.qk_dim must be an integer, got 1.5 (a number)"),
    ("model = 3", "model must be a table of model options"),
    ("lr = -1.0", "lr must be a finite number in (0, 1000], got -1.0"),
    ("log = [\"tensorbord\"]", "log must be a list of tensorboard and wandb"),
    ("steps = 5\nsteps = 6", "is not valid TOML"),
    ("steps = ", "is not valid TOML"),
])
def test_a_bad_key_or_value_is_one_line_naming_it(text, message, tmp_path, capsys):
    path = write(tmp_path / "bad.toml", text + "\n")
    out = tmp_path / "out"
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("flashgau train: error:") and message in err, err
    assert not out.exists()


def test_a_missing_file_and_resume_with_a_file_are_refused(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 1
    assert "--config: no file at" in capsys.readouterr().err
    path = write(tmp_path / "c.toml", "steps = 2\n")
    assert main(["train", "--resume", str(tmp_path), "--config", str(path)]) == 1
    assert "--config cannot be given with --resume" in capsys.readouterr().err


@pytest.mark.parametrize("name", bundled_configs())
def test_every_bundled_config_is_a_valid_run(name):
    settings = read_run_config(name)                  # by name, as --config lm-512
    cfg = TrainConfig(**settings)
    cfg.model_config(256)
    if name.split("-")[-1].isdigit():
        assert settings["context"] == int(name.split("-")[-1])


def test_bundled_configs_are_the_experiments_of_the_benchmarks():
    assert {"lm-512", "lm-1024", "lm-4096", "mlm-512", "mlm-2048", "qa-pretrain", "qa-finetune"} <= \
        set(bundled_configs())
    finetune, pretrain = read_run_config("qa-finetune"), read_run_config("qa-pretrain")
    assert finetune["init_from"] == pretrain["out"] and finetune["objective"] == "qa"


def test_model_options_of_the_file_are_model_config_fields():
    """Every ModelConfig field a run may set can be written in [model] (the reader knows them all)."""
    from flashgau.training.run_config import MODEL_KEYS
    assert set(MODEL_KEYS) == set(ModelConfig.__dataclass_fields__) - {"arch", "vocab_size", "causal"}
