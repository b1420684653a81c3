"""The paper's baselines as first-class archs: "performer" (FAVOR+), "combiner" (Combiner-Fixed), "mc-transformer++"
(mixed chunk attention in Transformer++). docs/baselines.md describes them.

What every arch must do (causality, prefix consistency, padding invariance, decode equals forward with ragged rows,
finite gradients, parameter parity) is tested for all of flashgau.ARCHS in tests/models. Here, what is specific to
the baselines: registration, their decoding states (fixed size; Combiner's one summary per chunk), and layer-level
checks: each attention module equals the dense reference of its op on the module's own q, k, v; FAVOR+ approaches
exact softmax attention as the random features grow; Combiner and MC-TFM++ with one chunk are exact softmax
attention; FAVOR+'s random features are a fixed, seeded, saved buffer, redrawn only on the training schedule. Tiny
models: chunk size 4, weights scaled up so that attention matters.
"""

import pytest
import torch

from flashgau import LanguageModel, ModelConfig
from flashgau.layers import Context
from flashgau.layers.attention import MultiHeadAttention
from flashgau.layers.combiner import CombinerAttention
from flashgau.layers.mixed_chunk_softmax import MixedChunkSoftmaxAttention
from flashgau.layers.performer import PerformerAttention
from flashgau.ops.reference.combiner import combiner_attention_reference
from flashgau.ops.reference.favor import favor_attention_reference
from flashgau.ops.reference.mixed_chunk_softmax import mixed_chunk_softmax_attention_reference

BASELINES = ("performer", "combiner", "mc-transformer++")
LAYERS = {"performer": PerformerAttention, "combiner": CombinerAttention,
          "mc-transformer++": MixedChunkSoftmaxAttention}
VOCAB = 50
TOL = dict(atol=2e-5, rtol=1e-5)


