"""Sticky A/B assignment, shadow mirroring, engine placement and canary stepping, as pure functions."""

from __future__ import annotations

from collections import Counter

import pytest

from llama_mapper.serving.arms import (
    CONTROL,
    MAIN_ENGINE,
    TREATMENT,
    TREATMENT_ENGINE,
    RolloutView,
    assign,
    bucket,
    engine_for,
    placements,
    routing_key,
)
from llama_mapper.serving.canary import (
    ADVANCE,
    DEFAULT_STEPS,
    HOLD,
    PROMOTE,
    ROLLBACK,
    ArmStats,
    Gates,
    check_gates,
    decide,
    next_weight,
    two_proportion_p_value,
)


def rollout(weight, stage="canary", **kw):
    return RolloutView("mapper", 1, 2, weight, stage, salt="s1", revision=3, **kw)


def test_bucket_is_deterministic_and_salted():
    assert bucket("s1", "tenant:a") == bucket("s1", "tenant:a")
    assert 0 <= bucket("s1", "tenant:a") < 10_000
    keys = [f"tenant:{i}" for i in range(200)]
    assert [bucket("s1", k) for k in keys] != [bucket("s2", k) for k in keys]


@pytest.mark.parametrize("weight", [0.05, 0.25, 0.5])
def test_split_honours_the_weight(weight):
    counts = Counter(assign(rollout(weight), f"request:{i}").arm for i in range(20_000))
    assert counts[TREATMENT] / 20_000 == pytest.approx(weight, abs=0.01)


def test_assignment_is_sticky_and_raising_the_weight_only_moves_control_to_treatment():
    keys = [routing_key(f"t{i}", "ignored") for i in range(3000)]
    previous = {k: assign(rollout(0.0), k).arm for k in keys}
    assert set(previous.values()) == {CONTROL}
    for weight in DEFAULT_STEPS:
        now = {k: assign(rollout(weight), k).arm for k in keys}
        assert now == {k: assign(rollout(weight), k).arm for k in keys}  # same answer twice
        moved_back = [k for k in keys if previous[k] == TREATMENT and now[k] == CONTROL]
        assert moved_back == []
        previous = now
    assert set(previous.values()) == {TREATMENT}


def test_versions_follow_the_arm_and_no_rollout_means_champion():
    a = assign(rollout(1.0), "k")
    assert (a.arm, a.version) == (TREATMENT, 2)
    assert assign(None, "k", champion_version=7) == assign(None, "k", champion_version=7)
    assert assign(None, "k", champion_version=7).version == 7


@pytest.mark.parametrize("stage", ["complete", "rolled_back", "aborted"])
def test_a_finished_rollout_pins_nothing_every_key_goes_to_the_champion(stage):
    """After a second release (v2 promoted over v1) the champion answers, whatever the old
    rollout record says its control was."""
    for key in (f"tenant:{i}" for i in range(200)):
        done = assign(
            rollout(1.0 if stage == "complete" else 0.0, stage=stage), key, champion_version=2
        )
        assert (done.arm, done.version) == (CONTROL, 2)


def test_an_expired_lease_routes_every_key_to_control():
    live = rollout(1.0, lease_expires_at=1000.0)
    assert assign(live, "k", champion_version=1, now=999.0).arm == TREATMENT
    expired = assign(live, "k", champion_version=1, now=1000.0)
    assert (expired.arm, expired.version) == (CONTROL, 1)
    assert not live.live(1000.0) and live.live(999.0) and live.active
    assert assign(rollout(1.0), "k", now=10**12).arm == TREATMENT  # no lease: nothing expires


def test_routing_key_prefers_the_tenant():
    assert routing_key("acme", "req-1") == routing_key("acme", "req-2")
    assert routing_key(None, "req-1") != routing_key(None, "req-2")


def test_shadow_mirrors_a_share_of_control_without_changing_answers():
    view = rollout(0.3, stage="shadow", shadow=True, shadow_fraction=0.2)
    got = [assign(view, f"request:{i}") for i in range(10_000)]
    assert {a.arm for a in got} == {CONTROL}  # shadow stage: control answers everything
    assert sum(a.mirror for a in got) / 10_000 == pytest.approx(0.2, abs=0.015)
    canary = rollout(0.5, shadow=True, shadow_fraction=0.5)
    both = [assign(canary, f"request:{i}") for i in range(4000)]
    assert not any(a.mirror for a in both if a.arm == TREATMENT)


HEALTHY = ArmStats(
    requests=500, errors=1, p95_ms=80, model_queries=200, schema_valid=200, fallbacks=10
)


def test_only_an_isolated_treatment_leaves_the_main_engine():
    assert engine_for(TREATMENT, isolated=True) == TREATMENT_ENGINE
    assert engine_for(CONTROL, isolated=True) == MAIN_ENGINE
    assert engine_for(TREATMENT, isolated=False) == MAIN_ENGINE
    assert engine_for(CONTROL, isolated=False) == MAIN_ENGINE


