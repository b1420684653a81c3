"""HF's activation checkpointing switch (activation_checkpointing_enable, what Trainer's gradient_checkpointing calls)
checkpoints every block through transformers' GradientCheckpointingLayer, with transformers' options (reentrant or
not, offload, every_n_layers): the same loss and gradients."""

import pytest
import torch

from hf_helpers import NEEDS_HF, hf_causal, tokens

pytest.importorskip("transformers", reason=NEEDS_HF)


def _grads(hf, ids):
    hf.zero_grad(set_to_none=True)
    loss = hf(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in hf.named_parameters()}


def test_hf_switch_reaches_the_model_and_keeps_the_gradients(build):
    hf = hf_causal(build("flash")).train()
    ids = tokens(2, 16)
    plain_loss, plain = _grads(hf, ids)
    hf.activation_checkpointing_enable()
    assert hf.model.gradient_checkpointing and hf.is_activation_checkpointing
    loss, grads = _grads(hf, ids)
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], rtol=0, atol=1e-6, msg=name)
    hf.activation_checkpointing_disable()
    assert not hf.model.gradient_checkpointing and not hf.is_activation_checkpointing


@pytest.mark.parametrize("kwargs, checkpointed", [
    (dict(activation_checkpointing_kwargs={"use_reentrant": True}), [0, 1]),
    (dict(activation_checkpointing_kwargs={"use_reentrant": False}), [0, 1]),
    pytest.param(dict(offload=True), [0, 1], marks=pytest.mark.skipif(
        not torch.cuda.is_available(), reason="offload pins host memory, which needs an accelerator")),
    (dict(every_n_layers=2), [0])], ids=["reentrant", "non-reentrant", "offload", "every-2"])
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
def test_transformers_checkpoint_options_apply_to_every_block_and_keep_the_gradients(build, kwargs, checkpointed):
    from transformers.modeling_layers import GradientCheckpointingLayer

    hf = hf_causal(build("flash", n_layers=2)).train()
    ids = tokens(2, 16)
    plain_loss, plain = _grads(hf, ids)
    hf.gradient_checkpointing_enable(**{("gradient_checkpointing_kwargs" if k.startswith("activation") else k): v
                                        for k, v in kwargs.items()})
    layers = [m for m in hf.modules() if isinstance(m, GradientCheckpointingLayer)]
    assert len(layers) == 2 and [i for i, m in enumerate(layers) if m.gradient_checkpointing] == checkpointed
    calls = []
    for i, layer in enumerate(layers):                   # count how often each block's forward runs
        layer.block.register_forward_pre_hook(lambda *_, i=i: calls.append(i))
    loss, grads = _grads(hf, ids)
    assert sorted(calls) == sorted([0, 1] + checkpointed)   # a checkpointed block runs again in the backward
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], rtol=0, atol=1e-6, msg=name)
    assert set(hf.state_dict()) == {f"model.{k}" for k in hf.model.state_dict()}   # one name per weight
