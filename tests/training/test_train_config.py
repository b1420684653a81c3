"""TrainConfig validation and batch arithmetic."""

import pytest

from flashgau.errors import ConfigError
from flashgau.training.config import DEFAULT_TIME_BUDGET, TrainConfig


def test_defaults_use_the_time_budget():
    cfg = TrainConfig()
    assert cfg.steps is None and cfg.time_budget == DEFAULT_TIME_BUDGET
    assert TrainConfig(steps=10).time_budget is None
    assert TrainConfig(arch="transformer++").out_dir == "runs/transformer++-small"


@pytest.mark.parametrize("batch_tokens, micro_tokens, context, windows, micro, accum", [
    (16384, 8192, 512, 32, 16, 2),
    (1000, 8192, 64, 16, 16, 1),      # rounded up to whole windows
    (7 * 64, 3 * 64, 64, 7, 1, 7),    # 7 windows: the only divisor <= 3 is 1
    (12 * 64, 5 * 64, 64, 12, 4, 3),
])
def test_gradient_accumulation_reaches_batch_tokens(batch_tokens, micro_tokens, context, windows, micro, accum):
    cfg = TrainConfig(steps=1, batch_tokens=batch_tokens, micro_batch_tokens=micro_tokens, context=context)
    assert (cfg.windows_per_step, cfg.micro_batch_size, cfg.accumulation_steps) == (windows, micro, accum)
    assert cfg.micro_batch_size * cfg.accumulation_steps * context >= batch_tokens


@pytest.mark.parametrize("kwargs, message", [
    (dict(arch="gpt"), "unknown arch 'gpt'"),
    (dict(preset="huge"), "unknown preset 'huge'"),
    (dict(context=0), r"context must be an integer in \[1, "),
    (dict(steps=5, time_budget=3.0), "either steps or time_budget"),
    (dict(lr=-1.0), r"lr must be a finite number in \(0, "),
    (dict(lr=float("inf")), "lr must be a finite number"),
    (dict(weight_decay=float("nan")), "weight_decay must be a finite number"),
    (dict(time_budget=float("inf")), "time_budget must be a finite number"),
    (dict(seed=2 ** 70), r"seed must be an integer in \[0, 2\*\*62\)"),
    (dict(precision="fp8"), "precision must be one of auto, fp32, bf16, fp16"),
    (dict(tokenizer="chars"), "tokenizer must be one of"),
    (dict(tokenizer="bpe", bpe_vocab_size=100), "bpe_vocab_size must be > 256"),
    (dict(steps=True), "steps must be an integer"),
    (dict(sample_tokens=-1), "sample_tokens must be an integer >= 0"),
])
def test_invalid_settings_name_the_option(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_dict_round_trip_and_unknown_fields():
    cfg = TrainConfig(steps=3, lr=1e-3, data="x.txt")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="unknown training setting"):
        TrainConfig.from_dict({**cfg.to_dict(), "momentum": 0.9})
