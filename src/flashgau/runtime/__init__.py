"""The hardware a run lands on: which device, which precision, and why; and the processes torchrun started.

Every other module asks here and none probes on its own:

    device = resolve_device("auto")                 # cuda:0 when a GPU is visible, else cpu
    precision = resolve_precision("auto", device)   # bf16 only where it is fast; fp32 otherwise
    with precision.autocast():                       # autocast on the device's type (nothing for fp32)
        loss = model(ids, labels=labels).loss
    print(precision.describe())                      # "fp32 (auto: bf16 matmuls 60x slower than fp32 on this CPU)"
    with join_process_group("auto") as dist:         # under torchrun: the process group (gloo / NCCL); else 1 process
        forward = dist.parallel(model, model)        # DDP (or FSDP with fsdp=True); the model itself for 1 process
    ok, why = compiler_status(device.type)           # whether torch.compile can build kernels here (no compile run)
    keep_freed_memory()                              # glibc keeps freed host memory for the next step (the CLI does)
"""

from .allocator import keep_freed_memory
from .compiler import compiler_status
from .device import describe_device, resolve_device
from .distributed import Distributed, PeerFailed, PeerLost, join_process_group
from .precision import PRECISIONS, Precision, cpu_bf16_probe, resolve_precision

__all__ = ["PRECISIONS", "Distributed", "PeerFailed", "PeerLost", "Precision", "compiler_status", "cpu_bf16_probe",
           "describe_device", "join_process_group", "keep_freed_memory", "resolve_device", "resolve_precision"]
