"""KVCache (ops/kv_cache.py): prefill holds the prompt's keys and values, append writes at each row's own position
and returns the right mask, reserve grows exactly or by doubling and keeps the contents, and the cache never writes
into its inputs."""

import torch

from flashgau.ops.kv_cache import KVCache


def _kv(B=3, H=2, T=5, dk=4, dv=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, T, dk, generator=g), torch.randn(B, H, T, dv, generator=g)


def test_from_prefill_holds_the_prefix():
    k, v = _kv()
    cache = KVCache.from_prefill(k, v)
    assert cache.capacity == 5
    torch.testing.assert_close(cache.k[:, :, :5], k, atol=0, rtol=0)
    torch.testing.assert_close(cache.v[:, :, :5], v, atol=0, rtol=0)
    assert KVCache.from_prefill(k, v, capacity=40).capacity == 40


def test_append_writes_at_each_rows_position_and_masks_the_rest():
    k, v = _kv()
    cache = KVCache.from_prefill(k.clone(), v.clone(), capacity=8)
    nk, nv = _kv(T=1, seed=1)
    positions = [5, 2, 0]
    valid = cache.append(nk, nv, torch.tensor(positions))
    assert valid.shape == (3, 1, 1, cache.capacity) and valid.dtype == torch.bool
    for r, p in enumerate(positions):
        assert valid[r, 0, 0].tolist() == [i <= p for i in range(cache.capacity)]
        torch.testing.assert_close(cache.k[r, :, p], nk[r, :, 0], atol=0, rtol=0)
        torch.testing.assert_close(cache.v[r, :, p], nv[r, :, 0], atol=0, rtol=0)
        torch.testing.assert_close(cache.k[r, :, :p], k[r, :, :p], atol=0, rtol=0)   # earlier slots untouched


def test_growth_keeps_contents_and_dtype():
    k, v = _kv(B=2, T=3)
    k, v = k.to(torch.bfloat16), v.to(torch.bfloat16)
    cache = KVCache.from_prefill(k, v)
    written = []
    caps = [cache.capacity]
    starts = torch.tensor([3, 1])
    for t in range(40):
        nk, nv = _kv(B=2, T=1, seed=10 + t)
        pos = starts + t
        cache.reserve(int(pos.max()) + 1, exact=False)          # what generation does before every step
        cache.append(nk, nv, pos)
        written.append((nk.to(torch.bfloat16), nv.to(torch.bfloat16)))
        caps.append(cache.capacity)
    assert cache.k.dtype == cache.v.dtype == torch.bfloat16
    assert caps == sorted(caps) and caps[-1] >= 43
    assert len(set(caps)) <= 4                                 # amortised: doubling, not one slot per step
    for r, start in enumerate([3, 1]):
        torch.testing.assert_close(cache.k[r, :, :start], k[r, :, :start], atol=0, rtol=0)
        for t, (nk, nv) in enumerate(written):
            torch.testing.assert_close(cache.k[r, :, start + t], nk[r, :, 0], atol=0, rtol=0)
            torch.testing.assert_close(cache.v[r, :, start + t], nv[r, :, 0], atol=0, rtol=0)
    assert cache.nbytes() == 2 * cache.capacity * 2 * (4 + 3) * 2


def test_reserve_is_exact_by_default_and_a_no_op_when_large_enough():
    k, v = _kv(B=1, T=4)
    cache = KVCache.from_prefill(k, v, capacity=32)
    before = cache.k
    cache.reserve(10)
    assert cache.k is before and cache.capacity == 32
    cache.reserve(33)
    assert cache.capacity == 33
    cache.reserve(34, exact=False)
    assert cache.capacity == 66


def test_append_does_not_write_into_the_prefill_tensors():
    """Rows shorter than the prefill width append inside the prefill's slots: the cache must own its memory, not
    overwrite the caller's k and v (e.g. a layer's projections, possibly saved for backward)."""
    k, v = _kv(B=2, T=5)
    k0, v0 = k.clone(), v.clone()
    cache = KVCache.from_prefill(k, v)                         # every row shorter than the prefill width
    nk, nv = _kv(B=2, T=1, seed=3)
    cache.append(nk, nv, torch.tensor([4, 2]))
    torch.testing.assert_close(cache.k[0, :, 4], nk[0, :, 0], atol=0, rtol=0)
    torch.testing.assert_close(cache.k[1, :, 2], nk[1, :, 0], atol=0, rtol=0)
    torch.testing.assert_close(k, k0, atol=0, rtol=0)
    torch.testing.assert_close(v, v0, atol=0, rtol=0)
