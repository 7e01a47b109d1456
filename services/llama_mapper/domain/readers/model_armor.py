"""Reader for Google Cloud Model Armor: the SanitizationResult of sanitizeUserPrompt / ...Response."""

from __future__ import annotations

import re
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    json_kind,
    reader,
)

DETECTOR = "model-armor"

MATCH_FOUND = "MATCH_FOUND"
# Some transports send the FilterMatchState enum as its number: 1 NO_MATCH_FOUND, 2 MATCH_FOUND.
_MATCH_STATES = {MATCH_FOUND: True, 2: True, "NO_MATCH_FOUND": False, 1: False}
# DetectionConfidenceLevel: the lowest level the template screens at that this match reached.
CONFIDENCE_SEVERITY = {"LOW_AND_ABOVE": 1, "MEDIUM_AND_ABOVE": 2, "HIGH": 3}
# An overall MATCH_FOUND that no filter explains: no table maps it, so it goes to review.
UNEXPLAINED_MATCH = "filterMatchState"


@reader(DETECTOR)
def read_model_armor(output: Any) -> DetectorReport:
    """Reads `{sanitizationResult: ...}` or a SanitizationResult itself (REST v1:
    filterMatchState, invocationResult, filterResults keyed by filter; the Python client's
    snake_case dict is read too). One finding per filter that matched: `rai:<type>` per
    raiFilterTypeResults entry (sexually_explicit, hate_speech, harassment, dangerous),
    `pi_and_jailbreak`, `malicious_uris`, `csam`, `virus_scan`, and for Sensitive Data Protection
    one per info type (the DLP infoType name, e.g. US_SOCIAL_SECURITY_NUMBER). A filter's
    confidenceLevel becomes the severity (LOW_AND_ABOVE 1, MEDIUM_AND_ABOVE 2, HIGH 3).

    Never read: `maliciousUriMatchedItems[].uri` (the URI found), deidentifyResult's `data.text`
    (the de-identified prompt) and any finding's quote."""
    doc = as_object(DETECTOR, as_json(DETECTOR, output), "output")
    result = _get(doc, "sanitizationResult")
    result = as_object(DETECTOR, result if result is not None else doc, "sanitizationResult")
    expect(
        _get(result, "filterResults") is not None or _get(result, "filterMatchState") is not None,
        DETECTOR,
        "expected sanitizationResult with filterResults",
    )
    filters = as_object(DETECTOR, _get(result, "filterResults") or {}, "filterResults")
    findings: list[NormalizedFinding] = []
    for name, wrapper in filters.items():
        where = f"filterResults[{name!r}]"
        wrapper = as_object(DETECTOR, wrapper, where)
        for inner_key, inner in wrapper.items():
            inner = as_object(DETECTOR, inner, f"{where}.{inner_key}")
            findings.extend(_filter(str(name), inner, f"{where}.{inner_key}"))
    if _matched(_get(result, "filterMatchState"), "filterMatchState") and not findings:
        findings.append(NormalizedFinding(DETECTOR, UNEXPLAINED_MATCH))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _filter(name: str, inner: dict[str, Any], where: str) -> list[NormalizedFinding]:
    if name == "sdp":
        return _sdp(inner, where)
    if name == "rai":
        return _rai(inner, where)
    if not _matched(_get(inner, "matchState"), f"{where}.matchState"):
        return []
    attributes: dict[str, Any] = {"filter": name}
    items = _get(inner, "maliciousUriMatchedItems")
    if isinstance(items, list):
        attributes["matched_items"] = len(items)
    return [
        NormalizedFinding(DETECTOR, name, severity=_confidence(inner, where), attributes=attributes)
    ]


def _rai(inner: dict[str, Any], where: str) -> list[NormalizedFinding]:
    types = _get(inner, "raiFilterTypeResults") or {}
    if isinstance(types, list):
        # Older responses list entries with their filterType instead of keying them.
        types = {
            str(_get(t, "filterType") or i): t for i, t in enumerate(types) if isinstance(t, dict)
        }
    types = as_object(DETECTOR, types, f"{where}.raiFilterTypeResults")
    out = []
    for kind, entry in types.items():
        at = f"{where}.raiFilterTypeResults[{kind!r}]"
        entry = as_object(DETECTOR, entry, at)
        if _matched(_get(entry, "matchState"), f"{at}.matchState"):
            out.append(
                NormalizedFinding(
                    DETECTOR,
                    f"rai:{str(kind).lower()}",
                    severity=_confidence(entry, at),
                    attributes={"filter": "rai"},
                )
            )
    if not out and _matched(_get(inner, "matchState"), f"{where}.matchState"):
        out.append(NormalizedFinding(DETECTOR, "rai", attributes={"filter": "rai"}))
    return out


