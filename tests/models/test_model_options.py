"""The model options of docs/model_options.md, each against what it promises. (Causality, prefix consistency,
padding invariance, decode == forward, gradients and bf16 run with the options on in test_model_properties.py.)"""

import pytest
import torch

from flashgau.layers import flash as flash_layer
from flashgau.layers import gau as gau_layer
from flashgau.ops.reference.mixed_chunk import mixed_chunk_attention_reference
from flashgau.ops.reference.quad import relu2_attention_reference
from model_helpers import tokens


def _record(monkeypatch, module, name):
    """Replace module.name (an attention op) by a wrapper that keeps its inputs and output."""
    calls = []
    op = getattr(module, name)

    def recording(*args, **kwargs):
        out = op(*args, **kwargs)
        calls.append((args, kwargs, out[0]))
        return out

    monkeypatch.setattr(module, name, recording)
    return calls


@pytest.mark.parametrize("arch", ["flash", "flash-quad"])
def test_fp32_attention_precision_runs_the_attention_in_fp32_under_autocast(arch, build, monkeypatch):
    """attention_precision="fp32": under bf16 autocast the attention op gets fp32 inputs and returns fp32 output
    equal to the float64 reference on those inputs; "auto" computes it in bf16, farther from the reference."""
    module, name = (flash_layer, "mixed_chunk_attention") if arch == "flash" else (gau_layer, "relu2_attention")
    calls = _record(monkeypatch, module, name)
    x = tokens(2, 48)
    errors = {}
    for precision in ("auto", "fp32"):
        model = build(arch, attention_precision=precision, chunk_size=16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)
        args, kwargs, out = calls[-1]
        assert out.dtype == (torch.float32 if precision == "fp32" else torch.bfloat16)
        inputs = [a.double() for a in args]
        if arch == "flash":
            T, C = x.shape[1], kwargs["chunk_size"]
            slots = torch.arange(T) % C
            bias = inputs[5][slots[:, None], slots[None, :]]            # the (C, C) chunk bias spread over T x T
            ref = mixed_chunk_attention_reference(*inputs[:5], bias, chunk_size=C, causal=True)
        else:
            ref = relu2_attention_reference(*inputs, norm=kwargs["norm"], causal=True)
        errors[precision] = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    assert errors["fp32"] < 1e-5, errors
    assert errors["auto"] > 100 * errors["fp32"], errors
