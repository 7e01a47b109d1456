"""The learning-rate schedule and the time-budget plan of the training recipe, as pure functions."""

from __future__ import annotations

import pytest
import torch
from transformers import get_scheduler

from llama_mapper.training.recipe import MIN_STEPS_TO_PLAN, lr_factor, planned_total_steps


@pytest.mark.parametrize(
    ("schedule", "hf_name"),
    [("cosine", "cosine"), ("linear", "linear"), ("constant", "constant_with_warmup")],
)
@pytest.mark.parametrize(("total", "warmup"), [(150, 10), (8, 0), (5, 10)])
def test_lr_factor_is_transformers_schedule(schedule, hf_name, total, warmup) -> None:
    """The oracle: transformers' get_scheduler over the same steps, step for step."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler(
        hf_name, optimizer, num_warmup_steps=min(warmup, total), num_training_steps=total
    )
    for step in range(total + 1):
        expected = reference.lr_lambdas[0](step)
        got = lr_factor(step, total_steps=total, warmup_steps=warmup, schedule=schedule)
        assert got == pytest.approx(expected, abs=1e-12), (schedule, step)
    # Past the end transformers' cosine climbs back up; ours stays at the end value.
    after = lr_factor(total + 2, total_steps=total, warmup_steps=warmup, schedule=schedule)
    assert after == (1.0 if schedule == "constant" else 0.0)


def test_replanned_total_anneals_to_zero_at_the_new_end() -> None:
    # Planned 150 steps, re-planned to 60 at step 40: the cosine reaches 0 at step 60, not 150.
    assert lr_factor(60, total_steps=60, warmup_steps=10, schedule="cosine") == pytest.approx(0.0)
    assert lr_factor(60, total_steps=150, warmup_steps=10, schedule="cosine") > 0.5


def test_budget_plan_uses_the_recent_pace() -> None:
    # The last 20 steps took 200 s (10 s a step); 500 s of the 1,100 s budget are spent (an
    # earlier attempt's included): 600 s left -> 60 more steps.
    plan = planned_total_steps(
        step=40,
        pace_steps=20,
        pace_elapsed_s=200.0,
        elapsed_s=500.0,
        budget_s=1100.0,
        max_steps=150,
    )
    assert plan == 100


def test_budget_plan_never_exceeds_max_steps() -> None:
    plan = planned_total_steps(
        step=10, pace_steps=10, pace_elapsed_s=10.0, elapsed_s=10.0, budget_s=900.0, max_steps=150
    )
    assert plan == 150


def test_budget_plan_stops_when_the_next_step_does_not_fit() -> None:
    # 5 s left at 10 s a step: stop at this step.
    plan = planned_total_steps(
        step=89, pace_steps=89, pace_elapsed_s=890.0, elapsed_s=895.0, budget_s=900.0, max_steps=150
    )
    assert plan == 89
    # Budget spent (e.g. by a resumed job): stop now, whatever the pace.
    assert (
        planned_total_steps(
            step=2, pace_steps=1, pace_elapsed_s=1.0, elapsed_s=901.0, budget_s=900.0, max_steps=150
        )
        == 2
    )


def test_budget_plan_waits_for_a_measured_pace() -> None:
    # The first steps carry one-off costs: no plan before MIN_STEPS_TO_PLAN steps of this attempt.
    plan = planned_total_steps(
        step=MIN_STEPS_TO_PLAN - 1,
        pace_steps=MIN_STEPS_TO_PLAN - 1,
        pace_elapsed_s=400.0,
        elapsed_s=400.0,
        budget_s=900.0,
        max_steps=150,
    )
    assert plan == 150
