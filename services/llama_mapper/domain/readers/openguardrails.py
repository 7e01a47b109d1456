"""Reader for the OpenGuardrails `Verdict` (schema/verdict.schema.json, specification/verdict.md)."""

from __future__ import annotations

import re
from typing import Any

from llama_mapper.domain.crosswalks import default_crosswalks
from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    json_kind,
    probability,
    reader,
    required_str,
)

DETECTOR = "openguardrails"
# The category ids this reader rolls up to are the OpenGuardrails scheme's ids, kept once in
# catalog/crosswalks/openguardrails.yaml (the risk taxonomy of specification/taxonomy.md).
SCHEME = "openguardrails"

DECISIONS = ("allow", "block")
SEVERITIES = {"low": 1, "medium": 2, "high": 3, "critical": 4}
_CATEGORY = re.compile(r"^(safety|security|privacy|x)\.[a-z0-9_.]+$")
# A block that names no finding, and a verdict that could not judge part of the event: neither is
# "found nothing", so both become findings no table maps and reach review as other.unknown.
BLOCK_WITHOUT_FINDING = "block"
UNJUDGED = "unjudged"


@reader(DETECTOR)
def read_openguardrails(output: Any) -> DetectorReport:
    """Reads a Verdict: `event_id`, `provider`, `decision` (allow | block), `findings`
    [{category, severity, path, start, end, score, detector, fp, whitelisted, subject}],
    `modifications`, `unjudged`, `latency_ms`.

    Each finding's category id is rolled up as the taxonomy's rule says (a consumer that does not
    know `privacy.pii.national_id.us` treats it as its longest known prefix): the raw label is the
    longest id of the scheme that prefixes it, and the full id stays in attributes. A whitelisted
    finding "contributes nothing to the decision" and is skipped. Never read: `subject` (the
    detected value, by the specification's own warning), `fp` (its hash) and
    `modifications.spans[].replacement`."""
    doc = as_object(DETECTOR, as_json(DETECTOR, output), "output")
    decision = doc.get("decision")
    expect(
        decision in DECISIONS,
        DETECTOR,
        f"decision must be allow or block, got {json_kind(decision)}",
    )
    base: dict[str, Any] = {"decision": decision}
    provider = doc.get("provider")
    if isinstance(provider, str) and provider:
        base["provider"] = provider
    known = default_crosswalks().scheme(SCHEME).ids
    findings: list[NormalizedFinding] = []
    for i, item in enumerate(as_list(DETECTOR, doc.get("findings") or [], "findings")):
        where = f"findings[{i}]"
        item = as_object(DETECTOR, item, where)
        category = required_str(DETECTOR, item, "category", where)
        expect(
            bool(_CATEGORY.match(category)) and len(category) <= 128,
            DETECTOR,
            f"{where}.category must be a dotted id under safety., security., privacy. or x.",
        )
        if item.get("whitelisted") is True:
            continue
        raw = _rollup(category, known)
        attributes = dict(base)
        if raw != category:
            attributes["category"] = category
        for key in ("path", "detector"):
            if isinstance(item.get(key), str) and item[key]:
                attributes[key] = item[key]
        severity = item.get("severity")
        expect(
            severity is None or (isinstance(severity, str) and severity in SEVERITIES),
            DETECTOR,
            f"{where}.severity must be one of {', '.join(SEVERITIES)}",
        )
        score = item.get("score")
        findings.append(
            NormalizedFinding(
                DETECTOR,
                raw,
                score=probability(DETECTOR, score, f"{where}.score") if score is not None else None,
                severity=SEVERITIES.get(severity) if severity else None,
                span=_span(item, where),
                attributes=attributes,
            )
        )
    unjudged = as_list(DETECTOR, doc.get("unjudged") or [], "unjudged")
    if not findings and decision == "block":
        findings.append(NormalizedFinding(DETECTOR, BLOCK_WITHOUT_FINDING, attributes=base))
    if not findings and unjudged:
        findings.append(
            NormalizedFinding(DETECTOR, UNJUDGED, attributes={**base, "paths": len(unjudged)})
        )
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _rollup(category: str, known: frozenset[str]) -> str:
    parts = category.split(".")
    for end in range(len(parts), 1, -1):
        prefix = ".".join(parts[:end])
        if prefix in known:
            return prefix
    return category


def _span(item: dict[str, Any], where: str) -> Span | None:
    start, end = item.get("start"), item.get("end")
    if start is None and end is None:
        return None
    for name, value in (("start", start), ("end", end)):
        expect(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            DETECTOR,
            f"{where}.{name} must be a non-negative integer, got {json_kind(value)}",
        )
    expect(start <= end, DETECTOR, f"{where}.start ({start}) is after end ({end})")
    return Span(start, end)
