"""Pre-norms (layers/norms.py): the paper's ScaleNorm x * rsqrt(mean(x^2) + 1e-5) * g with one scalar g (init 1)."""

import pytest
import torch

from flashgau.layers.norms import ScaleNorm, make_norm


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("amplitude", [1e-3, 1.0, 50.0])
def test_scalenorm_formula(amplitude):
    x = _randn(2, 5, 16) * amplitude
    norm = ScaleNorm()
    want = x.double() / torch.sqrt(x.double().square().mean(-1, keepdim=True) + 1e-5)
    torch.testing.assert_close(norm(x).double(), want, atol=1e-6, rtol=1e-5)


def test_scalenorm_has_one_scalar_gain_initialised_to_one():
    norm = ScaleNorm()
    params = list(norm.parameters())
    assert len(params) == 1 and params[0].numel() == 1 and params[0].item() == 1.0
    x = _randn(3, 4, 8)
    base = norm(x).detach()
    with torch.no_grad():
        norm.g.fill_(2.5)
    torch.testing.assert_close(norm(x), base * 2.5)
    norm(x).sum().backward()
    assert norm.g.grad is not None and norm.g.grad.shape == (1,)


def test_scalenorm_normalises_each_vector_on_its_own():
    x = _randn(4, 32)
    x[1] *= 1000.0
    y = ScaleNorm()(x)
    torch.testing.assert_close(y.square().mean(-1), torch.ones(4), atol=1e-3, rtol=1e-3)   # rms 1 per vector
    torch.testing.assert_close(ScaleNorm()(x * 7.0), y, atol=1e-5, rtol=1e-5)                 # scale invariant


def test_scalenorm_bf16_computed_in_fp32():
    x = _randn(2, 3, 64) * 30.0
    y = ScaleNorm()(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), ScaleNorm()(x.bfloat16().float()), atol=2e-2, rtol=1e-2)


def test_make_norm():
    assert isinstance(make_norm("scalenorm", 8), ScaleNorm)
    ln = make_norm("layernorm", 8)
    assert isinstance(ln, torch.nn.LayerNorm) and ln.normalized_shape == (8,) and ln.eps == 1e-5
    with pytest.raises(ValueError, match="rmsnorm"):
        make_norm("rmsnorm", 8)
