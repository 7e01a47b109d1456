"""One mapper or analyst training row, built from the shared prompt format; ids are content hashes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.prompt import (
    analyst_completion,
    analyst_messages,
    finding_payload,
    mapper_completion,
    mapper_messages,
)

# Bump when a generator changes what it writes for the same seed: it is part of the manifest.
GENERATOR_VERSION = "1.1.0"

# Where a row's input came from (the `source` field of schemas/mapper-example.json).
REAL = "real"  # the detector ran here (Presidio, detect-secrets) on synthetic text
VENDOR = "vendor"  # a cloud detector's documented output shape, synthesized
VARIANT = "variant"  # a label spelling no table holds (case, separators, abbreviations, synonyms)
ENVELOPE = "envelope"  # an unknown vendor's envelope around a known kind of finding
FREE_TEXT = "free_text"  # a free-text verdict ("reason": "...")
GIBBERISH = "gibberish"  # a label nothing can map: other.unknown
NO_FINDING = "no_finding"  # the detector said nothing, or nothing above its threshold
SOURCES = (REAL, VENDOR, VARIANT, ENVELOPE, FREE_TEXT, GIBBERISH, NO_FINDING)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace: the form every digest in the dataset is computed over."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Candidate:
    """A finding and the label the mapper must answer for it, before splitting."""

    detector: str
    finding: NormalizedFinding
    label: str
    labels: tuple[str, ...]
    source: str
    payload: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(
        finding: NormalizedFinding,
        labels: tuple[str, ...],
        source: str,
        *,
        payload: dict[str, Any] | None = None,
    ) -> Candidate:
        return Candidate(
            detector=finding.detector,
            finding=finding,
            label=labels[0],
            labels=tuple(labels),
            source=source,
            payload=payload if payload is not None else finding_payload(finding),
        )

    def prompt_key(self) -> str:
        """Identity of the prompt: two candidates with the same key are the same training input."""
        return canonical_json([self.detector, self.payload])


def mapper_row(candidate: Candidate, split: str) -> dict[str, Any]:
    messages = mapper_messages(candidate.detector, candidate.payload)
    output = mapper_completion(candidate.label)
    return {
        "id": "m-" + sha256_text(canonical_json([messages, output]))[:16],
        "task": "mapper",
        "split": split,
        "source": candidate.source,
        "detector": candidate.detector,
        "raw_label": candidate.finding.raw_label,
        "labels": list(candidate.labels),
        "input": messages,
        "output": output,
    }


def analyst_row(
    framework: str,
    finding: dict[str, Any],
    assessment: dict[str, Any],
    split: str,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    messages = analyst_messages(framework, finding, context)
    output = analyst_completion(assessment)
    return {
        "id": "a-" + sha256_text(canonical_json([messages, output]))[:16],
        "task": "analyst",
        "split": split,
        "source": "rubric",
        "framework": framework,
        "label": finding["label"],
        "input": messages,
        "output": output,
    }


def user_text(row: dict[str, Any]) -> str:
    """The user turn of a row's prompt: what duplicates and leakage are measured on."""
    return next((m["content"] for m in row["input"] if m.get("role") == "user"), "")
