"""The hybrid analyst: rubric fields always `rule`; the model's remediation or the catalogue's."""

import asyncio
import json
import time

import pytest

from llama_mapper.domain import rubric
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.inference import analyst
from llama_mapper.inference.analyst import analyze, analyze_async, analyze_batch

Q = rubric.query(
    "SOC2", {"label": "credentials.api_key", "confidence": 0.9}, {"location": "output"}
)
GOOD = json.dumps(
    {"risk_level": "low", "controls": ["CC9.9"], "remediation": ["Rotate the key.", "Audit use."]}
)
JUNK = [
    None,
    "",
    "{",
    "[]",
    '{"remediation": "rotate"}',
    '{"remediation": []}',
    '{"remediation": ["a", "b", "c", "d", "e"]}',
    json.dumps({"remediation": ["x" * 500]}),
    '{"remediation": [1]}',
    '{"remediation": ["same", "same"]}',
    '{"remediation": ["bell\\u0007"]}',
    "[" * 5000,
]


def test_rubric_answers_risk_and_controls_the_model_only_the_remediation():
    out = analyze(Q, GOOD)
    expected = rubric.assess(Q)
    assert out["risk_level"] == expected["risk_level"] == "critical"
    assert out["controls"] == expected["controls"] != ["CC9.9"]
    assert out["remediation"] == ["Rotate the key.", "Audit use."]
    assert out["methods"] == {"risk_level": "rule", "controls": "rule", "remediation": "model"}
    assert "fallback_reason" not in out
    validate("analyst-output", out)


@pytest.mark.parametrize("junk", JUNK)
def test_junk_falls_back_to_the_catalogue_for_the_remediation_only(junk):
    out = analyze(Q, junk, failure=analyst.UNAVAILABLE)
    assert out["risk_level"] == "critical" and out["controls"] == rubric.assess(Q)["controls"]
    assert out["remediation"] == rubric.assess(Q)["remediation"]
    assert out["methods"]["remediation"] == "fallback"
    assert out["fallback_reason"] == (analyst.UNAVAILABLE if junk is None else analyst.INVALID)
    validate("analyst-output", out)


def test_every_label_and_framework_is_schema_valid_without_a_model():
    for framework in rubric.FRAMEWORKS:
        for label in default_taxonomy().names:
            out = analyze(rubric.query(framework, {"label": label}))
            validate("analyst-output", out)
            assert out["fallback_reason"] == analyst.NO_MODEL


def test_batch_falls_back_per_reason():
    class Fake:
        def __init__(self, answer=None, delay=0.0, fail=False):
            self.answer, self.delay, self.fail = answer, delay, fail

        def analyze(self, queries):
            time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("engine down")
            return self.answer(queries)

    queries = [Q, rubric.query("GDPR", {"label": "pii.email_address"})]
    outs = analyze_batch(queries, Fake(lambda qs: [GOOD, "junk"]))
    assert [o["methods"]["remediation"] for o in outs] == ["model", "fallback"]
    assert outs[1]["fallback_reason"] == analyst.INVALID
    assert {o["fallback_reason"] for o in analyze_batch(queries, Fake(fail=True))} == {
        analyst.UNAVAILABLE
    }
    slow = analyze_batch(queries, Fake(lambda qs: [GOOD] * 2, delay=0.5), deadline_s=0.05)
    assert {o["fallback_reason"] for o in slow} == {analyst.TIMEOUT}
    short = analyze_batch(queries, Fake(lambda qs: [GOOD]))
    assert {o["fallback_reason"] for o in short} == {analyst.INVALID}
    assert all(o["fallback_reason"] == analyst.NO_MODEL for o in analyze_batch(queries, None))


def test_async_path_gets_messages_and_the_framework_grammar():
    seen = {}

    async def complete(messages, json_schema):
        seen["messages"], seen["schema"] = messages, json_schema
        return GOOD

    out = asyncio.run(analyze_async(Q, complete))
    assert out["methods"]["remediation"] == "model"
    assert seen["messages"][1]["content"].startswith("Assess: ")
    assert '"location":"output"' in seen["messages"][1]["content"]
    assert "CC6.1" in seen["schema"]["properties"]["controls"]["items"]["enum"]

    async def slow(messages, json_schema):
        await asyncio.sleep(1)
        return GOOD

    async def broken(messages, json_schema):
        raise ConnectionError("gone")

    assert asyncio.run(analyze_async(Q, slow, deadline_s=0.05))["fallback_reason"] == "timeout"
    assert asyncio.run(analyze_async(Q, broken))["fallback_reason"] == "unavailable"
    assert asyncio.run(analyze_async(Q, None))["fallback_reason"] == "no_model"


def test_vllm_analyst_decodes_each_framework_under_its_grammar_in_order():
    from types import SimpleNamespace

    from llama_mapper.inference.vllm_engine.offline import VllmAnalystModel

    calls = []

    class Engine:
        config = SimpleNamespace(max_num_seqs=4)

        def generate_json(self, conversations, adapter, json_schema, max_tokens):
            ids = json_schema["properties"]["controls"]["items"]["enum"]
            calls.append((len(conversations), adapter, ids, max_tokens))
            return [(f" {ids[0]}:{c[1]['content'][-20:]} ", "stop") for c in conversations]

    queries = [
        rubric.query("SOC2", {"label": "pii.age"}),
        rubric.query("GDPR", {"label": "pii.age"}),
        rubric.query("SOC2", {"label": "pii.email_address"}),
    ]
    model = VllmAnalystModel(Engine(), "analyst-v2")
    answers = model.analyze(queries)
    assert model.batch_size == 4 and len(answers) == 3
    assert [c[0] for c in calls] == [2, 1] and {c[1] for c in calls} == {"analyst-v2"}
    assert answers[0].endswith('pii.age"}') and answers[2].endswith('email_address"}')
    assert answers[1].startswith(calls[1][2][0]) and answers[0].startswith(calls[0][2][0])
