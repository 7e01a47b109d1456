"""Gate criteria and comparisons as pure functions."""

import math

import pytest

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.evaluation import comparison as gates

REPORT = {
    "eval_set_sha256": "a" * 64,
    "quality": {
        "exact_set_accuracy": 0.9,
        "macro_f1": 0.8,
        "schema_valid_rate": 1.0,
        "fallback_rate": 0.1,
        "case_count": 10,
    },
    "calibration": {"ece_before": 0.2, "ece_after": 0.04, "temperature": 2.0},
    "latency": {"p50_ms": 10.0, "p95_ms": 50.0, "p99_ms": 80.0, "cases_per_second": 5.0},
    "held_out": [{"name": "heldout_pair", "metrics": {"exact_set_accuracy": 0.7, "macro_f1": 0.6}}],
}


def test_targets_pass_and_fail_with_messages():
    targets = {
        "min_accuracy": 0.95,
        "min_macro_f1": 0.5,
        "max_ece": 0.05,
        "min_schema_valid_rate": 1.0,
        "p95_latency_ms": 40.0,
    }
    criteria = {c.name: c for c in gates.check_gate(REPORT, targets, None)}
    assert not criteria["min_accuracy"].passed and "misses" in criteria["min_accuracy"].message
    assert criteria["min_macro_f1"].passed
    assert criteria["max_ece"].passed and criteria["max_ece"].actual == 0.04  # judged after T
    assert criteria["min_schema_valid_rate"].passed
    assert not criteria["max_p95_ms"].passed
    assert "no_significant_regression" not in criteria


def test_missing_measurement_fails_and_unset_targets_are_skipped():
    report = {**REPORT, "calibration": {}}
    (criterion,) = gates.check_gate(report, {"max_ece": 0.1}, None)
    assert not criterion.passed and math.isnan(criterion.actual)
    assert gates.check_gate(REPORT, {}, None) == []


def _cases(correct):
    return [{"id": str(i), "split": "golden", "correct": c} for i, c in enumerate(correct)] + [
        {"id": "h", "split": "heldout_pair", "correct": True}
    ]


def test_compare_pairs_cases_and_flags_regressions():
    worse = {**REPORT, "quality": {**REPORT["quality"], "exact_set_accuracy": 0.5}}
    comparison = gates.compare(
        worse, _cases([False] * 30 + [True] * 5), REPORT, _cases([True] * 35), alpha=0.05
    )
    assert comparison["paired_case_count"] == 35  # held-out cases are not paired
    assert (
        comparison["mcnemar"]["baseline_only_correct"] == 30 and not comparison["mcnemar"]["exact"]
    )
    assert comparison["significant_regression"]
    delta = {d["metric"]: d for d in comparison["deltas"]}["exact_set_accuracy"]
    assert delta["delta"] == pytest.approx(-0.4)
    (criterion,) = gates.check_gate(REPORT, {}, comparison)
    assert criterion.name == "no_significant_regression" and not criterion.passed


def test_compare_refuses_different_eval_sets():
    with pytest.raises(FailedPrecondition):
        gates.compare({**REPORT, "eval_set_sha256": "b" * 64}, [], REPORT, [])


def test_registry_metrics_are_flat():
    values = gates.registry_metrics(REPORT)
    assert values["exact_set_accuracy"] == 0.9 and values["ece_after"] == 0.04
    assert values["heldout_pair.exact_set_accuracy"] == 0.7 and values["p95_ms"] == 50.0


SERVED = "shortlist/1+lexical@0.6"


@pytest.mark.parametrize(
    ("calibrator", "passed", "says"),
    [
        ({"kind": "histogram", "recipe": SERVED}, True, "as served"),
        # Fitted under another shortlist (the lexical answers off, unknown not offered).
        ({"kind": "histogram", "recipe": "shortlist/1-no-unknown"}, False, "no-unknown"),
        # Recorded before recipes were: serving would not apply it either.
        ({"kind": "temperature", "temperature": 1.5}, False, "'unrecorded'"),
    ],
)
def test_a_calibration_fitted_another_way_than_serving_fails_the_gate(calibrator, passed, says):
    report = {**REPORT, "calibration": {**REPORT["calibration"], "calibrator": calibrator}}
    criteria = {
        c.name: c for c in gates.check_gate(report, {"max_ece": 0.05}, None, serving_recipe=SERVED)
    }
    recipe = criteria["calibration_recipe"]
    assert recipe.passed is passed and says in recipe.message
    if not passed:
        assert "mapperctl eval run --hybrid" in recipe.message and SERVED in recipe.message
    assert criteria["max_ece"].passed  # the ECE itself is still judged on its own


def test_the_recipe_is_not_judged_without_a_hybrid_calibration_or_a_serving_recipe():
    def calibrated(calibrator):
        return {**REPORT, "calibration": {**REPORT["calibration"], "calibrator": calibrator}}

    assert gates.check_gate(REPORT, {}, None, serving_recipe=SERVED) == []  # nothing fitted
    assert gates.check_gate(calibrated({"kind": "x"}), {}, None) == []  # the analyst's gate
    # A run of the adapter alone (eval run without --hybrid) judges the model, as it measured it.
    alone = calibrated({"kind": "temperature", "recipe": "all-labels/1"})
    assert gates.check_gate(alone, {}, None, serving_recipe=SERVED) == []


def test_the_default_recipe_is_the_routers():
    from llama_mapper.inference.hybrid import HybridMapper, recipe_for

    assert recipe_for() == HybridMapper().recipe == SERVED
    assert recipe_for(retrieval=False) == HybridMapper(retrieval=False).recipe == "all-labels/1"
    assert HybridMapper(lexical_coverage=None, offer_unknown=False).recipe == (
        "shortlist/1-no-unknown"
    )
