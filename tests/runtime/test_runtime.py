"""Device and precision resolution: what "auto" picks, and one clear line for what this machine cannot do."""

import pytest
import torch

from flashgau.errors import ConfigError
from flashgau.runtime import precision as precision_mod
from flashgau.runtime import resolve_device, resolve_precision

CPU = torch.device("cpu")


def probe(speedup, flags=()):
    return lambda: dict(fp32_gflops=100.0, bf16_gflops=100.0 * speedup, bf16_speedup=speedup, size=256,
                        bf16_flags=list(flags))


def test_auto_takes_bf16_only_on_a_cpu_fast_at_it(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", probe(1 / 80))
    slow = resolve_precision("auto", CPU)
    assert slow.name == "fp32" and "80x slower" in slow.reason and slow.requested == "auto"
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", probe(3.0, ["amx_bf16"]))
    fast = resolve_precision("auto", CPU)
    assert fast.name == "bf16" and "3.0x faster" in fast.reason and "amx_bf16" in fast.reason
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", probe(1.1))      # a close call is not worth bf16's error
    assert resolve_precision("auto", CPU).name == "fp32"


def test_forced_precisions_and_what_a_cpu_refuses(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", probe(1 / 50))
    forced = resolve_precision("bf16", CPU)
    assert forced.name == "bf16" and "50x slower" in forced.reason          # allowed, with the warning in words
    assert resolve_precision("fp32", CPU).reason == "asked for"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="must be one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", CPU)


def test_autocast_and_scaler_follow_the_precision(monkeypatch):
    monkeypatch.setattr(precision_mod, "cpu_bf16_probe", probe(2.0))
    bf16 = resolve_precision("auto", CPU)
    with bf16.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    fp32 = resolve_precision("fp32", CPU)
    with fp32.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert bf16.grad_scaler() is None and fp32.grad_scaler() is None
    assert resolve_precision("auto", CPU).to_dict()["device_type"] == "cpu"


def test_the_real_probe_is_quick_and_consistent():
    result = precision_mod.cpu_bf16_probe()
    assert result["fp32_gflops"] > 0 and result["bf16_gflops"] > 0
    assert result["bf16_speedup"] == pytest.approx(result["bf16_gflops"] / result["fp32_gflops"])


def test_devices():
    assert resolve_device("cpu") == CPU and resolve_device(CPU) == CPU
    assert resolve_device("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else CPU)
    for bad in ("gpu", "tpu:0", "", 3):
        with pytest.raises(ConfigError, match="device must be auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="PyTorch sees no CUDA device here"):
            resolve_device("cuda:1")
    else:
        with pytest.raises(ConfigError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
