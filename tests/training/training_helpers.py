"""Helpers of the training tests: a tiny run's TrainConfig, training without output, a run's training losses."""

from flashgau.training.config import TrainConfig
from flashgau.training.loop import train
from flashgau.training.metrics import read_metrics

# A tiny FLASH run that trains in a second: 6 steps of 4 windows of 32 byte tokens, two held-out checks.
TINY = dict(arch="flash", preset="tiny", context=32, steps=6, batch_tokens=128, micro_batch_tokens=64, lr=3e-3,
            warmup_steps=2, precision="fp32", eval_every=3, eval_windows=4)


def tiny_config(corpus, out, **overrides) -> TrainConfig:
    """TINY on `corpus` into `out`, with `overrides` on top."""
    return TrainConfig(**{**TINY, "data": str(corpus), "out": str(out), **overrides})


def quiet(cfg=None, **kwargs):
    """train() without progress bar or log lines."""
    return train(cfg, progress=False, log=lambda s: None, **kwargs)


def losses(out) -> dict:
    """{step: training loss} of the run in `out`."""
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"}
