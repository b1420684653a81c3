"""The HF models follow HF's conventions around the same LanguageModel: config.json + model.safetensors round trips
with identical logits for every arch (tied and untied heads, Performer's random-feature buffers), labels=input_ids
shifted inside, -100 and padding ignored, left padding equal to right padding, indexable outputs."""

import dataclasses
import json

import pytest
import torch

from hf_helpers import NEEDS_HF, hf_causal, tokens

pytest.importorskip("transformers", reason=NEEDS_HF)

from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM  # noqa: E402

from flashgau import ARCHS, ModelConfig  # noqa: E402
from flashgau.errors import ConfigError  # noqa: E402
from flashgau.hf import FlashgauConfig, FlashgauForCausalLM, FlashgauForMaskedLM  # noqa: E402


def test_config_holds_every_model_config_field_and_round_trips(tmp_path):
    cfg = ModelConfig.preset("tiny", arch="combiner", vocab_size=300, norm="scalenorm", ffn_dim=40,
                             tie_embeddings=False, random_features=8)
    hf = FlashgauConfig.from_model_config(cfg, pad_token_id=0)
    hf.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "flashgau"
    assert {f.name for f in dataclasses.fields(ModelConfig)} <= set(saved)     # every field, defaults included
    again = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(again, FlashgauConfig) and again.to_model_config() == cfg and again.pad_token_id == 0
    assert (again.hidden_size, again.num_hidden_layers, again.num_attention_heads) == (64, 1, 4)
    assert again.tie_word_embeddings is False and again.max_position_embeddings == cfg.max_seq_len
    assert FlashgauConfig(hidden_size=32, n_heads=2, qk_dim=16).to_model_config().d_model == 32
    flash = ModelConfig.preset("tiny", arch="flash", first_to_all=True)
    assert FlashgauConfig.from_model_config(flash).to_model_config() == flash
    with pytest.raises(ConfigError, match="n_heads"):
        FlashgauConfig(d_model=30, n_heads=4)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_save_and_load_give_identical_logits(arch, tie, build, tmp_path):
    model = build(arch, tie_embeddings=tie, random_features=16)
    if arch == "performer":
        model.blocks[0].attn.redraw_features()           # redrawn features (and counters) must travel too
    hf = hf_causal(model)
    hf.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(again, FlashgauForCausalLM) and not again.training
    x, mask = tokens(2, 9), torch.tensor([[1] * 9, [1] * 6 + [0] * 3])
    with torch.no_grad():
        assert torch.equal(again(x, attention_mask=mask).logits, hf(x, attention_mask=mask).logits)
    saved, loaded = model.state_dict(), again.model.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert (again.get_output_embeddings() is None) == tie


def test_masked_lm_round_trips_and_each_class_takes_only_its_kind(build, tmp_path):
    encoder = build("flash", causal=False)
    hf = FlashgauForMaskedLM.from_language_model(encoder)
    hf.save_pretrained(tmp_path)
    again = AutoModelForMaskedLM.from_pretrained(tmp_path)
    x = tokens(2, 8)
    labels = torch.full_like(x, -100)
    labels[:, 3] = x[:, 3]
    out = again(x, labels=labels)
    want = encoder(x, labels=labels)
    assert torch.equal(out.logits, want.logits) and torch.allclose(out.loss, want.loss)
    with pytest.raises(ValueError, match="FlashgauForCausalLM"):
        FlashgauForMaskedLM(FlashgauConfig.from_model_config(build("flash").config))
    with pytest.raises(ValueError, match="FlashgauForMaskedLM"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_from_pretrained_refuses_missing_weights(build, tmp_path):
    from safetensors.torch import load_file, save_file

    hf_causal(build("flash")).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if "blocks.0" not in k}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lack"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_labels_are_the_inputs_shifted_inside(build):
    model = build("flash")
    hf = hf_causal(model)
    x = tokens(2, 10)
    out = hf(x, labels=x)
    shifted = torch.cat([x[:, 1:], torch.full((2, 1), -100)], 1)
    assert torch.allclose(out.loss, model(x, labels=shifted).loss)
    assert out[0] is out.loss and out[1] is out.logits and out["logits"] is out.logits   # indexable like HF's
    loss, logits = hf(x, labels=x, return_dict=False)
    assert torch.allclose(loss, out.loss) and torch.equal(logits, out.logits)
    ignored = x.clone()
    ignored[:, 4] = -100                                 # the target of position 3
    shifted[:, 3] = -100
    assert torch.allclose(hf(x, labels=ignored).loss, model(x, labels=shifted).loss)


