"""Reader for Azure AI Content Safety Prompt Shields (`text:shieldPrompt`) reported on its own."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_json,
    as_list,
    as_object,
    expect,
    reader,
    required_bool,
)

DETECTOR = "azure-prompt-shields"

# Raw labels are the response fields, as in the azure-content-safety table, so that the two
# tables can be checked against the same REST reference (ShieldPromptResult).
USER_PROMPT_ATTACK = "userPromptAnalysis"
DOCUMENT_ATTACK = "documentsAnalysis"


@reader(DETECTOR)
def read_azure_prompt_shields(output: Any) -> DetectorReport:
    """Reads a `text:shieldPrompt` response: `userPromptAnalysis.attackDetected` (a user prompt
    attack, i.e. a jailbreak attempt) and `documentsAnalysis[].attackDetected` (an attack hidden
    in a grounding document: indirect prompt injection; the finding keeps the document's index).
    Deployments that run Prompt Shields alongside other Content Safety APIs and report them
    together can send the whole answer as `azure-content-safety` instead."""
    doc = as_object(DETECTOR, as_json(DETECTOR, output), "output")
    expect(
        USER_PROMPT_ATTACK in doc or DOCUMENT_ATTACK in doc,
        DETECTOR,
        f"expected {USER_PROMPT_ATTACK} and/or {DOCUMENT_ATTACK}",
    )
    findings: list[NormalizedFinding] = []
    user = doc.get(USER_PROMPT_ATTACK)
    if user is not None:
        user = as_object(DETECTOR, user, USER_PROMPT_ATTACK)
        if required_bool(DETECTOR, user, "attackDetected", USER_PROMPT_ATTACK):
            findings.append(NormalizedFinding(DETECTOR, USER_PROMPT_ATTACK))
    documents = doc.get(DOCUMENT_ATTACK)
    if documents is not None:
        for i, item in enumerate(as_list(DETECTOR, documents, DOCUMENT_ATTACK)):
            where = f"{DOCUMENT_ATTACK}[{i}]"
            item = as_object(DETECTOR, item, where)
            if required_bool(DETECTOR, item, "attackDetected", where):
                findings.append(
                    NormalizedFinding(DETECTOR, DOCUMENT_ATTACK, attributes={"index": i})
                )
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)
