"""Analyst metrics by hand: schema-valid rate, risk-level accuracy, control-id precision / recall."""

import json

import pytest

from llama_mapper.domain import rubric
from llama_mapper.domain.prompt import analyst_completion
from llama_mapper.domain.rows import analyst_row
from llama_mapper.evaluation.analyst import analyst_metrics, evaluate_analyst, parse_assessment
from llama_mapper.evaluation.evalset import AnalystCase, analyst_case

EXPECTED = {"risk_level": "high", "remediation": ["rotate"], "controls": ["CC6.1", "CC6.7"]}


def _case(i):
    return AnalystCase(f"a{i}", "SOC2", {"label": "credentials.api_key"}, EXPECTED)


def test_metrics_by_hand():
    cases = [_case(i) for i in range(4)]
    completions = [
        json.dumps(EXPECTED),  # right level, both controls
        json.dumps(
            {"risk_level": "low", "remediation": ["x"], "controls": ["CC6.1", "CC9.9"]}
        ),  # wrong level, 1 of 2
        "not json at all",  # invalid: counts as wrong, names nothing
        json.dumps(
            {"risk_level": "severe", "remediation": ["x"], "controls": []}
        ),  # schema-invalid level
    ]
    m = analyst_metrics(cases, completions)
    assert m["case_count"] == 4
    assert m["schema_valid_rate"] == pytest.approx(2 / 4)
    assert m["risk_level_accuracy"] == pytest.approx(1 / 4)
    assert m["control_precision"] == pytest.approx(3 / 4)  # 3 right of 4 named
    assert m["control_recall"] == pytest.approx(3 / 8)  # 3 right of 8 expected
    assert m["control_f1"] == pytest.approx(2 * 0.75 * 0.375 / 1.125)
    assert parse_assessment("[1]") is None


def _built_row(framework, label, context, split="eval"):
    q = rubric.query(framework, {"label": label, "confidence": 0.9}, context)
    finding = {"label": label, "confidence": 0.9}
    return analyst_row(framework, finding, rubric.assess(q), split, context)


def test_cases_from_builder_rows_carry_the_context():
    row = _built_row("GDPR", "pii.email_address", {"location": "output", "volume": 300})
    case = analyst_case(row)
    assert case.framework == "GDPR" and case.finding == {
        "label": "pii.email_address",
        "confidence": 0.9,
    }
    assert case.context == {"location": "output", "volume": 300}
    assert case.expected["risk_level"] == "critical"
    legacy = {
        "id": "a-1",
        "input": [
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": 'Context: {"compliance_framework": "SOC2", "finding": {"label": "credentials.api_key"}} Analyze compliance risk.',
            },
        ],
        "output": json.dumps(EXPECTED),
    }
    assert analyst_case(legacy).framework == "SOC2"


def test_the_evaluated_analyst_is_the_served_hybrid():
    rows = [
        _built_row("SOC2", "credentials.api_key", {"environment": "dev"}),
        _built_row("PCI_DSS", "financial.credit_card", {"location": "output"}),
        _built_row("HIPAA", "toxicity.insult", {}),
    ]
    cases = [analyst_case(r) for r in rows]

    class Junk:
        def analyze(self, queries):
            return ["{not json", '{"remediation": 3}', '{"risk_level": "low"}'][: len(queries)]

    m = evaluate_analyst(Junk(), cases)
    # The model's junk cannot cost risk or controls: the rubric answers them.
    assert m["schema_valid_rate"] == m["risk_level_accuracy"] == 1.0
    assert m["control_f1"] == 1.0 or not any(c.expected["controls"] for c in cases)
    assert m["remediation_model_rate"] == 0.0 and m["fallback_reasons"] == {"invalid": 3}
    assert m["remediation_catalogue_rate"] == 1.0

    class Good:
        def analyze(self, queries):
            return [
                analyst_completion({**r, "remediation": ["Rotate it now."]})
                for r in (json.loads(row["output"]) for row in rows)
            ][: len(queries)]

    m = evaluate_analyst(Good(), cases, batch_size=8)
    assert m["remediation_model_rate"] == 1.0 and m["fallback_reasons"] == {}
    assert m["remediation_catalogue_rate"] == 0.0  # its own words, not the catalogue's
    rules_only = evaluate_analyst(None, cases)
    assert rules_only["risk_level_accuracy"] == 1.0 and rules_only["fallback_reasons"] == {
        "no_model": 3
    }


def test_an_engine_that_batches_for_itself_gets_its_own_batch_size():
    sizes = []

    class Batching:
        batch_size = 5

        def analyze(self, queries):
            sizes.append(len(queries))
            return [json.dumps(EXPECTED) for _ in queries]

    m = evaluate_analyst(Batching(), [_case(i) for i in range(12)], batch_size=2)
    assert sizes == [5, 5, 2]
    assert m["case_count"] == 12 and m["schema_valid_rate"] == 1.0
