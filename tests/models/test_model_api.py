"""The public model API: config validation, presets with matched sizes, loss, clear errors for bad input,
weight-decay grouping, and the normaliser choice (docs/normalisers.md)."""

import pytest
import torch
import torch.nn.functional as F

from flashgau import ARCHS, LanguageModel, ModelConfig
from flashgau.config import GAU_ARCHS
from flashgau.errors import ConfigError
from model_helpers import VOCAB, tokens


@pytest.mark.parametrize("preset", ["tiny", "small", "base"])
def test_presets_match_parameter_counts_within_ten_percent(preset):
    with torch.device("meta"):   # sizes only: no memory, no init time
        counts = {arch: LanguageModel(ModelConfig.preset(preset, arch=arch, vocab_size=256)).num_parameters()
                  for arch in ARCHS}
    assert max(counts.values()) <= 1.10 * min(counts.values()), counts


def test_gau_archs_stack_two_layers_per_transformer_layer():
    for preset, layers in (("small", 4), ("base", 12)):
        for arch in ARCHS:
            cfg = ModelConfig.preset(preset, arch=arch)
            assert cfg.n_layers == (2 * layers if arch in GAU_ARCHS else layers)
    small = ModelConfig.preset("small", arch="flash")
    assert (small.d_model, small.n_layers, small.chunk_size, small.qk_dim) == (256, 8, 256, 128)
    assert ModelConfig.preset("base", arch="flash", n_layers=3).n_layers == 3   # overrides win


