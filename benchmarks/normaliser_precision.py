"""Issue 20, items 2 and 4, measured on trained runs (held-out scoring only; no training):

- item 2, FLASH-Quad's normaliser: a FLASH-Quad run trained at context T with the "fixed" normaliser (n = T) is
  scored with "fixed" and with "paper" (n = each row's real length) on the held-out windows at T and at other
  lengths. Training windows are full (T tokens), so both forms train identically; they part only where a row is
  not T tokens long.
- item 4, GAU attention precision under bf16 autocast: on a FLASH run trained at 4K, each layer's mixed chunk
  attention is recomputed from the activations of held-out windows with attention_precision "auto" (the op in bf16)
  and "fp32" (the op in fp32 on the same bf16-rounded maps), against float64; and the whole model's held-out loss
  in fp32, in bf16 with "auto" and in bf16 with "fp32".

    python benchmarks/normaliser_precision.py --quad RUN [RUN ...] --flash RUN [--windows N] [--out DIR]

writes DIR/normaliser-precision.{md,json} (DIR: benchmarks/results). Run it alone on the machine (bf16 products are
slow on CPUs without AVX512-BF16/AMX, ~80x on an AVX2 EPYC).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from flashgau import LanguageModel
from flashgau.bench.common import env_markdown, environment, md_table, write_json, write_text
from flashgau.data.batching import HeldoutWindows
from flashgau.layers import flash as flash_layer
from flashgau.runtime import resolve_precision
from flashgau.training.evaluate import evaluate
from flashgau.training.setup import prepare_run_data
from flashgau.training.trained import load_trained


def _run_data(trained):
    return prepare_run_data(trained.train_config, trained.tokenizer, trained.data_fingerprint, "eval")


def _with(model: LanguageModel, **changes) -> LanguageModel:
    """The same weights under another ModelConfig (fields that change no parameter)."""
    other = LanguageModel(dataclasses.replace(model.config, **changes))
    other.load_state_dict(model.state_dict())
    return other.eval()


def normaliser_transfer(run: str, factors=(0.25, 0.5, 1, 2), windows: int = 64) -> dict:
    """Held-out loss of one FLASH-Quad run, scored with the "fixed" and the "paper" normaliser at lengths
    factor x its training length (a fixed subset of `windows` windows per length, the same for both)."""
    trained = load_trained(run)
    T = trained.train_config.context
    data = _run_data(trained)
    byte_lengths = trained.tokenizer.token_byte_lengths()
    rows = []
    for f in factors:
        L = int(T * f)
        held = HeldoutWindows(data.heldout_docs, L)
        row = dict(length=L, windows=min(windows, len(held)))
        for norm in ("fixed", "paper"):
            model = _with(trained.model, normalizer=norm)
            row[norm] = evaluate(model, held, byte_lengths, batch_size=max(1, 8192 // L), limit=windows).loss
        rows.append(row)
        print(f"  FLASH-Quad trained at {T}: scored at {L}: fixed {row['fixed']:.4f}, paper {row['paper']:.4f}",
              flush=True)
    return dict(run=str(run), context=T, step=trained.step, quad_norm_len=trained.model.config.quad_norm_len,
                rows=rows)


def attention_precision(run: str, windows: int = 2) -> dict:
    """Per layer, the relative error (Frobenius, against float64) of the attention op's output under bf16 autocast
    with attention_precision "auto" and "fp32", on the maps a bf16 forward hands it; and the held-out loss of the
    model in fp32 and in bf16 with each setting, on `windows` fixed held-out windows."""
    from flashgau.ops import mixed_chunk_attention

    trained = load_trained(run)
    T = trained.train_config.context
    data = _run_data(trained)
    held = HeldoutWindows(data.heldout_docs, T)
    bf16 = resolve_precision("bf16", torch.device("cpu"))
    byte_lengths = trained.tokenizer.token_byte_lengths()
    layers = []
    real_op = flash_layer.mixed_chunk_attention

    def recording(*args, **kwargs):                 # the maps a bf16 forward gives the op, and its options
        layers.append(([a.detach() for a in args], dict(kwargs)))
        return real_op(*args, **kwargs)

    batch = next(held.batches(1, limit=1))
    flash_layer.mixed_chunk_attention = recording
    try:
        with torch.no_grad(), bf16.autocast():
            trained.model(batch.input_ids)
    finally:
        flash_layer.mixed_chunk_attention = real_op
    errors = []
    for i, (args, kwargs) in enumerate(layers):
        kwargs = dict(kwargs, output_final_state=False)
        ref = mixed_chunk_attention(*(a.double() for a in args), **kwargs)[0]
        with torch.no_grad(), bf16.autocast():
            auto = mixed_chunk_attention(*args, **kwargs)[0]                       # bf16 maps, op under autocast
        with torch.no_grad():
            fp32 = mixed_chunk_attention(*(a.float() for a in args), **kwargs)[0]   # the same maps, op in fp32
        rel = lambda o: float((o.double() - ref).norm() / ref.norm())            # noqa: E731
        errors.append(dict(layer=i, auto=rel(auto), fp32=rel(fp32)))
        print(f"  layer {i}: relative error of the attention output, auto {errors[-1]['auto']:.2e}, "
              f"fp32 {errors[-1]['fp32']:.2e}", flush=True)
    losses = {}
    for name, model, precision in (("fp32 (no autocast)", trained.model, None),
                                   ("bf16, attention auto", trained.model, bf16),
                                   ("bf16, attention fp32", _with(trained.model, attention_precision="fp32"), bf16)):
        t0 = time.perf_counter()
        losses[name] = evaluate(model, held, byte_lengths, batch_size=1, precision=precision, limit=windows).loss
        print(f"  held-out loss, {name}: {losses[name]:.5f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return dict(run=str(run), context=T, step=trained.step, windows=windows, layers=errors, losses=losses)


def markdown(rep: dict) -> str:
    L = ["# FLASH-Quad's normaliser and GAU attention precision (issue 20, items 2 and 4)", "",
         "FLASH is the paper's model (Hua et al. 2022), not FlashAttention. Held-out scoring of trained runs only; "
         "see docs/normalisers.md and docs/model_options.md for what follows from it.", "", env_markdown(rep["env"])]
    for t in rep["normaliser"]:
        L += [f"## FLASH-Quad trained at {t['context']} (n = {t['quad_norm_len']}, step {t['step']}), scored with "
              "each normaliser", "",
              "Held-out loss (nats per byte) on a fixed subset of held-out windows of each length. At the training "
              "length every window is full, so \"paper\" (n = the row's length) divides by the same n as \"fixed\".",
              "", *md_table(["scored at", "windows", "fixed (n = training length)", "paper (n = row length)",
                             "paper - fixed"],
                            [[r["length"], r["windows"], f"{r['fixed']:.4f}", f"{r['paper']:.4f}",
                              f"{r['paper'] - r['fixed']:+.4f}"] for r in t["rows"]]), ""]
    p = rep.get("precision")
    if p:
        L += [f"## GAU attention in bf16 vs fp32 under bf16 autocast (FLASH trained at {p['context']}, step "
              f"{p['step']})", "",
              "Relative error (Frobenius norm, against float64 on the same inputs) of each layer's mixed chunk "
              "attention output, on the maps a bf16 forward of one held-out window hands the op: \"auto\" runs the "
              "op under bf16 autocast, \"fp32\" runs it in fp32 (attention_precision=\"fp32\").", "",
              *md_table(["layer", "auto (bf16)", "fp32"],
                        [[e["layer"], f"{e['auto']:.2e}", f"{e['fp32']:.2e}"] for e in p["layers"]]), "",
              f"Held-out loss of the whole model on {p['windows']} fixed held-out windows of {p['context']} tokens:", "",
              *md_table(["precision", "held-out loss"], [[k, f"{v:.5f}"] for k, v in p["losses"].items()]), ""]
    return "\n".join(L)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quad", nargs="*", default=[], metavar="RUN", help="FLASH-Quad run folders (fixed normaliser)")
    p.add_argument("--flash", default=None, metavar="RUN", help="a FLASH run folder trained at 4K")
    p.add_argument("--windows", type=int, default=2, help="held-out windows scored in bf16 (slow on most CPUs)")
    p.add_argument("--out", default="benchmarks/results")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    rep = dict(env=environment(torch.device("cpu")), normaliser=[normaliser_transfer(r) for r in a.quad],
               precision=attention_precision(a.flash, a.windows) if a.flash else None)
    out = Path(a.out)
    write_json(out / "normaliser-precision.json", rep)
    write_text(out / "normaliser-precision.md", markdown(rep))
    print(f"wrote {out / 'normaliser-precision'}.md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
