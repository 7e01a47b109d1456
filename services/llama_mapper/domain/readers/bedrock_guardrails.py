"""Reader for Amazon Bedrock Guardrails: ApplyGuardrail responses and Converse / InvokeModel traces."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import DetectorOutputError, as_json, expect, json_kind, reader

DETECTOR = "bedrock-guardrails"

# GuardrailContentFilterConfidence in enum order: the ordinal is the finding's severity (0-3).
CONFIDENCES = ("NONE", "LOW", "MEDIUM", "HIGH")

# Raw labels are "<policy>:<type>" so that one table covers every policy. Names a customer chose
# (a denied topic, a regex) are configuration, kept in attributes; the label carries the type.
CUSTOM_WORD = "word:custom"
CUSTOM_REGEX = "regex:custom"
# An intervention that names no policy finding (for example one decided by a policy this reader
# does not parse): left out of the table on purpose, so it maps to other.unknown for review.
UNEXPLAINED_INTERVENTION = "action:GUARDRAIL_INTERVENED"

_INVOKE_ACTION = "amazon-bedrock-guardrailAction"
_INVOKE_TRACE = "amazon-bedrock-trace"


@reader(DETECTOR)
def read_bedrock_guardrails(output: Any) -> DetectorReport:
    """Reads an ApplyGuardrail response (`action`, `assessments`), a Converse response or its
    `trace` (`guardrail.inputAssessment` / `outputAssessments`), or an InvokeModel body with
    `amazon-bedrock-trace`. Every `match` (the text a policy matched) and every `outputs` /
    `modelOutput` text is detected content and never read."""
    doc = as_json(DETECTOR, output)
    expect(isinstance(doc, dict), DETECTOR, f"expected a JSON object, got {json_kind(doc)}")
    if "assessments" in doc or "action" in doc:
        assessments, intervened = _apply_guardrail(doc)
    elif "guardrail" in doc or "trace" in doc or "stopReason" in doc:
        assessments, intervened = _converse(doc)
    elif _INVOKE_TRACE in doc or _INVOKE_ACTION in doc:
        assessments, intervened = _invoke_model(doc)
    else:
        raise DetectorOutputError(
            f"{DETECTOR}: expected an ApplyGuardrail response (action, assessments), a Converse "
            f"trace (guardrail) or an InvokeModel body ({_INVOKE_TRACE})"
        )
    findings = [
        finding
        for where, source, assessment in assessments
        for finding in _assessment(where, source, assessment)
    ]
    if intervened and not findings:
        findings.append(NormalizedFinding(DETECTOR, UNEXPLAINED_INTERVENTION))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


Located = tuple[str, str | None, Any]


def _apply_guardrail(doc: dict[str, Any]) -> tuple[list[Located], bool]:
    action = doc.get("action")
    expect(
        action in ("NONE", "GUARDRAIL_INTERVENED"),
        DETECTOR,
        "action must be NONE or GUARDRAIL_INTERVENED",
    )
    assessments = doc.get("assessments", [])
    expect(
        isinstance(assessments, list),
        DETECTOR,
        f"assessments must be a list, got {json_kind(assessments)}",
    )
    located = [(f"assessments[{i}]", None, item) for i, item in enumerate(assessments)]
    return located, action == "GUARDRAIL_INTERVENED"


def _converse(doc: dict[str, Any]) -> tuple[list[Located], bool]:
    intervened = doc.get("stopReason") == "guardrail_intervened"
    trace = doc.get("trace", doc)
    expect(isinstance(trace, dict), DETECTOR, f"trace must be an object, got {json_kind(trace)}")
    guardrail = trace.get("guardrail", {})
    expect(
        isinstance(guardrail, dict),
        DETECTOR,
        f"trace.guardrail must be an object, got {json_kind(guardrail)}",
    )
    located: list[Located] = []
    inputs = guardrail.get("inputAssessment", {})
    expect(isinstance(inputs, dict), DETECTOR, "guardrail.inputAssessment must be an object")
    located.extend(
        (f"inputAssessment[{n}]", "input", item) for n, item in enumerate(inputs.values())
    )
    outputs = guardrail.get("outputAssessments", {})
    expect(isinstance(outputs, dict), DETECTOR, "guardrail.outputAssessments must be an object")
    for n, items in enumerate(outputs.values()):
        expect(
            isinstance(items, list),
            DETECTOR,
            f"outputAssessments[{n}] must be a list of assessments, got {json_kind(items)}",
        )
        located.extend(
            (f"outputAssessments[{n}][{i}]", "output", item) for i, item in enumerate(items)
        )
    return located, intervened


def _invoke_model(doc: dict[str, Any]) -> tuple[list[Located], bool]:
    action = doc.get(_INVOKE_ACTION)
    expect(
        action in (None, "NONE", "INTERVENED"),
        DETECTOR,
        f"{_INVOKE_ACTION} must be NONE or INTERVENED",
    )
    trace = doc.get(_INVOKE_TRACE, {})
    expect(isinstance(trace, dict), DETECTOR, f"{_INVOKE_TRACE} must be an object")
    guardrail = trace.get("guardrail", {})
    expect(isinstance(guardrail, dict), DETECTOR, f"{_INVOKE_TRACE}.guardrail must be an object")
    located: list[Located] = []
    inputs = guardrail.get("input", {})
    expect(isinstance(inputs, dict), DETECTOR, "guardrail.input must be an object")
    located.extend((f"input[{n}]", "input", item) for n, item in enumerate(inputs.values()))
    outputs = guardrail.get("outputs", [])
    expect(isinstance(outputs, list), DETECTOR, "guardrail.outputs must be a list")
    for i, by_id in enumerate(outputs):
        expect(isinstance(by_id, dict), DETECTOR, f"guardrail.outputs[{i}] must be an object")
        located.extend(
            (f"outputs[{i}][{n}]", "output", item) for n, item in enumerate(by_id.values())
        )
    return located, action == "INTERVENED"


def _assessment(where: str, source: str | None, assessment: Any) -> list[NormalizedFinding]:
    expect(
        isinstance(assessment, dict),
        DETECTOR,
        f"{where} must be an object, got {json_kind(assessment)}",
    )
    base = {"source": source} if source else {}
    findings: list[NormalizedFinding] = []

    topics = _section(assessment, where, "topicPolicy", "topics")
    for i, topic in _entries(topics, f"{where}.topicPolicy.topics"):
        name = _required_str(topic, f"{where}.topicPolicy.topics[{i}]", "name")
        kind = _required_str(topic, f"{where}.topicPolicy.topics[{i}]", "type")
        attributes = {**base, "policy": "topicPolicy", "topic": name, **_action(topic)}
        findings.append(NormalizedFinding(DETECTOR, f"topic:{kind}", attributes=attributes))

    filters = _section(assessment, where, "contentPolicy", "filters")
    for i, item in _entries(filters, f"{where}.contentPolicy.filters"):
        at = f"{where}.contentPolicy.filters[{i}]"
        kind = _required_str(item, at, "type")
        confidence = _required_str(item, at, "confidence")
        expect(
            confidence in CONFIDENCES,
            DETECTOR,
            f"{at}.confidence must be one of {', '.join(CONFIDENCES)}",
        )
        attributes = {**base, "policy": "contentPolicy", **_action(item)}
        strength = item.get("filterStrength")
        if strength is not None:
            expect(strength in CONFIDENCES, DETECTOR, f"{at}.filterStrength is not a known level")
            attributes["filter_strength"] = strength
        findings.append(
            NormalizedFinding(
                DETECTOR,
                f"content:{kind}",
                severity=CONFIDENCES.index(confidence),
                attributes=attributes,
            )
        )

    words = _section(assessment, where, "wordPolicy", "customWords")
    for _, item in _entries(words, f"{where}.wordPolicy.customWords"):
        attributes = {**base, "policy": "wordPolicy", **_action(item)}
        findings.append(NormalizedFinding(DETECTOR, CUSTOM_WORD, attributes=attributes))
    managed = _section(assessment, where, "wordPolicy", "managedWordLists")
    for i, item in _entries(managed, f"{where}.wordPolicy.managedWordLists"):
        kind = _required_str(item, f"{where}.wordPolicy.managedWordLists[{i}]", "type")
        attributes = {**base, "policy": "wordPolicy", **_action(item)}
        findings.append(NormalizedFinding(DETECTOR, f"word:{kind}", attributes=attributes))

    pii = _section(assessment, where, "sensitiveInformationPolicy", "piiEntities")
    for i, item in _entries(pii, f"{where}.sensitiveInformationPolicy.piiEntities"):
        kind = _required_str(item, f"{where}.sensitiveInformationPolicy.piiEntities[{i}]", "type")
        attributes = {**base, "policy": "sensitiveInformationPolicy", **_action(item)}
        findings.append(NormalizedFinding(DETECTOR, f"pii:{kind}", attributes=attributes))
    regexes = _section(assessment, where, "sensitiveInformationPolicy", "regexes")
    for _, item in _entries(regexes, f"{where}.sensitiveInformationPolicy.regexes"):
        attributes = {**base, "policy": "sensitiveInformationPolicy", **_action(item)}
        if isinstance(item.get("name"), str) and item["name"]:
            attributes["regex_name"] = item["name"]
        findings.append(NormalizedFinding(DETECTOR, CUSTOM_REGEX, attributes=attributes))

    grounding = _section(assessment, where, "contextualGroundingPolicy", "filters")
    for i, item in _entries(grounding, f"{where}.contextualGroundingPolicy.filters"):
        at = f"{where}.contextualGroundingPolicy.filters[{i}]"
        kind = _required_str(item, at, "type")
        score, threshold = item.get("score"), item.get("threshold")
        for key, value in (("score", score), ("threshold", threshold)):
            expect(
                isinstance(value, int | float) and not isinstance(value, bool),
                DETECTOR,
                f"{at}.{key} must be a number, got {json_kind(value)}",
            )
        if item.get("detected") is None and item.get("action") == "NONE" and score >= threshold:
            # Older responses list every grounding check; one that clears its threshold and was
            # not acted on is a pass, not a finding.
            continue
        attributes = {
            **base,
            "policy": "contextualGroundingPolicy",
            "grounding_score": float(score),
            "threshold": float(threshold),
            **_action(item),
        }
        findings.append(NormalizedFinding(DETECTOR, f"grounding:{kind}", attributes=attributes))
    # automatedReasoningPolicy findings are logic validations of a claim, not content categories;
    # they are not read. An intervention they alone cause surfaces as UNEXPLAINED_INTERVENTION.
    return findings


def _section(assessment: dict[str, Any], where: str, policy: str, key: str) -> list[Any]:
    section = assessment.get(policy)
    if section is None:
        return []
    expect(isinstance(section, dict), DETECTOR, f"{where}.{policy} must be an object")
    items = section.get(key, [])
    expect(
        isinstance(items, list),
        DETECTOR,
        f"{where}.{policy}.{key} must be a list, got {json_kind(items)}",
    )
    return items


def _entries(items: list[Any], where: str) -> list[tuple[int, dict[str, Any]]]:
    """The entries a policy reports as detected; `detected: false` (detect mode) is no finding."""
    kept = []
    for i, item in enumerate(items):
        expect(
            isinstance(item, dict),
            DETECTOR,
            f"{where}[{i}] must be an object, got {json_kind(item)}",
        )
        detected = item.get("detected")
        expect(
            detected is None or isinstance(detected, bool),
            DETECTOR,
            f"{where}[{i}].detected must be true or false",
        )
        if detected is not False:
            kept.append((i, item))
    return kept


def _required_str(item: dict[str, Any], where: str, key: str) -> str:
    value = item.get(key)
    expect(value is not None, DETECTOR, f"{where} has no {key}")
    expect(
        isinstance(value, str) and bool(value.strip()),
        DETECTOR,
        f"{where}.{key} must be a non-empty string, got {json_kind(value)}",
    )
    return value.strip()


def _action(item: dict[str, Any]) -> dict[str, Any]:
    action = item.get("action")
    return {"action": action} if isinstance(action, str) else {}