def test_left_and_right_padding_give_the_same_logits_and_loss(build):
    model = build("transformer++")
    hf = hf_causal(model)
    x = tokens(2, 8, seed=4).clamp(min=1)
    lengths = torch.tensor([8, 5])
    right = torch.arange(8)[None, :] < lengths[:, None]
    left = right.flip(1)
    right_ids = x.masked_fill(~right, 0)
    left_ids = torch.zeros_like(x)
    left_ids[0], left_ids[1, 3:] = x[0], x[1, :5]
    r = hf(right_ids, attention_mask=right.long(), labels=right_ids)
    lo = hf(left_ids, attention_mask=left.long(), labels=left_ids)
    assert torch.allclose(r.loss, lo.loss, atol=1e-6)
    assert torch.allclose(lo.logits[1, 3:], r.logits[1, :5], atol=1e-5)     # real columns: the same numbers
    alone = model(x[1:, :5]).logits[0]
    assert torch.allclose(r.logits[1, :5], alone, atol=1e-5)
    assert torch.allclose(r.logits[1, -1], alone[-1], atol=1e-5)            # last column: the row's last token
    assert torch.allclose(lo.logits[1, -1], alone[-1], atol=1e-5)
    # padding scores nothing, whatever its labels say
    assert torch.allclose(hf(right_ids, attention_mask=right.long(), labels=x).loss, r.loss)


def test_num_items_in_batch_gives_the_sum_over_that_many_targets(build):
    hf = hf_causal(build("flash"))
    x = tokens(2, 6)
    mean = hf(x, labels=x).loss
    assert torch.allclose(hf(x, labels=x, num_items_in_batch=torch.tensor(20)).loss, mean * 10 / 20)


def test_training_path_has_gradients_and_unsupported_arguments_are_refused(build):
    hf = hf_causal(build("flash")).train()
    x = tokens(2, 6)
    hf(x, labels=x).loss.backward()
    assert hf.model.embed.weight.grad is not None
    hf.eval()
    assert hf(x).logits.requires_grad                    # eval mode with gradients on: no cache, plain forward
    with pytest.raises(ValueError, match="inputs_embeds"):
        hf(x, inputs_embeds=torch.zeros(2, 6, 64))
    with pytest.raises(ValueError, match="position_ids"):
        hf(x, position_ids=torch.arange(6)[None])
    with pytest.raises(ValueError, match="attention_mask"):
        hf(x, attention_mask=torch.full((2, 6), 2))
    with torch.no_grad():
        out = hf(x, use_cache=True)
        with pytest.raises(ValueError, match="padding|real"):
            hf(x[:, :1], attention_mask=torch.zeros(2, 7, dtype=torch.long), cache=out.cache)


def test_from_pretrained_with_output_loading_info_reports_missing_weights(build, tmp_path):
    from safetensors.torch import load_file, save_file

    hf_causal(build("flash")).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if k != "model.norm.weight"}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    model, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert isinstance(model, FlashgauForCausalLM) and sorted(info["missing_keys"]) == ["model.norm.weight"]
    with pytest.raises(ValueError, match="output_loading_info=True"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_resize_token_embeddings_takes_the_new_ids_and_keeps_the_old_rows(tie, build, tmp_path):
    hf = hf_causal(build("transformer++", tie_embeddings=tie))
    V = hf.config.vocab_size
    x = tokens(2, 6)
    with torch.no_grad():
        before = hf(x).logits
    hf.resize_token_embeddings(V + 3)
    assert hf.config.vocab_size == hf.model.config.vocab_size == V + 3
    assert (hf.get_output_embeddings() is None) == tie
    if not tie:
        assert hf.get_output_embeddings().weight.shape[0] == V + 3
    new = torch.cat([x, torch.full((2, 1), V + 2)], 1)          # a new id, accepted as input and as a label
    with torch.no_grad():
        out = hf(new, labels=new)
    assert out.logits.shape == (2, 7, V + 3) and torch.isfinite(out.loss)
    torch.testing.assert_close(out.logits[:, :6, :V], before)  # the old vocabulary scores as before
    with pytest.raises(ValueError, match=rf"\[0, {V + 3}\)"):
        hf(torch.full((1, 2), V + 3))
    hf.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert torch.equal(again(new).logits, hf(new).logits)


def test_set_output_embeddings_replaces_an_untied_head_and_refuses_a_tied_one(build):
    untied = hf_causal(build("flash", tie_embeddings=False))
    head = torch.nn.Linear(untied.config.hidden_size, untied.config.vocab_size, bias=False)
    untied.set_output_embeddings(head)
    assert untied.get_output_embeddings() is head and untied.model.head is head
    with pytest.raises(ValueError, match="tie_embeddings"):
        hf_causal(build("flash", tie_embeddings=True)).set_output_embeddings(head)


def _padded(lengths, T=8, seed=4):
    """The same rows right-padded and left-padded (pad id 0), with their masks."""
    x = tokens(len(lengths), T, seed=seed).clamp(min=1)
    right = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]
    left_ids = torch.zeros_like(x)
    for b, n in enumerate(lengths):
        left_ids[b, T - n:] = x[b, :n]
    return x.masked_fill(~right, 0), right.long(), left_ids, right.flip(1).long()


