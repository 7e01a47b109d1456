"""Reader for Azure AI Content Safety: analyze, Prompt Shields, protected material, groundedness."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import DetectorOutputError, as_json, expect, json_kind, reader

DETECTOR = "azure-content-safety"

# text:analyze and image:analyze report 0-7 (EightSeverityLevels) or 0, 2, 4, 6 (the default
# FourSeverityLevels); 0 is Azure's "safe".
MAX_SEVERITY = 7

# Raw labels for the answers that carry no category name are the response fields that carry them,
# so a table entry can be checked against the REST reference.
BLOCKLIST = "blocklistsMatch"
USER_PROMPT_ATTACK = "userPromptAnalysis"
DOCUMENT_ATTACK = "documentsAnalysis"
PROTECTED_MATERIAL = "protectedMaterialAnalysis"
UNGROUNDED = "ungroundedDetected"

_SECTIONS = (
    "categoriesAnalysis",
    BLOCKLIST,
    USER_PROMPT_ATTACK,
    DOCUMENT_ATTACK,
    PROTECTED_MATERIAL,
    UNGROUNDED,
)


@reader(DETECTOR)
def read_azure_content_safety(output: Any) -> DetectorReport:
    """Reads one response of text:analyze / image:analyze, text:shieldPrompt,
    text:detectProtectedMaterial (text or code) or text:detectGroundedness; a document that merges
    several of them is read section by section."""
    doc = as_json(DETECTOR, output)
    expect(isinstance(doc, dict), DETECTOR, f"expected a JSON object, got {json_kind(doc)}")
    expect(
        any(section in doc for section in _SECTIONS),
        DETECTOR,
        "expected at least one of " + ", ".join(_SECTIONS),
    )
    findings = [
        *_categories(doc.get("categoriesAnalysis")),
        *_blocklists(doc.get(BLOCKLIST)),
        *_user_prompt(doc.get(USER_PROMPT_ATTACK)),
        *_documents(doc.get(DOCUMENT_ATTACK)),
        *_protected_material(doc.get(PROTECTED_MATERIAL)),
        *_groundedness(doc),
    ]
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _categories(section: Any) -> list[NormalizedFinding]:
    if section is None:
        return []
    expect(
        isinstance(section, list),
        DETECTOR,
        f"categoriesAnalysis must be a list, got {json_kind(section)}",
    )
    findings = []
    for i, item in enumerate(section):
        where = f"categoriesAnalysis[{i}]"
        expect(
            isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}"
        )
        category = item.get("category")
        expect(
            isinstance(category, str) and bool(category.strip()),
            DETECTOR,
            f"{where}.category must be a non-empty string",
        )
        severity = item.get("severity")
        if severity is None:
            # The REST model makes severity optional; without one the entry says nothing.
            continue
        expect(
            isinstance(severity, int) and not isinstance(severity, bool),
            DETECTOR,
            f"{where}.severity must be an integer, got {json_kind(severity)}",
        )
        expect(
            0 <= severity <= MAX_SEVERITY,
            DETECTOR,
            f"{where}.severity must be between 0 and {MAX_SEVERITY}, got {severity}",
        )
        if severity > 0:
            findings.append(NormalizedFinding(DETECTOR, category.strip(), severity=severity))
    return findings


def _blocklists(section: Any) -> list[NormalizedFinding]:
    if section is None:
        return []
    expect(
        isinstance(section, list), DETECTOR, f"{BLOCKLIST} must be a list, got {json_kind(section)}"
    )
    findings = []
    for i, item in enumerate(section):
        where = f"{BLOCKLIST}[{i}]"
        expect(
            isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}"
        )
        name = item.get("blocklistName")
        expect(
            isinstance(name, str) and bool(name),
            DETECTOR,
            f"{where}.blocklistName must be a non-empty string",
        )
        attributes: dict[str, Any] = {"blocklist_name": name}
        item_id = item.get("blocklistItemId")
        if item_id is not None:
            expect(isinstance(item_id, str), DETECTOR, f"{where}.blocklistItemId must be a string")
            attributes["blocklist_item_id"] = item_id
        # blocklistItemText is the matched term itself: it is detected content and never copied.
        findings.append(NormalizedFinding(DETECTOR, BLOCKLIST, attributes=attributes))
    return findings


def _user_prompt(section: Any) -> list[NormalizedFinding]:
    if section is None:
        return []
    if _attack_detected(section, USER_PROMPT_ATTACK):
        return [NormalizedFinding(DETECTOR, USER_PROMPT_ATTACK)]
    return []


def _documents(section: Any) -> list[NormalizedFinding]:
    if section is None:
        return []
    expect(
        isinstance(section, list),
        DETECTOR,
        f"{DOCUMENT_ATTACK} must be a list, got {json_kind(section)}",
    )
    return [
        NormalizedFinding(DETECTOR, DOCUMENT_ATTACK, attributes={"index": i})
        for i, item in enumerate(section)
        if _attack_detected(item, f"{DOCUMENT_ATTACK}[{i}]")
    ]


def _attack_detected(item: Any, where: str) -> bool:
    expect(isinstance(item, dict), DETECTOR, f"{where} must be an object, got {json_kind(item)}")
    detected = item.get("attackDetected")
    expect(
        isinstance(detected, bool),
        DETECTOR,
        f"{where}.attackDetected must be true or false, got {json_kind(detected)}",
    )
    return detected


def _protected_material(section: Any) -> list[NormalizedFinding]:
    if section is None:
        return []
    where = PROTECTED_MATERIAL
    expect(
        isinstance(section, dict), DETECTOR, f"{where} must be an object, got {json_kind(section)}"
    )
    detected = section.get("detected")
    expect(
        isinstance(detected, bool),
        DETECTOR,
        f"{where}.detected must be true or false, got {json_kind(detected)}",
    )
    if not detected:
        return []
    attributes: dict[str, Any] = {}
    citations = section.get("codeCitations")
    if citations is not None:
        # The code variant names the licences of the matching repositories; the source URLs are
        # left out, the licences are what a reviewer needs.
        expect(isinstance(citations, list), DETECTOR, f"{where}.codeCitations must be a list")
        licenses = set()
        for i, citation in enumerate(citations):
            expect(
                isinstance(citation, dict) and isinstance(citation.get("license", ""), str),
                DETECTOR,
                f"{where}.codeCitations[{i}] must be an object with a string license",
            )
            if citation.get("license"):
                licenses.add(citation["license"])
        attributes["licenses"] = sorted(licenses)
    return [NormalizedFinding(DETECTOR, PROTECTED_MATERIAL, attributes=attributes)]


def _groundedness(doc: dict[str, Any]) -> list[NormalizedFinding]:
    if UNGROUNDED not in doc:
        return []
    detected = doc[UNGROUNDED]
    expect(
        isinstance(detected, bool),
        DETECTOR,
        f"{UNGROUNDED} must be true or false, got {json_kind(detected)}",
    )
    if not detected:
        return []
    share = doc.get("ungroundedPercentage")
    if share is not None:
        expect(
            isinstance(share, int | float) and not isinstance(share, bool) and 0 <= share <= 1,
            DETECTOR,
            "ungroundedPercentage must be a number between 0 and 1",
        )
    details = doc.get("ungroundedDetails")
    if details is not None and not isinstance(details, list):
        raise DetectorOutputError(f"{DETECTOR}: ungroundedDetails must be a list")
    # The details quote the ungrounded sentences: only their count is kept.
    attributes = {"ungrounded_segments": len(details)} if details is not None else {}
    return [NormalizedFinding(DETECTOR, UNGROUNDED, score=share, attributes=attributes)]
