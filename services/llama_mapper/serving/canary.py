"""The canary controller's decision, as a pure function: gates on per-arm statistics -> next step."""

# Every interval the controller hands `decide` the statistics of the current step (control and
# treatment) and gets back what to do: hold (not enough samples yet), advance to the next weight,
# promote (the last step passed), or roll back to weight 0 with the failed gates as the reason.

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_STEPS: tuple[float, ...] = (0.05, 0.10, 0.25, 0.50, 1.0)
HOLD, ADVANCE, PROMOTE, ROLLBACK = "hold", "advance", "promote", "rollback"


@dataclass(frozen=True)
class ArmStats:
    """What one arm did during one step. Latency p95 in milliseconds; counts are plain counts."""

    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None
    model_queries: int = 0  # findings sent to the model
    schema_valid: int = 0  # of those, answers that were valid taxonomy labels
    fallbacks: int = 0  # findings that fell back to other.unknown on this arm's model path
    agreement_pairs: int = 0  # shadowed requests answered by both arms
    agreements: int = 0  # of those, identical label sets
    feedback: int = 0  # feedback verdicts received
    feedback_correct: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def schema_valid_rate(self) -> float:
        return self.schema_valid / self.model_queries if self.model_queries else 1.0

    @property
    def fallback_rate(self) -> float:
        return self.fallbacks / self.model_queries if self.model_queries else 0.0


@dataclass(frozen=True)
class Gates:
    """Thresholds of a canary step; `p95_ms` comes from the registry's targets for this profile."""

    min_requests: int = 50
    max_error_rate: float = 0.02
    p95_ms: float | None = None
    p95_tolerance: float = 1.5  # with no registry target: treatment p95 <= control p95 x this
    min_schema_valid_rate: float = 0.99
    max_fallback_rate: float = 0.25
    max_fallback_increase: float = 0.10  # over control's fallback rate
    min_agreement: float = 0.80
    min_agreement_pairs: int = 30
    min_feedback: int = 30
    alpha: float = 0.05  # one-sided: treatment's feedback accuracy significantly below control's


@dataclass(frozen=True)
class GateCheck:
    name: str
    passed: bool
    value: float | None
    limit: float | None
    note: str = ""


@dataclass(frozen=True)
class Decision:
    action: str
    weight: float
    stage: str
    reason: str
    checks: tuple[GateCheck, ...] = field(default_factory=tuple)


