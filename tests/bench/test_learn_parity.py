"""`flashgau bench learn-parity`: arms parse into settings and tweaks, the tweaks set the scales they name, the plain
loop trains and scores the same windows for every arm, and without FLASH-pytorch its arms are skipped in one line."""

import json

import pytest
import torch

from flashgau.bench import learn_parity
from flashgau.errors import FlashgauError
from flashgau.model import LanguageModel


@pytest.fixture
def synthetic_plays(monkeypatch):
    """A small repetitive byte text instead of the plays (training and held-out), so the loop runs in seconds."""
    text = torch.tensor(list(b"to be or not to be, that is the question. " * 200))
    monkeypatch.setattr(learn_parity, "plays_bytes", lambda: (text, text.clone()))


def test_arms_parse_into_settings_and_tweaks():
    arm = learn_parity.parse_arm("flashgau+tie_embeddings=False+gamma_std=0.1+linear_std=torch")
    assert arm.impl == "flashgau" and arm.settings == {"tie_embeddings": False}
    assert arm.tweaks == {"gamma_std": 0.1, "linear_std": "torch"}
    for bad in ("gpt2", "flashgau+nonsense=1", "flashgau+gamma_std"):
        with pytest.raises(FlashgauError):
            learn_parity.parse_arm(bad)


def test_tweaks_set_the_scales_they_name():
    torch.manual_seed(0)
    arm = learn_parity.parse_arm("flashgau+emb_std=0.5+gamma_std=0.3+bias_std=2.0+sinusoid_scale=0.7")
    model = learn_parity.flashgau_model(arm, "small", 512)
    for name, value in arm.tweaks.items():
        learn_parity.TWEAKS[name](model, value)
    assert model.embed.weight.std().item() == pytest.approx(0.5, rel=0.05)
    assert model.blocks[3].gamma.std().item() == pytest.approx(0.3, rel=0.1)
    assert model.blocks[3].rel.weight.std().item() == pytest.approx(2.0, rel=0.1)
    assert model.sinusoid.scale.item() == pytest.approx(0.7)


def test_weight_decay_groups_decay_all_or_the_linear_weights_only():
    model = LanguageModel(learn_parity.ModelConfig.preset("tiny"))
    everything = learn_parity.decay_groups(model, 0.1, "all")
    assert len(everything) == 1 and len(everything[0]["params"]) == len(list(model.parameters()))
    decayed, spared = learn_parity.decay_groups(model, 0.1, "linear")
    ids = lambda group: {id(p) for p in group["params"]}  # noqa: E731
    assert {id(model.embed.weight), id(model.blocks[0].gamma), id(model.blocks[0].to_uvz.bias)} <= ids(spared)
    assert id(model.blocks[0].to_uvz.weight) in ids(decayed) and id(model.blocks[0].to_uvz.weight) not in ids(spared)
    assert decayed["weight_decay"] == 0.1 and spared["weight_decay"] == 0.0


def test_the_flashgau_arm_trains_alone_without_flash_pytorch(monkeypatch, synthetic_plays, parse, tmp_path, capsys):
    monkeypatch.setattr(learn_parity, "lucidrains_available", lambda: False)
    out = tmp_path / "runs.json"
    args = parse(learn_parity, ["--preset", "tiny", "--steps", "3", "--seeds", "0", "--context", "32",
                                "--heldout-windows", "4", "--arms", "flashgau", "lucidrains",
                                "flashgau+gamma_std=0.1", "--out", out])
    assert learn_parity.run(args) == 0
    printed = capsys.readouterr().out
    assert "lucidrains: lucidrains' FLASH-pytorch is not installed" in printed
    runs = json.loads(out.read_text())["runs"]
    assert sorted(runs) == ["flashgau+gamma_std=0.1|seed 0", "flashgau|seed 0"]
    base, tweaked = runs["flashgau|seed 0"], runs["flashgau+gamma_std=0.1|seed 0"]
    assert len(base["train_losses"]) == 3 and base["train_losses"][-1] < base["train_losses"][0]
    assert base["heldout"] != tweaked["heldout"]          # the tweak reached the model
    # a rerun trains nothing again; other settings in the same file are refused
    assert learn_parity.run(args) == 0 and "seed 0: held-out" not in capsys.readouterr().out
    args.lr = 1e-3
    with pytest.raises(FlashgauError, match="other settings"):
        learn_parity.run(args)


@pytest.mark.skipif(not learn_parity.lucidrains_available(), reason="flash-pytorch is not installed")
def test_the_lucidrains_arm_has_flashgau_s_shapes(synthetic_plays, parse, capsys):
    arm = learn_parity.parse_arm("lucidrains+norm_type=layernorm")
    model = learn_parity.lucidrains_model(arm, "tiny", 32)
    cfg = learn_parity.ModelConfig.preset("tiny")
    assert len(model.layers) == cfg.n_layers and model.token_emb.weight.shape == (cfg.vocab_size, cfg.d_model)
    assert model.layers[0].group_size == cfg.chunk_size and model.layers[0].to_qk[0].out_features == cfg.qk_dim
    args = parse(learn_parity, ["--preset", "tiny", "--steps", "2", "--seeds", "0", "--context", "32",
                                "--heldout-windows", "4", "--arms", "lucidrains+bias_std=0.02"])
    assert learn_parity.run(args) == 0
    assert "lucidrains+bias_std=0.02 seed 0: held-out" in capsys.readouterr().out
