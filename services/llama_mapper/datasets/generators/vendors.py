"""Cloud detectors' outputs in their documented shapes, synthesized from the mapping tables' raw labels
with realistic scores and severities, several findings per output and empty results."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

from llama_mapper.datasets.generators.real import label_findings
from llama_mapper.domain.readers.base import DetectorOutputError
from llama_mapper.domain.rows import VENDOR, Candidate
from llama_mapper.domain.rules import RulesMapper

log = logging.getLogger(__name__)

Shape = Callable[[random.Random, list[str]], Any]


def _offsets(rng: random.Random) -> tuple[int, int]:
    start = rng.randint(0, 400)
    return start, start + rng.randint(4, 40)


def _high(rng: random.Random) -> float:
    """A confident vendor score: most mass near 1, a tail down to 0.5."""
    return round(1 - rng.betavariate(1.2, 8) * 0.5, 4)


def aws_comprehend(rng: random.Random, raws: list[str]) -> Any:
    # DetectPiiEntities response.
    entities = []
    for raw in raws:
        begin, end = _offsets(rng)
        entities.append({"Score": _high(rng), "Type": raw, "BeginOffset": begin, "EndOffset": end})
    return {"Entities": entities}


_LIKELIHOODS = ("POSSIBLE", "LIKELY", "LIKELY", "VERY_LIKELY", "VERY_LIKELY", "UNLIKELY")


def google_dlp(rng: random.Random, raws: list[str]) -> Any:
    # projects.content.inspect response: result.findings[] with infoType, likelihood, location.
    findings = []
    for raw in raws:
        start, end = _offsets(rng)
        findings.append(
            {
                "infoType": {"name": raw},
                "likelihood": rng.choice(_LIKELIHOODS),
                "location": {
                    "byteRange": {"start": str(start), "end": str(end)},
                    "codepointRange": {"start": str(start), "end": str(end)},
                },
                "createTime": "2026-01-01T00:00:00Z",
            }
        )
    return {"result": {"findings": findings}} if findings else {"result": {}}


_AZURE_CATEGORIES = ("Hate", "SelfHarm", "Sexual", "Violence")
_AZURE_SPECIAL = {
    "blocklistsMatch",
    "userPromptAnalysis",
    "documentsAnalysis",
    "protectedMaterialAnalysis",
    "ungroundedDetected",
}


def azure_content_safety(rng: random.Random, raws: list[str]) -> Any:
    # text:analyze with outputType EightSeverityLevels; every category is reported, most at 0.
    flagged = {raw: rng.randint(2, 7) for raw in raws if raw not in _AZURE_SPECIAL}
    doc: dict[str, Any] = {
        "categoriesAnalysis": [
            {"category": c, "severity": flagged.get(c, rng.choice((0, 0, 0, 1)))}
            for c in dict.fromkeys([*_AZURE_CATEGORIES, *flagged])
        ]
    }
    for raw in raws:
        if raw == "blocklistsMatch":
            doc["blocklistsMatch"] = [
                {
                    "blocklistName": rng.choice(("brand-terms", "competitors", "banned-words")),
                    "blocklistItemId": f"{rng.getrandbits(64):016x}",
                    "blocklistItemText": "redacted",
                }
            ]
        elif raw == "userPromptAnalysis":
            doc["userPromptAnalysis"] = {"attackDetected": True}
        elif raw == "documentsAnalysis":
            doc["documentsAnalysis"] = [
                {"attackDetected": rng.random() < 0.5},
                {"attackDetected": True},
            ]
        elif raw == "protectedMaterialAnalysis":
            doc["protectedMaterialAnalysis"] = {"detected": True}
        elif raw == "ungroundedDetected":
            doc["ungroundedDetected"] = True
            doc["ungroundedPercentage"] = round(rng.uniform(0.2, 1.0), 3)
    return doc


def openai_moderation(rng: random.Random, raws: list[str]) -> Any:
    from llama_mapper.domain.readers.openai_moderation import CATEGORIES

    scores = {c: round(rng.uniform(0, 0.02), 6) for c in CATEGORIES}
    flags = dict.fromkeys(CATEGORIES, False)
    for raw in raws:
        scores[raw] = round(rng.uniform(0.55, 0.999), 6)
        flags[raw] = True
    return {
        "id": f"modr-{rng.getrandbits(48):012x}",
        "model": "omni-moderation-latest",
        "results": [
            {
                "flagged": any(flags.values()),
                "categories": flags,
                "category_scores": scores,
                "category_applied_input_types": {c: ["text"] for c in flags},
            }
        ],
    }


def llama_guard(rng: random.Random, raws: list[str]) -> Any:
    return "unsafe\n" + ",".join(raws) if raws else "safe"


_BEDROCK_CONFIDENCE = ("LOW", "MEDIUM", "HIGH", "HIGH")
_BEDROCK_TOPICS = ("Investment advice", "Competitors", "Medical diagnosis", "Politics")


def bedrock_guardrails(rng: random.Random, raws: list[str]) -> Any:
    # ApplyGuardrail response: one assessment with the policies that intervened. Raw labels are
    # "<policy>:<type>" as the reader writes them.
    content, topics, words, managed, pii, regexes, grounding = [], [], [], [], [], [], []
    for raw in raws:
        kind, _, name = raw.partition(":")
        action = rng.choice(("BLOCKED", "BLOCKED", "ANONYMIZED")) if kind == "pii" else "BLOCKED"
        if kind == "content":
            content.append(
                {
                    "type": name,
                    "confidence": rng.choice(_BEDROCK_CONFIDENCE),
                    "filterStrength": rng.choice(("MEDIUM", "HIGH")),
                    "action": "BLOCKED",
                }
            )
        elif kind == "topic":
            topics.append({"name": rng.choice(_BEDROCK_TOPICS), "type": name, "action": "BLOCKED"})
        elif kind == "word" and name == "custom":
            words.append({"match": "redacted", "action": "BLOCKED"})
        elif kind == "word":
            managed.append({"match": "redacted", "type": name, "action": "BLOCKED"})
        elif kind == "grounding":
            threshold = round(rng.uniform(0.5, 0.85), 2)
            grounding.append(
                {
                    "type": name,
                    "threshold": threshold,
                    "score": round(rng.uniform(0.0, threshold - 0.01), 2),
                    "action": "BLOCKED",
                }
            )
        elif kind == "regex":
            regexes.append(
                {
                    "name": rng.choice(("employee-id", "order-ref", "case-number")),
                    "match": "redacted",
                    "regex": "[A-Z]{2}[0-9]{6}",
                    "action": action,
                }
            )
        else:
            pii.append({"match": "redacted", "type": name, "action": action})
    assessment: dict[str, Any] = {}
    if content:
        assessment["contentPolicy"] = {"filters": content}
    if topics:
        assessment["topicPolicy"] = {"topics": topics}
    if words or managed:
        assessment["wordPolicy"] = {"customWords": words, "managedWordLists": managed}
    if pii or regexes:
        assessment["sensitiveInformationPolicy"] = {"piiEntities": pii, "regexes": regexes}
    if grounding:
        assessment["contextualGroundingPolicy"] = {"filters": grounding}
    return {
        "action": "GUARDRAIL_INTERVENED" if assessment else "NONE",
        "outputs": [{"text": "Sorry, the model cannot answer this question."}]
        if assessment
        else [],
        "assessments": [assessment] if assessment else [],
    }


def nemoguard(rng: random.Random, raws: list[str]) -> Any:
    # The model's JSON verdict: categories are names, comma separated.
    if not raws:
        return {"User Safety": "safe", "Response Safety": "safe"}
    doc = {"User Safety": "unsafe", "Safety Categories": ", ".join(raws)}
    if rng.random() < 0.5:
        doc["Response Safety"] = rng.choice(("safe", "unsafe"))
    return doc


_DETOXIFY_LABELS = (
    "toxicity",
    "severe_toxicity",
    "obscene",
    "threat",
    "insult",
    "identity_attack",
    "sexual_explicit",
)


def detoxify(rng: random.Random, raws: list[str]) -> Any:
    # Detoxify('unbiased').predict(text): one probability per head.
    scores = {label: round(rng.uniform(0.0005, 0.05), 6) for label in _DETOXIFY_LABELS}
    for raw in raws:
        scores[raw] = round(rng.uniform(0.5, 0.998), 6)
    return scores


SHAPES: dict[str, Shape] = {
    "aws-comprehend": aws_comprehend,
    "google-dlp": google_dlp,
    "azure-content-safety": azure_content_safety,
    "openai-moderation": openai_moderation,
    "llama-guard": llama_guard,
    "bedrock-guardrails": bedrock_guardrails,
    "nemoguard": nemoguard,
    "detoxify": detoxify,
}


def vendor_outputs(detector: str, raws: list[str], per_label: int, seed: int) -> list[Any]:
    """About `per_label` outputs naming each raw label, one to three findings each, plus 5% empty."""
    rng = random.Random(f"{seed}:{detector}")  # noqa: S311 - seeded data generation, not cryptography
    shape = SHAPES[detector]
    outputs = []
    for raw in raws:
        for _ in range(per_label):
            extra = rng.sample(raws, min(len(raws), rng.choice((0, 0, 1, 2))))
            outputs.append(shape(rng, list(dict.fromkeys([raw, *extra]))))
    outputs.extend(shape(rng, []) for _ in range(max(2, len(outputs) // 20)))
    return outputs


def vendor_candidates(rules: RulesMapper, per_label: int, seed: int) -> list[Candidate]:
    """Candidates for every cloud detector that has both a reader and a mapping table."""
    from llama_mapper.domain.readers.base import known_detectors

    readers = set(known_detectors())
    candidates: list[Candidate] = []
    for detector in SHAPES:
        table = rules.tables.get(detector)
        if table is None or detector not in readers:
            log.warning(
                "no %s for %s: its vendor rows are skipped",
                "table" if table is None else "reader",
                detector,
            )
            continue
        raws = sorted(table.entries)
        skipped = 0
        for output in vendor_outputs(detector, raws, per_label, seed):
            try:
                candidates.extend(label_findings(detector, [output], rules, source=VENDOR))
            except DetectorOutputError:
                skipped += 1
        if skipped:
            log.warning("%s: the reader refused %d synthesized outputs", detector, skipped)
    return candidates
