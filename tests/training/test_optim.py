"""AdamW parameter groups (decoupled decay only on weight matrices) and the warm-up + cosine schedule."""

import math

import pytest
import torch
from torch import nn

from flashgau.training.optim import WarmupCosine, make_optimizer, param_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(3, 3))
        self.scale = nn.Parameter(torch.ones(2, 3))   # 2-D but must not decay, like the GAU scale/offset
        self.norm = nn.LayerNorm(3)

    def no_weight_decay_names(self):
        return {"scale", "norm.weight", "norm.bias"}


def test_groups_follow_no_weight_decay_names_not_ndim():
    model = Toy()
    decay, no_decay = param_groups(model, 0.1)
    assert [p is model.weight for p in decay["params"]] == [True] and decay["weight_decay"] == 0.1
    assert {id(p) for p in no_decay["params"]} == {id(model.scale), id(model.norm.weight), id(model.norm.bias)}
    assert no_decay["weight_decay"] == 0.0


def test_unknown_no_decay_name_is_rejected():
    with pytest.raises(ValueError, match="does not have"):
        param_groups(Toy(), 0.1, no_decay_names={"ghost"})


def test_decay_is_decoupled_and_skips_no_decay_parameters():
    model = Toy()
    opt = make_optimizer(model, lr=0.1, weight_decay=0.5, betas=(0.9, 0.98))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # no gradient signal: only weight decay can move parameters
    opt.step()
    assert torch.allclose(model.weight, torch.full((3, 3), 1 - 0.1 * 0.5))  # p -= lr * wd * p
    assert torch.equal(model.scale, torch.ones(2, 3)) and torch.equal(model.norm.weight, torch.ones(3))


def test_warmup_then_cosine_to_the_floor():
    sched = WarmupCosine(peak=1e-3, total_steps=100, warmup=10, min_ratio=0.1)
    lrs = [sched(s) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))            # linear warm-up
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))           # then never increases
    assert lrs[-1] == pytest.approx(1e-4)                            # ends at peak * min_ratio
    mid = 10 + (99 - 10) / 2
    assert sched(int(mid)) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (int(mid) - 10) / 89))))


def test_warmup_is_capped_and_state_round_trips():
    sched = WarmupCosine(peak=1.0, total_steps=20, warmup=100)
    assert sched.warmup == 4
    again = WarmupCosine.from_state_dict(sched.state_dict())
    assert [again(s) for s in range(20)] == [sched(s) for s in range(20)]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
    assert sched.apply(opt, 2) == opt.param_groups[0]["lr"] == pytest.approx(0.75)
