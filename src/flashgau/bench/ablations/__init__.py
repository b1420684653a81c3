"""`flashgau bench ablations`: named model variants trained side by side, the paper's ablations (reference §8.4) and
the candidates for FLASH's defaults, each a row with its held-out loss, step time and parameters.

A group asks one question: its variants (an arch and ModelConfig options on top of the group's preset, or another
learning rate) train with one budget (equal steps, or equal seconds of training steps: evaluation is not charged)
at one or more contexts, over seeds, and the report gives each variant's final held-out loss against the group's
reference (paired by seed: the same data order and initial draw), and, for the paper's claims, whether the
measurement agrees (report.py). Runs go through the quality benchmark's functions (quality.train_one: the
`flashgau train` loop), so a row is an ordinary training run; a variant shared by several groups is trained once
(a run's key is its preset, context, budget, seed, arch and a hash of its model and learning rate), and the
benchmark is resumable run by run like the others.

Groups (GROUPS; `--groups` picks some): candidates (token shift, init, norm, partial RoPE, relative bias, the causal
linear normaliser, one at a time on top of token shift, against the FLASH of flashgau 0.1.0), defaults (the ones
chosen, over two seeds), lr (a small sweep per arch), token_shift_archs (token shift in each baseline), the paper's
ablations at 1K on the paper's model (`small-paper`; 4K where the context matters): GAU heads, relu^2 vs softmax,
the parts of mixed chunk attention, MC-TFM++, chunk size, s, GAU against MHSA, the causal linear normaliser, fp32
attention kernels under bf16 training (4K); the baselines' settings (Combiner's pooling).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from ...config import ModelConfig, PAPER_SUFFIX
from ...runtime import resolve_device, resolve_precision
from .. import common
from .. import quality

TODAY = quality.TODAY                   # the FLASH defaults of flashgau 0.1.0: the variants' "today"
SHIFT = dict(TODAY, token_shift=0.5)


@dataclass(frozen=True)
class Variant:
    """One row: `arch` with `model` options on top of the group's preset (nothing: the preset's defaults, whatever
    they are when it runs), at learning rate `lr` (None: the benchmark's)."""

    label: str
    arch: str = "flash"
    model: dict = field(default_factory=dict)
    lr: Optional[float] = None


@dataclass(frozen=True)
class Claim:
    """A claim of the paper about two variants of a group, and what it predicts for held-out loss(a) - loss(b):
    "lower" (a better), "not_lower" (a not better) or "similar" (within the noise)."""

    text: str
    a: str
    b: str
    expect: str


@dataclass(frozen=True)
class Group:
    name: str
    title: str
    preset: str
    contexts: tuple[int, ...]
    series: str                     # "steps" or "time"
    budget: float                   # steps, or seconds of training steps
    variants: tuple[Variant, ...]
    reference: str                  # the label the others are compared with
    seeds: tuple[int, ...] = (0, 1)
    claims: tuple[Claim, ...] = ()
    note: str = ""

    def variant(self, label: str) -> Variant:
        return next(v for v in self.variants if v.label == label)


def _v(label: str, arch: str = "flash", lr: Optional[float] = None, **model) -> Variant:
    return Variant(label, arch, model, lr)


CANDIDATES = Group(
    "candidates", "What makes FLASH learn fast, one candidate at a time (512, 60 steps)", "small", (512,),
    "steps", 60, (
        _v("today (flashgau 0.1.0)", **TODAY),
        _v("token shift 0.5", **SHIFT),
        _v("token shift 0.25", **dict(SHIFT, token_shift=0.25)),
        _v("+ init scaled", **dict(SHIFT, init="scaled")),
        _v("+ init fan_in", **dict(SHIFT, init="fan_in")),
        _v("+ scalenorm", **dict(SHIFT, norm="scalenorm")),
        _v("+ rope_fraction 0.5", **dict(SHIFT, rope_fraction=0.5)),
        _v("+ rope_fraction 0.25", **dict(SHIFT, rope_fraction=0.25)),
        _v("+ rel_pos none", **dict(SHIFT, rel_pos="none")),
        _v("+ rel_pos rope", **dict(SHIFT, rel_pos="rope")),
        _v("+ linear_normalizer sum", **dict(SHIFT, linear_normalizer="sum")),
    ), "today (flashgau 0.1.0)",
    note="Every candidate (+) is added to token shift 0.5 alone. A plain loop: 8 windows x 512 bytes per step, "
         "lr 2e-3, 60 steps.")

LR = Group(
    "lr", "Learning rate per arch (512, 60 steps)", "small", (512,), "steps", 60, (
        _v("flash lr 1e-3", lr=1e-3), _v("flash lr 2e-3", lr=2e-3), _v("flash lr 4e-3", lr=4e-3),
        _v("transformer++ lr 1e-3", "transformer++", lr=1e-3, token_shift=0.5),
        _v("transformer++ lr 2e-3", "transformer++", lr=2e-3, token_shift=0.5),
        _v("transformer++ lr 4e-3", "transformer++", lr=4e-3, token_shift=0.5),
        _v("transformer++ today (no token shift)", "transformer++", lr=2e-3, **TODAY),
    ), "flash lr 2e-3", seeds=(0,),
    note="The presets' defaults of each arch at the time (token shift 0.5 and the fan_in init for every arch; "
         "Transformer++ has no token shift by default since the group token_shift_archs).")

DEFAULTS_GROUP = Group(
    "defaults", "The new defaults against flashgau 0.1.0's FLASH over two seeds (512, 60 steps)", "small",
    (512,), "steps", 60, (
        _v("today (flashgau 0.1.0)", **TODAY),
        _v("token shift 0.5 (only)", **SHIFT),
        _v("defaults (token shift 0.5, init fan_in)"),
        _v("token shift 0.25, init fan_in", **dict(TODAY, token_shift=0.25, init="fan_in")),
    ), "today (flashgau 0.1.0)",
    note="The defaults of the presets since: token_shift 0.5 and init fan_in, the two candidates of the group "
         "candidates whose effect exceeds the noise; the rest keep the paper's values.")

TOKEN_SHIFT_ARCHS = Group(
    "token_shift_archs", "Token shift in the Transformer baselines: on (0.5) or off (512, 100 steps)", "small", (512,),
    "steps", 100, tuple(_v(f"{arch} {label}", arch, token_shift=ts)
                        for arch in ("transformer++", "mc-transformer++", "transformer+", "performer", "combiner")
                        for label, ts in (("token shift 0.5", 0.5), ("no token shift", 0.0))),
    "transformer++ token shift 0.5",
    note="Every other setting is the preset's default (init fan_in). Read each arch's pair: the Δ column compares "
         "with Transformer++ with token shift. The group lr found token shift (0.5) holding Transformer++ on "
         "the unigram plateau at 60 steps. Seed 1 was run for Transformer++ and MC-TFM++ only.")

# The paper's ablations (reference §8.4), on the paper's model: equal seconds of training steps at 1K (and 4K where the
# context matters), every row compared with the paper's FLASH (or FLASH-Quad) at the same budget.
PAPER_FLASH = _v("FLASH (paper)")
PAPER_QUAD = _v("FLASH-Quad (paper)", "flash-quad")
PAPER_TIME = 120.0


def _paper(name: str, title: str, variants: tuple[Variant, ...], claims: tuple[Claim, ...], contexts=(1024,),
           reference: str = PAPER_FLASH.label, note: str = "") -> Group:
    return Group(name, title, "small-paper", contexts, "time", PAPER_TIME, variants, reference, seeds=(0,),
                 claims=claims, note=note)


HEADS = _paper("heads", "GAU heads: one head vs four at equal cost", (PAPER_FLASH, _v("4 heads", gau_heads=4)), (
    Claim("One head suffices for GAU: several heads are not better at equal cost", "4 heads", PAPER_FLASH.label,
          "not_lower"),), note="4 heads: each with 32 of the s = 128 query/key channels and 128 of the e = 512 "
                              "value channels; the same parameters and multiply-adds.")
SOFTMAX = _paper("softmax", "relu^2 vs softmax inside GAU", (PAPER_FLASH, _v("softmax", gau_attention="softmax")), (
    Claim("relu^2 and softmax inside GAU give about equal quality", "softmax", PAPER_FLASH.label, "similar"),),
    note="softmax: FLASH's local part softmax(q.k / sqrt(s) + b) over the chunk's visible keys; the global part "
         "unchanged.")
PARTS = _paper("parts", "Mixed chunk attention: local only, global only, both", (
    PAPER_FLASH, _v("local only", mixed_chunk_parts="local"), _v("global only", mixed_chunk_parts="global")), (
    Claim("The local part matters more than the global part", "local only", "global only", "lower"),
    Claim("Local and global together are best", PAPER_FLASH.label, "local only", "lower")), contexts=(1024, 4096),
    note="global only: causal, a token sees the earlier chunks' average and nothing of its own chunk (the paper's "
         "causal global part is exclusive).")
MCTFM = _paper("mctfm", "FLASH against MC-TFM++ (Transformer++ with mixed chunk attention)", (
    PAPER_FLASH, _v("MC-TFM++", "mc-transformer++")), (
    Claim("FLASH beats MC-TFM++", PAPER_FLASH.label, "MC-TFM++", "lower"),))
CHUNK = _paper("chunk", "Chunk size C = 128, 256, 512, 1024", (
    _v("C = 128", chunk_size=128), PAPER_FLASH, _v("C = 512", chunk_size=512), _v("C = 1024", chunk_size=1024)), (
    Claim("Chunk sizes 128 to 1024 give similar quality (256 chosen)", "C = 128", PAPER_FLASH.label, "similar"),
    Claim("Chunk sizes 128 to 1024 give similar quality (256 chosen)", "C = 512", PAPER_FLASH.label, "similar"),
    Claim("Chunk sizes 128 to 1024 give similar quality (256 chosen)", "C = 1024", PAPER_FLASH.label, "similar")),
    contexts=(1024, 4096), note="The reference is C = 256. At 1K, C = 1024 is one chunk: quadratic attention with "
                                "no global part (the paper's relative bias is then RoPE-factorised, n > 512).")
GAU_MHSA = _paper("gau_vs_mhsa", "GAU against MHSA + MLP and MHSA + GLU", (
    PAPER_QUAD, _v("Transformer+ (MHSA + MLP)", "transformer+"), _v("Transformer++ (MHSA + GLU)", "transformer++")), (
    Claim("GAU dominates MHSA + MLP on the speed-quality plane", PAPER_QUAD.label, "Transformer+ (MHSA + MLP)",
          "lower"),
    Claim("GAU dominates MHSA + GLU on the speed-quality plane", PAPER_QUAD.label, "Transformer++ (MHSA + GLU)",
          "lower")), reference=PAPER_QUAD.label,
    note="Quadratic attention on both sides (FLASH-Quad: 8 GAU layers; the Transformers: 4 layers), equal training "
         "seconds, so a lower loss is a better point on the speed-quality plane.")
QK_DIM = _paper("qk_dim", "Shared query/key width s = 128 vs 512 (the TriviaQA rows)", (
    PAPER_QUAD, _v("FLASH-Quad s = 512", "flash-quad", qk_dim=512)), (
    Claim("s = 512 beats s = 128 (FLASH-Quad, TriviaQA pre-training perplexity 3.12 vs 3.24)",
          "FLASH-Quad s = 512", PAPER_QUAD.label, "lower"),), reference=PAPER_QUAD.label)
NORMALISERS = _paper("normalisers", "FLASH's causal linear normaliser: the paper's average vs the sum", (
    PAPER_FLASH, _v("linear_normalizer sum", linear_normalizer="sum")), (), contexts=(1024, 4096),
    note="sum: the visible chunk summaries / C (lucidrains, OpenNLPLab); the paper's Code 8 averages them.")
ATTENTION_PRECISION = _paper(
    "attention_precision", "GAU attention kernels in fp32 under bf16 training", (
        PAPER_FLASH, _v("fp32 attention kernels", attention_precision="fp32")), (), contexts=(4096,),
    note="fp32 attention kernels (attention_precision fp32): GAU's relu^2 scores, weights and products with "
         "the values in fp32, its projections in bf16; the paper's (auto) runs them in bf16 (the chunk summaries "
         "stay fp32 in both). Only meaningful where the runs train in bf16 (--precision auto on a "
         "CPU with fast bf16, or a GPU): in fp32 training both rows are the same model.")
POOLING = Group(
    "combiner_pooling", "Combiner: chunk summaries pooled from rotated or un-rotated keys",
    "small", (512,), "steps", 100, (
        _v("Combiner (rotated)", "combiner", combiner_pooling="rotated"),
        _v("Combiner (unrotated)", "combiner", combiner_pooling="unrotated")), "Combiner (rotated)",
    note="C = sqrt(T) = 32 (the quality benchmark's setting for Combiner).")

GROUPS: dict[str, Group] = {g.name: g for g in (CANDIDATES, DEFAULTS_GROUP, LR, TOKEN_SHIFT_ARCHS, HEADS, SOFTMAX,
                                                PARTS, MCTFM, CHUNK, GAU_MHSA, QK_DIM, NORMALISERS,
                                                ATTENTION_PRECISION, POOLING)}

DEFAULTS = dict(batch_tokens=4096, eval_tokens=16384, precision="auto", lr=2e-3)
QUICK = dict(preset="tiny", context=128, steps=6, time_budget=3.0, seeds=(0,), batch_tokens=1024, eval_tokens=1024)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=None, metavar="GROUP",
                   help=f"groups to train (default: all: {' '.join(GROUPS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                   help="seeds (default: each group's own; --quick: 0)")
    p.add_argument("--contexts", nargs="+", type=int, default=None, metavar="T",
                   help="only these of each group's contexts (default: all of them)")
    p.add_argument("--batch-tokens", type=int, default=None, metavar="N",
                   help=f"tokens per step (default: {DEFAULTS['batch_tokens']})")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate of the variants that do not set their "
                   f"own (default: {DEFAULTS['lr']:g})")
    p.add_argument("--eval-tokens", type=int, default=None, metavar="N",
                   help="tokens of the fixed held-out subset scored during training "
                   f"(default: {DEFAULTS['eval_tokens']})")
    common.add_common_arguments(p, precision_default=DEFAULTS["precision"])
    p.add_argument("--data", default=None, metavar="PATH", help="corpus (default: the Shakespeare book corpus)")
    p.add_argument("--heldout-fraction", type=float, default=0.02, help="share of the corpus held out (default: "
                   "0.02, as bench quality)")
    p.add_argument("--keep-checkpoints", action="store_true", help="keep each finished run's checkpoint.pt")
    p.add_argument("--max-runs", type=int, default=None, metavar="N", help="train at most N of the missing runs, "
                   "then write the report (to drive the benchmark run by run, e.g. one run per lock)")
    p.add_argument("--list", action="store_true", help="print the runs the groups ask for and which are done; "
                   "train nothing")
    p.add_argument("--quick", action="store_true", help="a reduced version: every group at the tiny preset, context "
                   f"{QUICK['context']}, {QUICK['steps']} steps or {QUICK['time_budget']:g} s, seed 0")
    p.add_argument("--report-only", action="store_true", help="rebuild the reports from saved runs; train nothing")


def quick_group(g: Group) -> Group:
    """The --quick version of a group: tiny preset (its -paper twin for a paper group), one short context."""
    preset = QUICK["preset"] + (PAPER_SUFFIX if g.preset.endswith(PAPER_SUFFIX) else "")
    budget = QUICK["steps"] if g.series == "steps" else QUICK["time_budget"]
    variants = tuple(dataclasses.replace(v, model={k: x for k, x in v.model.items() if k not in ("qk_dim",
                                                                                                  "chunk_size")})
                     for v in g.variants)
    return dataclasses.replace(g, preset=preset, contexts=(QUICK["context"],), budget=budget, variants=variants,
                               seeds=QUICK["seeds"])


def settings(g: Group, args, device) -> quality.QualitySettings:
    """The quality benchmark's settings for the runs of group `g` (one preset, the group's budget)."""
    o = common.options(args, DEFAULTS, QUICK)
    return quality.QualitySettings(
        archs=sorted({v.arch for v in g.variants}), preset=g.preset, contexts=list(g.contexts),
        seeds=list(args.seeds or g.seeds), time_budget=g.budget if g.series == "time" else None,
        steps=int(g.budget) if g.series == "steps" else None, batch_tokens=o["batch_tokens"],
        micro_batch_tokens=8192, lr=o["lr"], warmup_steps=20, precision=o["precision"],
        precision_reason=resolve_precision(o["precision"], device).describe(), eval_tokens=o["eval_tokens"],
        heldout_fraction=args.heldout_fraction, data=args.data, quick=bool(args.quick), device=str(device),
        series=[g.series], arch_options={})


def model_options(v: Variant, arch_options: dict) -> dict:
    """The ModelConfig options of a variant's runs: the quality benchmark's baseline settings for its arch, then the
    variant's own."""
    return {**quality.ARCH_OPTIONS.get(v.arch, {}), **arch_options.get(v.arch, {}), **v.model}


def run_key(v: Variant, context: int, seed: int, s: quality.QualitySettings) -> str:
    """preset, context, budget, seed, arch, and a hash of what the variant changes from the paper's model at that
    size (the resolved ModelConfig fields that differ, and the learning rate): a variant of the defaults gets a new
    key when a default changes, and a new field that keeps the paper's value changes no key."""
    size = s.preset[:-len(PAPER_SUFFIX)] if s.preset.endswith(PAPER_SUFFIX) else s.preset
    cfg = ModelConfig.for_context(s.preset, arch=v.arch, context=context, **model_options(v, {})).to_dict()
    paper = ModelConfig.for_context(size + PAPER_SUFFIX, arch=v.arch, context=context).to_dict()
    diff = {k: x for k, x in cfg.items() if paper.get(k) != x}
    digest = hashlib.sha1(json.dumps(dict(diff, lr=v.lr or s.lr), sort_keys=True).encode()).hexdigest()[:8]
    return f"{s.preset}-T{context}-{s.budget_label(s.series[0], context)}-seed{seed}-{v.arch}-{digest}" \
           f"{common.device_tag(torch.device(s.device), s.precision)}"


def planned(groups: Sequence[Group], args, device) -> list[tuple[Group, quality.QualitySettings, Variant, int, int,
                                                                    str]]:
    """Every (group, settings, variant, context, seed, key) the groups ask for, in training order: per group, per
    context and seed, the variants interleaved."""
    out = []
    for g in groups:
        s = settings(g, args, device)
        for T in (t for t in g.contexts if not args.contexts or t in args.contexts):
            for seed in s.seeds:
                for v in g.variants:
                    out.append((g, s, v, T, seed, run_key(v, T, seed, s)))
    return out


def chosen_groups(args) -> list[Group]:
    groups = [GROUPS[n] for n in (args.groups or GROUPS)]
    return [quick_group(g) for g in groups] if args.quick else groups


def run(args: argparse.Namespace) -> int:
    from .report import build_report, markdown, plot

    device = resolve_device(args.device)
    out = common.results_folder(args.out, device)
    stem = "ablations-quick" if args.quick else "ablations"
    runs_dir = out / "runs" / stem
    store = common.ResultStore(runs_dir)
    groups = chosen_groups(args)
    plan = planned(groups, args, device)
    if args.list:
        for g, _s, v, T, seed, key in plan:
            print(f"{'done' if store.has(key) else 'todo'}  {g.name:10s} {v.label:36s} T={T} seed {seed}  {key}")
        return 0
    if plan:
        print(f"device {device}, precision {plan[0][1].precision_reason}", flush=True)
    budget = quality.Budget(args.max_runs)
    for g, s, v, T, seed, key in plan if not args.report_only else ():
        def train_run(g=g, s=s, v=v, T=T, seed=seed, key=key):
            rec = quality.train_one(v.arch, T, seed, s, runs_dir / key, args.keep_checkpoints, series=s.series[0],
                                    model=model_options(v, {}), lr=v.lr)
            return dict(rec, variant=v.label, group=g.name)
        if not quality.train_and_save(store, key, train_run, "ablations", budget):
            return 1
    floor = quality.unigram_floor(args.data, args.heldout_fraction)
    common.write_reports(out, stem, build_report(store, groups, plan, floor, device), markdown, plot)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return common.main("ablations", add_arguments, run, argv)