@pytest.mark.parametrize("arch", ["flash", "transformer++", "flash-quad"])
def test_hidden_states_are_each_blocks_input_and_the_final_normed_output(arch, build):
    model = build(arch, n_layers=2)
    hf = hf_causal(model)
    right_ids, right, left_ids, left = _padded([8, 5])
    with torch.no_grad():
        out = hf(right_ids, attention_mask=right, output_hidden_states=True)
        lout = hf(left_ids, attention_mask=left, output_hidden_states=True)
        alone = hf(right_ids[1:, :5], output_hidden_states=True)
    h = out.hidden_states
    assert len(h) == 3 and all(t.shape == (2, 8, 64) for t in h)
    ctx = model.context(right_ids, right.bool())
    with torch.no_grad():
        want = [model.embed_tokens(right_ids, torch.arange(8))]
        want.append(model.blocks[0](want[0], ctx))
        last = model.blocks[1](want[1], ctx)
        want.append(model.norm(last))
        assert torch.equal(model.logits_from_hidden(last)[1, 4], out.logits[1, -1])
    for got, expected in zip(h, want):     # a right-padded batch: the tensors as computed, padding included
        assert torch.equal(got, expected)
    for a, b, c in zip(h, lout.hidden_states, alone.hidden_states):       # left padding: the same real columns
        torch.testing.assert_close(b[1, 3:], a[1, :5], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a[1, :5], c[0], atol=1e-5, rtol=1e-5)
    hf.config.output_hidden_states = True                               # the config's default
    with torch.no_grad():
        assert len(hf(right_ids).hidden_states) == 3
    encoder = FlashgauForMaskedLM.from_language_model(build(arch, causal=False, n_layers=2))
    with torch.no_grad():
        enc = encoder(right_ids, attention_mask=right, output_hidden_states=True)
    assert len(enc.hidden_states) == 3 and enc.hidden_states[2].shape == (2, 8, 64)


def test_generate_returns_hidden_states_through_the_cache(build):
    model = build("flash", n_layers=2)
    hf = hf_causal(model)
    prompt = tokens(2, 5).clamp(min=1)
    with torch.no_grad():
        out = hf.generate(prompt, max_new_tokens=6, do_sample=False, return_dict_in_generate=True,
                          output_hidden_states=True)
        full = hf(out.sequences[:, :-1], output_hidden_states=True, use_cache=False).hidden_states
    steps = out.hidden_states
    assert len(steps) == 6 and steps[0][0].shape == (2, 5, 64) and steps[1][0].shape == (2, 1, 64)
    for layer in range(3):                 # every step's hidden states are those of one pass over the sequence
        stepped = torch.cat([step[layer] for step in steps], 1)
        torch.testing.assert_close(stepped, full[layer], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch, heads", [("transformer++", 4), ("transformer+", 4), ("flash-quad", 1)])
def test_attentions_are_the_weight_matrices_in_the_input_columns(arch, heads, build):
    hf = hf_causal(build(arch, n_layers=2))
    right_ids, right, left_ids, left = _padded([8, 5])
    with torch.no_grad():
        out = hf(right_ids, attention_mask=right, output_attentions=True)
        lout = hf(left_ids, attention_mask=left, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, heads, 8, 8)
    for a, b in zip(out.attentions, lout.attentions):
        assert torch.equal(a.triu(1), torch.zeros_like(a))                  # causal: no weight on later keys
        torch.testing.assert_close(b[1, :, 3:, 3:], a[1, :, :5, :5], atol=1e-6, rtol=1e-5)
    if arch != "flash-quad":                                               # softmax rows sum to one
        torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, heads, 8))
    with torch.no_grad():                                                  # generate re-runs the sequence for them
        gen = hf.generate(left_ids, attention_mask=left, max_new_tokens=3, do_sample=False,
                          return_dict_in_generate=True, output_attentions=True)
    assert len(gen.attentions) == 3 and gen.attentions[2][0].shape == (2, heads, 10, 10)


@pytest.mark.parametrize("arch", ["flash", "performer"])
def test_attentions_of_an_arch_without_a_weight_matrix_are_refused_in_one_line(arch, build):
    hf = hf_causal(build(arch))
    with pytest.raises(ValueError, match=f"output_attentions is not available for arch '{arch}'") as err:
        hf(tokens(1, 4), output_attentions=True)
    assert "\n" not in str(err.value)
    assert ("mixed chunk" in str(err.value)) == (arch == "flash")


