"""Reader for Protect AI's LLM Guard: `scan_prompt` / `scan_output` results and its API answers."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    DetectorOutputError,
    as_json,
    as_object,
    expect,
    is_number,
    json_kind,
    reader,
)

DETECTOR = "llm-guard"

# llm_guard.util.calculate_risk_score: a scanner's risk score is in [-1, 1], negative below the
# scanner's threshold and positive above it. The API (llm_guard_api) reports only these scores,
# and a scanner is invalid exactly when its score is above 0.
_RISK_MIN, _RISK_MAX = -1.0, 1.0


@reader(DETECTOR)
def read_llm_guard(output: Any) -> DetectorReport:
    """Reads what `llm_guard.evaluate.scan_prompt` / `scan_output` return, either as the dict
    `{sanitized_prompt | sanitized_output, results_valid: {scanner: bool}, results_score:
    {scanner: float}}` or as the tuple itself (a JSON list `[sanitized, valid, scores]`), and the
    llm-guard-api answers of /scan/prompt, /analyze/prompt, /scan/output and /analyze/output
    (`{is_valid, scanners: {scanner: risk_score}, sanitized_prompt?}`, llm_guard_api/app/
    schemas.py).

    One finding per scanner that failed (results_valid false; in the API shape, a positive risk
    score); its raw label is the scanner's class name (PromptInjection, Toxicity, Secrets, ...).
    The sanitized text is the prompt or the model output itself and is never read.
    """
    doc = as_json(DETECTOR, output)
    if isinstance(doc, list):
        expect(
            len(doc) == 3,
            DETECTOR,
            f"expected [sanitized_text, results_valid, results_score], got a list of {len(doc)}",
        )
        doc = {"results_valid": doc[1], "results_score": doc[2]}
    doc = as_object(DETECTOR, doc, "output")
    if "results_valid" in doc:
        failed = _library(doc)
    elif "scanners" in doc or "is_valid" in doc:
        failed = _api(doc)
    else:
        raise DetectorOutputError(
            f"{DETECTOR}: expected results_valid and results_score (scan_prompt / scan_output) or "
            "is_valid and scanners (the API)"
        )
    findings = tuple(
        NormalizedFinding(
            DETECTOR,
            name,
            score=max(risk, 0.0) if risk is not None else None,
            attributes={"risk_score": risk} if risk is not None else {},
        )
        for name, risk in failed
    )
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _library(doc: dict[str, Any]) -> list[tuple[str, float | None]]:
    valid = as_object(DETECTOR, doc.get("results_valid"), "results_valid")
    scores = doc.get("results_score", {})
    scores = as_object(DETECTOR, scores, "results_score")
    failed = []
    for name, is_valid in valid.items():
        _check_name(name, "results_valid")
        expect(
            isinstance(is_valid, bool),
            DETECTOR,
            f"results_valid[{name!r}] must be true or false, got {json_kind(is_valid)}",
        )
        risk = _risk(scores.get(name), f"results_score[{name!r}]")
        if not is_valid:
            failed.append((name, risk))
    for name in scores:
        _check_name(name, "results_score")
        _risk(scores[name], f"results_score[{name!r}]")
    return failed


def _api(doc: dict[str, Any]) -> list[tuple[str, float | None]]:
    is_valid = doc.get("is_valid")
    expect(
        isinstance(is_valid, bool),
        DETECTOR,
        f"is_valid must be true or false, got {json_kind(is_valid)}",
    )
    scores = as_object(DETECTOR, doc.get("scanners", {}), "scanners")
    failed = []
    for name, value in scores.items():
        _check_name(name, "scanners")
        risk = _risk(value, f"scanners[{name!r}]")
        if risk is not None and risk > 0:
            failed.append((name, risk))
    expect(
        is_valid or bool(failed),
        DETECTOR,
        "is_valid is false but no scanner has a positive risk score",
    )
    return failed


def _check_name(name: Any, where: str) -> None:
    # Scanner names are class names: short identifiers. Anything else is not LLM Guard's shape.
    expect(
        isinstance(name, str) and 0 < len(name) <= 64 and name.isidentifier(),
        DETECTOR,
        f"{where} keys must be scanner class names",
    )


def _risk(value: Any, where: str) -> float | None:
    if value is None:
        return None
    expect(
        is_number(value) and _RISK_MIN <= value <= _RISK_MAX,
        DETECTOR,
        f"{where} must be a risk score between -1 and 1, got "
        f"{value if is_number(value) else json_kind(value)}",
    )
    return float(value)
