"""The analyst rubric: every label x framework answered from the tables, context modifiers."""

import pytest

from llama_mapper.domain import rubric
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, default_taxonomy

TAXONOMY = default_taxonomy()
FRAMEWORKS = default_frameworks()


def _level(framework, label, confidence=0.9, **context):
    q = rubric.query(framework, {"label": label, "confidence": confidence}, context)
    return rubric.risk_level(q)[0]


@pytest.mark.parametrize("framework", rubric.FRAMEWORKS)
def test_every_label_x_framework_is_answered_from_the_tables(framework):
    assert set(rubric.FRAMEWORKS) == set(FRAMEWORKS.frameworks)
    for label in TAXONOMY.names:
        q = rubric.query(framework, {"label": label})
        out = rubric.assess(q)
        validate("analyst-output", out)
        expected = {r.control for r in FRAMEWORKS.controls(label) if r.framework == framework}
        assert set(out["controls"]) == expected and len(out["controls"]) == len(expected)
        assert out["risk_level"] in rubric.RISK_LEVELS
        assert 1 <= len(out["remediation"]) <= rubric.MAX_STEPS
        assert all(len(step) <= rubric.MAX_STEP_CHARS for step in out["remediation"])


def test_inherent_risk_is_keyed_by_category_with_exceptions():
    assert set(rubric.CATEGORY_RISK) == set(TAXONOMY.categories)
    assert set(rubric.LABEL_RISK) <= set(TAXONOMY.names)
    assert rubric.inherent_risk("pii.email_address") == "medium"
    assert rubric.inherent_risk("credentials.private_key") == "critical"
    assert rubric.inherent_risk("hate.religion") == "high"
    assert rubric.inherent_risk(NO_FINDING) == "low"
    assert set(rubric.REMEDIATION) == set(TAXONOMY.categories) - {"other"}


def test_framework_and_confidence_modifiers():
    assert _level("PCI_DSS", "financial.credit_card") == "critical"
    assert _level("SOC2", "financial.credit_card") == "high"
    assert _level("SOC2", "financial.credit_card", confidence=0.4) == "medium"
    assert _level("HIPAA", "phi.medical_condition") == "critical"
    assert _level("GDPR", "hate.religion") == "critical"


def test_context_modifiers_each_move_one_level():
    base = _level("SOC2", "pii.email_address")
    assert base == "medium"
    assert _level("SOC2", "pii.email_address", location="output") == "high"
    assert _level("SOC2", "pii.email_address", location="prompt") == "medium"
    assert _level("SOC2", "pii.email_address", environment="dev") == "low"
    assert _level("SOC2", "pii.email_address", environment="prod") == "medium"
    assert _level("SOC2", "pii.email_address", volume=250) == "high"
    assert _level("SOC2", "pii.email_address", volume=3) == "medium"
    assert _level("SOC2", "pii.email_address", co_labels=["pii.person_name"]) == "high"
    assert _level("SOC2", "pii.email_address", co_labels=["toxicity.insult"]) == "medium"
    # Region matters only under GDPR, and only outside the EEA and the UK.
    assert _level("GDPR", "pii.email_address", data_subject_region="US") == "low"
    assert _level("GDPR", "pii.email_address", data_subject_region="DE") == "medium"
    assert _level("SOC2", "pii.email_address", data_subject_region="US") == "medium"


def test_modifiers_combine_and_clamp():
    assert _level("SOC2", "pii.email_address", location="output", volume=500) == "critical"
    assert _level("PCI_DSS", "financial.credit_card", location="output", volume=500) == "critical"
    assert _level("SOC2", "toxicity.insult", environment="dev", confidence=0.3) == "low"
    # A secret is live in dev too; an attack holding a secret is worse.
    assert _level("SOC2", "credentials.api_key", environment="dev") == "high"
    assert _level("SOC2", "security.jailbreak", co_labels=["credentials.api_key"]) == "high"
    # other.*: context changes nothing.
    assert _level("SOC2", UNKNOWN, location="output", volume=900) == "medium"
    assert _level("SOC2", NO_FINDING, location="output", volume=900) == "low"


def test_context_adds_a_step_and_is_echoed():
    q = rubric.query("SOC2", {"label": "pii.email_address"}, {"volume": 400})
    out = rubric.assess(q)
    assert rubric.BULK_STEP in out["remediation"] and out["context"] == {"volume": 400}
    assert "bulk exposure" in out["rationale"]
    q = rubric.query("SOC2", {"label": "hate.religion"}, {"location": "output"})
    assert rubric.OUTPUT_STEP in rubric.assess(q)["remediation"]


@pytest.mark.parametrize(
    ("framework", "finding", "context", "path"),
    [
        ("NIST", {"label": "pii.email_address"}, None, "$.framework"),
        ("SOC2", {"label": "pii.nope"}, None, "$.finding.label"),
        ("SOC2", [], None, "$.finding"),
        ("SOC2", {"label": "pii.age", "confidence": 2}, None, "$.finding.confidence"),
        ("SOC2", {"label": "pii.age"}, {"volume": 0}, "$.context.volume"),
        ("SOC2", {"label": "pii.age"}, {"location": "log"}, "$.context.location"),
        ("SOC2", {"label": "pii.age"}, {"extra": 1}, "$.context"),
        ("SOC2", {"label": "pii.age"}, {"co_labels": ["x.y"]}, "$.context.co_labels[0]"),
    ],
)
def test_bad_queries_name_the_path(framework, finding, context, path):
    with pytest.raises(InvalidArgument) as exc:
        rubric.query(framework, finding, context)
    assert exc.value.message.startswith(path), exc.value.message


def test_completion_schema_constrains_levels_and_control_ids():
    schema = rubric.completion_schema("SOC2")
    assert list(schema["properties"]) == ["risk_level", "controls", "remediation"]
    assert set(schema["properties"]["controls"]["items"]["enum"]) == set(
        FRAMEWORKS.frameworks["SOC2"].controls
    )
    assert schema["properties"]["remediation"]["maxItems"] == rubric.MAX_STEPS