def two_proportion_p_value(success_a: int, n_a: int, success_b: int, n_b: int) -> float:
    """One-sided p-value that proportion b is lower than proportion a (pooled z-test)."""
    if n_a == 0 or n_b == 0:
        return 1.0
    p_a, p_b = success_a / n_a, success_b / n_b
    pooled = (success_a + success_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0 if p_b >= p_a else 0.0
    z = (p_a - p_b) / se
    return 0.5 * math.erfc(z / math.sqrt(2))


def check_gates(
    control: ArmStats, treatment: ArmStats, gates: Gates, *, rules_only_control: bool = False
) -> list[GateCheck]:
    """Every gate on this step's statistics; a gate without enough samples passes, noted.

    `rules_only_control`: control is the rules mapper alone (version 0), which answers every
    finding the treatment sends to its model with other.unknown, i.e. falls back on all of them.
    """
    checks = [
        GateCheck(
            "error_rate",
            treatment.error_rate <= gates.max_error_rate,
            treatment.error_rate,
            gates.max_error_rate,
        ),
    ]
    if gates.p95_ms is not None:
        limit, note = gates.p95_ms, "registry target"
    elif control.p95_ms is not None:
        limit, note = control.p95_ms * gates.p95_tolerance, "control p95 x tolerance"
    else:
        limit, note = None, "no target and no control latency"
    p95 = treatment.p95_ms
    checks.append(
        GateCheck("p95_ms", limit is None or p95 is None or p95 <= limit, p95, limit, note)
    )
    checks.append(
        GateCheck(
            "schema_valid_rate",
            treatment.schema_valid_rate >= gates.min_schema_valid_rate,
            treatment.schema_valid_rate,
            gates.min_schema_valid_rate,
        )
    )
    # Not worse than control by more than the allowed increase, and under the absolute cap
    # unless control itself is over it (the rules alone fall back on every model-bound finding).
    control_fallback = 1.0 if rules_only_control else control.fallback_rate
    fallback_limit = control_fallback + gates.max_fallback_increase
    if control_fallback <= gates.max_fallback_rate:
        fallback_limit = min(gates.max_fallback_rate, fallback_limit)
    checks.append(
        GateCheck(
            "fallback_rate",
            treatment.fallback_rate <= fallback_limit,
            treatment.fallback_rate,
            fallback_limit,
            "vs the rules alone (control falls back on every model-bound finding)"
            if rules_only_control
            else "",
        )
    )
    if treatment.agreement_pairs >= gates.min_agreement_pairs:
        agreement = treatment.agreements / treatment.agreement_pairs
        checks.append(
            GateCheck("agreement", agreement >= gates.min_agreement, agreement, gates.min_agreement)
        )
    else:
        checks.append(
            GateCheck("agreement", True, None, gates.min_agreement, "too few shadowed pairs")
        )
    if treatment.feedback >= gates.min_feedback and control.feedback >= gates.min_feedback:
        p = two_proportion_p_value(
            control.feedback_correct,
            control.feedback,
            treatment.feedback_correct,
            treatment.feedback,
        )
        checks.append(
            GateCheck(
                "feedback_accuracy",
                p >= gates.alpha,
                treatment.feedback_correct / treatment.feedback,
                control.feedback_correct / control.feedback,
                f"one-sided p={p:.4f} vs alpha={gates.alpha}",
            )
        )
    else:
        checks.append(
            GateCheck("feedback_accuracy", True, None, None, "too little feedback for a test")
        )
    return checks


def next_weight(current: float, steps: Sequence[float]) -> float | None:
    """The step after `current`; None when `current` is the last step."""
    for weight in steps:
        if weight > current + 1e-9:
            return weight
    return None


def decide(
    current_weight: float,
    control: ArmStats,
    treatment: ArmStats,
    gates: Gates,
    steps: Sequence[float] = DEFAULT_STEPS,
    *,
    rules_only_control: bool = False,
) -> Decision:
    """What the controller does at the end of an interval."""
    if treatment.requests < gates.min_requests:
        return Decision(
            HOLD,
            current_weight,
            "canary",
            f"waiting for samples: {treatment.requests}/{gates.min_requests} treatment requests",
        )
    checks = tuple(check_gates(control, treatment, gates, rules_only_control=rules_only_control))
    failed = [c for c in checks if not c.passed]
    if failed:
        reason = "; ".join(f"{c.name} {_fmt(c.value)} vs limit {_fmt(c.limit)}" for c in failed)
        return Decision(
            ROLLBACK,
            0.0,
            "rolled_back",
            f"gate failed at weight {current_weight:g}: {reason}",
            checks,
        )
    upcoming = next_weight(current_weight, steps)
    if upcoming is None:
        return Decision(
            PROMOTE,
            1.0,
            "complete",
            f"all gates passed at weight {current_weight:g}: promote",
            checks,
        )
    return Decision(
        ADVANCE,
        upcoming,
        "canary",
        f"gates passed at weight {current_weight:g}: step to {upcoming:g}",
        checks,
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def decide_shadow(
    treatment: ArmStats, gates: Gates, steps: Sequence[float] = DEFAULT_STEPS
) -> Decision:
    """Shadow stage: treatment answers nobody, so only its agreement with control can be judged."""
    if treatment.agreement_pairs < gates.min_agreement_pairs:
        return Decision(
            HOLD,
            0.0,
            "shadow",
            f"waiting for shadowed pairs: {treatment.agreement_pairs}/{gates.min_agreement_pairs}",
        )
    agreement = treatment.agreements / treatment.agreement_pairs
    check = GateCheck("agreement", agreement >= gates.min_agreement, agreement, gates.min_agreement)
    if not check.passed:
        return Decision(
            ROLLBACK,
            0.0,
            "rolled_back",
            f"shadow agreement {agreement:.3f} < {gates.min_agreement}",
            (check,),
        )
    return Decision(
        ADVANCE,
        steps[0],
        "canary",
        f"shadow agreement {agreement:.3f}: canary at {steps[0]:g}",
        (check,),
    )
