"""What torch.compile costs and gains for a training step here: the figures behind `flashgau train --compile auto`
(training/compiling.py's constants, docs/training.md "Compiling").

Small preset FLASH, fp32 (or bf16 autocast, as `--precision bf16` trains), forward + backward + AdamW step on random
bytes: a few eager steps, then the same model under torch.compile (the first step compiles), then a held-out-style
forward in eval mode under no_grad (the scoring graph), then training steps and scoring calls alternated, counting
dynamo's graphs (a recompile would add one), and last eager and compiled steps alternated (the speed-up side by
side, which host drift between the phases cannot bias). Usage, with a cold inductor cache (what a fresh machine pays)
and the CPU to itself:

    d=$(mktemp -d); flock -x /tmp/flashgau-cpu.lock env OMP_NUM_THREADS=2 TORCHINDUCTOR_CACHE_DIR=$d \
        PYTHONPATH=src python benchmarks/compile_cost.py CONTEXT BATCH STEPS [fp32|bf16]
"""
import sys, time, statistics, torch
from flashgau import ModelConfig, LanguageModel
from flashgau.runtime import keep_freed_memory, resolve_precision
import torch._dynamo
from torch._dynamo.utils import counters

ctx, batch, steps = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
precision = resolve_precision(sys.argv[4] if len(sys.argv) > 4 else "fp32", torch.device("cpu"))
print(f"precision {precision.describe()}", flush=True)
keep_freed_memory()                     # as the flashgau command does
torch.manual_seed(0)
def make():
    torch.manual_seed(0)
    cfg = ModelConfig.for_context("small", arch="flash", context=ctx, vocab_size=256, causal=True)
    m = LanguageModel(cfg); m.train()
    return m, torch.optim.AdamW(m.parameters(), lr=1e-4)
ids = torch.randint(0, 256, (batch, ctx + 1))
def step(fwd, opt):
    t = time.perf_counter()
    with precision.autocast():
        out = fwd(ids[:, :-1], labels=ids[:, 1:])
    out.loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t
m, opt = make()
eager = [step(m, opt) for _ in range(steps + 1)]
print(f"ctx {ctx} batch {batch} eager steps: first {eager[0]:.3f} s, then median {statistics.median(eager[1:]):.3f} s {['%.3f'%x for x in eager[1:]]}", flush=True)
m, opt = make()
c = torch.compile(m)
comp = [step(c, opt) for _ in range(steps + 1)]
med = statistics.median(comp[1:])
print(f"ctx {ctx} batch {batch} compiled: first step {comp[0]:.1f} s (compile ~{comp[0]-med:.1f} s), then median {med:.3f} s {['%.3f'%x for x in comp[1:]]}; speedup {statistics.median(eager[1:])/med:.2f}x", flush=True)
print("graphs after training:", dict(counters["stats"]), flush=True)
# eval at the same shape: first call compiles the inference graph; then alternate train/eval
def ev():
    m.eval()
    t = time.perf_counter()
    with torch.no_grad(), precision.autocast():
        c(ids[:, :-1])
    m.train()
    return time.perf_counter() - t
e1 = ev(); e2 = ev()
print(f"compiled eval: first {e1:.1f} s, second {e2:.3f} s", flush=True)
t_eager = time.perf_counter(); m.eval()
with torch.no_grad(), precision.autocast(): m(ids[:, :-1])
m.train(); t_eager = time.perf_counter() - t_eager
print(f"eager eval batch {t_eager:.3f} s", flush=True)
before = dict(counters["stats"])
more = [step(c, opt), ev(), step(c, opt), ev()]
print("alternating train/eval after warm-up:", ['%.3f'%x for x in more], "stats before", before, "after", dict(counters["stats"]), flush=True)
# the speed-up side by side: eager and compiled steps alternated, both graphs built (the host's speed drifts between
# the phases above: on the shared Xeon the eager phase alone measured 0.84 s and 0.47 s in two runs of one code)
rounds = [(step(m, opt), step(c, opt)) for _ in range(steps)]
e_med, c_med = (statistics.median(r[i] for r in rounds) for i in (0, 1))
print(f"side by side, {steps} rounds of an eager then a compiled step: eager {e_med:.3f} s, compiled {c_med:.3f} s; "
      f"speedup {e_med / c_med:.2f}x", flush=True)
