"""The QA report, built from the saved runs: the paper's TriviaQA table (reference §8.2) on the stand-in task, one
row per model: pre-training perplexity, fine-tuned EM, F1 and choice accuracy beside the task's floors, pre-training
and fine-tuning step latency reduction against Transformer+; Markdown and a plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Optional

from ..common import env_markdown, environment, fmt_ctx, md_table, save_figure, unique
from ..quality.report import _pm

PAPER = {  # reference §8.2: PT ppl, FT F1, PT / FT latency reduction against Transformer+ (TriviaQA, 4K)
    "transformer+": (3.48, 74.2, 1.00, 1.00), "combiner": (3.51, 67.2, 2.78, 2.75),
    "flash-quad-s128": (3.24, 72.7, 1.89, 1.79), "flash-quad-s512": (3.12, 74.8, 1.76, 1.67),
    "flash-s512": (3.23, 73.3, 2.61, 2.60), "flash-s512-first-to-all": (3.24, 73.9, 2.78, 2.69)}
REFERENCE = "transformer+"


def _mean(xs: list) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def build_report(store, s, rows) -> dict:
    """The report (JSON-ready) of the saved runs of `rows` at the settings `s`."""
    saved = {(r["key"], r["phase"]): r for r in store.all() if r.get("final") and "phase" in r}
    table = []
    for row in rows:
        runs = [(saved.get((s.key(row, seed), "pt")), saved.get((s.key(row, seed), "ft"))) for seed in s.seeds]
        runs = [(pt, ft) for pt, ft in runs if pt is not None and ft is not None]
        if not runs:
            continue
        f = [ft["final"] for _, ft in runs]
        table.append(dict(
            row=row.slug, label=row.label, arch=row.arch, model_options=runs[0][0]["model_options"],
            seeds=[pt["seed"] for pt, _ in runs], params=runs[0][0]["num_parameters"],
            pt_perplexity=[pt["final"]["perplexity"] for pt, _ in runs],
            pt_bits_per_byte=[pt["final"]["bits_per_byte"] for pt, _ in runs],
            pt_steps=[pt["steps"] for pt, _ in runs], pt_step_seconds=[pt["step_seconds"] for pt, _ in runs],
            ft_steps=[ft["steps"] for _, ft in runs], ft_step_seconds=[ft["step_seconds"] for _, ft in runs],
            answer_loss=[x["loss"] for x in f], exact_match=[x["exact_match"] for x in f], f1=[x["f1"] for x in f],
            choice=[x.get("choice") for x in f],        # None: a run saved before the choice score existed
            floor_frequent_em=f[0]["floor_frequent_em"], floor_frequent_f1=f[0]["floor_frequent_f1"],
            floor_random_em=f[0]["floor_random_em"], floor_random_f1=f[0]["floor_random_f1"],
            examples=f[0]["windows"], truncated=f[0]["truncated"], paper=PAPER.get(row.slug),
            samples=f[0].get("samples", [])))
    ref = next((r for r in table if r["row"] == REFERENCE), None)
    for r in table:
        for phase in ("pt", "ft"):
            mine, theirs = _mean(r[f"{phase}_step_seconds"]), ref and _mean(ref[f"{phase}_step_seconds"])
            r[f"{phase}_latency_reduction"] = theirs / mine if mine and theirs else None
    envs = unique([rec["env"] for rec in store.all() if rec.get("env")], key=lambda e: e.get("command"))
    return dict(settings=s.to_dict(), rows=table, env=envs or [environment()], headline=headline(table))


def above_floor(r: dict) -> bool:
    """Whether a row's mean F1 clears the higher of the two floors."""
    return _mean(r["f1"]) > max(r["floor_frequent_f1"], r["floor_random_f1"])


def choice_above_floor(r: dict) -> Optional[bool]:
    """Whether a row's mean choice accuracy clears the higher of the two floors' EM (None: no choice score saved)."""
    choice = _mean(r["choice"])
    return None if choice is None else choice > max(r["floor_frequent_em"], r["floor_random_em"])


def headline(table: list[dict]) -> list[dict]:
    out = []
    for r in table:
        note = "above the floors" if above_floor(r) else "NOT above the floors: says nothing of the arch"
        text = (f"{r['label']}: PT ppl {_mean(r['pt_perplexity']):.3f}, FT EM {_mean(r['exact_match']):.1f} "
                f"F1 {_mean(r['f1']):.1f} ({note}; floors F1 {r['floor_frequent_f1']:.1f} / "
                f"{r['floor_random_f1']:.1f})")
        if choice_above_floor(r) is not None:
            text += (f", choice {_mean(r['choice']):.1f} ({'above' if choice_above_floor(r) else 'NOT above'} the "
                     f"floors EM {r['floor_frequent_em']:.1f} / {r['floor_random_em']:.1f})")
        if r.get("pt_latency_reduction"):
            text += f", PT/FT latency reduction {r['pt_latency_reduction']:.2f}x / {r['ft_latency_reduction']:.2f}x"
        out.append(dict(text=text))
    return out


