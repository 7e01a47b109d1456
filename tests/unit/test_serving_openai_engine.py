"""The external OpenAI-compatible engine client: constraint sent, logprob confidence, fail closed."""

from __future__ import annotations

import asyncio
import math

import httpx
import pytest
from fastapi import FastAPI

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.inference.model import MapperQuery
from llama_mapper.serving.openai_engine import OpenAIEngine


def openai_server(answers):
    """A tiny OpenAI-protocol server answering from a table: user text -> (content, logprobs)."""
    app = FastAPI()
    seen = []

    @app.post("/v1/chat/completions")
    async def complete(body: dict):
        seen.append(body)
        content, logprobs, finish, *stop = answers[
            body["messages"][-1]["content"].split('"label": "')[1].split('"')[0]
        ]
        return {
            "choices": [
                {
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    "stop_reason": stop[0] if stop else None,
                    "logprobs": {"content": [{"token": "x", "logprob": lp} for lp in logprobs]},
                }
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(logprobs)},
        }

    @app.get("/v1/models")
    async def models():
        return {"data": [{"id": "mapper-v4"}]}

    return app, seen


def test_predictions_are_validated_and_confidence_is_exp_sum():
    app, seen = openai_server(
        {
            "A": ("pii.email_address", [-0.1, -0.2], "stop"),
            "B": ("pii.none", [-0.1], "stop"),
            "C": ("pii.ssn", [-0.1], "length"),
        }
    )
    engine = OpenAIEngine("http://ext", transport=httpx.ASGITransport(app=app))

    async def go():
        queries = [MapperQuery("d", {"label": x}) for x in "ABC"]
        predictions, description = await engine.predict("mapper-v4", queries)
        assert (await engine.load_version("mapper", 4)) == {"name": "mapper-v4"}
        with pytest.raises(FailedPrecondition):
            await engine.load_version("mapper", 5)
        return predictions, description

    (a, b, c), description = asyncio.run(go())
    assert a.valid and a.label == "pii.email_address"
    assert a.confidence == pytest.approx(math.exp(-0.3))
    assert (b.valid, b.label) == (False, "other.unknown")  # outside the taxonomy
    assert (c.valid, c.label) == (False, "other.unknown")  # truncated
    assert len(seen[0]["structured_outputs"]["choice"]) == 67 and seen[0]["logprobs"] is True
    assert description["adapter"] == "mapper-v4"


def test_the_client_asks_among_the_shortlist_and_reads_an_answer_cut_at_its_decisive_prefix():
    """As the in-cluster engine decodes: the query's candidates as the choice, their decisive
    prefixes as stop strings, an answer cut at one read as the label it decides."""
    from llama_mapper.inference.vllm_engine.decoding import decisive_prefixes

    shortlist = ("pii.email_address", "pii.phone_number", "other.no_finding", "other.unknown")
    stops = decisive_prefixes(shortlist)
    cut = next(stop for stop, label in stops.items() if label == "pii.phone_number")
    app, seen = openai_server(
        {
            "A": (cut, [-0.05, -0.1], "stop", cut),
            "B": ("pii.ph", [-0.05], "stop", "pii.ph"),  # not a stop string of this choice
        }
    )
    engine = OpenAIEngine("http://ext", transport=httpx.ASGITransport(app=app))
    queries = [MapperQuery("d", {"label": x}, shortlist) for x in "AB"]
    (a, b), _ = asyncio.run(engine.predict("mapper-v4", queries))
    assert a.valid and a.label == "pii.phone_number"
    assert a.confidence == pytest.approx(math.exp(-0.15))
    assert (b.valid, b.label) == (False, "other.unknown")
    assert seen[0]["structured_outputs"] == {"choice": list(shortlist)}
    assert set(seen[0]["stop"]) == set(stops) and seen[0]["include_stop_str_in_output"] is True


def test_the_analyst_grammar_is_compact_json_without_keywords_vllm_refuses():
    """vLLM's grammar backends refuse `uniqueItems` ("Grammar error: Unimplemented keys"): it is
    left out of the grammar at every depth (the validator checks it on the answer), and the JSON
    is compact, as the adapters are trained on it."""
    from llama_mapper.domain.schemas import load_schema
    from llama_mapper.inference.vllm_engine import grammar_schema

    schema = load_schema("analyst-output")
    assert schema["properties"]["controls"]["uniqueItems"] is True
    grammar = grammar_schema(schema)
    assert "uniqueItems" not in grammar["properties"]["controls"]
    assert grammar["properties"]["remediation"] == schema["properties"]["remediation"]
    assert grammar["required"] == schema["required"]

    app, seen = openai_server({"x": ('{"risk_level":"low"}', [-0.1], "stop")})
    engine = OpenAIEngine("http://ext", transport=httpx.ASGITransport(app=app))
    asyncio.run(
        engine.chat([{"role": "user", "content": '"label": "x"'}], "analyst-v1", json_schema=schema)
    )
    assert seen[0]["structured_outputs"] == {"json": grammar, "disable_any_whitespace": True}
