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


# ---------------------------------------------------------------------------------------------------- init


def _weights(model):
    return {name: m.weight for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("arch", ["flash", "transformer++", "transformer+", "combiner"])
def test_init_schemes_draw_the_documented_stds(arch):
    """"normal": N(0, init_std) everywhere (the paper); "scaled": residual output projections at init_std / sqrt(R),
    R = n_layers (GAU) or 2 n_layers (Transformer); "fan_in": N(0, 1/fan_in). Biases 0 in every scheme."""
    from flashgau import LanguageModel, ModelConfig
    from flashgau.layers.init import is_residual_output

    stds = {}
    for init in ("normal", "scaled", "fan_in"):
        torch.manual_seed(0)
        model = LanguageModel(ModelConfig.preset("small", arch=arch, n_layers=2, init=init))
        cfg = model.config
        residual = {n for n, m in model.named_modules() if is_residual_output(m)}
        assert len(residual) == cfg.residual_branches == (2 if arch == "flash" else 4)
        for name, w in _weights(model).items():
            want = {"normal": cfg.init_std,
                    "scaled": cfg.init_std / cfg.residual_branches ** 0.5 if name in residual else cfg.init_std,
                    "fan_in": w.shape[1] ** -0.5}[init]
            assert abs(w.std().item() - want) < 0.05 * want, (init, name, w.std().item(), want)
        assert all(m.bias.detach().abs().max().item() == 0 for m in model.modules()
                   if isinstance(m, torch.nn.Linear) and m.bias is not None)
        assert abs(model.embed.weight.std().item() - cfg.embedding_std) < 0.05 * cfg.embedding_std
        stds[init] = model
    # the default is fan_in (the ablations' measurement, docs/model_options.md), weight for weight
    torch.manual_seed(0)
    default = LanguageModel(ModelConfig.preset("small", arch=arch, n_layers=2))
    assert all(torch.equal(a, b) for a, b in zip(default.state_dict().values(), stds["fan_in"].state_dict().values()))


def test_embed_init_std_draws_the_embedding_alone():
    """embed_init_std sets the token embedding's std; None (the default) is 1.0 with an untied head (the default)
    and init_std with a tied one (the paper's presets, where the table is also the output head). Every other
    weight is drawn as before, number for number."""
    from flashgau import LanguageModel, ModelConfig

    models = {}
    for std in (None, 0.5):
        torch.manual_seed(0)
        models[std] = LanguageModel(ModelConfig.preset("small", n_layers=2, embed_init_std=std))
    default, paper = ModelConfig.preset("small"), ModelConfig.paper("small")
    assert default.embed_init_std is None and paper.embed_init_std is None
    assert (default.tie_embeddings, default.embedding_std) == (False, 1.0)
    assert (paper.tie_embeddings, paper.embedding_std) == (True, 0.02)
    assert models[None].embed.weight.std().item() == pytest.approx(1.0, rel=0.05)
    assert models[0.5].embed.weight.std().item() == pytest.approx(0.5, rel=0.05)
    rest = [(n, p) for n, p in models[None].state_dict().items() if n != "embed.weight"]
    assert all(torch.equal(p, models[0.5].state_dict()[n]) for n, p in rest)
    torch.manual_seed(0)
    tied = LanguageModel(ModelConfig.preset("small", n_layers=2, tie_embeddings=True))
    assert tied.head is None and tied.embed.weight.std().item() == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="embed_init_std"):
        ModelConfig(embed_init_std=0.0)


# ---------------------------------------------------------------------------------------------------- RoPE share


@pytest.mark.parametrize("fraction, gau_dims, head_dims", [(1.0, 32, 16), (0.5, 16, 8), (0.25, 8, 4), (0.0, 0, 0)])
def test_rope_fraction_sets_the_rotated_width(fraction, gau_dims, head_dims, build):
    """rope_fraction of s (GAU) or of a head's width (attention) is rotated, rounded to an even count."""
    assert build("flash", rope_fraction=fraction).blocks[0].rope_dims == gau_dims          # tiny: s = 32
    assert build("transformer++", rope_fraction=fraction).blocks[0].attn.rope_dims == head_dims   # dh = 16
    assert build("mc-transformer++", rope_fraction=fraction).blocks[0].attn.rope_dims == head_dims


