"""Reader for Google Cloud Sensitive Data Protection (DLP): content.inspect findings."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import as_json, expect, json_kind, reader

DETECTOR = "google-dlp"

# google.privacy.dlp.v2.Likelihood, in enum order: the ordinal is the finding's severity.
LIKELIHOODS = (
    "LIKELIHOOD_UNSPECIFIED",
    "VERY_UNLIKELY",
    "UNLIKELY",
    "POSSIBLE",
    "LIKELY",
    "VERY_LIKELY",
)
# The enum documents LIKELIHOOD_UNSPECIFIED as "Default value; same as POSSIBLE", and proto3 JSON
# omits a field at its default, so an absent or unspecified likelihood reads as POSSIBLE.
_UNSPECIFIED_SEVERITY = LIKELIHOODS.index("POSSIBLE")


@reader(DETECTOR)
def read_google_dlp(output: Any) -> DetectorReport:
    """Reads an InspectContentResponse (`{"result": {"findings": [...]}}`), an InspectResult
    (`{"findings": [...]}`) or a bare list of Finding objects, in the REST (camelCase) or the
    proto field-name (snake_case) JSON form. `quote` and `quoteInfo` hold the detected content and
    are never read."""
    doc = as_json(DETECTOR, output)
    if isinstance(doc, dict) and "result" in doc:
        doc = doc["result"]
        expect(isinstance(doc, dict), DETECTOR, f"result must be an object, got {json_kind(doc)}")
        # An InspectResult with no findings serializes as {} (proto3 drops empty fields).
        findings_list = doc.get("findings", [])
    elif isinstance(doc, dict):
        expect(
            "findings" in doc,
            DETECTOR,
            "expected an InspectContentResponse (result), an InspectResult (findings) "
            "or a list of findings",
        )
        findings_list = doc["findings"]
    else:
        findings_list = doc
    expect(
        isinstance(findings_list, list),
        DETECTOR,
        f"findings must be a list, got {json_kind(findings_list)}",
    )
    findings = tuple(_finding(i, item) for i, item in enumerate(findings_list))
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _finding(i: int, item: Any) -> NormalizedFinding:
    where = f"findings[{i}]"
    expect(isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}")
    info_type = _get(item, "infoType", "info_type")
    expect(info_type is not None, DETECTOR, f"{where} has no infoType")
    expect(
        isinstance(info_type, dict),
        DETECTOR,
        f"{where}.infoType must be an object, got {json_kind(info_type)}",
    )
    name = info_type.get("name")
    expect(
        isinstance(name, str) and bool(name.strip()),
        DETECTOR,
        f"{where}.infoType.name must be a non-empty string, got {json_kind(name)}",
    )
    likelihood = _likelihood(where, item.get("likelihood"))
    severity = LIKELIHOODS.index(likelihood)
    if severity == 0:
        severity = _UNSPECIFIED_SEVERITY
    attributes: dict[str, Any] = {"likelihood": likelihood}
    version = info_type.get("version")
    if isinstance(version, str) and version:
        attributes["info_type_version"] = version
    sensitivity = _get(info_type, "sensitivityScore", "sensitivity_score")
    if isinstance(sensitivity, dict) and isinstance(sensitivity.get("score"), str):
        attributes["sensitivity"] = sensitivity["score"]
    span = None
    location = item.get("location")
    if location is not None:
        expect(
            isinstance(location, dict),
            DETECTOR,
            f"{where}.location must be an object, got {json_kind(location)}",
        )
        # Codepoint offsets index the text as characters, like every other reader's span; byte
        # offsets are the fallback for content that is not text, and say so.
        for camel, snake, unit in (
            ("codepointRange", "codepoint_range", "codepoint"),
            ("byteRange", "byte_range", "byte"),
        ):
            value = _get(location, camel, snake)
            if value is not None:
                span = _range(f"{where}.location.{camel}", value)
                attributes["span_unit"] = unit
                break
    return NormalizedFinding(
        DETECTOR, name.strip(), severity=severity, span=span, attributes=attributes
    )


def _likelihood(where: str, value: Any) -> str:
    if value is None:
        return LIKELIHOODS[0]
    if isinstance(value, int) and not isinstance(value, bool):
        # MessageToDict(use_integers_for_enums=True) writes the enum number.
        expect(
            0 <= value < len(LIKELIHOODS),
            DETECTOR,
            f"{where}.likelihood must be 0-{len(LIKELIHOODS) - 1}, got {value}",
        )
        return LIKELIHOODS[value]
    expect(
        isinstance(value, str) and value in LIKELIHOODS,
        DETECTOR,
        f"{where}.likelihood must be one of {', '.join(LIKELIHOODS)}",
    )
    return value


def _range(where: str, value: Any) -> Span:
    expect(isinstance(value, dict), DETECTOR, f"{where} must be an object, got {json_kind(value)}")
    # Range.start / end are int64, which proto3 JSON writes as strings, and a 0 start is omitted.
    bounds = []
    for key in ("start", "end"):
        raw = value.get(key, 0)
        if isinstance(raw, str) and raw.isdigit():
            raw = int(raw)
        expect(
            isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0,
            DETECTOR,
            f"{where}.{key} must be a non-negative integer, got {json_kind(raw)}",
        )
        bounds.append(raw)
    start, end = bounds
    expect(start <= end, DETECTOR, f"{where}.start ({start}) is after end ({end})")
    return Span(start, end)


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)