def test_shift_labels_replace_labels_in_the_loss(build):
    model = build("flash")
    hf = hf_causal(model)
    x = tokens(2, 8)
    shifted = torch.cat([x[:, 1:], torch.full((2, 1), -100)], 1)
    other = tokens(2, 8, seed=9)
    with torch.no_grad():
        by_labels = hf(x, labels=x).loss
        assert torch.equal(hf(x, shift_labels=shifted).loss, by_labels)
        assert torch.equal(hf(x, labels=other, shift_labels=shifted).loss, by_labels)   # labels are not used
        assert torch.allclose(hf(x, shift_labels=other).loss, model(x, labels=other).loss)
        _, _, left_ids, left = _padded([8, 5])                                      # left padding: moved along
        right_ids, right = _padded([8, 5])[:2]
        want = hf(right_ids, attention_mask=right, labels=right_ids).loss
        lshift = torch.cat([left_ids[:, 1:], torch.full((2, 1), -100)], 1).masked_fill(left == 0, -100)
        assert torch.allclose(hf(left_ids, attention_mask=left, shift_labels=lshift).loss, want, atol=1e-6)
    with pytest.raises(ValueError, match="shift_labels"):
        FlashgauForMaskedLM.from_language_model(build("flash", causal=False))(x, shift_labels=x)


def test_cache_layers_are_transformers_cache_layers(build):
    from transformers.cache_utils import CacheLayerMixin

    for arch, has_keys in (("flash", False), ("transformer++", True)):
        hf = hf_causal(build(arch, n_layers=2))
        with torch.no_grad():
            cache = hf(tokens(3, 5), use_cache=True).cache
        assert len(cache) == len(cache.layers) == 2
        assert all(isinstance(layer, CacheLayerMixin) and layer.is_initialized for layer in cache.layers)
        assert all(layer.get_seq_length() == 5 for layer in cache.layers)
        assert (cache.layers[1].keys is not None) == has_keys
        if has_keys:
            assert cache.layers[1].keys is cache.state.layers[1].k and cache.layers[1].keys.shape[0] == 3
        cache.reorder_cache(torch.tensor([2, 0]))                     # the layers follow the reordered state
        assert len(cache.layers) == 2 and cache.layers[0].state is cache.state.layers[0]
        cache.reset()
        assert len(cache) == 0 and cache.layers == []


def test_the_causal_lm_exports_with_an_attention_mask(build):
    hf = hf_causal(build("flash"))
    right_ids, right, left_ids, left = _padded([8, 5])

    class Logits(torch.nn.Module):                       # the logits of a padded batch, no cache
        def __init__(self):
            super().__init__()
            self.hf = hf

        def forward(self, ids, mask):
            return self.hf(ids, attention_mask=mask, use_cache=False).logits

    program = torch.export.export(Logits(), (left_ids, left))
    with torch.no_grad():
        want = hf(left_ids, attention_mask=left).logits
        assert torch.allclose(program.module()(left_ids, left), want, atol=1e-5)
        full = torch.ones_like(left)                      # traced with padding, run without: the same numbers
        assert torch.allclose(program.module()(left_ids, full), hf(left_ids).logits, atol=1e-5)


def test_hidden_states_are_the_tensors_of_the_pass_and_carry_gradients(build):
    hf = hf_causal(build("flash", n_layers=2))
    right_ids, right, _, _ = _padded([8, 5])
    out = hf(right_ids, attention_mask=right, output_hidden_states=True)
    for h in out.hidden_states:
        h.retain_grad()
    out.logits.flatten()[0].backward()
    assert all(h.grad is not None for h in out.hidden_states[:-1])    # the last one (normed) is beside the head


def test_a_config_json_of_an_earlier_flashgau_keeps_the_defaults_it_was_saved_with(tmp_path):
    """A field missing from a saved config.json (written before the field existed) reads as the value it had then
    (config.DEFAULTS_BEFORE), not today's default: the folder's model does not change."""
    import json

    from flashgau.config import DEFAULTS_BEFORE
    from flashgau.hf import FlashgauConfig

    cfg = FlashgauConfig.from_model_config(ModelConfig.preset("tiny", arch="flash", vocab_size=64))
    cfg.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    for name in DEFAULTS_BEFORE:
        data.pop(name)
    (tmp_path / "config.json").write_text(json.dumps(data))
    old = FlashgauConfig.from_pretrained(tmp_path)
    assert {name: getattr(old, name) for name in DEFAULTS_BEFORE} == DEFAULTS_BEFORE
    assert old.to_model_config().token_shift == 0.0                 # FLASH without token shift, as it was saved
    assert FlashgauConfig().to_model_config().token_shift == ModelConfig().token_shift == 0.5   # today's default
    assert FlashgauConfig().init == ModelConfig().init != DEFAULTS_BEFORE["init"]