def _sdp(inner: dict[str, Any], where: str) -> list[NormalizedFinding]:
    out: list[NormalizedFinding] = []
    inspect = _get(inner, "inspectResult")
    if inspect is not None:
        inspect = as_object(DETECTOR, inspect, f"{where}.inspectResult")
        if _matched(_get(inspect, "matchState"), f"{where}.inspectResult.matchState"):
            items = as_list(DETECTOR, _get(inspect, "findings") or [], f"{where}.findings")
            out.extend(
                _sdp_finding(finding, f"{where}.inspectResult.findings[{i}]")
                for i, finding in enumerate(items)
            )
            if not items:
                out.append(NormalizedFinding(DETECTOR, "sdp", attributes={"filter": "sdp"}))
    deidentify = _get(inner, "deidentifyResult")
    if deidentify is not None:
        deidentify = as_object(DETECTOR, deidentify, f"{where}.deidentifyResult")
        if _matched(_get(deidentify, "matchState"), f"{where}.deidentifyResult.matchState"):
            # `data.text` is the sanitized prompt: never read. The info types are the findings.
            types = as_list(DETECTOR, _get(deidentify, "infoTypes") or [], f"{where}.infoTypes")
            names = [t for t in types if isinstance(t, str) and t]
            out.extend(
                NormalizedFinding(DETECTOR, t, attributes={"filter": "sdp", "deidentified": True})
                for t in dict.fromkeys(names)
            )
            if not names and not out:
                out.append(NormalizedFinding(DETECTOR, "sdp", attributes={"filter": "sdp"}))
    return out


def _sdp_finding(finding: Any, where: str) -> NormalizedFinding:
    finding = as_object(DETECTOR, finding, where)
    info_type = _get(finding, "infoType")
    if isinstance(info_type, dict):
        info_type = info_type.get("name")
    expect(
        isinstance(info_type, str) and bool(info_type),
        DETECTOR,
        f"{where}.infoType must be a non-empty string, got {json_kind(info_type)}",
    )
    attributes: dict[str, Any] = {"filter": "sdp"}
    likelihood = _get(finding, "likelihood")
    if isinstance(likelihood, str):
        attributes["likelihood"] = likelihood
    return NormalizedFinding(
        DETECTOR, info_type, span=_span(_get(finding, "location")), attributes=attributes
    )


def _span(location: Any) -> Span | None:
    if not isinstance(location, dict):
        return None
    rng = _get(location, "codepointRange")
    if not isinstance(rng, dict):
        return None
    try:
        # int64 fields arrive as JSON strings, as in DLP.
        start, end = int(rng.get("start", 0)), int(rng["end"])
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: int(inf)
        return None
    return Span(start, end) if 0 <= start <= end else None


def _matched(state: Any, where: str) -> bool:
    if state is None or state == "FILTER_MATCH_STATE_UNSPECIFIED" or state == 0:
        return False
    expect(
        isinstance(state, str | int) and state in _MATCH_STATES,
        DETECTOR,
        f"{where} must be MATCH_FOUND or NO_MATCH_FOUND, got {json_kind(state)}",
    )
    return _MATCH_STATES[state]


def _confidence(item: dict[str, Any], where: str) -> int | None:
    level = _get(item, "confidenceLevel")
    if level is None or level == "DETECTION_CONFIDENCE_LEVEL_UNSPECIFIED":
        return None
    expect(
        isinstance(level, str) and level in CONFIDENCE_SEVERITY,
        DETECTOR,
        f"{where}.confidenceLevel must be one of {', '.join(CONFIDENCE_SEVERITY)}",
    )
    return CONFIDENCE_SEVERITY[level]


def _get(item: Any, camel: str) -> Any:
    """A field by its REST (camelCase) or Python-client (snake_case) name."""
    if not isinstance(item, dict):
        return None
    if camel in item:
        return item[camel]
    snake = re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()
    return item.get(snake)
