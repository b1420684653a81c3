"""Devices: `--device auto|cpu|cuda|cuda:N` resolved to a torch.device, with one-line errors, and a description of
the machine for run headers and benchmark records."""

from __future__ import annotations

import functools
import os
import platform
from typing import Optional, Union

import torch

from ..errors import ConfigError
from .launch import torchrun_launch

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: Optional[Union[str, torch.device]] = "auto") -> torch.device:
    """"auto" (or None): the first CUDA device when PyTorch sees one, else the CPU. "cpu", "cuda", "cuda:N" are
    checked against what this machine has; anything else is a ConfigError naming the choices. Under torchrun
    (LOCAL_RANK set), "auto" and "cuda" give each process of a machine its own GPU: cuda:LOCAL_RANK."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    launch = torchrun_launch()
    if launch is not None and torch.cuda.is_available() and spec in (None, "auto", "cuda"):
        return _local_gpu(launch.local_rank, launch.local_world_size)
    if spec is None or spec == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if not isinstance(spec, str):
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {spec!r}")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {spec!r}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise ConfigError(f"device must be {DEVICE_CHOICES}, got {spec!r} (flashgau runs on CPUs and CUDA GPUs)")
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        raise ConfigError(f"device {spec}: PyTorch sees no CUDA device here (torch {torch.__version__}, {build}); "
                          "use --device cpu or auto")
    count = torch.cuda.device_count()
    if launch is not None and launch.local_world_size > 1:
        raise ConfigError(f"device {spec}: under torchrun each process of a machine takes its own GPU "
                          "(cuda:LOCAL_RANK); give --device cuda or auto")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(f"device {spec}: this machine has {count} CUDA device(s) (cuda:0..cuda:{count - 1})")
    return torch.device("cuda", index)


def _local_gpu(local_rank: int, local_world_size: int) -> torch.device:
    count = torch.cuda.device_count()
    if local_rank >= count:
        raise ConfigError(f"torchrun started {local_world_size} processes on this machine, which has {count} CUDA "
                          f"device(s): give --nproc_per_node {count} or less (one GPU per process)")
    return torch.device("cuda", local_rank)


def describe_device(device: torch.device) -> str:
    """One line: what the device is ("cpu: AMD EPYC ... (AVX2, 2 threads)" or "cuda:0: NVIDIA H200 (139 GiB)")."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return (f"{device}: {props.name} ({props.total_memory / 2**30:.0f} GiB, compute capability "
                f"{props.major}.{props.minor})")
    return f"cpu: {cpu_name()} ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def machine_record(device: Optional[torch.device] = None) -> dict:
    """What benchmark reports store about where they ran."""
    device = device if device is not None else torch.device("cpu")
    record = dict(device=str(device), cpu=cpu_name(), cpu_capability=torch.backends.cpu.get_cpu_capability(),
                  cpu_flags=sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
                  cores=os.cpu_count(), threads=torch.get_num_threads(), platform=platform.platform(),
                  memory_gib=_memory_gib())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        record.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                      gpu_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return record


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _memory_gib() -> Optional[float]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None
