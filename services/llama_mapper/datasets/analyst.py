"""Analyst rows: (framework, canonical finding, context) -> the rubric's assessment
(domain/rubric.py, docs/DATA.md "Analyst rubric"), with held-out combinations for evaluation."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain import rubric
from llama_mapper.domain.frameworks import FrameworkMappings
from llama_mapper.domain.taxonomy import Taxonomy

# Share of (label, framework, context signature) combinations kept out of training: every row of
# such a combination is an eval row, so evaluation measures combinations the model never saw.
HELDOUT_FRACTION = 0.1

_REGIONS_IN = ("EU", "DE", "FR", "IE", "UK")
_REGIONS_OUT = ("US", "BR", "IN", "JP", "CA")
# Labels often found together with others (the combination rule's cases) are drawn more often.
_CO_LABELS = (
    "pii.person_name",
    "pii.email_address",
    "pii.date_of_birth",
    "pii.national_id",
    "financial.credit_card",
    "phi.medical_condition",
    "credentials.api_key",
    "security.data_exfiltration",
    "security.prompt_injection",
    "toxicity.insult",
)


@dataclass(frozen=True)
class Example:
    framework: str
    finding: dict[str, Any]
    context: dict[str, Any]
    assessment: dict[str, Any]
    split: str


def analyst_finding(
    label: str, taxonomy: Taxonomy, detector: str, raw_label: str, confidence: float
) -> dict[str, Any]:
    """A canonical finding as the mapper returns it (schemas/mapper-output.json $defs/finding)."""
    entry = taxonomy.get(label)
    return {
        "label": label,
        "category": entry.category,
        "subcategory": entry.subcategory,
        "confidence": round(confidence, 2),
        "source": {"detector": detector, "raw_label": raw_label},
    }


def sample_context(rng: random.Random, label: str) -> dict[str, Any]:
    """A context with each field present or not, so every modifier fires alone and combined."""
    context: dict[str, Any] = {}
    location = rng.choice((None, "prompt", "output", "output"))
    if location:
        context["location"] = location
    environment = rng.choice((None, None, "prod", "prod", "staging", "dev"))
    if environment:
        context["environment"] = environment
    draw = rng.random()
    if draw < 0.25:
        context["volume"] = rng.randint(1, 40)
    elif draw < 0.45:
        context["volume"] = rng.choice((100, 250, 1200, 5000))
    draw = rng.random()
    if draw < 0.2:
        context["data_subject_region"] = rng.choice(_REGIONS_IN)
    elif draw < 0.4:
        context["data_subject_region"] = rng.choice(_REGIONS_OUT)
    if rng.random() < 0.35:
        others = [c for c in _CO_LABELS if c != label]
        context["co_labels"] = sorted(rng.sample(others, rng.randint(1, 2)))
    return context


def signature(q: rubric.Query) -> str:
    """The combination a row belongs to: label, framework and what each modifier sees."""
    ctx = q.context
    parts = [
        q.label,
        q.framework,
        str(ctx.get("location", "-")),
        str(ctx.get("environment", "-")),
        "bulk" if ctx.get("volume", 0) >= rubric.BULK_VOLUME else "-",
        "region" if "data_subject_region" in ctx else "-",
        "co" if ctx.get("co_labels") else "-",
    ]
    return "|".join(parts)


def split_of(q: rubric.Query, seed: int) -> str:
    digest = hashlib.sha256(f"{seed}:{signature(q)}".encode()).digest()
    return "eval" if int.from_bytes(digest[:4], "big") / 0xFFFFFFFF < HELDOUT_FRACTION else "train"


def analyst_examples(
    sources: list[tuple[str, str, str]],
    taxonomy: Taxonomy,
    frameworks: FrameworkMappings,
    count: int,
    seed: int,
) -> Iterator[Example]:
    """`count` examples over (label, detector, raw label) sources: every label x framework once
    without context first, then with sampled contexts; split by held-out combination."""
    rng = random.Random(f"{seed}:analyst")  # noqa: S311 - seeded data generation, not cryptography
    names = sorted(frameworks.frameworks)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for label, detector, raw in sources:
        by_label.setdefault(label, []).append((detector, raw))
    labels = sorted(by_label)
    plain = len(labels) * len(names)
    for i in range(count):
        label = labels[i % len(labels)]
        framework = names[(i // len(labels)) % len(names)]
        detector, raw = rng.choice(by_label[label])
        confidence = rng.choice(
            (rng.uniform(0.6, 0.99), rng.uniform(0.6, 0.99), rng.uniform(0.3, 0.6))
        )
        finding = analyst_finding(label, taxonomy, detector, raw, confidence)
        context = sample_context(rng, label) if i >= plain else {}
        q = rubric.query(framework, finding, context, taxonomy=taxonomy)
        yield Example(framework, finding, context, rubric.assess(q, frameworks), split_of(q, seed))