def test_placements_put_the_treatment_on_its_engine_during_a_rollout():
    champions = {"mapper": 1, "analyst": 4}
    isolated = placements(rollout(0.5), champions, "mapper", isolated=True)
    assert isolated == {
        ("mapper", 1, MAIN_ENGINE),
        ("analyst", 4, MAIN_ENGINE),
        ("mapper", 2, TREATMENT_ENGINE),
    }
    shared = placements(rollout(0.5), champions, "mapper", isolated=False)
    assert ("mapper", 2, MAIN_ENGINE) in shared and len(shared) == 3
    # Shadow mirrors also reach the treatment: it is loaded (on its engine) at weight 0 too.
    assert ("mapper", 2, TREATMENT_ENGINE) in placements(
        rollout(0.0, "shadow", shadow=True), champions, "mapper", isolated=True
    )
    # A rolled-back (or finished) rollout needs only the champions, wherever it was isolated.
    for stage in ("rolled_back", "complete", "aborted"):
        assert placements(rollout(0.0, stage), champions, "mapper", isolated=True) == {
            ("mapper", 1, MAIN_ENGINE),
            ("analyst", 4, MAIN_ENGINE),
        }
    assert placements(None, {}, "mapper", isolated=True) == set()


def test_canary_holds_until_enough_samples():
    d = decide(0.05, HEALTHY, ArmStats(requests=10), Gates(min_requests=50))
    assert d.action == HOLD and d.weight == 0.05


def test_canary_steps_through_the_schedule_and_promotes():
    weight, seen = 0.05, []
    while True:
        d = decide(weight, HEALTHY, HEALTHY, Gates(p95_ms=100))
        seen.append((d.action, d.weight))
        if d.action != ADVANCE:
            break
        weight = d.weight
    assert seen == [
        (ADVANCE, 0.10),
        (ADVANCE, 0.25),
        (ADVANCE, 0.50),
        (ADVANCE, 1.0),
        (PROMOTE, 1.0),
    ]
    assert next_weight(0.07, DEFAULT_STEPS) == 0.10


@pytest.mark.parametrize(
    ("treatment", "gate"),
    [
        (
            ArmStats(requests=500, errors=50, p95_ms=80, model_queries=100, schema_valid=100),
            "error_rate",
        ),
        (ArmStats(requests=500, p95_ms=400, model_queries=100, schema_valid=100), "p95_ms"),
        (
            ArmStats(requests=500, p95_ms=80, model_queries=100, schema_valid=90),
            "schema_valid_rate",
        ),
        (
            ArmStats(requests=500, p95_ms=80, model_queries=100, schema_valid=100, fallbacks=40),
            "fallback_rate",
        ),
        (
            ArmStats(
                requests=500,
                p95_ms=80,
                model_queries=100,
                schema_valid=100,
                agreement_pairs=100,
                agreements=50,
            ),
            "agreement",
        ),
    ],
)
def test_a_failed_gate_rolls_back_to_zero_with_the_reason(treatment, gate):
    d = decide(0.25, HEALTHY, treatment, Gates(p95_ms=100))
    assert d.action == ROLLBACK and d.weight == 0.0 and d.stage == "rolled_back"
    assert [c.name for c in d.checks if not c.passed] == [gate]
    assert gate in d.reason


def test_feedback_accuracy_uses_a_significance_test_not_a_raw_threshold():
    control = ArmStats(requests=500, p95_ms=80, feedback=200, feedback_correct=180)  # 0.90
    slightly = ArmStats(requests=500, p95_ms=80, feedback=40, feedback_correct=34)  # 0.85, n small
    clearly = ArmStats(requests=500, p95_ms=80, feedback=200, feedback_correct=140)  # 0.70
    assert decide(0.1, control, slightly, Gates()).action == ADVANCE
    d = decide(0.1, control, clearly, Gates())
    assert d.action == ROLLBACK and "feedback_accuracy" in d.reason


def test_two_proportion_p_value_matches_a_hand_computed_z_test():
    # p_a=0.9 (n=200), p_b=0.7 (n=200): pooled 0.8, se=0.04, z=5 -> p ~ 2.87e-7
    assert two_proportion_p_value(180, 200, 140, 200) == pytest.approx(2.8665e-7, rel=1e-3)
    assert two_proportion_p_value(10, 20, 15, 20) > 0.5
    assert two_proportion_p_value(0, 0, 1, 1) == 1.0


def test_fallback_gate_against_the_rules_alone_is_relative_to_their_full_fallback():
    """The rules alone answer other.unknown for every model-bound finding: a treatment that maps
    some of them is not worse, even above the absolute cap; against a model control it is."""
    treatment = ArmStats(
        requests=100, p95_ms=50, model_queries=40, schema_valid=40, fallbacks=24
    )  # 0.6
    model_control = ArmStats(
        requests=100, p95_ms=50, model_queries=40, schema_valid=40, fallbacks=4
    )
    d = decide(0.5, model_control, treatment, Gates(min_requests=10), (0.5, 1.0))
    assert d.action == ROLLBACK and "fallback_rate" in d.reason
    rules = ArmStats(requests=100, p95_ms=40)
    gates = Gates(min_requests=10, p95_ms=100)
    d = decide(0.5, rules, treatment, gates, (0.5, 1.0), rules_only_control=True)
    assert d.action != ROLLBACK, d.reason
    [check] = [c for c in d.checks if c.name == "fallback_rate"]
    assert check.passed and check.limit == pytest.approx(1.1)
    # A model control under the cap keeps the cap: min(0.25, control + 0.10).
    [capped] = [
        c for c in check_gates(model_control, treatment, Gates()) if c.name == "fallback_rate"
    ]
    assert capped.limit == pytest.approx(0.2)
