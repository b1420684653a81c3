"""Activation checkpointing (LanguageModel.set_activation_checkpointing, layers/recompute.py): the same loss and
gradients as the plain pass, only in training mode with gradients, and side effects of a forward (Performer's
feature-redraw counter) happen once per step, not again in the recompute."""

import pytest
import torch

from model_helpers import tokens


def _loss_and_grads(model, ids, mask=None, seed=1):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)                   # the dropout masks
    loss = model(ids, mask, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("arch", ["flash", "transformer++"])
def test_checkpointing_gives_the_same_loss_and_every_gradient(build, arch, causal):
    """fp32, dropout on, padded rows: each block recomputed in backward gives the plain pass's loss and gradients."""
    model = build(arch, causal=causal, dropout=0.1).train()
    ids = tokens(2, 21)
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, 15:] = False
    plain_loss, plain = _loss_and_grads(model, ids, mask)
    assert model.set_activation_checkpointing(True) is model and model.gradient_checkpointing
    loss, grads = _loss_and_grads(model, ids, mask)
    assert grads.keys() == plain.keys() == {n for n, _ in model.named_parameters()}
    torch.testing.assert_close(loss, plain_loss, rtol=0, atol=1e-6)
    for name in plain:
        torch.testing.assert_close(grads[name], plain[name], rtol=0, atol=1e-6, msg=name)


def test_checkpointing_saves_only_the_block_inputs(build):
    """What autograd keeps: with checkpointing the blocks save one input each, far fewer tensors than without."""
    model = build("flash", n_layers=4).train()
    ids = tokens(2, 32)

    def saved(enabled):
        model.set_activation_checkpointing(enabled)
        count = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: count.append(t) or t, lambda t: t):
            model(ids, labels=ids).loss.backward()
        return len(count)

    plain, checkpointed = saved(False), saved(True)
    assert checkpointed < plain / 2, (checkpointed, plain)


def test_checkpointing_is_off_in_eval_and_without_gradients(build, monkeypatch):
    import flashgau.model as model_module

    model = build("flash").set_activation_checkpointing(True)
    calls = []
    real = model_module.checkpointed
    monkeypatch.setattr(model_module, "checkpointed", lambda *a: calls.append(1) or real(*a))
    ids = tokens(1, 12)
    model.eval()(ids)
    with torch.no_grad():
        model.train()(ids)
    assert calls == []
    model.train()(ids)
    assert len(calls) == model.config.n_layers
    with pytest.raises(TypeError, match="True or False"):
        model.set_activation_checkpointing("yes")


def test_performer_redraws_once_per_step_under_checkpointing(build):
    """The recompute must not count as another forward: redrawing there would change the features between the
    forward and the backward of one step (gradients of other features) and advance the schedule twice."""
    start = build("performer", feature_redraw_interval=1).train()
    state = {k: v.clone() for k, v in start.state_dict().items()}
    ids = tokens(2, 16)

    def three_steps(enabled):
        start.load_state_dict(state)
        start.set_activation_checkpointing(enabled)
        runs = [_loss_and_grads(start, ids) for _ in range(3)]
        return runs, {k: v.clone() for k, v in start.state_dict().items() if "redraw" in k}

    (plain, plain_counters), (ckpt, counters) = three_steps(False), three_steps(True)
    for (loss_a, grads_a), (loss_b, grads_b) in zip(plain, ckpt):
        torch.testing.assert_close(loss_b, loss_a, rtol=0, atol=1e-6)
        for name in grads_a:
            torch.testing.assert_close(grads_b[name], grads_a[name], rtol=0, atol=1e-6, msg=name)
    for key in plain_counters:
        assert torch.equal(counters[key], plain_counters[key]), key
