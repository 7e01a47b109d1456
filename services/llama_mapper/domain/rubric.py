"""The analyst rubric: (framework, canonical finding, context) -> controls, risk level, remediation."""

# Everything here is a function of tables, so the hybrid analyst answers it with `method: rule`:
# the controls are the framework table's (domain/catalog/frameworks.yaml) exactly; the risk is the
# label's inherent level (by category, with a few per-label exceptions) moved one level per
# modifier that applies; the remediation is the category's short catalogue steps, which the model
# may replace with its own. docs/DATA.md ("Analyst rubric") documents every rule; change both.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.frameworks import FrameworkMappings, control_order, default_frameworks
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy, default_taxonomy

RISK_LEVELS = ("low", "medium", "high", "critical")
FRAMEWORKS = ("SOC2", "ISO27001", "HIPAA", "GDPR", "PCI_DSS")

# Step 1: inherent risk by category; the exceptions below it.
#   critical: exposure is itself a reportable incident or illegal to hold
#   high: direct identifiers, special-category data, secrets, attacks on protected groups
#   medium: indirect identifiers, abuse aimed at people, attacks on the model
#   low: everything whose harm depends on context
CATEGORY_RISK: dict[str, str] = {
    "pii": "medium",
    "financial": "high",
    "phi": "high",
    "credentials": "high",
    "toxicity": "low",
    "hate": "high",
    "violence": "medium",
    "sexual": "medium",
    "self_harm": "medium",
    "illicit": "medium",
    "misinformation": "medium",
    "security": "high",
    "policy": "low",
    "other": "medium",
}
LABEL_RISK: dict[str, str] = {
    "pii.national_id": "high",
    "pii.passport_number": "high",
    "pii.drivers_license": "high",
    "pii.biometric": "high",
    "pii.location": "low",
    "pii.age": "low",
    "financial.crypto_wallet": "medium",
    "financial.other": "medium",
    "credentials.private_key": "critical",
    "credentials.connection_string": "critical",
    "toxicity.threat": "medium",
    "toxicity.harassment": "medium",
    "violence.extremism": "high",
    "violence.weapons": "high",
    "sexual.minors": "critical",
    "self_harm.intent": "critical",
    "self_harm.instructions": "high",
    "illicit.cybercrime": "high",
    "illicit.fraud": "high",
    "misinformation.general": "low",
    "security.jailbreak": "medium",
    "policy.specialized_advice": "medium",
    "policy.intellectual_property": "medium",
    UNKNOWN: "medium",
    NO_FINDING: "low",
}

# Step 2: the framework that governs the label's data: one level up (cardholder data under PCI
# DSS, health data under HIPAA, Art. 9 special categories under GDPR).
FRAMEWORK_ESCALATION: dict[str, frozenset[str]] = {
    "PCI_DSS": frozenset({"financial.credit_card"}),
    "HIPAA": frozenset({"phi.health_identifier", "phi.medical_condition", "phi.other"}),
    "GDPR": frozenset(
        {
            "phi.health_identifier",
            "phi.medical_condition",
            "phi.other",
            "pii.biometric",
            "hate.race_ethnicity",
            "hate.religion",
            "hate.sexual_orientation",
        }
    ),
}

# The context modifiers (schemas/analyst-context.json), one level each.
LOW_CONFIDENCE = 0.6  # a detector unsure of its finding: down
BULK_VOLUME = 100  # this many findings of the label: up
DATA_CATEGORIES = frozenset({"pii", "financial", "phi", "credentials"})
CONTENT_CATEGORIES = frozenset(
    {"toxicity", "hate", "violence", "sexual", "self_harm", "illicit", "misinformation"}
)
PERSONAL_CATEGORIES = frozenset({"pii", "financial", "phi"})
# GDPR's territorial scope (Art. 3): data subjects in the EEA (and the UK's copy of the law).
GDPR_REGIONS = frozenset(
    [
        "EU",
        "EEA",
        "UK",
        "GB",
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "IS",
        "LI",
        "NO",
    ]
)

