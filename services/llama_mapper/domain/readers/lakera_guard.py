"""Reader for Lakera Guard API v2: the `/v2/guard` screening response (flagged, breakdown, payload)."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    json_kind,
    reader,
    required_bool,
    required_str,
)

DETECTOR = "lakera-guard"

# `flagged: true` with neither a breakdown nor a payload says a policy fired without saying which
# detector: kept under this raw label, which no table maps, so it reaches review as other.unknown.
FLAGGED_WITHOUT_DETECTOR = "flagged"

_BREAKDOWN_IDS = ("detector_id", "policy_id", "project_id")


@reader(DETECTOR)
def read_lakera_guard(output: Any) -> DetectorReport:
    """Reads a `/v2/guard` response: `flagged`, and when the request asked for them `breakdown`
    (one entry per detector the policy ran: `detector_type`, `detected`, `detector_id`,
    `policy_id`, `project_id`, `message_id`) and `payload` (PII, profanity and custom-regex matches:
    `start`, `end`, `text`, `detector_type`, `labels`, `message_id`).

    The raw label is the `detector_type` (`prompt_attack`, `unknown_links`,
    `moderated_content/hate`, `pii/credit_card`, ...). Payload entries give the spans of the
    detected types; their `text` is the matched content and is never read.
    """
    doc = as_object(DETECTOR, as_json(DETECTOR, output), "output")
    flagged = required_bool(DETECTOR, doc, "flagged", "output")
    spans = _payload(doc.get("payload"))
    findings: list[NormalizedFinding] = []
    breakdown = doc.get("breakdown")
    if breakdown is not None:
        for i, entry in enumerate(as_list(DETECTOR, breakdown, "breakdown")):
            where = f"breakdown[{i}]"
            entry = as_object(DETECTOR, entry, where)
            detector_type = required_str(DETECTOR, entry, "detector_type", where)
            if not required_bool(DETECTOR, entry, "detected", where):
                continue
            attributes = {k: entry[k] for k in _BREAKDOWN_IDS if isinstance(entry.get(k), str)}
            message_id = entry.get("message_id")
            if isinstance(message_id, int) and not isinstance(message_id, bool):
                attributes["message_id"] = message_id
            located = spans.pop(detector_type, None)
            if located:
                findings.extend(
                    NormalizedFinding(DETECTOR, detector_type, span=span, attributes=attributes)
                    for span in located
                )
            else:
                findings.append(NormalizedFinding(DETECTOR, detector_type, attributes=attributes))
    # Payload matches of a type the breakdown did not list (or no breakdown was asked for).
    for detector_type, located in spans.items():
        findings.extend(NormalizedFinding(DETECTOR, detector_type, span=span) for span in located)
    if flagged and not findings:
        findings.append(NormalizedFinding(DETECTOR, FLAGGED_WITHOUT_DETECTOR))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _payload(payload: Any) -> dict[str, list[Span]]:
    if payload is None:
        return {}
    spans: dict[str, list[Span]] = {}
    for i, item in enumerate(as_list(DETECTOR, payload, "payload")):
        where = f"payload[{i}]"
        item = as_object(DETECTOR, item, where)
        detector_type = required_str(DETECTOR, item, "detector_type", where)
        start, end = item.get("start"), item.get("end")
        for name, value in (("start", start), ("end", end)):
            expect(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                DETECTOR,
                f"{where}.{name} must be a non-negative integer, got {json_kind(value)}",
            )
        expect(start <= end, DETECTOR, f"{where}.start ({start}) is after end ({end})")
        spans.setdefault(detector_type, []).append(Span(start, end))
    return spans
