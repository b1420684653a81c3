"""`flashgau bench learn-parity`: how fast flashgau's FLASH learns under a plain training loop, beside lucidrains'
FLASH-pytorch, the independent implementation (`pip install flash-pytorch`: it needs einops and
rotary-embedding-torch; it is not a dependency of flashgau, and without it only flashgau's arms run).

One loop for every arm, the loop a user would write: AdamW on the model's parameters (every parameter decayed, or
with `--decay linear` only the Linear weights), a constant learning rate, fp32, no clipping, the same batches of
`--batch` windows of `--context` bytes of the plays' training split for every arm of a seed, and the held-out loss
(nats per byte) on the same evenly spaced windows of the held-out plays after `--steps` steps. What differs between
arms is the model alone: its shapes, and the scales it gives its parameters.

An arm is `flashgau` (the `--preset` FLASH with ModelConfig's defaults) or `lucidrains` (FLASHTransformer with the
same width, depth, chunk size, s and expansion, its own defaults otherwise), then `+`-joined changes, each one
difference to measure:

- `field=value`: a ModelConfig field (flashgau) or a FLASHTransformer argument (lucidrains), e.g.
  `flashgau+tie_embeddings=True`, `flashgau+arch=transformer++`, `lucidrains+norm_type=layernorm` (a change
  starts at a `+` followed by `name=`, so a value may hold `+`);
- `tweak=value`: a scale set after the model is built (TWEAKS; both implementations): `emb_std` (the token
  embedding), `gamma_std` (the scale of the query/key maps of z), `bias_std` (the relative position bias table; in
  FLASH-pytorch the table times its fixed scale sqrt(s)), `sinusoid_scale` (the absolute sinusoid's scale),
  `linear_std` (every Linear weight; `torch` for PyTorch's own nn.Linear init, biases included), `out_std` (each
  block's output projection).

Prints one line per run and a table of the mean final loss per arm and its difference from the first arm; with
`--out FILE` also writes every run as JSON (runs already in the file are not trained again).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from ..errors import FlashgauError
from ..model import LanguageModel
from .common import environment, md_table, read_json, write_json

LUCIDRAINS_NOT_INSTALLED = ("lucidrains' FLASH-pytorch is not installed (pip install flash-pytorch einops "
                            "rotary-embedding-torch)")
LUCIDRAINS_MISSING = f"{LUCIDRAINS_NOT_INSTALLED}; the lucidrains arms are skipped"


# ------------------------------------------------------------------------------------------------ the data

def plays_bytes() -> tuple[torch.Tensor, torch.Tensor]:
    """The training and held-out plays (the default corpus split) as byte tensors, documents joined by newlines."""
    from ..data.corpus import load_split

    split = load_split(None)
    as_bytes = lambda docs: torch.frombuffer(bytearray("\n".join(d.text for d in docs).encode("utf-8")),  # noqa: E731
                                             dtype=torch.uint8).long()
    return as_bytes(split.train), as_bytes(split.heldout)


def training_batches(data: torch.Tensor, seed: int, steps: int, batch: int, context: int) -> list[torch.Tensor]:
    """`steps` batches (batch, context + 1) of windows at random offsets, the same for every arm of a seed."""
    gen = torch.Generator().manual_seed(10_000 + seed)
    starts = torch.randint(0, len(data) - context - 1, (steps, batch), generator=gen)
    return [torch.stack([data[s:s + context + 1] for s in row.tolist()]) for row in starts]


def heldout_windows(data: torch.Tensor, count: int, context: int) -> torch.Tensor:
    """`count` windows (count, context + 1) evenly spaced over the held-out bytes."""
    starts = torch.linspace(0, len(data) - context - 1, count).long().tolist()
    return torch.stack([data[s:s + context + 1] for s in starts])


# ------------------------------------------------------------------------------------------------ the arms

@dataclasses.dataclass
class Arm:
    """One model to train: its implementation, constructor settings and tweaks, parsed from a spec string."""

    spec: str
    impl: str
    settings: dict[str, Any]
    tweaks: dict[str, Any]


def parse_value(text: str) -> Any:
    """'True' / 'False' / 'None', an int, a float, or the text itself."""
    named = {"True": True, "False": False, "None": None}
    if text in named:
        return named[text]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_arm(spec: str) -> Arm:
    impl, *changes = re.split(r"\+(?=\w+=)", spec)     # a "+" inside a value (arch=transformer++) stays
    if impl not in IMPLS:
        raise FlashgauError(f"arm {spec!r}: starts with one of {', '.join(IMPLS)}, got {impl!r}")
    settings, tweaks = {}, {}
    for change in changes:
        key, eq, value = change.partition("=")
        if not eq:
            raise FlashgauError(f"arm {spec!r}: each change is name=value, got {change!r}")
        if key in TWEAKS:
            tweaks[key] = parse_value(value)
        elif key in IMPLS[impl]["fields"]():
            settings[key] = parse_value(value)
        else:
            raise FlashgauError(f"arm {spec!r}: {key!r} is neither a tweak ({', '.join(TWEAKS)}) nor a setting of "
                                f"{impl}")
    return Arm(spec, impl, settings, tweaks)


def flashgau_model(arm: Arm, preset: str, context: int) -> nn.Module:
    cfg = ModelConfig.for_context(preset, context=context, **{"arch": "flash", **arm.settings})
    return LanguageModel(cfg)


def flashgau_logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(ids).logits


def lucidrains_available() -> bool:
    try:
        import flash_pytorch  # noqa: F401
    except ImportError:
        return False
    return True


def lucidrains_fields() -> set[str]:
    if not lucidrains_available():
        return set()
    from flash_pytorch import FLASHTransformer
    return set(inspect.signature(FLASHTransformer.__init__).parameters) - {"self"}


def lucidrains_model(arm: Arm, preset: str, context: int) -> nn.Module:
    """FLASHTransformer with the shapes of flashgau's `preset` FLASH: width, GAU layers, chunk size, s, e."""
    from flash_pytorch import FLASHTransformer

    cfg = ModelConfig.for_context(preset, arch="flash", context=context)
    shapes = dict(dim=cfg.d_model, num_tokens=cfg.vocab_size, depth=cfg.n_layers, group_size=cfg.chunk_size,
                  query_key_dim=cfg.qk_dim, expansion_factor=cfg.expansion, causal=True)
    return FLASHTransformer(**{**shapes, **arm.settings})