def test_rope_fraction_zero_makes_attention_position_free(build):
    """Without RoPE on q/k (and no relative bias, no sinusoid, no token shift) a bidirectional GAU model is
    permutation equivariant: RoPE was the only position signal left; with it the outputs are not."""
    x = tokens(1, 12)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    for fraction, equivariant in ((0.0, True), (0.5, False)):
        model = build("flash-quad", causal=False, rope_fraction=fraction, rel_pos="none", scaled_sinusoid=False,
                      token_shift=0.0)
        out, out_perm = model(x).logits, model(x[:, perm]).logits
        assert torch.allclose(out[:, perm], out_perm, atol=1e-5) == equivariant


# ---------------------------------------------------------------------------------------------------- first-to-all


@pytest.mark.parametrize("fields, message", [
    (dict(arch="flash-quad"), "flash-quad already attends to every token"),
    (dict(arch="transformer++"), "first_to_all is for arch 'flash' (mixed chunk attention), not 'transformer++'"),
    (dict(arch="mc-transformer++"), "not 'mc-transformer++'"),
    (dict(gau_attention="softmax"), "first_to_all needs gau_attention='relu2'"),
    (dict(mixed_chunk_parts="global"), "mixed_chunk_parts='global' does not run"),
])
def test_first_to_all_is_refused_where_it_does_not_apply(fields, message):
    """first_to_all (flash's relu^2 local part only): one line of error elsewhere, saying why."""
    from flashgau import ModelConfig
    from flashgau.errors import ConfigError

    with pytest.raises(ConfigError, match="invalid ModelConfig") as err:
        ModelConfig.preset("tiny", **{"arch": "flash", **fields}, first_to_all=True)
    assert message in str(err.value) and "\n" not in str(err.value)
    ModelConfig.preset("tiny", **{"arch": "flash", **fields})               # the same config without it is fine
    assert ModelConfig.preset("tiny", mixed_chunk_parts="local", first_to_all=True).first_to_all


def test_first_to_all_decoding_state_keeps_the_first_chunk_and_its_size(build):
    """The layer state of a first_to_all model holds the first chunk's keys and values (frozen once it is full) and
    its size does not change with the position."""
    from flashgau.ops import FlashFirstToAllState
    from model_helpers import attention_state

    model = build("flash", first_to_all=True)
    x = tokens(1, 20)
    with torch.no_grad():
        _, state = model.prefill(x[:, :2])
        size = state.nbytes()
        for t in range(2, 20):
            model.decode_step(x[:, t], state)
            layer = attention_state(state.layers[0])
            assert isinstance(layer, FlashFirstToAllState) and state.nbytes() == size
            if t == 3:
                first = layer.first_k.clone()
        assert torch.equal(layer.first_k, first) and layer.first_v.abs().sum() > 0
        assert layer.count.tolist() == [16.0]                       # chunks 1-4 of C = 4: chunk 0 is not counted


# ---------------------------------------------------------------------------------------------------- the paper


def test_paper_presets_pin_every_choice_that_is_not_a_size():
    """"<size>-paper" = the size preset + PAPER (+ the paper's s = 128, C = 256 at small and base): every field that
    is not a size is pinned, so a later change of a default leaves the paper's model alone (a new field must be
    pinned here or declared a size)."""
    import dataclasses
    from flashgau import ModelConfig
    from flashgau.config import PAPER, PAPER_SHAPES, SIZE_FIELDS

    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(PAPER) | set(SIZE_FIELDS) == names and not set(PAPER) & set(SIZE_FIELDS)
    for size in ("tiny", "small", "base"):
        cfg = ModelConfig.preset(f"{size}-paper", arch="flash-quad")
        plain = ModelConfig.preset(size, arch="flash-quad")
        assert all(getattr(cfg, k) == v for k, v in PAPER.items())
        for field in SIZE_FIELDS:
            if size == "tiny" or field not in PAPER_SHAPES:
                assert getattr(cfg, field) == getattr(plain, field), field
    small = ModelConfig.paper("small", arch="flash")
    assert (small.qk_dim, small.chunk_size, small.token_shift, small.rope_fraction) == (128, 256, 0.0, 1.0)
    assert ModelConfig.paper("small", arch="flash", qk_dim=512).qk_dim == 512             # TriviaQA's s = 512
    run = ModelConfig.for_context("small-paper", arch="flash-quad", context=4096)
    assert (run.quad_norm_len, run.resolved_rel_pos(), run.normalizer) == (4096, "rope", "fixed")


