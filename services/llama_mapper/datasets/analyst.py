"""Analyst rows: (compliance framework, canonical finding) -> risk assessment, from the framework
mappings and the severity rubric documented in docs/DATA.md ("Analyst severity rubric")."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from llama_mapper.domain.frameworks import FrameworkMappings
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy

RISK_LEVELS = ("low", "medium", "high", "critical")

# Step 1 of the rubric: the inherent risk of the label, whatever the framework.
#   critical: content whose exposure is itself a reportable incident or illegal to hold
#   high: direct identifiers, special-category data, secrets and attacks on protected groups
#   medium: indirect identifiers, abuse aimed at people, attacks on the model
#   low: everything whose harm depends on context
INHERENT_RISK: dict[str, str] = {
    "credentials.private_key": "critical",
    "credentials.connection_string": "critical",
    "sexual.minors": "critical",
    "self_harm.intent": "critical",
    "violence.weapons": "high",
    "financial.credit_card": "high",
    "financial.bank_account": "high",
    "financial.crypto_wallet": "medium",
    "financial.tax_id": "high",
    "financial.other": "medium",
    "pii.national_id": "high",
    "pii.passport_number": "high",
    "pii.drivers_license": "high",
    "pii.biometric": "high",
    "pii.date_of_birth": "medium",
    "pii.person_name": "medium",
    "pii.email_address": "medium",
    "pii.phone_number": "medium",
    "pii.postal_address": "medium",
    "pii.ip_address": "medium",
    "pii.online_identifier": "medium",
    "pii.device_id": "medium",
    "pii.vehicle_id": "medium",
    "pii.other": "medium",
    "pii.location": "low",
    "pii.age": "low",
    "phi.health_identifier": "high",
    "phi.medical_condition": "high",
    "phi.other": "high",
    "credentials.api_key": "high",
    "credentials.password": "high",
    "credentials.access_token": "high",
    "credentials.other": "high",
    "hate.race_ethnicity": "high",
    "hate.religion": "high",
    "hate.gender": "high",
    "hate.sexual_orientation": "high",
    "hate.disability": "high",
    "hate.other": "high",
    "violence.extremism": "high",
    "violence.graphic": "medium",
    "violence.general": "medium",
    "self_harm.instructions": "high",
    "self_harm.general": "medium",
    "toxicity.threat": "medium",
    "toxicity.harassment": "medium",
    "toxicity.insult": "low",
    "toxicity.profanity": "low",
    "toxicity.general": "low",
    "sexual.adult": "medium",
    "illicit.cybercrime": "high",
    "illicit.fraud": "high",
    "illicit.drugs": "medium",
    "illicit.other": "medium",
    "security.data_exfiltration": "high",
    "security.prompt_injection": "high",
    "security.jailbreak": "medium",
    "security.tool_abuse": "high",
    "misinformation.elections": "medium",
    "misinformation.defamation": "medium",
    "misinformation.general": "low",
    "policy.specialized_advice": "medium",
    "policy.intellectual_property": "medium",
    "policy.off_topic": "low",
    "policy.other": "low",
    UNKNOWN: "medium",
    NO_FINDING: "low",
}

# Step 2: the framework that governs the label's data raises the risk one level (cardholder data
# under PCI DSS, health data under HIPAA, special categories under GDPR Art. 9).
FRAMEWORK_ESCALATION: dict[str, set[str]] = {
    "PCI_DSS": {"financial.credit_card"},
    "HIPAA": {"phi.health_identifier", "phi.medical_condition", "phi.other"},
    "GDPR": {
        "phi.health_identifier",
        "phi.medical_condition",
        "phi.other",
        "pii.biometric",
        "hate.race_ethnicity",
        "hate.religion",
        "hate.sexual_orientation",
    },
}

# Step 3: a finding the detector is unsure about (confidence below this) drops one level.
LOW_CONFIDENCE = 0.6

_REMEDIATION: dict[str, tuple[str, ...]] = {
    "pii": (
        "Redact or mask the personal data before the text is stored, logged or returned.",
        "Confirm a lawful basis and purpose for processing this personal data.",
    ),
    "financial": (
        "Mask the financial identifier (show at most the last four characters).",
        "Keep the value out of logs, prompts and training data.",
    ),
    "phi": (
        "Remove the health information, or handle it only inside the covered environment.",
        "Record the disclosure for the privacy officer's review.",
    ),
    "credentials": (
        "Revoke and rotate the exposed secret immediately.",
        "Move the secret into a secrets manager and scan history for other copies.",
    ),
    "toxicity": (
        "Block or rewrite the response and apply the abuse policy.",
        "Escalate repeated abuse from the same user to trust and safety.",
    ),
    "hate": (
        "Block the content and escalate it to trust and safety.",
        "Review the prompt and model configuration that produced it.",
    ),
    "violence": (
        "Block the content and review it against the violent-content policy.",
        "Escalate credible threats or extremist content to the incident response team.",
    ),
    "sexual": (
        "Block the content and apply the sexual-content policy.",
        "Report content involving minors to the legally required authority and preserve evidence.",
    ),
    "self_harm": (
        "Respond with crisis resources instead of the generated answer.",
        "Escalate expressed intent to a trained reviewer.",
    ),
    "illicit": (
        "Block the response and log the request for abuse review.",
        "Check whether the account shows a pattern of illicit requests.",
    ),
    "misinformation": (
        "Attach a correction or withhold the claim until it is verified.",
        "Route the content to fact-checking review.",
    ),
    "security": (
        "Reject the request and keep the model's tools and system prompt isolated from it.",
        "Record the attempt as a security event and review related sessions.",
    ),
    "policy": (
        "Decline the request under the business policy and explain the limit to the user.",
        "Review the policy configuration if the request was legitimate.",
    ),
}
_UNKNOWN_STEPS = (
    "Send the finding to a person for review: the label could not be determined.",
    "Add the detector's label to its mapping table once it is classified.",
)
_NO_FINDING_STEPS = ("No action required: the detector reported nothing.",)
_OUT_OF_SCOPE_STEP = "No {framework} control applies; handle it under the general content policy."


def _shift(level: str, by: int) -> str:
    index = min(max(RISK_LEVELS.index(level) + by, 0), len(RISK_LEVELS) - 1)
    return RISK_LEVELS[index]


def assess(
    framework: str, finding: dict[str, Any], frameworks: FrameworkMappings
) -> dict[str, Any]:
    """The rubric: inherent risk, escalated where the framework governs the data, lowered for low
    confidence; controls are the framework's controls for the label."""
    label = finding["label"]
    controls = sorted(
        {ref.control for ref in frameworks.controls(label) if ref.framework == framework}
    )
    level = INHERENT_RISK[label]
    reasons = [f"{label} is inherently {level} risk"]
    if label in FRAMEWORK_ESCALATION.get(framework, set()):
        level = _shift(level, 1)
        reasons.append(f"{framework} governs this data directly")
    if label not in (NO_FINDING, UNKNOWN) and finding.get("confidence", 1.0) < LOW_CONFIDENCE:
        level = _shift(level, -1)
        reasons.append("the detector's confidence is low")
    if label == NO_FINDING:
        steps = list(_NO_FINDING_STEPS)
    elif label == UNKNOWN:
        steps = list(_UNKNOWN_STEPS)
    else:
        steps = list(_REMEDIATION[label.split(".")[0]])
        if controls:
            steps.append(
                f"Record the finding as evidence for {framework} {', '.join(controls[:3])}."
            )
        else:
            steps.append(_OUT_OF_SCOPE_STEP.format(framework=framework))
    assessment = {
        "framework": framework,
        "label": label,
        "risk_level": level,
        "remediation": steps,
        "controls": controls,
        "rationale": "; ".join(reasons) + ".",
    }
    validate("analyst-output", assessment)
    return assessment


