"""Reader for Microsoft Presidio: the analyzer's list of RecognizerResult objects."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.readers.base import as_json, expect, json_kind, reader

DETECTOR = "presidio"


@reader(DETECTOR)
def read_presidio(output: Any) -> DetectorReport:
    """Reads `AnalyzerEngine.analyze(...)` output: RecognizerResult objects, their `to_dict()`
    form, or the REST analyzer's JSON list (`entity_type`, `start`, `end`, `score`, optional
    `analysis_explanation` and `recognition_metadata`)."""
    doc = as_json(DETECTOR, output)
    if isinstance(doc, tuple):
        doc = list(doc)
    expect(isinstance(doc, list), DETECTOR, f"expected a list of results, got {json_kind(doc)}")
    findings = tuple(_finding(i, item) for i, item in enumerate(doc))
    # Presidio answers "nothing found" with an empty list: that is a statement, not a gap.
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _finding(i: int, item: Any) -> NormalizedFinding:
    if not isinstance(item, dict) and hasattr(item, "to_dict"):
        # A RecognizerResult straight from the analyzer; to_dict() is its documented serializer.
        item = item.to_dict()
    where = f"item {i}"
    expect(isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}")
    entity_type = item.get("entity_type")
    expect(entity_type is not None, DETECTOR, f"{where} has no entity_type")
    expect(
        isinstance(entity_type, str) and bool(entity_type.strip()),
        DETECTOR,
        f"{where}.entity_type must be a non-empty string, got {json_kind(entity_type)}",
    )
    start, end = item.get("start"), item.get("end")
    for name, value in (("start", start), ("end", end)):
        expect(value is not None, DETECTOR, f"{where} has no {name}")
        expect(
            _is_int(value) and value >= 0,
            DETECTOR,
            f"{where}.{name} must be a non-negative integer, got {json_kind(value)}",
        )
    expect(start <= end, DETECTOR, f"{where}.start ({start}) is after end ({end})")
    score = item.get("score")
    expect(score is not None, DETECTOR, f"{where} has no score")
    expect(
        _is_number(score) and 0 <= score <= 1,
        DETECTOR,
        f"{where}.score must be a number between 0 and 1, got {_describe_number(score)}",
    )
    return NormalizedFinding(
        detector=DETECTOR,
        raw_label=entity_type.strip(),
        score=float(score),
        span=Span(start, end),
        attributes=_attributes(where, item),
    )


def _attributes(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """Which recognizer and pattern fired. The explanation's `supportive_context_word` and
    `pattern` are left out: the first is a word of the analyzed text, the second says nothing a
    table keys on."""
    attributes: dict[str, Any] = {}
    metadata = item.get("recognition_metadata")
    if metadata is not None:
        expect(
            isinstance(metadata, dict),
            DETECTOR,
            f"{where}.recognition_metadata must be an object, got {json_kind(metadata)}",
        )
        name = metadata.get("recognizer_name")
        if isinstance(name, str) and name:
            attributes["recognizer"] = name
        if metadata.get("is_score_enhanced_by_context") is True:
            attributes["context_enhanced"] = True
    explanation = item.get("analysis_explanation")
    if explanation is not None and not isinstance(explanation, dict):
        explanation = getattr(explanation, "__dict__", None)
    if explanation is not None:
        expect(
            isinstance(explanation, dict),
            DETECTOR,
            f"{where}.analysis_explanation must be an object",
        )
        pattern_name = explanation.get("pattern_name")
        if isinstance(pattern_name, str) and pattern_name:
            attributes["pattern_name"] = pattern_name
        if "recognizer" not in attributes and isinstance(explanation.get("recognizer"), str):
            attributes["recognizer"] = explanation["recognizer"]
    return attributes


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _describe_number(value: Any) -> str:
    return str(value) if _is_number(value) else json_kind(value)