def test_paper_preset_survives_a_change_of_the_defaults():
    """Changing a default (as the measurement task will: one line in config.py) changes `small`, not
    `small-paper`: here a subclass whose token_shift default is 0.5."""
    import dataclasses
    from flashgau import ModelConfig

    changed = dataclasses.make_dataclass("Changed", [("token_shift", float, dataclasses.field(default=0.5))],
                                         bases=(ModelConfig,))
    assert changed().token_shift == 0.5 and changed.preset("small").token_shift == 0.5
    assert changed.preset("small-paper").token_shift == 0.0


def test_token_shift_defaults_per_arch_and_an_explicit_value_wins():
    """token_shift=None (the default) is each arch's measured best (TOKEN_SHIFT_DEFAULTS: 0.5 for the GAU archs, off
    for Transformer++); it is resolved on construction, so a saved config keeps the number."""
    from flashgau import ARCHS, ModelConfig
    from flashgau.config import GAU_ARCHS, TOKEN_SHIFT_DEFAULTS

    assert set(TOKEN_SHIFT_DEFAULTS) == set(ARCHS)
    assert all(TOKEN_SHIFT_DEFAULTS[a] == 0.5 for a in GAU_ARCHS) and TOKEN_SHIFT_DEFAULTS["transformer++"] == 0.0
    for arch in ARCHS:
        cfg = ModelConfig.preset("small", arch=arch)
        assert cfg.token_shift == TOKEN_SHIFT_DEFAULTS[arch] and ModelConfig(arch=arch).token_shift == cfg.token_shift
        assert ModelConfig.from_dict(cfg.to_dict()).token_shift == cfg.token_shift
        assert ModelConfig.preset("small", arch=arch, token_shift=0.25).token_shift == 0.25
        assert ModelConfig.preset("small-paper", arch=arch).token_shift == 0.0
    assert ModelConfig.from_dict({**ModelConfig(arch="transformer++").to_dict(), "token_shift": 0.5}).token_shift == 0.5


@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_the_options_keep_the_training_forward_one_graph(arch):
    """torch.compile (flashgau train --compile) with the new options on: no graph break."""
    from flashgau import LanguageModel, ModelConfig

    torch._dynamo.reset()
    cfg = ModelConfig(arch=arch, vocab_size=50, d_model=32, n_layers=2, chunk_size=8, qk_dim=16, max_seq_len=64,
                      token_shift=0.5, attention_precision="fp32", linear_normalizer="sum", rope_fraction=0.5,
                      init="scaled")
    x = torch.randint(0, 50, (2, 24))
    explained = torch._dynamo.explain(LanguageModel(cfg))(x, labels=x)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]


def test_every_field_is_listed_in_docs_model_options():
    import dataclasses
    from pathlib import Path

    from flashgau import ModelConfig

    doc = (Path(__file__).parents[2] / "docs" / "model_options.md").read_text(encoding="utf-8")
    missing = [f.name for f in dataclasses.fields(ModelConfig) if f"| `{f.name}` |" not in doc]
    assert not missing, f"docs/model_options.md has no row for {missing}"


def test_the_default_small_flash_stays_close_to_fp32_under_bf16_autocast():
    """The tiny test models are sharpened at init "normal" (model_helpers); the shipped defaults (fan_in init, token
    shift 0.5) are checked here, unsharpened, at the size users train: bf16 logits within 2% of fp32's."""
    from flashgau import LanguageModel, ModelConfig

    torch.manual_seed(0)
    model = LanguageModel(ModelConfig.preset("small", arch="flash", vocab_size=256, n_layers=2)).eval()
    assert (model.config.init, model.config.token_shift) == ("fan_in", 0.5)
    x = torch.randint(0, 256, (1, 512), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).logits
    assert (low.float() - ref).abs().max() / ref.abs().max() < 0.02