def test_config_round_trip_and_public_example():
    cfg = ModelConfig(arch="flash", vocab_size=256, d_model=64, n_layers=2, causal=True, chunk_size=8, qk_dim=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = LanguageModel(cfg)
    x = torch.randint(0, 256, (2, 20))
    assert model(x).logits.shape == (2, 20, 256) and model(x).loss is None
    out = model(x, attention_mask=torch.ones(2, 20), labels=x)
    assert out.logits.shape == (2, 20, 256) and out.loss.ndim == 0


@pytest.mark.parametrize("field, value, message", [
    ("arch", "gpt", "unknown arch"), ("d_model", 0, "d_model"), ("n_heads", 3, "divisible"),
    ("qk_dim", 15, "even"), ("norm", "rms", "norm"), ("normalizer", "softmax", "normalizer"),
    ("chunk_size", 0, "chunk_size"), ("dropout", 1.0, "dropout"), ("vocab_size", 2.5, "vocab_size"),
    ("first_to_all", 1, "first_to_all must be True or False"),
])
def test_bad_config_says_what_to_change(field, value, message):
    with pytest.raises(ValueError, match="invalid ModelConfig") as err:
        ModelConfig(**{field: value})
    assert message in str(err.value)
    assert isinstance(err.value, ConfigError)          # a FlashgauError: the CLI prints it as one line
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.from_dict({"widht": 3})


def test_loss_is_mean_cross_entropy_over_counted_labels(build):
    model = build("flash")
    x = tokens(2, 10)
    labels = torch.roll(x, -1, 1)
    labels[0, 3] = -100
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    out = model(x, attention_mask=mask, labels=labels)
    keep = (labels != -100) & mask
    expected = F.cross_entropy(out.logits[keep], labels[keep])
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("make_args, message", [
    (lambda x: (x.float(),), "integer tensor"),
    (lambda x: (x[0],), r"shape \(B, T\) \(batch, tokens\), got shape \(8,\); add a batch dimension"),
    (lambda x: (x[None],), r"shape \(B, T\) \(batch, tokens\), got shape \(1, 2, 8\)$"),
    (lambda x: (x.tolist(),), r"tensor of shape \(B, T\) \(batch, tokens\), got a list"),
    (lambda x: (x + VOCAB,), "token ids must lie in"),
    (lambda x: (x[:, :0],), "empty"),
    (lambda x: (torch.randint(0, VOCAB, (1, 65)),), "exceeds max_seq_len"),
    (lambda x: (x, torch.ones(2, 5)), "shape of input_ids"),
    (lambda x: (x, torch.full((2, 8), 2)), "0/1"),
    (lambda x: (x, torch.tensor([[0, 1, 1, 1, 1, 1, 1, 1]] * 2)), "right padding"),
    (lambda x: (x, torch.zeros(2, 8)), "at least one real token"),
    (lambda x: (x, None, x.float()), "labels must be integer"),
    (lambda x: (x, None, x[:, :3]), "labels must have the shape"),
    (lambda x: (x, None, x + VOCAB), "labels must lie in"),
])
def test_bad_input_raises_a_clear_error(make_args, message, build):
    model = build("flash")
    with pytest.raises(ValueError, match=message):
        model(*make_args(tokens(2, 8)))


ID_DTYPES = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.uint16, torch.uint32,
             torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _said_for(dtype, message):
    """What check_inputs says about ids of `dtype` that are bad as `message` says: the dtype first where the
    embedding cannot take it."""
    if dtype.is_floating_point:
        return f"input_ids must be an integer tensor of token ids, got dtype {dtype}"
    if dtype not in (torch.int64, torch.int32):
        return rf"input_ids must be int64 \(or int32\) token ids, got dtype {dtype}; convert them with input_ids.long"
    return message


def _bad_ids(dtype):
    ids = tokens(2, 8)
    ids[1, 3] = VOCAB
    return ids.to(dtype)


PROMISED = {      # the README's ValueErrors: (ids, attention_mask) of a dtype -> the message for int64 ids
    "ids out of range": (lambda d: (_bad_ids(d), None), rf"token ids must lie in \[0, {VOCAB}\)"),
    "mask of the wrong shape": (lambda d: (tokens(2, 8).to(d), torch.ones(2, 5)), "shape of input_ids"),
    "left padding": (lambda d: (tokens(2, 8).to(d), torch.tensor([[0] + [1] * 7] * 2)), "needs right padding"),
    "too long": (lambda d: (tokens(1, 65).to(d), None), "exceeds max_seq_len 64"),
}


@pytest.mark.parametrize("dtype", ID_DTYPES, ids=str)
@pytest.mark.parametrize("case", PROMISED)
def test_every_promised_error_is_a_value_error_in_every_dtype_ids_come_in(build, dtype, case):
    model = build("flash")
    make, message = PROMISED[case]
    said = _said_for(dtype, message)
    ids, mask = make(dtype)
    with pytest.raises(ValueError, match=said):
        model(ids, attention_mask=mask)
    with pytest.raises(ValueError, match=said):
        model.generate(ids, 2, attention_mask=mask, temperature=0)


@pytest.mark.parametrize("dtype", ID_DTYPES, ids=str)
def test_decode_step_refuses_bad_ids_in_every_dtype(build, dtype):
    model = build("flash")
    _, state = model.prefill(tokens(2, 4))
    with pytest.raises(ValueError, match=_said_for(dtype, rf"token ids must lie in \[0, {VOCAB}\)")):
        model.decode_step(torch.tensor([1, VOCAB]).to(dtype), state)
    if dtype in (torch.int64, torch.int32):
        model.decode_step(torch.tensor([1, 2]).to(dtype), state)                    # good ids: stepped
    _, full = model.prefill(tokens(1, 64))
    with pytest.raises(ValueError, match="position 64 reaches max_seq_len 64"):
        model.decode_step(torch.tensor([1]).to(dtype), full)


def test_no_weight_decay_names_cover_norms_biases_gains_and_position_tables():
    for arch in ARCHS:
        model = LanguageModel(ModelConfig.preset("tiny", arch=arch, vocab_size=VOCAB))
        names = model.no_weight_decay_names()
        params = dict(model.named_parameters())
        assert names <= set(params)
        for name, p in params.items():
            leaf = name.rsplit(".", 1)[-1]
            expected_no_decay = (p.dim() < 2 or leaf in ("gamma", "beta", "bias") or ".rel." in name
                                 or "norm" in name or name.startswith("sinusoid"))
            assert (name in names) == expected_no_decay, name


def test_paper_normaliser_is_length_dependent_and_fixed_is_not(build):
    """Pitfalls P1/P2: dividing by the sequence length changes a causal model's past outputs as it grows."""
    x = tokens(1, 20)
    paper = build("flash-quad", normalizer="paper", quad_norm_len=20)     # n of the Toeplitz table: the same model
    fixed = build("flash-quad", normalizer="fixed", quad_norm_len=20)
    # at the full length both divide by 20, so they agree ...
    torch.testing.assert_close(paper(x).logits, fixed(x).logits)
    # ... but only the fixed one keeps its past outputs when the sequence is cut
    torch.testing.assert_close(fixed(x[:, :10]).logits, fixed(x).logits[:, :10], atol=2e-5, rtol=1e-5)
    assert (paper(x[:, :10]).logits - paper(x).logits[:, :10]).abs().max() > 1e-2


def test_paper_normaliser_generates_by_recomputing(build):
    model = build("flash-quad", normalizer="paper")
    assert not model.supports_cache
    with pytest.raises(ValueError, match="no decoding state"):
        model.prefill(tokens(1, 4))
    prompt = tokens(1, 5)
    seq = prompt.clone()
    with torch.no_grad():
        for _ in range(6):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(prompt, 6, temperature=0), seq)


def test_rel_pos_auto_follows_the_papers_512_rule_on_the_training_length():
    """n <= 512: Toeplitz, n > 512: RoPE-factorised, n the length the quadratic attention trains on: the chunk for
    FLASH, the training length quad_norm_len for FLASH-Quad (not max_seq_len, which is only a limit)."""
    assert ModelConfig(arch="flash", chunk_size=256).resolved_rel_pos() == "toeplitz"
    assert ModelConfig(arch="flash", chunk_size=1024).resolved_rel_pos() == "rope"
    assert ModelConfig(arch="flash-quad", quad_norm_len=512, max_seq_len=16384).resolved_rel_pos() == "toeplitz"
    assert ModelConfig(arch="flash-quad", quad_norm_len=4096).resolved_rel_pos() == "rope"
    assert ModelConfig(arch="flash-quad", quad_norm_len=4096, rel_pos="toeplitz").resolved_rel_pos() == "toeplitz"


