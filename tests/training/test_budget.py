"""The time-budget planner (a pure function of timings): what it gives to training, to evaluation, and when the
held-out set is scored on a fixed subset. The loop's use of it is tested in test_loop.py."""

import pytest

from flashgau.training.budget import (EVAL_SHARE, BudgetPlan, StepDoesNotFit, check_first_step, plan_budget,
                                      refit_steps)


def plan(**overrides):
    args = dict(budget=300.0, elapsed=20.0, steps_done=5, step_seconds=1.0, window_seconds=0.05,
                heldout_windows=1000, periodic_windows=32, sample_seconds=3.0, save_seconds=0.2)
    args.update(overrides)
    return plan_budget(**args)


def test_a_cheap_held_out_set_is_scored_whole_and_training_gets_the_rest():
    p = plan()
    assert p.final_windows is None and p.periodic_windows == 32
    assert p.final_seconds == pytest.approx(1000 * 0.05)
    # the whole run: what was spent, the steps to come, 10 checks, the final score, the reserve
    end = 20.0 + (p.total_steps - 5) * 1.0 + 10 * 32 * 0.05 + p.final_seconds + p.reserve_seconds
    assert 0.9 * 300 <= end <= 300
    assert p.deadline == pytest.approx(300 - p.reserve_seconds - p.final_seconds)


def test_an_expensive_held_out_set_is_scored_on_a_fixed_subset_within_its_share():
    p = plan(window_seconds=2.0)                               # 1000 windows would take 2000 s
    assert p.final_windows is not None and 2 <= p.final_windows < 1000
    left = 300 - 20 - p.reserve_seconds
    assert 10 * p.periodic_windows * 2.0 + p.final_seconds <= EVAL_SHARE * left + 1e-6
    assert (p.total_steps - 5) * 1.0 >= 0.5 * 300               # at least half the budget trains
    assert "fixed subset of" in p.describe(300, 1000)


def test_plans_never_go_below_the_steps_taken():
    assert plan(elapsed=299.0).total_steps == 5
    assert plan(steps_done=0, elapsed=299.0).total_steps == 1


def test_refit_follows_the_measured_step_time_but_ignores_small_drift():
    p = plan()
    assert refit_steps(p, step=50, elapsed=70.0, step_seconds=1.0, checks_left=5) == p.total_steps
    slower = refit_steps(p, step=50, elapsed=70.0, step_seconds=2.0, checks_left=5)
    assert 50 < slower < p.total_steps
    assert refit_steps(p, step=50, elapsed=70.0, step_seconds=0.5, checks_left=5) > p.total_steps
    assert BudgetPlan.from_dict(p.to_dict()) == p


def test_a_step_longer_than_half_the_budget_is_refused_with_what_to_change():
    check_first_step(10.0, 300.0, windows_per_step=8, context=512, precision="fp32")
    with pytest.raises(StepDoesNotFit,
                       match=r"about 75 s here \(8 windows of 512 tokens, bf16\).* --time-budget to 190"):
        check_first_step(75.0, 120.0, windows_per_step=8, context=512, precision="bf16")


def test_a_budget_of_training_time_gives_every_second_left_to_steps():
    """covers="training": `elapsed` is training seconds; evaluation, the sample and saves are not charged, the final
    score is the whole held-out set, and the deadline is the budget itself (a training-time reading)."""
    p = plan(covers="training", elapsed=20.0, window_seconds=2.0, sample_seconds=30.0, save_seconds=5.0)
    assert p.covers == "training" and p.total_steps == 5 + 280 and p.deadline == 300.0
    assert p.final_windows is None and p.periodic_windows == 32 and p.reserve_seconds == 0.0
    assert "300 s of training steps" in p.describe(300, 1000)
    assert BudgetPlan.from_dict(p.to_dict()) == p
    run = plan(elapsed=20.0, window_seconds=2.0, sample_seconds=30.0, save_seconds=5.0)
    assert run.total_steps < p.total_steps                       # the run budget pays for evaluation and saves
    # a refit counts no periodic checks against a training-time deadline
    assert refit_steps(p, step=100, elapsed=100.0, step_seconds=2.0, checks_left=5) == 100 + 100
    with pytest.raises(ValueError, match="covers"):
        plan(covers="wall")


def test_plans_saved_before_the_mode_existed_cover_the_run():
    old = {k: v for k, v in plan().to_dict().items() if k != "covers"}
    assert BudgetPlan.from_dict(old).covers == "run"
