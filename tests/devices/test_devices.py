"""Models, decoding states and training on the device the runtime picks: nothing created on the CPU by accident,
the same numbers on every device, checkpoints that move between devices.

The device under test is FLASHGAU_TEST_DEVICE (default cpu; benchmarks/gpu_check.sh sets cuda). The placement test
runs on PyTorch's "meta" device on every machine: a tensor created on the CPU by mistake meets the meta tensors and
raises, so a GPU run cannot fail that way even where no GPU is at hand."""

import os

import pytest
import torch

from flashgau import ARCHS, LanguageModel, ModelConfig
from flashgau.layers import Context
from flashgau.runtime import resolve_device, resolve_precision
from flashgau.training.config import TrainConfig
from flashgau.training.loop import train
from flashgau.training.trained import evaluate_checkpoint, load_trained


@pytest.fixture(scope="module")
def device():
    name = os.environ.get("FLASHGAU_TEST_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        pytest.skip(f"FLASHGAU_TEST_DEVICE={name} but PyTorch sees no CUDA device")
    return resolve_device(name)


def tiny(arch, **overrides):
    return ModelConfig.preset("tiny", arch=arch, vocab_size=50, chunk_size=4, max_seq_len=64, **overrides)


OPTIONS = {"defaults": {}, "options": dict(token_shift=0.5, attention_precision="fp32", linear_normalizer="sum",
                                           rope_fraction=0.5, performer_epsilon=1e-3, combiner_pooling="unrotated")}


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("causal", [True, False])
def test_no_tensor_is_created_on_the_cpu_by_accident(arch, causal, options):
    meta = torch.device("meta")
    with meta:
        model = LanguageModel(tiny(arch, causal=causal, **OPTIONS[options])).eval()
    B, T = 2, 10
    x = torch.empty(B, T, model.config.d_model, device=meta)
    mask = torch.ones(B, T, dtype=torch.bool, device=meta)
    for key_mask in (None, mask):
        ctx = Context(positions=torch.arange(T, device=meta), key_mask=key_mask, causal=causal)
        for block in model.blocks:
            assert block(x, ctx).device == meta
            if causal and block.supports_cache:
                y, state = block.prefill(x, ctx)
                pos = torch.full((B,), T, dtype=torch.long, device=meta)
                state.reserve(T + 1, exact=False)
                try:
                    y, state = block.step(x[:, :1], state, pos)
                except (RuntimeError, NotImplementedError) as err:  # a step that reads the data (FLASH: how far
                    assert "meta tensor" in str(err)   # into its chunk it is, a GPU sync) stops the meta run there
                    continue
                assert y.device == meta


@pytest.mark.parametrize("arch", ARCHS)
def test_the_same_numbers_on_the_device_as_on_the_cpu(arch, device):
    torch.manual_seed(0)
    cpu_model = LanguageModel(tiny(arch)).eval()
    model = LanguageModel(tiny(arch)).eval()
    model.load_state_dict(cpu_model.state_dict())
    model.to(device)
    ids = torch.randint(0, 50, (2, 11), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    with torch.no_grad():
        want = cpu_model(ids, attention_mask=mask).logits
        got = model(ids.to(device), attention_mask=mask.to(device)).logits
    assert got.device.type == device.type
    torch.testing.assert_close(got.cpu()[mask], want[mask], atol=2e-4, rtol=2e-4)
    greedy = cpu_model.generate(ids[:, :5], 6, temperature=0)
    assert torch.equal(model.generate(ids[:, :5].to(device), 6, temperature=0).cpu(), greedy)


def test_autocast_runs_on_the_device_type(device):
    precision = resolve_precision("auto", device)
    model = LanguageModel(tiny("flash")).to(device)
    ids = torch.randint(0, 50, (2, 9), device=device)
    with precision.autocast():
        out = model(ids, labels=ids)
    assert torch.isfinite(out.loss) and out.logits.device.type == device.type
    assert precision.device_type == device.type


def test_a_run_trained_on_the_device_is_scored_and_resumed_on_the_cpu(small_corpus, tmp_path, device):
    cfg = TrainConfig(arch="flash", preset="tiny", context=32, steps=4, batch_tokens=64, precision="fp32",
                      data=str(small_corpus), out=str(tmp_path / "run"), eval_windows=2)
    first = train(cfg, device=device, stop_after=2, progress=False, log=lambda s: None)
    assert next(first.model.parameters()).device.type == device.type
    done = train(resume=tmp_path / "run", device="cpu", progress=False, log=lambda s: None)
    assert done.finished and next(done.model.parameters()).device.type == "cpu"
    trained = load_trained(tmp_path / "run", device="cpu")
    assert next(trained.model.parameters()).device.type == "cpu"
    again, what = evaluate_checkpoint(tmp_path / "run", device="cpu")
    assert again.loss == pytest.approx(done.final.loss, rel=1e-4) and "on cpu" in what