@pytest.mark.parametrize("context, bias", [(128, "toeplitz"), (512, "toeplitz"), (513, "rope"), (4096, "rope")])
def test_for_context_builds_the_papers_flash_quad_for_its_training_length(context, bias):
    """One (preset, arch, context) is one model for training and both benchmarks: FLASH-Quad divides by the
    training length, and its bias follows from it; the other archs are the preset."""
    cfg = ModelConfig.for_context("small", arch="flash-quad", context=context)
    assert (cfg.quad_norm_len, cfg.resolved_rel_pos(), cfg.causal, cfg.vocab_size) == (context, bias, True, 256)
    assert ModelConfig.for_context("small", arch="flash-quad", context=4096, quad_norm_len=512).quad_norm_len == 512
    assert ModelConfig.for_context("small", arch="flash", context=context) == ModelConfig.preset("small")
    with pytest.raises(ConfigError, match="context 4096 exceeds the tiny preset's max_seq_len 2048"):
        ModelConfig.for_context("tiny", arch="flash", context=4096)
    assert ModelConfig.for_context("tiny", arch="flash", context=4096, max_seq_len=4096).max_seq_len == 4096


def test_config_dicts_from_before_the_rel_pos_fix_keep_their_bias():
    """A FLASH-Quad checkpoint written when "auto" followed max_seq_len keeps the bias its weights were trained
    with (its dict has none of the newer fields)."""
    old = ModelConfig(arch="flash-quad").to_dict()
    del old["attention_precision"]
    assert ModelConfig.from_dict(old).resolved_rel_pos() == "rope"            # max_seq_len 16384, as it was built
    assert ModelConfig.from_dict({**old, "max_seq_len": 512}).resolved_rel_pos() == "toeplitz"
    assert ModelConfig.from_dict(ModelConfig(arch="flash-quad").to_dict()).resolved_rel_pos() == "toeplitz"


@pytest.mark.parametrize("arch", [a if a != "performer" else pytest.param(a, marks=pytest.mark.xfail(
    strict=True, reason="Performer's feature redraw branches on a call counter kept in a buffer")) for a in ARCHS])
def test_training_forward_compiles_as_one_graph(arch):
    """`flashgau train --compile` and the compiled speed series: no graph break (a data-dependent input check or
    an untraceable cache would split the graph and print dynamo warnings)."""
    torch._dynamo.reset()
    cfg = ModelConfig(arch=arch, vocab_size=VOCAB, d_model=32, n_layers=2, causal=True, chunk_size=8, qk_dim=16,
                      max_seq_len=64)
    x = torch.randint(0, VOCAB, (2, 24))
    explained = torch._dynamo.explain(LanguageModel(cfg))(x, labels=x)
    assert explained.graph_break_count == 0, [str(b.reason) for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_labels_that_score_nothing_are_refused(build):
    model = build("flash")
    ids = tokens(2, 8)
    with pytest.raises(ValueError, match="labels score no position"):
        model(ids, labels=torch.full_like(ids, -100))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 4:] = False
    labels = ids.clone()
    labels[:, :4] = -100                                   # targets only where the mask says padding
    with pytest.raises(ValueError, match="labels score no position"):
        model(ids, attention_mask=mask, labels=labels)


def test_a_state_from_another_model_is_refused_by_name(build):
    flash, other = build("flash"), build("transformer++")
    _, state = flash.prefill(tokens(1, 5))
    with pytest.raises(ValueError, match=r"belongs to another model \(flash, 2 layers.*\), not to this one "
                                         r"\(transformer\+\+"):
        other.decode_step(torch.tensor([1]), state)
    bigger = build("flash", d_model=128)
    with pytest.raises(ValueError, match="belongs to another model"):
        bigger.decode_step(torch.tensor([1]), state)
    with pytest.raises(ValueError, match="takes the DecodeState that prefill"):
        flash.decode_step(torch.tensor([1]), state.layers)


@pytest.mark.parametrize("temperature", [5e-324, 1e-300, 1e-45, 1e-30, 1e-8])
def test_tiny_temperatures_sample_the_argmax_instead_of_failing(build, temperature):
    model = build("flash")
    ids = tokens(2, 6)
    greedy = model.generate(ids, 5, temperature=0)
    assert torch.equal(model.generate(ids, 5, temperature=temperature, seed=0), greedy)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=float("inf")), "temperature must be a finite number"),
    (dict(seed=2 ** 70), r"seed must be an integer in \[0, 2\*\*63\)"),
    (dict(eos_token_id=10 ** 6), "eos_token_id must be a token id"),
    (dict(top_p="0.5"), "top_p must be in"),
])
def test_bad_sampling_arguments_say_what_to_change(build, kwargs, message):
    with pytest.raises(ValueError, match=message):
        build("flash").generate(tokens(1, 4), 3, **kwargs)
