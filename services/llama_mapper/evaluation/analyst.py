"""Analyst evaluation: schema-valid rate, risk-level accuracy against the rubric, control-id P/R."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.schemas import validator
from llama_mapper.evaluation.evalset import AnalystCase


class AnalystModel(Protocol):
    """An engine with the analyst adapter selected: raw completions for (framework, finding)."""

    def analyze(self, queries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]: ...


def parse_assessment(text: str) -> dict[str, Any] | None:
    """The assessment when `text` is JSON valid against analyst-output.json, else None."""
    try:
        value = jsonio.loads(text, what="assessment")
    except (InvalidArgument, TypeError):
        return None
    if not isinstance(value, dict) or not validator("analyst-output").is_valid(value):
        return None
    return value


def analyst_metrics(cases: Sequence[AnalystCase], completions: Sequence[str]) -> dict[str, Any]:
    """AnalystMetrics as a dict. An invalid output counts as a wrong risk level and names no control."""
    if len(cases) != len(completions):
        raise ValueError(f"{len(completions)} completions for {len(cases)} cases")
    valid = right = true_pos = named = expected_total = 0
    for case, text in zip(cases, completions, strict=True):
        expected_controls = set(case.expected.get("controls") or ())
        expected_total += len(expected_controls)
        got = parse_assessment(text)
        if got is None:
            continue
        valid += 1
        right += got["risk_level"] == case.expected.get("risk_level")
        controls = set(got["controls"])
        named += len(controls)
        true_pos += len(controls & expected_controls)
    n = len(cases)
    return {
        "case_count": n,
        "schema_valid_rate": valid / n if n else 0.0,
        "risk_level_accuracy": right / n if n else 0.0,
        # Micro-averaged over cases: every control id named (or expected) counts once.
        "control_precision": true_pos / named if named else 0.0,
        "control_recall": true_pos / expected_total if expected_total else 0.0,
    }


def evaluate_analyst(
    model: AnalystModel, cases: Sequence[AnalystCase], batch_size: int = 8
) -> dict[str, Any]:
    # An engine that batches for itself (vLLM schedules up to max_num_seqs) says how many it takes.
    batch_size = getattr(model, "batch_size", batch_size)
    completions: list[str] = []
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        completions.extend(model.analyze([(c.framework, c.finding) for c in batch]))
    return analyst_metrics(cases, completions)
