"""Reader for IBM Granite Guardian: a Yes/No verdict (and probability of risk) per risk checked."""

from __future__ import annotations

import re
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    DetectorOutputError,
    as_json,
    as_object,
    expect,
    json_kind,
    probability,
    reader,
)

DETECTOR = "granite-guardian"

# Granite Guardian 3.0/3.1 answer "Yes" or "No"; 3.2 adds "<confidence> High|Low </confidence>";
# 3.3 answers "<score> yes|no </score>", after an optional <think> block in thinking mode.
_SCORE_TAG = re.compile(r"<score>\s*(yes|no)\s*</score>", re.IGNORECASE)
_CONFIDENCE_TAG = re.compile(r"<confidence>\s*(high|low)\s*</confidence>", re.IGNORECASE)
_BARE_VERDICT = re.compile(r"^\s*(yes|no)\b", re.IGNORECASE)
_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
# The reported confidence as the finding's severity, so a table can require High.
CONFIDENCE_SEVERITY = {"low": 1, "high": 2}
_RISK_KEYS = ("risk_name", "criteria_id")
_VERDICT_KEYS = ("label", "answer", "output", "generated_text")
_PROBABILITY_KEYS = ("prob_of_risk", "probability_of_risk", "probability", "score")


@reader(DETECTOR)
def read_granite_guardian(output: Any) -> DetectorReport:
    """Reads one check or a list of them. A check is what the model card's example code returns,
    with the risk the caller configured: `{risk_name, label, prob_of_risk}` (`guardian_config =
    {"risk_name": "harm"}`; 3.3 calls it `criteria_id`). `label` is "Yes"/"No" or the model's
    generated text itself, from which only the verdict tags are read (a thinking-mode trace can
    quote the conversation and is never kept). One finding per check answered Yes; its raw label is
    the risk name (harm, social_bias, jailbreak, violence, profanity, sexual_content,
    unethical_behavior, harm_engagement, evasiveness, groundedness, context_relevance,
    answer_relevance, function_call)."""
    doc = as_json(DETECTOR, output)
    checks = doc if isinstance(doc, list) else [doc]
    findings = [
        finding for i, check in enumerate(checks) if (finding := _check(i, check)) is not None
    ]
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _check(i: int, check: Any) -> NormalizedFinding | None:
    where = f"checks[{i}]"
    check = as_object(DETECTOR, check, where)
    risk = next((check[k] for k in _RISK_KEYS if k in check), None)
    expect(
        isinstance(risk, str) and bool(risk.strip()),
        DETECTOR,
        f"{where} needs the risk that was checked (risk_name or criteria_id), got "
        f"{json_kind(risk)}",
    )
    expect(
        len(risk) <= 64,
        DETECTOR,
        f"{where}.risk_name is {len(risk)} characters; bring-your-own criteria text is not a "
        "risk name",
    )
    verdict_key = next((k for k in _VERDICT_KEYS if k in check), None)
    expect(verdict_key is not None, DETECTOR, f"{where} has no label (the Yes/No verdict)")
    verdict, confidence = _verdict(check[verdict_key], f"{where}.{verdict_key}")
    score_key = next((k for k in _PROBABILITY_KEYS if k in check), None)
    score = probability(DETECTOR, check[score_key], f"{where}.{score_key}") if score_key else None
    if not verdict:
        return None
    attributes: dict[str, Any] = {}
    if confidence:
        attributes["confidence"] = confidence
    return NormalizedFinding(
        DETECTOR,
        risk.strip(),
        score=score,
        severity=CONFIDENCE_SEVERITY.get(confidence) if confidence else None,
        attributes=attributes,
    )


def _verdict(value: Any, where: str) -> tuple[bool, str | None]:
    if isinstance(value, bool):
        return value, None
    if not isinstance(value, str):
        raise DetectorOutputError(
            f"{DETECTOR}: {where} must be 'Yes', 'No' or the model's text, got {json_kind(value)}"
        )
    text = _THINK.sub(" ", value)
    confidence = _CONFIDENCE_TAG.search(text)
    found = _SCORE_TAG.search(text) or _BARE_VERDICT.match(text)
    if found is None:
        # Never quoted: a model that went off-script may be echoing the conversation.
        raise DetectorOutputError(
            f"{DETECTOR}: {where} has no Yes/No verdict ({len(value)} characters of other text)"
        )
    return found.group(1).lower() == "yes", confidence.group(1).lower() if confidence else None