def _sharpen(module: torch.nn.Module, seed: int) -> None:
    """Weights at std 0.1 (attention scores of order 1) and nonzero MC-TFM++ scale/offset maps."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("lin.weight") or name.endswith("lin.bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
            elif p.dim() == 2:
                p.mul_(5.0)


def build(arch: str, causal: bool = True, seed: int = 0, **overrides) -> LanguageModel:
    fields = dict(vocab_size=VOCAB, causal=causal, chunk_size=4, max_seq_len=64, random_features=64)
    fields.update(overrides)
    torch.manual_seed(seed)
    model = LanguageModel(ModelConfig.preset("tiny", arch=arch, **fields))
    _sharpen(model, seed)
    return model.eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def right_padding(lengths, width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


# ---------------------------------------------------------------------------------------------------- model level
@pytest.mark.parametrize("arch", BASELINES)
def test_registered_everywhere(arch):
    import flashgau
    from flashgau.layers import BLOCKS
    assert arch in flashgau.ARCHS and arch in BLOCKS
    model = build(arch)
    assert model.supports_cache
    assert all(isinstance(b.attn, LAYERS[arch]) for b in model.blocks)


@pytest.mark.parametrize("arch", ["performer", "mc-transformer++"])
def test_decoding_state_has_a_fixed_size(arch):
    model = build(arch)
    with torch.no_grad():
        _, state = model.prefill(tokens(2, 3))
        size = state.nbytes()
        for t in range(17):
            model.decode_step(tokens(2, 1, seed=t)[:, 0], state)
            assert state.nbytes() == size


def test_combiner_state_grows_by_one_summary_per_chunk_and_generate_reserves_once():
    model = build("combiner")
    with torch.no_grad():
        _, state = model.prefill(tokens(1, 5))
        first = getattr(state.layers[0], "attn", state.layers[0])      # unwrapped from the token shift
        assert first.sum_k.shape[2] >= 1
        first.reserve(40)
        assert first.sum_k.shape[2] == 10                                   # 40 positions / C = 4
        _, kept = model.generate(tokens(1, 5), 30, temperature=0, return_state=True)
        # reserved for the final length only
        assert getattr(kept.layers[0], "attn", kept.layers[0]).sum_k.shape[2] == -(-35 // 4)


def test_config_validates_the_performer_fields():
    for field, value in (("random_features", 0), ("random_features", 2.0), ("feature_redraw_interval", -1)):
        with pytest.raises(ValueError, match=field):
            ModelConfig(arch="performer", **{field: value})
    cfg = ModelConfig(arch="performer", random_features=32, feature_redraw_interval=0)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------------- layer level
def _layer(arch: str, seed: int = 0, qkv_std: float = 0.15, **overrides):
    fields = dict(chunk_size=4, max_seq_len=64, random_features=64)
    fields.update(overrides)
    torch.manual_seed(seed)
    layer = LAYERS[arch](ModelConfig.preset("tiny", arch=arch, **fields))
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():                                 # scores q.k / sqrt(dh) of order 1 for x ~ N(0, I)
        layer.qkv.weight.copy_(torch.randn(layer.qkv.weight.shape, generator=gen) * qkv_std)
        if arch == "mc-transformer++":
            for p in layer.lin.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return layer.eval()


def _ctx(T: int, causal: bool, mask=None) -> Context:
    return Context(positions=torch.arange(T), key_mask=mask, causal=causal)


def _softmax_twin(layer) -> MultiHeadAttention:
    """Transformer++'s exact softmax attention with the layer's own q, k, v and output weights."""
    twin = MultiHeadAttention(ModelConfig.preset("tiny", arch="transformer++"))
    assert not twin.load_state_dict(layer.state_dict(), strict=False).missing_keys
    return twin.eval()


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("arch", BASELINES)
def test_layer_equals_the_dense_reference_of_its_op(arch, causal):
    layer = _layer(arch)
    x = torch.randn(3, 15, 64, generator=torch.Generator().manual_seed(2))
    mask = right_padding([15, 9, 4], 15)
    ctx = _ctx(15, causal, mask)
    with torch.no_grad():
        heads = layer.heads(x, ctx.positions)
        if arch == "mc-transformer++":
            ref = mixed_chunk_softmax_attention_reference(*heads, chunk_size=4, causal=causal, key_mask=mask)
        elif arch == "performer":
            ref = favor_attention_reference(*heads, layer.projection, causal=causal, key_mask=mask)
        else:                       # the default pooling reads un-rotated summary inputs: (q, k, v, sq, sk)
            q, k, v, *summary = heads
            summary = dict(zip(("summary_q", "summary_k"), summary))
            ref = combiner_attention_reference(q, k, v, chunk_size=4, causal=causal, key_mask=mask, **summary)
        out = layer(x, ctx)
    real = mask[..., None]
    torch.testing.assert_close(out * real, layer.merge(ref) * real, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("causal", [True, False])
def test_performer_approaches_exact_softmax_attention_as_features_grow(causal):
    """Same weights in MultiHeadAttention (exact softmax, RoPE) and in PerformerAttention with m random features:
    the mean error over several draws shrinks as m grows. (Scores of std ~0.5: FAVOR+'s variance grows as
    exp(|q|^2 + |k|^2), so at large scores it needs far more features.)"""
    x = torch.randn(2, 12, 64, generator=torch.Generator().manual_seed(3))
    ctx = _ctx(12, causal)
    exact_layer = _layer("performer", seed=0, qkv_std=0.07)
    exact = _softmax_twin(exact_layer)(x, ctx).detach()
    errors = []
    for m in (4, 64, 1024):
        err = 0.0
        for seed in range(3):
            layer = _layer("performer", seed=seed, random_features=m)
            layer.load_state_dict({k: v for k, v in exact_layer.state_dict().items()
                                   if k.startswith(("qkv.", "out."))}, strict=False)
            with torch.no_grad():
                err += (layer(x, ctx) - exact).abs().mean().item() / 3
        errors.append(err)
    assert errors[0] > 1.5 * errors[1] > 1.5 * 1.5 * errors[2], errors
    assert errors[2] < 0.1 * exact.abs().mean().item(), errors


@pytest.mark.parametrize("arch", ["combiner", "mc-transformer++"])
def test_one_chunk_is_exact_softmax_attention(arch):
    """With one chunk covering the sequence, Combiner and causal MC-TFM++ are Transformer++'s attention."""
    layer = _layer(arch, chunk_size=16)
    x = torch.randn(2, 13, 64, generator=torch.Generator().manual_seed(4))
    causal_list = [True, False] if arch == "combiner" else [True]     # bidirectional MC adds its own chunk's sum
    for causal in causal_list:
        with torch.no_grad():
            torch.testing.assert_close(layer(x, _ctx(13, causal)), _softmax_twin(layer)(x, _ctx(13, causal)), **TOL)


