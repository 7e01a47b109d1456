"""Reader for Amazon Macie sensitive data findings (GetFindings, EventBridge, exported findings)."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    json_kind,
    reader,
    required_str,
)

DETECTOR = "aws-macie"

# A custom data identifier is the customer's own regex; its name is configuration and stays in
# attributes, the raw label says only that a custom identifier matched.
CUSTOM_IDENTIFIER = "CUSTOM_IDENTIFIER"
# Finding.severity.score: 1 Low, 2 Medium, 3 High (Macie's severity scoring for sensitive data).
MAX_SEVERITY = 3


@reader(DETECTOR)
def read_aws_macie(output: Any) -> DetectorReport:
    """Reads Macie findings as the macie2 API returns them: one Finding, a GetFindings response
    (`{findings: [...]}`), a list of findings, or the EventBridge event that carries one
    (`{detail: Finding}`). For each sensitive data finding, one normalized finding per detection:
    `classificationDetails.result.sensitiveData[].detections[].type` (the managed data identifier
    id, e.g. USA_SOCIAL_SECURITY_NUMBER) and `customDataIdentifiers.detections[]`, with its count,
    category and the finding's severity score.

    Macie findings never contain the sensitive data itself; `occurrences` (cells, line, offset and
    page ranges, record paths) say where it is inside the S3 object and are not copied either: the
    object is named by bucket and key. A policy finding (category POLICY) has no detections; its
    type is kept as the raw label, which no table maps, so it reaches review."""
    doc = as_json(DETECTOR, output)
    if isinstance(doc, dict) and "findings" in doc:
        items = as_list(DETECTOR, doc["findings"], "findings")
    elif isinstance(doc, dict) and isinstance(doc.get("detail"), dict):
        items = [doc["detail"]]
    elif isinstance(doc, list):
        items = doc
    else:
        expect(
            isinstance(doc, dict), DETECTOR, f"expected a finding or a list, got {json_kind(doc)}"
        )
        items = [doc]
    findings = [f for i, item in enumerate(items) for f in _finding(i, item)]
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _finding(i: int, item: Any) -> list[NormalizedFinding]:
    where = f"findings[{i}]"
    item = as_object(DETECTOR, item, where)
    details = item.get("classificationDetails")
    base = _base_attributes(item, where)
    severity = _severity(item.get("severity"), where)
    if details is None:
        kind = required_str(DETECTOR, item, "type", where)
        return [NormalizedFinding(DETECTOR, kind, severity=severity, attributes=base)]
    details = as_object(DETECTOR, details, f"{where}.classificationDetails")
    result = as_object(DETECTOR, details.get("result"), f"{where}.classificationDetails.result")
    out: list[NormalizedFinding] = []
    for j, block in enumerate(as_list(DETECTOR, result.get("sensitiveData", []), "sensitiveData")):
        at = f"{where}.sensitiveData[{j}]"
        block = as_object(DETECTOR, block, at)
        category = required_str(DETECTOR, block, "category", at)
        for k, detection in enumerate(as_list(DETECTOR, block.get("detections", []), at)):
            there = f"{at}.detections[{k}]"
            detection = as_object(DETECTOR, detection, there)
            kind = required_str(DETECTOR, detection, "type", there)
            attributes = {**base, "category": category, **_count(detection, there)}
            out.append(NormalizedFinding(DETECTOR, kind, severity=severity, attributes=attributes))
    custom = result.get("customDataIdentifiers")
    if custom is not None:
        at = f"{where}.customDataIdentifiers"
        custom = as_object(DETECTOR, custom, at)
        for k, detection in enumerate(as_list(DETECTOR, custom.get("detections", []), at)):
            there = f"{at}.detections[{k}]"
            detection = as_object(DETECTOR, detection, there)
            attributes = {**base, "category": CUSTOM_IDENTIFIER, **_count(detection, there)}
            name = detection.get("name")
            if isinstance(name, str) and name:
                attributes["custom_identifier"] = name
            out.append(
                NormalizedFinding(
                    DETECTOR, CUSTOM_IDENTIFIER, severity=severity, attributes=attributes
                )
            )
    return out


def _base_attributes(item: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kind = item.get("type")
    if isinstance(kind, str) and kind:
        out["finding_type"] = kind
    resources = item.get("resourcesAffected")
    if isinstance(resources, dict):
        bucket = resources.get("s3Bucket")
        if isinstance(bucket, dict) and isinstance(bucket.get("name"), str):
            out["bucket"] = bucket["name"]
        obj = resources.get("s3Object")
        if isinstance(obj, dict) and isinstance(obj.get("key"), str):
            out["key"] = obj["key"]
    return out


def _severity(value: Any, where: str) -> int | None:
    if value is None:
        return None
    value = as_object(DETECTOR, value, f"{where}.severity")
    score = value.get("score")
    if score is None:
        return None
    expect(
        isinstance(score, int) and not isinstance(score, bool) and 1 <= score <= MAX_SEVERITY,
        DETECTOR,
        f"{where}.severity.score must be 1, 2 or 3, got {json_kind(score)}",
    )
    return score


def _count(detection: dict[str, Any], where: str) -> dict[str, Any]:
    count = detection.get("count")
    if count is None:
        return {}
    expect(
        isinstance(count, int) and not isinstance(count, bool) and count >= 0,
        DETECTOR,
        f"{where}.count must be a non-negative integer, got {json_kind(count)}",
    )
    return {"count": count}