def analyst_finding(
    label: str, taxonomy: Taxonomy, detector: str, raw_label: str, confidence: float
) -> dict[str, Any]:
    """A canonical finding as the mapper returns it (schemas/mapper-output.json $defs/finding)."""
    entry = taxonomy.get(label)
    return {
        "label": label,
        "category": entry.category,
        "subcategory": entry.subcategory,
        "confidence": round(confidence, 3),
        "source": {"detector": detector, "raw_label": raw_label},
    }


def analyst_examples(
    sources: list[tuple[str, str, str]],
    taxonomy: Taxonomy,
    frameworks: FrameworkMappings,
    count: int,
    seed: int,
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """`count` (framework, finding, assessment) triples over (label, detector, raw label) sources,
    every label and framework covered before any repeats."""
    rng = random.Random(f"{seed}:analyst")  # noqa: S311 - seeded data generation, not cryptography
    names = sorted(frameworks.frameworks)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for label, detector, raw in sources:
        by_label.setdefault(label, []).append((detector, raw))
    labels = sorted(by_label)
    for i in range(count):
        label = labels[i % len(labels)]
        framework = names[(i // len(labels)) % len(names)]
        detector, raw = rng.choice(by_label[label])
        confidence = rng.choice(
            (rng.uniform(0.6, 0.99), rng.uniform(0.6, 0.99), rng.uniform(0.3, 0.6))
        )
        finding = analyst_finding(label, taxonomy, detector, raw, confidence)
        yield framework, finding, assess(framework, finding, frameworks)
