"""Analyst metrics by hand: schema-valid rate, risk-level accuracy, control-id precision / recall."""

import json

import pytest

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
    assert parse_assessment("[1]") is None


def test_evaluate_with_a_model_and_rows_from_the_builder_format():
    row = {
        "id": "a-1",
        "task": "analyst",
        "framework": "SOC2",
        "label": "credentials.api_key",
        "input": [
            {"role": "system", "content": "s"},
            {
                "role": "user",
                "content": 'Context: {"compliance_framework": "SOC2", "finding": {"label": "credentials.api_key"}} Analyze compliance risk.',
            },
        ],
        "output": json.dumps(EXPECTED),
        "split": "eval",
    }
    case = analyst_case(row)
    assert case.framework == "SOC2" and case.finding == {"label": "credentials.api_key"}

    class Echo:
        def analyze(self, queries):
            return [json.dumps(EXPECTED) for _ in queries]

    m = evaluate_analyst(Echo(), [case, case])
    assert m == {
        "case_count": 2,
        "schema_valid_rate": 1.0,
        "risk_level_accuracy": 1.0,
        "control_precision": 1.0,
        "control_recall": 1.0,
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