IMPLS: dict[str, dict[str, Callable]] = {
    "flashgau": dict(fields=lambda: {f.name for f in dataclasses.fields(ModelConfig)}, build=flashgau_model,
                     logits=flashgau_logits),
    "lucidrains": dict(fields=lucidrains_fields, build=lucidrains_model, logits=lambda model, ids: model(ids)),
}


# ------------------------------------------------------------------------------------------------ the tweaks

def _token_embedding(model: nn.Module) -> nn.Embedding:
    return model.embed if isinstance(model, LanguageModel) else model.token_emb


def _normal(params, std: float) -> None:
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, std)


def tweak_emb_std(model: nn.Module, std: float) -> None:
    _normal([_token_embedding(model).weight], std)


def tweak_gamma_std(model: nn.Module, std: float) -> None:
    _normal([p for name, p in model.named_parameters() if name.endswith("gamma")], std)


def tweak_bias_std(model: nn.Module, std: float) -> None:
    """The relative position bias: flashgau's table (Toeplitz weights or RoPE vectors), FLASH-pytorch's T5 bucket
    table (its values times the fixed scale sqrt(s) are the bias: the table gets std / sqrt(s))."""
    if isinstance(model, LanguageModel):
        _normal([p for name, p in model.named_parameters() if ".rel." in name], std)
        return
    for module in model.modules():
        if hasattr(module, "relative_attention_bias"):
            _normal([module.relative_attention_bias.weight], std / module.scale)


