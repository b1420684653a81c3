"""The attention weights a block reports (what transformers' output_attentions returns) are the ones its forward
pass applies: weights @ v reproduces the block's attention output, for softmax (Transformer+/++, GAU with the
softmax kernel) and relu^2 (FLASH-Quad, fixed or paper normaliser), causal or not, with padding; blocks whose
attention has no weight matrix say so."""

import pytest
import torch

from flashgau import LanguageModel, ModelConfig
from flashgau.layers import Context

CASES = [("transformer++", {}), ("transformer+", {}), ("flash-quad", {}), ("flash-quad", {"normalizer": "paper"}),
         ("flash-quad", {"gau_attention": "softmax"}), ("flash-quad", {"gau_heads": 2})]


def _block_and_input(arch, causal, **extra):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig.preset("tiny", arch=arch, vocab_size=50, causal=causal, max_seq_len=64,
                                             **extra)).eval()
    x = torch.randn(2, 7, model.config.d_model)
    mask = torch.arange(7)[None, :] < torch.tensor([[7], [4]])
    return model.blocks[0], x, Context(positions=torch.arange(7), key_mask=mask, causal=causal)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("arch, extra", CASES, ids=[f"{a}{'-' + '-'.join(map(str, e.values())) if e else ''}"
                                                     for a, e in CASES])
def test_weights_times_values_is_the_attention_output(arch, extra, causal):
    block, x, ctx = _block_and_input(arch, causal, **extra)
    assert block.has_attention_weights
    with torch.no_grad():
        w = block.attention_weights(x, ctx)
        if arch.startswith("transformer"):
            h = block.shift(block.norm1(x), ctx)
            _, _, v = block.attn.heads(h, ctx.positions)
            want, got = block.attn(h, ctx), block.attn.merge(w @ v)
        else:
            u, v, _ = block.project(block.shift(block.norm(x), ctx), ctx.positions)
            want, got = block(x, ctx), block.finish(x, u, w @ v)
    assert w.shape == (2, block.heads if not arch.startswith("transformer") else 4, 7, 7)
    torch.testing.assert_close(got[0], want[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got[1, :4], want[1, :4], atol=1e-5, rtol=1e-4)   # real positions of a padded row
    if causal:
        assert torch.equal(w.triu(1), torch.zeros_like(w))
    else:
        assert torch.equal(w[1, ..., 4:], torch.zeros_like(w[1, ..., 4:]))     # padded keys get no weight


@pytest.mark.parametrize("arch", ["flash", "performer", "combiner", "mc-transformer++"])
def test_blocks_without_a_weight_matrix_say_so(arch):
    block, x, ctx = _block_and_input(arch, True)
    assert not getattr(block, "has_attention_weights", False)
    if hasattr(block, "attention_weights"):
        with pytest.raises(NotImplementedError, match="no \\(T, T\\) attention weight matrix"):
            block.attention_weights(x, ctx)
