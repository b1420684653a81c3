"""Peak memory and counted FLOPs of one training step, per arch of a group.

On a CPU the step runs in a separate process (`python -m flashgau.bench.speed.memory SPEC`, one per group) with
glibc's mmap threshold fixed at 128 KiB, so freed tensors go back to the OS and the resident set tracks live
memory: the peak is the resident-set high-water mark (VmHWM, reset through /proc/self/clear_refs) during the step
minus the resident set before the model was built. On a CUDA device it runs in this process: the peak is
torch.cuda.max_memory_allocated during the step minus the memory allocated before the model was built. Either way
it counts weights, gradients, AdamW state, activations and workspace: what the step needs beyond the process. The
step runs once more under FlopCounterMode with the fast paths that skip work off (SKIPPING_FAST_PATHS: the plain
forms, whose matmul FLOPs bench/flops.py's formulas count), giving a counted FLOP total beside the analytic one
that checks the formulas (with activation checkpointing, the "checkpointed" series, the count includes the
recomputed forward).
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

from ...model import LanguageModel
from ...ops import fastpath
from ..flops import flop_counter
from .measure import make_step
from .plan import Group, SpeedSettings, model_config

# fast paths that skip matmul work of the plain form (bench/flops.py counts the plain forms' FLOPs)
SKIPPING_FAST_PATHS = ("causal_blocks", "global_trim")


class ResidentSet:
    """This process's resident set (Linux /proc), in bytes."""

    @staticmethod
    def _kib(field: str) -> int:
        return int(re.search(rf"{field}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))

    def now(self) -> int:
        return self._kib("VmRSS") * 1024

    def reset_peak(self) -> bool:
        """Start a new high-water mark; False where the kernel does not allow it."""
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def peak(self) -> int:
        return self._kib("VmHWM") * 1024


class CudaMemory:
    """Bytes allocated by PyTorch on a CUDA device."""

    def __init__(self, device) -> None:
        self.device = device

    def now(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.memory_allocated(self.device)

    def reset_peak(self) -> bool:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        return True

    def peak(self) -> int:
        torch.cuda.synchronize(self.device)
        return torch.cuda.max_memory_allocated(self.device)


def step_memory(spec: dict, meter) -> dict:
    """For each arch of spec["archs"]: the peak memory of one training step (after a first step has created the
    gradients and the AdamW state) and its counted FLOPs."""
    g, device = Group(**spec["group"]), torch.device(spec["device"])
    # one throwaway step first, so one-time allocations (thread pools, kernel caches) are not charged to an arch
    torch.manual_seed(0)
    make_step(LanguageModel(model_config(spec["archs"][0], "tiny", 64)).to(device), g.precision, 1, 64, 0)()
    out = {}
    for arch in spec["archs"]:
        gc.collect()
        before = meter.now()
        torch.manual_seed(spec["seed"])
        model = LanguageModel(model_config(arch, spec["preset"], g.context)).to(device)
        model.set_activation_checkpointing(g.series == "checkpointed")
        step = make_step(model, g.precision, g.batch, g.context, spec["seed"])
        step()                                       # creates gradients' buffers and the AdamW state
        gc.collect()
        steady = meter.now()
        resettable = meter.reset_peak()
        step()
        peak = meter.peak()
        counter = flop_counter()
        with counter, fastpath.plain(*SKIPPING_FAST_PATHS):    # the plain forms, whose FLOPs flops.py counts
            step()
        out[arch] = dict(peak_bytes=peak - before if resettable else None, steady_bytes=steady - before,
                         activation_bytes=peak - steady if resettable else None,
                         counted_flops=int(counter.get_total_flops()))
        del model, step, counter
    gc.collect()
    return out


def measure_memory(g: Group, archs: list[str], s: SpeedSettings) -> dict:
    """Per arch: peak_bytes, steady_bytes (weights, gradients, optimizer), activation_bytes, counted_flops; or
    {"error": ...} when the memory process failed."""
    spec = dict(group=g.to_dict(), archs=archs, preset=s.preset, seed=s.seed, device=s.device)
    device = torch.device(s.device)
    if device.type == "cuda":
        return step_memory(spec, CudaMemory(device))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run([sys.executable, "-m", __name__, json.dumps(spec)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"memory process exited with {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(step_memory(json.loads(sys.argv[1]), ResidentSet())))
