"""Analyst training rows: risk-first targets, short prompts, context, held-out combinations."""

import json

from llama_mapper.datasets import analyst
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.prompt import parse_analyst_user_prompt
from llama_mapper.domain.rows import analyst_row
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import default_taxonomy

TAXONOMY = default_taxonomy()
SOURCES = [(label, "presidio", "X") for label in TAXONOMY.names]


def _examples(count=1200, seed=0):
    return list(analyst.analyst_examples(SOURCES, TAXONOMY, default_frameworks(), count, seed))


def test_rows_are_risk_first_short_and_schema_valid():
    examples = _examples()
    assert {(e.finding["label"], e.framework) for e in examples[:335]} == {
        (label, f) for label in TAXONOMY.names for f in default_frameworks().frameworks
    }
    for e in examples[::37]:
        row = analyst_row(e.framework, e.finding, e.assessment, e.split, e.context)
        validate("analyst-example", row)
        assert row["output"].startswith('{"risk_level":')
        assert list(json.loads(row["output"])) == ["risk_level", "controls", "remediation"]
        prompt = row["input"][1]["content"]
        assert len(prompt) < 400 and "presidio" not in prompt  # no source, no content
        body = parse_analyst_user_prompt(prompt)
        assert body["framework"] == e.framework and body.get("context", {}) == e.context


def test_contexts_vary_and_eval_combinations_are_never_trained():
    examples = _examples()
    with_context = [e for e in examples if e.context]
    assert len(with_context) > 700
    for key in ("location", "environment", "volume", "data_subject_region", "co_labels"):
        assert any(key in e.context for e in with_context), key
    by_split = {"train": set(), "eval": set()}
    for e in examples:
        q = analyst.rubric.query(e.framework, e.finding, e.context)
        by_split[e.split].add(analyst.signature(q))
    assert by_split["eval"] and not by_split["eval"] & by_split["train"]
    assert 0.03 < len(by_split["eval"]) / (len(by_split["eval"]) + len(by_split["train"])) < 0.2


def test_same_seed_same_rows():
    a, b = _examples(400, 3), _examples(400, 3)
    assert [e.assessment for e in a] == [e.assessment for e in b]
