"""The hardware a run lands on: which device, which precision, and why.

Every other module asks here and none probes on its own:

    device = resolve_device("auto")                 # cuda:0 when a GPU is visible, else cpu
    precision = resolve_precision("auto", device)   # bf16 only where it is fast; fp32 otherwise
    with precision.autocast():                       # autocast on the device's type (nothing for fp32)
        loss = model(ids, labels=labels).loss
    print(precision.describe())                      # "fp32 (auto: bf16 matmuls 60x slower than fp32 on this CPU)"
"""

from .device import describe_device, resolve_device
from .precision import PRECISIONS, Precision, cpu_bf16_probe, resolve_precision

__all__ = ["PRECISIONS", "Precision", "cpu_bf16_probe", "describe_device", "resolve_device", "resolve_precision"]
