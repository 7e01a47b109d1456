"""Comparing two runs and gating a version: pure functions over reports and per-case results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain import metrics
from llama_mapper.domain.calibrators import ALL_LABELS_RECIPE, recipe_of
from llama_mapper.domain.errors import FailedPrecondition

DEFAULT_ALPHA = 0.05

# (metric, where it lives in report.json, higher is better)
HEADLINE: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("exact_set_accuracy", ("quality", "exact_set_accuracy"), True),
    ("macro_f1", ("quality", "macro_f1"), True),
    ("schema_valid_rate", ("quality", "schema_valid_rate"), True),
    ("fallback_rate", ("quality", "fallback_rate"), False),
    ("ece", ("calibration", "ece_before"), False),
    ("ece_after", ("calibration", "ece_after"), False),
    ("p95_ms", ("latency", "p95_ms"), False),
)


def _get(report: Mapping[str, Any], path: Sequence[str]) -> float | None:
    value: Any = report
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def registry_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The flat metric values written to the registry on the version."""
    values = {name: v for name, path, _ in HEADLINE if (v := _get(report, path)) is not None}
    values["p50_ms"] = float(report["latency"]["p50_ms"])
    values["p99_ms"] = float(report["latency"]["p99_ms"])
    values["cases_per_second"] = float(report["latency"]["cases_per_second"])
    values["case_count"] = float(report["quality"]["case_count"])
    for s in report.get("held_out") or ():
        values[f"{s['name']}.exact_set_accuracy"] = float(s["metrics"]["exact_set_accuracy"])
        values[f"{s['name']}.macro_f1"] = float(s["metrics"]["macro_f1"])
    rob = report.get("robustness")
    if rob:
        values["category_f1_spread"] = float(rob["category_f1_spread"])
        values["detector_f1_spread"] = float(rob["detector_f1_spread"])
        values["robustness_out_of_taxonomy"] = float(
            sum(p["out_of_taxonomy_count"] for p in rob["perturbations"])
        )
    return values


def _correctness(cases: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
    """Per-case exact-set correctness on the measured cases (held-out slices excluded)."""
    return {
        c["id"]: bool(c["correct"])
        for c in cases
        if not str(c.get("split", "")).startswith(("held_out", "heldout"))
    }


def compare(
    candidate: Mapping[str, Any],
    candidate_cases: Sequence[Mapping[str, Any]],
    baseline: Mapping[str, Any],
    baseline_cases: Sequence[Mapping[str, Any]],
    alpha: float = DEFAULT_ALPHA,
) -> dict[str, Any]:
    """Deltas of the headline metrics and McNemar's test on the cases both runs answered."""
    if candidate["eval_set_sha256"] != baseline["eval_set_sha256"]:
        raise FailedPrecondition(
            "runs were made on different eval sets "
            f"({candidate['eval_set_sha256'][:12]} vs {baseline['eval_set_sha256'][:12]})"
        )
    alpha = alpha or DEFAULT_ALPHA
    deltas = []
    for name, path, higher in HEADLINE:
        c, b = _get(candidate, path), _get(baseline, path)
        if c is None or b is None:
            continue
        deltas.append(
            {
                "metric": name,
                "candidate": c,
                "baseline": b,
                "delta": c - b,
                "higher_is_better": higher,
            }
        )
    cand, base = _correctness(candidate_cases), _correctness(baseline_cases)
    shared = sorted(set(cand) & set(base))
    test = metrics.mcnemar([cand[i] for i in shared], [base[i] for i in shared])
    return {
        "eval_set_sha256": candidate["eval_set_sha256"],
        "deltas": deltas,
        "mcnemar": {
            "both_correct": test.both_correct,
            "candidate_only_correct": test.candidate_only_correct,
            "baseline_only_correct": test.baseline_only_correct,
            "both_wrong": test.both_wrong,
            "statistic": test.statistic,
            "p_value": test.p_value,
            "exact": test.exact,
        },
        "alpha": alpha,
        "significant_regression": metrics.significant_regression(test, alpha),
        "paired_case_count": len(shared),
    }


@dataclass(frozen=True)
class Criterion:
    name: str
    target: float
    actual: float
    passed: bool
    message: str

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "actual": self.actual,
            "passed": self.passed,
            "message": self.message,
        }


# gate criterion -> (registry target field, report metric path, the actual must be >= target)
TARGETS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("min_accuracy", "min_accuracy", ("quality", "exact_set_accuracy"), True),
    ("min_macro_f1", "min_macro_f1", ("quality", "macro_f1"), True),
    ("max_ece", "max_ece", ("calibration", "ece_after"), False),
    ("min_schema_valid_rate", "min_schema_valid_rate", ("quality", "schema_valid_rate"), True),
    ("max_p95_ms", "p95_latency_ms", ("latency", "p95_ms"), False),
)

