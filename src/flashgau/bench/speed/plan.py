"""What `bench speed` runs: its settings (options resolved against the defaults or the --quick set, device and
precisions through flashgau.runtime), the groups of configurations in the order they are timed, and each arch's
model configuration."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Optional

import torch

from ... import ARCHS
from ...config import ModelConfig
from ...errors import ConfigError
from ...runtime import resolve_device, resolve_precision
from ..common import options

DEFAULTS = dict(contexts=(512, 1024, 2048, 4096, 8192, 16384), tokens_per_step=16384,
                batch_contexts=(4096, 8192, 16384), compile_contexts=(4096, 8192, 16384),
                compile_archs=("transformer+", "transformer++", "flash"), precisions=("auto",), warmup=1, repeats=3,
                peak_sizes=None)
QUICK = dict(contexts=(512, 2048), tokens_per_step=2048, batch_contexts=(), compile_contexts=(), repeats=2)
PEAK_SIZES = {"cpu": (1024, 2048), "cuda": (4096, 8192)}    # square matmuls timed for the peak, per device type


@dataclass
class SpeedSettings:
    """Everything a speed run depends on; stored in its report. `precisions` are the resolved names ("auto"
    expanded), `precision_reasons` say why each one."""

    archs: list[str]
    preset: str
    contexts: list[int]
    tokens_per_step: int
    batch_contexts: list[int]
    precisions: list[str]
    compile_contexts: list[int]
    compile_archs: list[str]
    warmup: int
    repeats: int
    memory: bool
    max_attention_gib: float
    seed: int
    quick: bool
    device: str
    peak_sizes: list[int]
    precision_reasons: dict[str, str]
    checkpoint_activations: bool = False    # the "checkpointed" series: batch 1 with activation checkpointing
    name: Optional[str] = None              # of the report and its saved runs (default: speed / speed-quick)

    @property
    def stem(self) -> str:
        return self.name or ("speed-quick" if self.quick else "speed")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Group:
    """Configurations timed together, every arch interleaved: the "tokens" series (fixed tokens per step), the
    "batch" series (batch 1), the "checkpointed" series (batch 1 with activation checkpointing: each block
    recomputed in backward) or the "compiled" series (fixed tokens, torch.compile), at one context and precision."""

    series: str
    context: int
    batch: int
    precision: str

    def key(self, preset: str, tag: str = "") -> str:
        """The saved run's name; `tag` is common.device_tag (empty on the CPU)."""
        return f"{preset}-{self.series}-T{self.context}-B{self.batch}-{self.precision}{tag}"

    def to_dict(self) -> dict:
        return asdict(self)


# the integer options and the least each takes
LEAST = dict(contexts=1, tokens_per_step=1, batch_contexts=1, compile_contexts=1, warmup=0, repeats=1, peak_sizes=1,
             seed=0)


def settings_from_args(args) -> SpeedSettings:
    """The settings of `args` (the options of `add_arguments`); one ConfigError line for an option out of range."""
    o = options(args, DEFAULTS, QUICK)
    for name, least in LEAST.items():
        value = o[name] if name in o else getattr(args, name, None)
        several = isinstance(value, (list, tuple))
        bad = [v for v in (value if several else [value]) if v is not None and not (isinstance(v, int) and v >= least)]
        if bad:
            what = {1: ("a positive integer", "positive integers"), 0: ("an integer >= 0", "integers >= 0")}[least]
            raise ConfigError(f"--{name.replace('_', '-')} must be {what[several]}, got {bad[0]!r}")
    if not args.max_attention_gib >= 0:
        raise ConfigError(f"--max-attention-gib must be a number of GiB >= 0, got {args.max_attention_gib}")
    device = resolve_device(args.device)
    archs = list(args.archs or ARCHS)
    reasons = precisions_for(o["precisions"], device)
    name = getattr(args, "name", None)
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (a file name, no folder)")
    return SpeedSettings(
        archs=archs, preset=args.preset, contexts=sorted(o["contexts"]), tokens_per_step=o["tokens_per_step"],
        batch_contexts=sorted(o["batch_contexts"]), precisions=list(reasons),
        compile_contexts=sorted(o["compile_contexts"]), compile_archs=[a for a in archs if a in o["compile_archs"]],
        warmup=o["warmup"], repeats=o["repeats"], memory=not args.no_memory,
        max_attention_gib=args.max_attention_gib, seed=args.seed, quick=bool(args.quick), device=str(device),
        peak_sizes=list(o["peak_sizes"] or PEAK_SIZES[torch.device(device).type]), precision_reasons=reasons,
        checkpoint_activations=bool(getattr(args, "checkpoint_activations", False)), name=name)


def precisions_for(names, device) -> dict[str, str]:
    """Precision name -> why, fp32 first. "auto" is fp32, the reference every table compares against, plus bf16
    where the device is fast at it (runtime.resolve_precision("auto")); named ones are checked for the device."""
    out = {}
    for name in names:
        p = resolve_precision(name, device)
        if name == "auto" and p.name != "fp32":
            out.setdefault("fp32", "auto: the reference every table compares against")
        out.setdefault(p.name, p.reason)
    return dict(sorted(out.items(), key=lambda kv: kv[0] != "fp32"))


def groups(s: SpeedSettings) -> list[Group]:
    """Groups in the order they are run: fixed-tokens from the longest context down, then the fixed-batch series,
    then (with checkpoint_activations) batch 1 with checkpointing at every batch-1 context of the other two, then the
    compiled series."""
    out = []
    for T in sorted(set(s.contexts) | set(s.compile_contexts)):
        if s.tokens_per_step % T:
            raise ConfigError(f"--tokens-per-step {s.tokens_per_step} is not a multiple of context {T}")
    for T in sorted(s.contexts, reverse=True):
        out += [Group("tokens", T, s.tokens_per_step // T, p) for p in s.precisions]
    for T in sorted(s.batch_contexts, reverse=True):
        if T in s.contexts and s.tokens_per_step == T:
            continue  # batch 1 at this context is the fixed-tokens group
        out += [Group("batch", T, 1, p) for p in s.precisions]
    if s.checkpoint_activations:
        batch1 = set(s.batch_contexts) | {T for T in s.contexts if s.tokens_per_step == T}
        out += [Group("checkpointed", T, 1, p) for T in sorted(batch1, reverse=True) for p in s.precisions]
    if s.compile_archs:
        out += [Group("compiled", T, s.tokens_per_step // T, "fp32") for T in sorted(s.compile_contexts, reverse=True)]
    return out


def model_config(arch: str, preset: str, context: int):
    """The model `flashgau train` trains for (preset, arch, context) (ModelConfig.for_context: FLASH-Quad divides by
    the context and takes the paper's bias for it), with room for contexts beyond the preset's max_seq_len."""
    return ModelConfig.for_context(preset, arch=arch, context=context, max_seq_len=max(context, 512))


def attention_bytes_estimate(cfg, batch: int, context: int, checkpointed: bool = False) -> int:
    """Rough memory of the T x T maps FLASH-Quad keeps for backward (scores, relu, square, masked: 4 fp32 maps
    per layer; one layer's with activation checkpointing, which holds one block's activations at a time); 0 for
    archs whose attention memory is linear in T."""
    if cfg.arch != "flash-quad":
        return 0
    return (1 if checkpointed else cfg.n_layers) * batch * context * context * 4 * 4
