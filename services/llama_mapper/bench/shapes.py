"""Load shapes as stage tables: pure and stdlib-only, so the locustfile imports them without weight."""

# `standard` is the profile a rollout is judged on: a ramp to the target users, a steady plateau,
# a spike to twice the users (the burst a batch backfill or a retry storm brings), and a recovery
# at the target. `soak` ramps and then holds for the whole duration, to catch leaks and drift.
# `constant` holds the target users after the spawn-rate ramp, which is Locust without a shape.

from __future__ import annotations

from dataclasses import dataclass

SHAPES = ("standard", "soak", "constant")
SPIKE_FACTOR = 2.0
# The spike arrives fast: users start this many times quicker than during the ramp.
SPIKE_RATE_FACTOR = 4.0


@dataclass(frozen=True)
class Stage:
    """Hold `users` (started or stopped at `spawn_rate` per second) until `until_s` into the run."""

    name: str
    until_s: float
    users: int
    spawn_rate: float


def plan_stages(shape: str, users: int, spawn_rate: float, duration_s: float) -> tuple[Stage, ...]:
    """The stages of one run; their last `until_s` is `duration_s`."""
    if shape not in SHAPES:
        raise ValueError(f"--shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if users < 1 or spawn_rate <= 0 or duration_s <= 0:
        raise ValueError("--users, --spawn-rate and --duration must be positive")
    if shape == "constant":
        return (Stage("steady", duration_s, users, spawn_rate),)
    if shape == "soak":
        return (
            Stage("ramp", 0.05 * duration_s, users, spawn_rate),
            Stage("steady", duration_s, users, spawn_rate),
        )
    spike = max(users + 1, round(users * SPIKE_FACTOR))
    return (
        Stage("ramp", 0.20 * duration_s, users, spawn_rate),
        Stage("steady", 0.65 * duration_s, users, spawn_rate),
        Stage("spike", 0.80 * duration_s, spike, spawn_rate * SPIKE_RATE_FACTOR),
        Stage("recover", duration_s, users, spawn_rate * SPIKE_RATE_FACTOR),
    )


def stage_at(stages: tuple[Stage, ...], elapsed_s: float) -> Stage | None:
    """The stage in force `elapsed_s` into the run; None once the run is over."""
    for stage in stages:
        if elapsed_s < stage.until_s:
            return stage
    return None
