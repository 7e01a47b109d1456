"""Reader for Meta's Llama Prompt Guard 1 and 2: the text-classification output, `[{label, score}]`."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_json,
    as_object,
    expect,
    json_kind,
    probability,
    reader,
    required_str,
)

DETECTOR = "prompt-guard"

# The classes of each model card. Prompt Guard 1 (Prompt-Guard-86M): BENIGN, INJECTION, JAILBREAK.
# Prompt Guard 2 (Llama-Prompt-Guard-2-86M / -22M) is binary and publishes only the generic names:
# LABEL_0 benign, LABEL_1 malicious (injection or jailbreak, not said which); checkpoints that set
# id2label call them BENIGN and MALICIOUS. Benign classes are never findings.
BENIGN_LABELS = frozenset({"BENIGN", "LABEL_0"})


@reader(DETECTOR)
def read_prompt_guard(output: Any) -> DetectorReport:
    """Reads the transformers `pipeline("text-classification")` output for Prompt Guard:
    `{label, score}` for one text, `[{label, score}, ...]` (one top label per text, or every label
    for one text with `top_k=None`), or `[[{label, score}, ...], ...]` (every label for each of a
    batch). Every non-benign class becomes a finding with its probability as the score, so the
    table's `min_score` decides; batch findings carry `attributes["index"]`. Labels are matched
    without regard to case; the classified text is never part of this output."""
    doc = as_json(DETECTOR, output)
    if isinstance(doc, dict):
        rows: list[list[Any]] = [[doc]]
        batch = False
    else:
        expect(
            isinstance(doc, list),
            DETECTOR,
            f"expected {{label, score}} or a list of them, got {json_kind(doc)}",
        )
        if doc and all(isinstance(item, list) for item in doc):
            rows, batch = doc, True
        elif len(doc) <= 1 or _is_one_distribution(doc):
            # Every class of one text (top_k=None), or one text's top class.
            rows, batch = [doc], False
        else:
            # The top class of each text of a batch.
            rows, batch = [[item] for item in doc], True
    findings: list[NormalizedFinding] = []
    for index, row in enumerate(rows):
        for j, item in enumerate(row):
            where = f"[{index}][{j}]" if batch else f"[{j}]"
            item = as_object(DETECTOR, item, where)
            label = required_str(DETECTOR, item, "label", where).upper()
            score = probability(DETECTOR, item.get("score"), f"{where}.score")
            if label in BENIGN_LABELS:
                continue
            attributes = {"index": index} if batch else {}
            findings.append(NormalizedFinding(DETECTOR, label, score=score, attributes=attributes))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _is_one_distribution(items: list[Any]) -> bool:
    """Every class of one text: distinct labels whose probabilities sum to about 1."""
    if not all(isinstance(item, dict) for item in items):
        return False
    labels = [str(item.get("label", "")).upper() for item in items]
    scores = [item.get("score") for item in items]
    if len(set(labels)) != len(labels) or not all(isinstance(s, int | float) for s in scores):
        return False
    return abs(sum(scores) - 1.0) < 0.02
