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