def test_mc_transformer_linear_part_reaches_only_later_chunks():
    """Causal MC-TFM++: the linear maps (lin) do not touch the first chunk, and do change every later one."""
    layer = _layer("mc-transformer++")
    x = torch.randn(1, 13, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        before = layer(x, _ctx(13, True))
        layer.lin.bias.add_(0.5)
        after = layer(x, _ctx(13, True))
    torch.testing.assert_close(before[:, :4], after[:, :4], atol=0, rtol=0)
    assert (before[:, 4:] - after[:, 4:]).abs().amax(-1).min() > 1e-4


def test_performer_features_are_a_seeded_saved_buffer():
    a, b, c = build("performer", seed=3), build("performer", seed=3), build("performer", seed=4)
    pa = [blk.attn.projection for blk in a.blocks]
    assert torch.equal(pa[0], b.blocks[0].attn.projection)
    assert not torch.equal(pa[0], c.blocks[0].attn.projection)
    assert pa[0].shape == (64, a.config.head_dim)
    assert "blocks.0.attn.projection" in a.state_dict()
    assert "blocks.0.attn.projection" not in dict(a.named_parameters())
    c.load_state_dict(a.state_dict())                                     # features travel with the weights
    x = tokens(1, 9)
    assert torch.equal(a(x).logits, c(x).logits)
    two = build("performer", n_layers=2)
    assert not torch.equal(two.blocks[0].attn.projection, two.blocks[1].attn.projection)


def test_performer_features_never_change_in_eval_or_decoding():
    model = build("performer", feature_redraw_interval=1)
    before = model.blocks[0].attn.projection.clone()
    x = tokens(2, 9)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        model.generate(x, 4, temperature=0)
    assert torch.equal(model.blocks[0].attn.projection, before)


def test_performer_redraw_schedule_is_reproducible_across_a_resume():
    """Training-mode forwards redraw every `feature_redraw_interval` calls; a model rebuilt from a state_dict
    mid-way redraws exactly as the uninterrupted one."""
    run = build("performer", feature_redraw_interval=2).train()
    attn = run.blocks[0].attn
    x = tokens(1, 6)
    seen = []
    for i in range(5):
        run(x)
        seen.append(attn.projection.clone())
        if i == 1:
            saved = {k: v.clone() for k, v in run.state_dict().items()}
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert torch.equal(seen[2], seen[3]) and not torch.equal(seen[3], seen[4])
    resumed = build("performer", seed=9, feature_redraw_interval=2).train()
    resumed.load_state_dict(saved)
    for i in range(2, 5):
        resumed(x)
        assert torch.equal(resumed.blocks[0].attn.projection, seen[i])


# ---------------------------------------------------------------------------------------------------- their options
def test_each_baseline_has_its_own_chunk_setting():
    """performer_chunk_size, combiner_chunk_size: None inherits chunk_size (FLASH's C); "auto" (for_context) gives
    Combiner about sqrt(T); a number is taken as given; MC-TFM++ keeps FLASH's C (it is FLASH's ablation)."""
    from flashgau.config import combiner_auto_chunk
    assert [combiner_auto_chunk(t) for t in (128, 512, 1024, 2048, 4096, 8192, 16384)] == [16, 32, 32, 64, 64, 128,
                                                                                              128]
    assert _layer("performer").chunk_size == 4 and _layer("performer", performer_chunk_size=3).chunk_size == 3
    assert _layer("combiner").chunk_size == 4 and _layer("combiner", combiner_chunk_size=5).chunk_size == 5
    assert _layer("mc-transformer++", performer_chunk_size=3, combiner_chunk_size=5).chunk_size == 4
    cfg = ModelConfig.for_context("small", arch="combiner", context=4096, combiner_chunk_size="auto")
    assert (cfg.combiner_chunk, cfg.chunk_size) == (64, 256)
    with pytest.raises(ValueError, match="decided from the training context"):
        ModelConfig(arch="combiner", combiner_chunk_size="auto")


def test_performer_chunk_size_changes_speed_not_maths():
    x = tokens(2, 19)
    logits = [build("performer", seed=2, **kw)(x).logits for kw in ({}, dict(performer_chunk_size=3),
                                                                     dict(performer_chunk_size=64))]
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[2], logits[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_combiner_unrotated_pooling_pools_keys_before_rope(causal):
    """combiner_pooling="unrotated": the layer equals the op's reference with the summaries pooled from (and read
    with) q and k before RoPE, the direct part rotated (the default); "rotated" pools the rotated ones."""
    from flashgau.layers.positions import apply_rope
    x = torch.randn(3, 15, 64, generator=torch.Generator().manual_seed(2))
    mask = right_padding([15, 9, 4], 15)
    ctx = _ctx(15, causal, mask)
    outs = {}
    for pooling in ("rotated", "unrotated"):
        layer = _layer("combiner", combiner_pooling=pooling)
        with torch.no_grad():
            q, k, v = layer.project(x)
            pos = ctx.positions
            summary = dict(summary_q=q, summary_k=k) if pooling == "unrotated" else {}
            ref = combiner_attention_reference(apply_rope(q, pos), apply_rope(k, pos), v, chunk_size=4,
                                               causal=causal, key_mask=mask, **summary)
            outs[pooling] = layer(x, ctx)
        real = mask[..., None]
        torch.testing.assert_close(outs[pooling] * real, layer.merge(ref) * real, atol=1e-4, rtol=1e-4)
    assert (outs["rotated"] - outs["unrotated"]).abs().max() > 1e-3


def test_performer_epsilon_option_reaches_the_op():
    """performer_epsilon: the reference's feature floor, in forward and in decoding (decode == forward is checked
    for every option in tests/models)."""
    x = tokens(1, 9)
    plain, floored = build("performer", seed=1), build("performer", seed=1, performer_epsilon=1e-2)
    assert (plain(x).logits - floored(x).logits).abs().max() > 1e-4
    with pytest.raises(ValueError, match="performer_epsilon"):
        ModelConfig(arch="performer", performer_epsilon=-1.0)