# The remediation catalogue: short steps per category; the assessment adds a context step and the
# evidence step, so an answer has at most MAX_STEPS steps of at most MAX_STEP_CHARS characters.
MAX_STEPS = 4
MAX_STEP_CHARS = 160
REMEDIATION: dict[str, tuple[str, ...]] = {
    "pii": (
        "Redact or mask the personal data before it is stored, logged or returned.",
        "Confirm a lawful basis and purpose for processing it.",
    ),
    "financial": (
        "Mask the financial identifier (at most the last four characters).",
        "Keep the value out of logs, prompts and training data.",
    ),
    "phi": (
        "Remove the health information or keep it inside the covered environment.",
        "Record the disclosure for the privacy officer's review.",
    ),
    "credentials": (
        "Revoke and rotate the exposed secret now.",
        "Move the secret to a secrets manager and scan history for copies.",
    ),
    "toxicity": (
        "Block or rewrite the response under the abuse policy.",
        "Escalate repeated abuse by the same user to trust and safety.",
    ),
    "hate": (
        "Block the content and escalate it to trust and safety.",
        "Review the prompt and model configuration that produced it.",
    ),
    "violence": (
        "Block the content and review it against the violent-content policy.",
        "Escalate credible threats or extremism to incident response.",
    ),
    "sexual": (
        "Block the content under the sexual-content policy.",
        "Report content involving minors to the required authority; preserve evidence.",
    ),
    "self_harm": (
        "Answer with crisis resources instead of the generated text.",
        "Escalate expressed intent to a trained reviewer.",
    ),
    "illicit": (
        "Block the response and log the request for abuse review.",
        "Check the account for a pattern of illicit requests.",
    ),
    "misinformation": (
        "Attach a correction or withhold the claim until verified.",
        "Route the content to fact-checking review.",
    ),
    "security": (
        "Reject the request; keep tools and the system prompt isolated from it.",
        "Record the attempt as a security event and review related sessions.",
    ),
    "policy": (
        "Decline under the business policy and explain the limit to the user.",
        "Review the policy configuration if the request was legitimate.",
    ),
}
UNKNOWN_STEPS = (
    "Send the finding to a person for review: its label is undetermined.",
    "Add the detector's label to its mapping table once classified.",
)
NO_FINDING_STEPS = ("No action required: the detector reported nothing.",)
OUTPUT_STEP = "Filter the model's output for this category before it reaches users."
BULK_STEP = "Treat it as bulk exposure: open an incident and assess notification duties."
EVIDENCE_STEP = "Record the finding as evidence for {framework} {controls}."
OUT_OF_SCOPE_STEP = "No {framework} control applies; handle it under the content policy."


@dataclass(frozen=True)
class Query:
    """One analyst question, checked: a framework, a canonical finding, its context."""

    framework: str
    label: str
    confidence: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @property
    def category(self) -> str:
        return self.label.split(".", 1)[0]


def query(
    framework: Any,
    finding: Any,
    context: Any = None,
    *,
    taxonomy: Taxonomy | None = None,
    where: str = "$",
) -> Query:
    """A Query from request data; bad input raises InvalidArgument naming the JSON path."""
    taxonomy = taxonomy or default_taxonomy()
    if framework not in FRAMEWORKS:
        raise InvalidArgument(
            f"{where}.framework: one of {', '.join(FRAMEWORKS)}, got {framework!r}"
        )
    if not isinstance(finding, Mapping):
        raise InvalidArgument(f"{where}.finding: expected an object with a label")
    label = finding.get("label")
    if not isinstance(label, str) or label not in taxonomy:
        raise InvalidArgument(
            f"{where}.finding.label: a canonical label of taxonomy v{taxonomy.version} is required"
        )
    confidence = finding.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not 0 <= confidence <= 1
    ):
        raise InvalidArgument(f"{where}.finding.confidence: a number from 0 to 1")
    context = {} if context is None else context
    try:
        validate("analyst-context", context)
    except InvalidArgument as exc:
        # "analyst-context: $.volume: ..." -> "$.context.volume: ..."
        detail = exc.message.split(": ", 1)[-1].replace("$", f"{where}.context", 1)
        raise InvalidArgument(detail) from None
    for i, other in enumerate(context.get("co_labels") or ()):
        if other not in taxonomy:
            raise InvalidArgument(f"{where}.context.co_labels[{i}]: {other!r} is not a label")
    return Query(
        framework, label, float(confidence) if confidence is not None else None, dict(context)
    )


def controls(q: Query, frameworks: FrameworkMappings | None = None) -> list[str]:
    """The framework's control ids for the label, from the framework table, in auditors' order."""
    frameworks = frameworks or default_frameworks()
    ids = {ref.control for ref in frameworks.controls(q.label) if ref.framework == q.framework}
    return sorted(ids, key=control_order)


def inherent_risk(label: str) -> str:
    return LABEL_RISK.get(label) or CATEGORY_RISK[label.split(".", 1)[0]]