def tweak_sinusoid_scale(model: nn.Module, scale: float) -> None:
    sinusoid = model.sinusoid if isinstance(model, LanguageModel) else model.abs_pos_emb
    with torch.no_grad():
        sinusoid.scale.fill_(scale)


def tweak_linear_std(model: nn.Module, std: Any) -> None:
    """Every nn.Linear weight N(0, std); "torch": PyTorch's own init of nn.Linear (weights and biases); "fan_in":
    N(0, 1/fan_in)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if std == "torch":
                module.reset_parameters()
            else:
                s = 1 / math.sqrt(module.in_features) if std == "fan_in" else float(std)
                _normal([module.weight], s)


def tweak_out_std(model: nn.Module, std: float) -> None:
    _normal([p for name, p in model.named_parameters() if name.endswith("to_out.weight")], std)


TWEAKS: dict[str, Callable[[nn.Module, Any], None]] = dict(
    emb_std=tweak_emb_std, gamma_std=tweak_gamma_std, bias_std=tweak_bias_std, sinusoid_scale=tweak_sinusoid_scale,
    linear_std=tweak_linear_std, out_std=tweak_out_std)


# ------------------------------------------------------------------------------------------------ the loop

def decay_groups(model: nn.Module, weight_decay: float, decay: str) -> list[dict]:
    """"all": every parameter decayed (a plain loop); "linear": the nn.Linear weights only (not the embeddings,
    norms, biases, scale/offset maps or position tables)."""
    if decay == "all":
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = list(model.parameters())
    return [{"params": [p for p in params if id(p) in linear], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in linear], "weight_decay": 0.0}]


def heldout_loss(logits_of: Callable, model: nn.Module, windows: torch.Tensor, batch: int) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for rows in windows.split(batch):
            logits = logits_of(model, rows[:, :-1]).float()
            total += F.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="sum").item()
            count += rows[:, 1:].numel()
    model.train()
    return total / count


def train_arm(arm: Arm, seed: int, batches: list[torch.Tensor], windows: torch.Tensor, a: argparse.Namespace,
              log: Callable[[str], None] = lambda line: print(line, flush=True)) -> dict:
    """Build the arm's model from `seed`, train it on `batches` with the plain loop, return its record."""
    impl = IMPLS[arm.impl]
    torch.manual_seed(seed)
    model = impl["build"](arm, a.preset, a.context)
    for name, value in arm.tweaks.items():
        TWEAKS[name](model, value)
    opt = torch.optim.AdamW(decay_groups(model, a.weight_decay, a.decay), lr=a.lr, betas=tuple(a.betas))
    train_losses, curve = [], []
    t0 = time.perf_counter()
    for step, rows in enumerate(batches, 1):
        logits = impl["logits"](model, rows[:, :-1])
        loss = F.cross_entropy(logits.float().transpose(1, 2), rows[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        train_losses.append(loss.item())
        if a.log_every and step % a.log_every == 0:
            log(f"  {arm.spec} seed {seed}: step {step}, training loss {loss.item():.4f}")
        if a.eval_every and step % a.eval_every == 0 and step < len(batches):
            curve.append([step, heldout_loss(impl["logits"], model, windows, a.batch)])
    seconds = time.perf_counter() - t0
    final = heldout_loss(impl["logits"], model, windows, a.batch)
    curve.append([len(batches), final])
    log(f"{arm.spec} seed {seed}: held-out {final:.4f} after {len(batches)} steps (training loss "
        f"{train_losses[-1]:.4f}, {seconds:.0f} s)")
    return dict(arm=arm.spec, seed=seed, heldout=final, curve=curve, train_losses=train_losses, seconds=seconds,
                params=sum(p.numel() for p in model.parameters()))


def run_key(spec: str, seed: int) -> str:
    return f"{spec}|seed {seed}"


def summary_lines(runs: list[dict], arms: list[str]) -> list[str]:
    """A Markdown table: per arm, the mean final held-out loss over its seeds, each seed's, and the difference of
    the mean from the first arm's."""
    means = {}
    for spec in arms:
        losses = [r["heldout"] for r in runs if r["arm"] == spec]
        if losses:
            means[spec] = (sum(losses) / len(losses), losses)
    if not means:
        return []
    first = next(iter(means.values()))[0]
    rows = [(f"`{spec}`", f"{mean:.4f}", " / ".join(f"{x:.4f}" for x in losses), f"{mean - first:+.4f}")
            for spec, (mean, losses) in means.items()]
    return md_table(("arm", "held-out loss (mean)", "per seed", "Δ vs first arm"), rows)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arms", nargs="+", default=["flashgau", "lucidrains"], metavar="ARM",
                   help="models to train side by side (default: flashgau lucidrains); see the module's docstring "
                        "for the +name=value changes")
    p.add_argument("--preset", default="small", help="flashgau preset of the shapes (default: small)")
    p.add_argument("--steps", type=int, default=60, help="optimizer steps per run (default: 60)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    p.add_argument("--batch", type=int, default=8, help="windows per step (default: 8)")
    p.add_argument("--context", type=int, default=512, help="bytes per window (default: 512)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW's learning rate, constant (default: 0.002)")
    p.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.95], help="AdamW's betas (default: 0.9 0.95)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW's decoupled weight decay (default: 0.1)")
    p.add_argument("--decay", choices=("all", "linear"), default="all",
                   help="which parameters decay: all (default, a plain loop) or the Linear weights only")
    p.add_argument("--heldout-windows", type=int, default=64, help="held-out windows scored (default: 64)")
    p.add_argument("--eval-every", type=int, default=0, help="also score the held-out windows every N steps "
                   "(default: 0, at the end only)")
    p.add_argument("--log-every", type=int, default=0, help="print the training loss every N steps (default: 0, "
                   "never)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=None, help="JSON file of the runs; runs already in it are not trained again")


def run(a: argparse.Namespace) -> int:
    if a.threads:
        torch.set_num_threads(a.threads)
    arms = []
    for spec in a.arms:
        if spec.split("+")[0] == "lucidrains" and not lucidrains_available():
            print(f"{spec}: {LUCIDRAINS_MISSING}", flush=True)
            continue
        arms.append(parse_arm(spec))
    for name in ("steps", "batch", "context", "heldout_windows"):
        if getattr(a, name) < 1:
            raise FlashgauError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(a, name)}")
    out = Path(a.out) if a.out else None
    saved = (read_json(out) or {}) if out else {}
    runs: dict[str, dict] = dict(saved.get("runs", {}))
    settings = {k: getattr(a, k) for k in ("preset", "steps", "batch", "context", "lr", "betas", "weight_decay",
                                           "decay", "heldout_windows")}
    if saved.get("settings") not in (None, settings):
        raise FlashgauError(f"{out} holds runs made with other settings ({saved['settings']}); give another --out")
    train_data, heldout_data = plays_bytes()
    windows = heldout_windows(heldout_data, a.heldout_windows, a.context)
    for seed in a.seeds:
        batches = training_batches(train_data, seed, a.steps, a.batch, a.context)
        for arm in arms:
            key = run_key(arm.spec, seed)
            if key in runs:
                continue
            runs[key] = train_arm(arm, seed, batches, windows, a)
            if out:
                write_json(out, dict(settings=settings, env=saved.get("env") or environment(), runs=runs))
    wanted = [r for r in runs.values() if r["arm"] in {arm.spec for arm in arms} and r["seed"] in a.seeds]
    print("\n".join(summary_lines(wanted, [arm.spec for arm in arms])))
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    from .common import main as bench_main
    return bench_main("learn-parity", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