def markdown(rep: dict) -> str:
    s = rep["settings"]
    rows = rep["rows"]
    lines = [f"# Long-context QA, the paper's TriviaQA table on a stand-in task ({s['preset']} preset, "
             f"{fmt_ctx(s['context'])} context, {s['device']})", "",
             "FLASH here is the paper's model (Hua et al. 2022), not FlashAttention. The task is flashgau's stand-in "
             "for TriviaQA, **who speaks this line?** (docs/qa.md): the question quotes a line of a window of a play, "
             "the answer is the speaker tag before that speech; questions from the training plays, scores on 200 "
             "fixed questions from the held-out plays. Its figures compare the rows with each other, not with the "
             "paper's TriviaQA numbers (shown beside them for the shape).", "",
             f"Each row: pre-trained as a causal language model for {s['pretrain_seconds']:g} s of training steps, "
             f"then fine-tuned on the QA task (`--objective qa --init-from`) for {s['finetune_seconds']:g} s, "
             f"{s['batch_tokens']:,} tokens per step in both phases (fine-tuning: {s['batch_tokens'] // s['context']} "
             f"questions per step), peak lr {s['lr']:g} / {s['finetune_lr']:g}, precision {s['precision_reason']}, "
             f"seeds {', '.join(map(str, s['seeds']))} (mean ± half-range).", "",
             "- **PT ppl**: held-out perplexity per byte token of the pre-trained model (the held-out plays).",
             "- **EM / F1**: exact match and token F1 (percent) of the answers the fine-tuned model writes itself "
             "(greedy decoding with the constant-memory decoder).",
             "- **choice**: percent of questions where the speaker of the window the fine-tuned model finds likeliest "
             "(log-likelihood of the tag and its line break after the prompt) is the answer, compared as EM compares. "
             "Greedy EM reads 0 for a model that writes a name of its own; the choice still ranks rows near the "
             "floors.",
             "- **Floors** (same questions): always the window's most frequent speaker; a random speaker of the "
             "window. A row at or below them has not learned to find the line: its F1 (or choice, against the floors' "
             "EM) says nothing of its architecture.",
             "- **PT / FT latency reduction**: Transformer+'s seconds per step over the row's (equal batches), the "
             "paper's last column.", ""]
    if rows:
        r0 = rows[0]
        lines += [f"Floors on these questions: most frequent speaker EM {r0['floor_frequent_em']:.1f} F1 "
                  f"{r0['floor_frequent_f1']:.1f}; random speaker EM {r0['floor_random_em']:.1f} F1 "
                  f"{r0['floor_random_f1']:.1f} ({r0['examples']} questions, {r0['truncated']} windows cut on the "
                  "left).", ""]
    table = []
    for r in rows:
        p = r["paper"]
        red = lambda x: "–" if x is None else f"{x:.2f}×"  # noqa: E731
        table.append([r["label"], f"{r['params']:,}", _pm(r["pt_perplexity"]), _pm(r["exact_match"], "{:.1f}"),
                      _pm(r["f1"], "{:.1f}") + ("" if above_floor(r) else " ⚠"),
                      _pm(r["choice"], "{:.1f}") + (" ⚠" if choice_above_floor(r) is False else ""),
                      f"{red(r['pt_latency_reduction'])} / {red(r['ft_latency_reduction'])}",
                      f"{_mean(r['pt_step_seconds']):.2f} / {_mean(r['ft_step_seconds']):.2f}",
                      f"{_mean(r['pt_steps']):.0f} / {_mean(r['ft_steps']):.0f}",
                      "–" if p is None else f"{p[0]:.2f} · {p[1]:.1f} · {p[2]:.2f}× / {p[3]:.2f}×"])
    lines += md_table(["Model", "params", "PT ppl", "FT EM", "FT F1", "FT choice", "PT / FT latency reduction",
                       "s per step PT / FT", "steps PT / FT", "paper: PT ppl · F1 · reduction"], table)
    lines += ["", "⚠: F1 not above the higher floor's F1, or choice not above the higher floor's EM.", ""]
    if any(r["samples"] for r in rows):
        lines += ["## What the models write", "", "The first held-out questions of the first seed: the true speaker "
                  "tag, the answer the fine-tuned model wrote, the speaker of the window it finds likeliest (choice), "
                  "and the speakers of the window.", ""]
        lines += md_table(["Model", "answer", "written", "chosen", "speakers in the window"],
                          [[r["label"], x["answer"], x["predicted"] or "(nothing)", x.get("chosen", "–"),
                            ", ".join(x["speakers"])] for r in rows for x in r["samples"]])
        lines += [""]
    lines += ["## Run environment", ""]
    for env in rep["env"]:
        lines += [env_markdown(env), ""]
    return "\n".join(lines).rstrip() + "\n"


def plot(rep: dict, path: Path) -> None:
    """Left: fine-tuned F1 per row with the two floors; right: F1 against pre-training step latency."""
    from matplotlib.figure import Figure

    rows = rep["rows"]
    fig = Figure(figsize=(11, 4))
    ax, ax2 = fig.subplots(1, 2)
    if rows:
        labels = [r["label"] for r in rows]
        f1 = [_mean(r["f1"]) for r in rows]
        err = [[m - min(r["f1"]) for m, r in zip(f1, rows)], [max(r["f1"]) - m for m, r in zip(f1, rows)]]
        ax.barh(range(len(rows)), f1, xerr=err, color="C0")
        ax.axvline(rows[0]["floor_frequent_f1"], color="C3", ls="--", label="floor: most frequent speaker")
        ax.axvline(rows[0]["floor_random_f1"], color="C1", ls=":", label="floor: random speaker")
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel("held-out F1 (%)")
        ax.legend(fontsize=7)
        for r, y in zip(rows, f1):
            ax2.scatter(_mean(r["pt_step_seconds"]), y)
            ax2.annotate(r["label"], (_mean(r["pt_step_seconds"]), y), fontsize=7)
        ax2.set_xlabel("pre-training seconds per step")
        ax2.set_ylabel("held-out F1 (%)")
        ax2.grid(alpha=0.3)
    ax.set_title("Who speaks this line? Fine-tuned F1", fontsize=9)
    ax2.set_title("Quality against step latency", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