def modifiers(q: Query) -> list[tuple[int, str]]:
    """The rules that move the inherent level, as (shift, reason), in the documented order."""
    if q.category == "other":
        return []  # unknown goes to a person, no_finding is nothing: context changes neither
    out: list[tuple[int, str]] = []
    ctx = q.context
    if q.label in FRAMEWORK_ESCALATION.get(q.framework, ()):
        out.append((1, f"{q.framework} governs this data directly"))
    if q.confidence is not None and q.confidence < LOW_CONFIDENCE:
        out.append((-1, "the detector's confidence is low"))
    if ctx.get("location") == "output" and q.category in DATA_CATEGORIES | CONTENT_CATEGORIES:
        out.append((1, "it appeared in the model's output"))
    if ctx.get("environment") == "dev" and q.category != "credentials":
        out.append((-1, "it was seen in a dev environment"))
    if ctx.get("volume", 0) >= BULK_VOLUME:
        out.append((1, f"{ctx['volume']} findings are bulk exposure"))
    region = ctx.get("data_subject_region")
    if (
        q.framework == "GDPR"
        and q.category in PERSONAL_CATEGORIES
        and region is not None
        and region not in GDPR_REGIONS
    ):
        out.append((-1, "the data subject is outside the EEA and the UK"))
    if _combined(q):
        out.append((1, "it was found together with related findings"))
    return out


def _combined(q: Query) -> bool:
    others = [label for label in q.context.get("co_labels") or () if label != q.label]
    categories = {label.split(".", 1)[0] for label in others}
    if q.category in PERSONAL_CATEGORIES:
        return bool(categories & PERSONAL_CATEGORIES)
    if q.category == "credentials":
        return "security" in categories
    if q.category == "security":
        return "credentials" in categories
    return False


def risk_level(q: Query) -> tuple[str, list[str]]:
    """The inherent level moved by every modifier (clamped to low..critical), with the reasons."""
    level = inherent_risk(q.label)
    reasons = [f"{q.label} is inherently {level} risk"]
    index = RISK_LEVELS.index(level)
    for shift, reason in modifiers(q):
        index = min(max(index + shift, 0), len(RISK_LEVELS) - 1)
        reasons.append(reason)
    return RISK_LEVELS[index], reasons


def remediation(q: Query, control_ids: Sequence[str]) -> list[str]:
    """The catalogue's steps for the category, a context step, and the evidence step."""
    if q.label == NO_FINDING:
        return list(NO_FINDING_STEPS)
    if q.label == UNKNOWN:
        return list(UNKNOWN_STEPS)
    steps = list(REMEDIATION[q.category])
    if q.context.get("volume", 0) >= BULK_VOLUME and q.category in DATA_CATEGORIES:
        steps.append(BULK_STEP)
    elif (
        q.context.get("location") == "output" and q.category in DATA_CATEGORIES | CONTENT_CATEGORIES
    ):
        steps.append(OUTPUT_STEP)
    if control_ids:
        steps.append(
            EVIDENCE_STEP.format(framework=q.framework, controls=", ".join(control_ids[:3]))
        )
    else:
        steps.append(OUT_OF_SCOPE_STEP.format(framework=q.framework))
    return steps[:MAX_STEPS]


def assess(q: Query, frameworks: FrameworkMappings | None = None) -> dict[str, Any]:
    """The rubric's whole assessment (schemas/analyst-output.json), every field from the tables."""
    control_ids = controls(q, frameworks)
    level, reasons = risk_level(q)
    assessment: dict[str, Any] = {
        "framework": q.framework,
        "label": q.label,
        "risk_level": level,
        "controls": control_ids,
        "remediation": remediation(q, control_ids),
        "rationale": "; ".join(reasons) + ".",
    }
    if q.context:
        assessment["context"] = dict(q.context)
    return assessment


def completion_schema(
    framework: str, frameworks: FrameworkMappings | None = None
) -> dict[str, Any]:
    """What the model may write, for constrained decoding: risk_level first and one of the four,
    controls from the framework's ids, then at most MAX_STEPS short steps. Key order is the
    training target's (domain/prompt.py analyst_completion)."""
    frameworks = frameworks or default_frameworks()
    ids = sorted(frameworks.frameworks[framework].controls, key=control_order)
    return {
        "type": "object",
        "properties": {
            "risk_level": {"enum": list(RISK_LEVELS)},
            "controls": {"type": "array", "items": {"enum": ids}, "maxItems": 8},
            "remediation": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_STEP_CHARS},
                "minItems": 1,
                "maxItems": MAX_STEPS,
            },
        },
        "required": ["risk_level", "controls", "remediation"],
        "additionalProperties": False,
    }
