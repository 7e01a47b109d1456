"""Reader for Amazon Comprehend PII detection: DetectPiiEntities and ContainsPiiEntities responses."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import as_json, expect, json_kind, reader

DETECTOR = "aws-comprehend"


@reader(DETECTOR)
def read_aws_comprehend(output: Any) -> DetectorReport:
    """Reads `{"Entities": [{"Score", "Type", "BeginOffset", "EndOffset"}]}` (DetectPiiEntities,
    also one line of a PII detection job's output) or `{"Labels": [{"Name", "Score"}]}`
    (ContainsPiiEntities). Other keys, such as boto3's ResponseMetadata, are ignored."""
    doc = as_json(DETECTOR, output)
    expect(isinstance(doc, dict), DETECTOR, f"expected a JSON object, got {json_kind(doc)}")
    has_entities, has_labels = "Entities" in doc, "Labels" in doc
    expect(
        has_entities or has_labels,
        DETECTOR,
        "expected Entities (DetectPiiEntities) or Labels (ContainsPiiEntities)",
    )
    expect(
        not (has_entities and has_labels),
        DETECTOR,
        "a response has either Entities or Labels, not both",
    )
    if has_entities:
        items = _list(doc, "Entities")
        findings = tuple(_entity(i, item) for i, item in enumerate(items))
    else:
        items = _list(doc, "Labels")
        findings = tuple(_label(i, item) for i, item in enumerate(items))
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _list(doc: dict[str, Any], key: str) -> list[Any]:
    items = doc[key]
    expect(isinstance(items, list), DETECTOR, f"{key} must be a list, got {json_kind(items)}")
    return items


def _entity(i: int, item: Any) -> NormalizedFinding:
    where = f"Entities[{i}]"
    entity_type, score = _type_and_score(where, item, "Type")
    span = None
    begin, end = item.get("BeginOffset"), item.get("EndOffset")
    # The API reference marks both offsets optional; a span needs both.
    if begin is not None or end is not None:
        for name, value in (("BeginOffset", begin), ("EndOffset", end)):
            expect(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                DETECTOR,
                f"{where}.{name} must be a non-negative integer, got {json_kind(value)}",
            )
        expect(begin <= end, DETECTOR, f"{where}.BeginOffset ({begin}) is after EndOffset ({end})")
        span = Span(begin, end)
    return NormalizedFinding(
        DETECTOR, entity_type, score=score, span=span, attributes={"api": "DetectPiiEntities"}
    )


def _label(i: int, item: Any) -> NormalizedFinding:
    entity_type, score = _type_and_score(f"Labels[{i}]", item, "Name")
    return NormalizedFinding(
        DETECTOR, entity_type, score=score, attributes={"api": "ContainsPiiEntities"}
    )


def _type_and_score(where: str, item: Any, type_key: str) -> tuple[str, float | None]:
    expect(isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}")
    entity_type = item.get(type_key)
    expect(entity_type is not None, DETECTOR, f"{where} has no {type_key}")
    expect(
        isinstance(entity_type, str) and bool(entity_type.strip()),
        DETECTOR,
        f"{where}.{type_key} must be a non-empty string, got {json_kind(entity_type)}",
    )
    score = item.get("Score")
    if score is not None:
        expect(
            isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 1,
            DETECTOR,
            f"{where}.Score must be a number between 0 and 1, got {_describe(score)}",
        )
        score = float(score)
    return entity_type.strip(), score


def _describe(value: Any) -> str:
    """A number is metadata and may be quoted; anything else is only named by its type."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json_kind(value)
