"""Reader for mozilla-ai any-guardrail's `GuardrailOutput`: the one result shape of every backend."""

from __future__ import annotations

import re
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    is_number,
    json_kind,
    reader,
    required_bool,
    required_str,
)

DETECTOR = "any-guardrail"

# `valid: false` with no triggered category: the guardrail failed the content without saying why.
# No table maps this raw label, so the finding reaches review as other.unknown.
INVALID = "invalid"
_MAX_NAME_CHARS = 64
# A triggered category named by a long criteria text (bring-your-own-criteria backends).
CRITERIA_MET = "criteria_met"
# Category codes (Llama Guard's S1, a classifier's LABEL_1, PolyGuard's O3) mean different things
# for different backends: the raw label says "code:<name>" so that no other vendor's table reads
# it as its own code; the backend's model_id stays in attributes for the reviewer.
_CODE = re.compile(r"^(?:[A-Za-z]{1,3}\d{1,3}|LABEL_\d+)$")
CODE_PREFIX = "code:"
# Backends that name per-document categories with their index (Azure Prompt Shields wraps as
# `document_0`, `document_1`, ...): the index moves to attributes.
_INDEXED = ("document_",)


@reader(DETECTOR)
def read_any_guardrail(output: Any) -> DetectorReport:
    """Reads `GuardrailOutput.model_dump()` (any_guardrail/types.py; schemas/
    guardrail_output.schema.json): `valid`, `explanation`, `score` (risk in ~[0, 1]),
    `categories` [{name, description, score, severity, triggered}], `spans` [{start, end, text,
    label, score}], `action`, `usage` {model_id, ...}, `extra`, `raw`; or a list of them (a
    batched `validate`). Outputs with only `valid`, `explanation` and `score` (older releases)
    read the same.

    When `valid` is false: one finding per triggered category (raw label = its name, score and
    severity as reported), else one per labelled span, else one finding `invalid`. Category names
    are each backend's own (`off-topic`, `hallucination`, `S1`, `LABEL_1`, ...); the table maps the
    ones that mean the same whichever backend emits them, and codes arrive as `code:S1` so that
    they go to review rather than to whichever vendor's table happens to use the same code. Never read:
    `explanation` (judge reasoning that may quote the content), `spans[].text`, `modified_text`,
    `extra` and `raw`. `usage.model_id` is kept, so a reviewer can tell backends apart."""
    doc = as_json(DETECTOR, output)
    outputs = doc if isinstance(doc, list) else [doc]
    batch = isinstance(doc, list)
    findings: list[NormalizedFinding] = []
    for index, item in enumerate(outputs):
        where = f"[{index}]" if batch else "output"
        findings.extend(_output(as_object(DETECTOR, item, where), where, index if batch else None))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _output(doc: dict[str, Any], where: str, index: int | None) -> list[NormalizedFinding]:
    valid = required_bool(DETECTOR, doc, "valid", where)
    score = _score(doc.get("score"), f"{where}.score")
    base: dict[str, Any] = {} if index is None else {"index": index}
    usage = doc.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("model_id"), str):
        base["model_id"] = usage["model_id"]
    action = doc.get("action")
    if isinstance(action, str) and action:
        base["action"] = action
    if valid:
        return []
    out: list[NormalizedFinding] = []
    for i, category in enumerate(as_list(DETECTOR, doc.get("categories") or [], "categories")):
        at = f"{where}.categories[{i}]"
        category = as_object(DETECTOR, category, at)
        name = _name(required_str(DETECTOR, category, "name", at))
        triggered = category.get("triggered")
        expect(
            triggered is None or isinstance(triggered, bool),
            DETECTOR,
            f"{at}.triggered must be true, false or null, got {json_kind(triggered)}",
        )
        if triggered is not True:
            continue
        severity = category.get("severity")
        expect(
            severity is None or (isinstance(severity, int) and not isinstance(severity, bool)),
            DETECTOR,
            f"{at}.severity must be an integer, got {json_kind(severity)}",
        )
        label, attributes = _indexed(name, base)
        out.append(
            NormalizedFinding(
                DETECTOR,
                label,
                score=_score(category.get("score"), f"{at}.score"),
                severity=severity,
                attributes=attributes,
            )
        )
    if not out:
        for i, span in enumerate(as_list(DETECTOR, doc.get("spans") or [], "spans")):
            at = f"{where}.spans[{i}]"
            span = as_object(DETECTOR, span, at)
            label = span.get("label")
            start, end = span.get("start"), span.get("end")
            expect(
                isinstance(start, int) and isinstance(end, int) and 0 <= start <= end,
                DETECTOR,
                f"{at} must have integer start <= end",
            )
            if isinstance(label, str) and label.strip():
                out.append(
                    NormalizedFinding(
                        DETECTOR,
                        _name(label.strip()),
                        score=_score(span.get("score"), f"{at}.score"),
                        span=Span(start, end),
                        attributes=dict(base),
                    )
                )
    if not out:
        out.append(NormalizedFinding(DETECTOR, INVALID, score=score, attributes=dict(base)))
    return out


def _indexed(name: str, base: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    for prefix in _INDEXED:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            return prefix.rstrip("_"), {**base, "category_index": int(name[len(prefix) :])}
    return name, dict(base)


def _name(name: str) -> str:
    # Bring-your-own-criteria backends (Granite Guardian, LLM judges) name a category by the
    # criteria text itself: prose, not a label, and possibly written around the content. It is not
    # kept; the finding says only that the criteria were met.
    if len(name) > _MAX_NAME_CHARS:
        return CRITERIA_MET
    return CODE_PREFIX + name if _CODE.match(name) else name


def _score(value: Any, where: str) -> float | None:
    if value is None:
        return None
    expect(is_number(value), DETECTOR, f"{where} must be a number, got {json_kind(value)}")
    # The schema documents "~[0, 1]": some backends report slightly outside it; clamp, as the
    # canonical result's score is a probability-like number.
    return min(max(float(value), 0.0), 1.0)
