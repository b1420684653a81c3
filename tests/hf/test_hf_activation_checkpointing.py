"""HF's activation checkpointing switch (activation_checkpointing_enable, what Trainer's gradient_checkpointing calls)
turns on LanguageModel's own per-block checkpointing: the same loss and gradients; options flashgau does not
implement are refused."""

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


@pytest.mark.parametrize("kwargs", [dict(activation_checkpointing_kwargs={"use_reentrant": True}),
                                    dict(offload=True), dict(every_n_layers=2)])
def test_options_flashgau_does_not_implement_are_refused(build, kwargs):
    hf = hf_causal(build("flash")).train()
    with pytest.raises(ValueError, match="flashgau checkpoints every block"):
        hf.activation_checkpointing_enable(**kwargs)
    assert not hf.model.gradient_checkpointing