# The analyst's gate, on the `analyst` section of the run that evaluated it. Its targets are stored
# under the analyst's own model name with the registry's target fields: for the analyst,
# min_accuracy is the risk-level accuracy and min_macro_f1 the control F1.
ANALYST_TARGETS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    (
        "min_schema_valid_rate",
        "min_schema_valid_rate",
        ("analyst", "schema_valid_rate"),
        True,
    ),
    ("min_risk_level_accuracy", "min_accuracy", ("analyst", "risk_level_accuracy"), True),
    ("min_control_f1", "min_macro_f1", ("analyst", "control_f1"), True),
)

# The analyst's figures written to the registry on its own version (like registry_metrics).
ANALYST_METRICS = (
    "schema_valid_rate",
    "risk_level_accuracy",
    "control_precision",
    "control_recall",
    "control_f1",
    "remediation_model_rate",
    "remediation_catalogue_rate",
    "case_count",
)


def analyst_registry_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The analyst section's flat values, recorded on the analyst version."""
    section = report.get("analyst") or {}
    return {
        name: float(section[name])
        for name in ANALYST_METRICS
        if isinstance(section.get(name), int | float)
    }


def check_gate(
    report: Mapping[str, Any],
    targets: Mapping[str, float],
    comparison: Mapping[str, Any] | None,
    criteria_table: Sequence[tuple[str, str, tuple[str, ...], bool]] = TARGETS,
    serving_recipe: str | None = None,
) -> list[Criterion]:
    """Every criterion of `criteria_table` (the mapper's TARGETS, or ANALYST_TARGETS) whose target
    is set, plus no significant regression against the champion when a comparison is given, plus
    (with `serving_recipe`) a calibration fitted the way serving asks the model.

    ECE is judged after temperature scaling when a temperature was fitted (that is what serving
    applies), else before. A target with no measured value fails: a gate never passes on absence.
    """
    criteria = []
    if serving_recipe is not None and (recipe_check := _calibration_recipe(report, serving_recipe)):
        criteria.append(recipe_check)
    for name, field, path, at_least in criteria_table:
        if field not in targets:
            continue
        target = float(targets[field])
        actual = _get(report, path)
        if actual is None and name == "max_ece":
            actual = _get(report, ("calibration", "ece_before"))
        if actual is None:
            criteria.append(
                Criterion(name, target, float("nan"), False, f"{name}: the run measured no value")
            )
            continue
        passed = actual >= target if at_least else actual <= target
        op = ">=" if at_least else "<="
        verdict = "meets" if passed else "misses"
        criteria.append(
            Criterion(name, target, actual, passed, f"{actual:.4g} {verdict} {op} {target:.4g}")
        )
    if comparison is not None:
        regressed = bool(comparison["significant_regression"])
        m = comparison["mcnemar"]
        criteria.append(
            Criterion(
                "no_significant_regression",
                1.0,
                0.0 if regressed else 1.0,
                not regressed,
                f"vs champion: {m['candidate_only_correct']} cases only the candidate got right, "
                f"{m['baseline_only_correct']} only the champion, p = {m['p_value']:.3g} (alpha {comparison['alpha']})",
            )
        )
    return criteria


def _calibration_recipe(report: Mapping[str, Any], serving_recipe: str) -> Criterion | None:
    """Serving applies a version's calibrator, temperature and threshold only to confidences
    produced under the recipe they were fitted under (serving/adapters.py): a version calibrated
    another way (the model alone among every label, another shortlist, before recipes were
    recorded) would serve uncalibrated, so its measured ECE and threshold are not what clients
    get. None when the run fitted no calibration (serving then applies its defaults as measured)
    or evaluated the adapter alone: that run judges the model, not the served hybrid, and such a
    version serves with the router's defaults, named in /healthz, until it is evaluated --hybrid."""
    calibration = report.get("calibration")
    recipe = recipe_of(calibration.get("calibrator") if isinstance(calibration, Mapping) else None)
    if recipe is None or recipe == ALL_LABELS_RECIPE:
        return None
    if recipe == serving_recipe:
        return Criterion(
            "calibration_recipe", 1.0, 1.0, True, f"calibrated under {recipe!r}, as served"
        )
    return Criterion(
        "calibration_recipe",
        1.0,
        0.0,
        False,
        f"calibrated under {recipe!r} but serving asks the model under {serving_recipe!r}: "
        "its calibration would not be applied (run `mapperctl eval run --hybrid` for this version)",
    )
