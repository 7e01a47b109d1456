"""Analyst evaluation: the served hybrid analyst (inference/analyst.py) on held-out cases; schema-
valid rate, risk-level accuracy, control precision / recall / F1, how often the model answered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from llama_mapper.domain import jsonio, rubric
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.schemas import validator
from llama_mapper.evaluation.evalset import AnalystCase
from llama_mapper.inference.analyst import AnalystModel, analyze_batch

__all__ = ["AnalystModel", "analyst_metrics", "evaluate_analyst", "parse_assessment"]


def parse_assessment(text: str) -> dict[str, Any] | None:
    """The assessment when `text` is JSON valid against analyst-output.json, else None."""
    try:
        value = jsonio.loads(text, what="assessment")
    except (InvalidArgument, TypeError):
        return None
    if not isinstance(value, dict) or not validator("analyst-output").is_valid(value):
        return None
    return value


def _names_catalogue(case: AnalystCase, steps: Sequence[str]) -> bool:
    """The remediation holds a step of the finding's category from the rubric's catalogue."""
    category = str(case.finding.get("label", "")).split(".", 1)[0]
    catalogue = set(rubric.REMEDIATION.get(category, ())) | set(rubric.UNKNOWN_STEPS)
    catalogue |= set(rubric.NO_FINDING_STEPS)
    return bool(catalogue & set(steps))


def analyst_metrics(
    cases: Sequence[AnalystCase], answers: Sequence[dict[str, Any] | str]
) -> dict[str, Any]:
    """AnalystMetrics as a dict, over assessments (or raw texts, parsed). An invalid answer counts
    as a wrong risk level and names no control."""
    if len(cases) != len(answers):
        raise ValueError(f"{len(answers)} answers for {len(cases)} cases")
    valid = right = true_pos = named = expected_total = by_model = catalogue = 0
    fallbacks: Counter[str] = Counter()
    for case, answer in zip(cases, answers, strict=True):
        expected_controls = set(case.expected.get("controls") or ())
        expected_total += len(expected_controls)
        got = parse_assessment(answer) if isinstance(answer, str) else answer
        if got is None or not validator("analyst-output").is_valid(got):
            continue
        valid += 1
        right += got["risk_level"] == case.expected.get("risk_level")
        controls = set(got["controls"])
        named += len(controls)
        true_pos += len(controls & expected_controls)
        method = (got.get("methods") or {}).get("remediation")
        by_model += method == "model"
        if method == "fallback":
            fallbacks[got.get("fallback_reason", "unknown")] += 1
        catalogue += _names_catalogue(case, got["remediation"])
    n = len(cases)
    # Micro-averaged over cases: every control id named (or expected) counts once.
    precision = true_pos / named if named else 0.0
    recall = true_pos / expected_total if expected_total else 0.0
    return {
        "case_count": n,
        "schema_valid_rate": valid / n if n else 0.0,
        "risk_level_accuracy": right / n if n else 0.0,
        "control_precision": precision,
        "control_recall": recall,
        "control_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "remediation_model_rate": by_model / n if n else 0.0,
        "remediation_catalogue_rate": catalogue / n if n else 0.0,
        "fallback_reasons": dict(sorted(fallbacks.items())),
    }


def evaluate_analyst(
    model: AnalystModel | None, cases: Sequence[AnalystCase], batch_size: int = 8
) -> dict[str, Any]:
    """The hybrid analyst as served (`analyze_batch`, the same `analyze` as /v1/analyze) over the
    cases; `model` None measures the rubric alone (every remediation from the catalogue)."""
    # An engine that batches for itself (vLLM schedules up to max_num_seqs) says how many it takes.
    batch_size = getattr(model, "batch_size", batch_size)
    queries = [rubric.query(c.framework, c.finding, c.context, where=f"case {c.id}") for c in cases]
    answers: list[dict[str, Any]] = []
    for start in range(0, len(cases), batch_size):
        answers.extend(analyze_batch(queries[start : start + batch_size], model))
    return analyst_metrics(cases, answers)
