"""Hostile requests to the router's HTTP API, in process over ASGI: every one answered 2xx or 4xx
with the error body, never 5xx, a traceback or planted content (bodies and DEBUG logs)."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import pytest

from llama_mapper.domain.schemas import validate
from llama_mapper.inference.model import Prediction
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.api import build_app
from llama_mapper.serving.router_core import RouterCore
from tests.unit.hostile import values as v
from tests.unit.hostile.tally import PII_TEXT, SECRETS, TALLY, log_text

TOKEN = "hostile-router-token-" + "t" * 20
ASSESSMENT = {"risk_level": "high", "remediation": ["Rotate the key."], "controls": ["CC6.1"]}


class Engine:
    """An engine as a real one behaves on text: the prompt must encode as UTF-8 (a tokenizer's
    first step), the label comes from a table, chat answers a valid assessment."""

    def __init__(self) -> None:
        self.loaded: dict[str, int] = {}

    async def load_version(self, model, version):
        self.loaded[f"{model}-v{version}"] = version
        return {"name": f"{model}-v{version}"}

    async def load_local(self, model, path):
        return {"name": f"{model}-local"}

    async def predict(self, adapter, queries):
        for query in queries:
            json.dumps(query.finding, ensure_ascii=False).encode("utf-8")
        out = [Prediction("pii.email_address", 0.9, math.log(0.9), 0.001) for _ in queries]
        return out, {"base_model": "tiny", "base_model_sha256": "0" * 64, "adapter": adapter}

    async def chat(self, messages, adapter, **kw):
        for message in messages:
            message["content"].encode("utf-8")
        text = json.dumps(ASSESSMENT) if kw.get("json_schema") else "ok"
        return {"text": text, "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 1}

    async def adapters(self):
        return list(self.loaded)


class Source:
    def rollout(self, model):
        return None

    def champion(self, model, alias):
        return 1

    def temperature(self, model, version):
        return 1.0


def client_for(**settings):
    core = RouterCore(
        ServingSettings(rollout_refresh_s=0.01, rate_limit_rps=0, **settings), Engine(), Source()
    )
    app = build_app(lambda: core)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return core, httpx.AsyncClient(transport=transport, base_url="http://router")


PRESIDIO = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.9}]
BASES = {
    "/v1/map": {"detector": "presidio", "output": PRESIDIO, "request_id": "r1", "tenant": "t1"},
    "/v1/map/batch": {"items": [{"detector": "presidio", "output": PRESIDIO}], "tenant": "t1"},
    "/v1/map/document": {
        "outputs": [{"detector": "presidio", "output": PRESIDIO}],
        "text": "mail me: a@b.co here",
        "request_id": "d1",
    },
    "/v1/analyze": {"framework": "GDPR", "finding": {"label": "pii.email_address"}},
    "/v1/feedback": {"request_id": "r1", "verdict": "correct"},
    "/v1/chat/completions": {"model": "mapper", "messages": [{"role": "user", "content": "hi"}]},
}
# Fields that name things (the caller's identifiers, echoed by design) get no planted secrets;
# content fields get every string.
NAMES = {k: s for k, s in v.STRINGS.items() if not any(secret in s for secret in SECRETS)}


def _set(body, path, value):
    body = json.loads(json.dumps(body))
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


FIELDS = [
    # (endpoint, field path, is content)
    ("/v1/map", ("detector",), False),
    ("/v1/map", ("output",), True),
    ("/v1/map", ("output", 0, "entity_type"), True),
    ("/v1/map", ("request_id",), False),
    ("/v1/map", ("tenant",), False),
    ("/v1/map/batch", ("items", 0, "output"), True),
    ("/v1/map/batch", ("items", 0, "detector"), False),
    ("/v1/map/document", ("text",), True),
    ("/v1/map/document", ("outputs", 0, "output"), True),
    ("/v1/analyze", ("finding", "label"), True),
    ("/v1/analyze", ("framework",), False),
    ("/v1/feedback", ("request_id",), False),
    ("/v1/feedback", ("labels",), False),
    ("/v1/chat/completions", ("messages", 0, "content"), True),
    ("/v1/chat/completions", ("model",), False),
]


def _field_cases():
    for endpoint, path, content in FIELDS:
        strings = v.STRINGS if content else NAMES
        field = ".".join(map(str, path))
        chosen = dict(strings)
        if not content:  # fewer strings for names: the rest are covered on /v1/map
            keep = ("empty", "nul", "lone_high_surrogate", "rtl_override", "homoglyph")
            chosen = {k: s for k, s in strings.items() if k in keep or endpoint == "/v1/map"}
        if endpoint == "/v1/feedback" and path == ("labels",):
            chosen = {k: [s] for k, s in chosen.items()}
        for name, value in chosen.items():
            yield pytest.param(
                endpoint, _set(BASES[endpoint], path, value), id=f"{endpoint}:{field}={name}"
            )
        for name, value in v.WRONG_TYPES.items():
            if content or endpoint in ("/v1/map", "/v1/feedback"):
                yield pytest.param(
                    endpoint, _set(BASES[endpoint], path, value), id=f"{endpoint}:{field}:{name}"
                )


def _structure_cases():
    deep = v.deep_value()
    for endpoint, path in (
        ("/v1/map", ("output",)),
        ("/v1/map/batch", ("items", 0, "output")),
        ("/v1/map/document", ("outputs", 0, "output")),
        ("/v1/analyze", ("finding", "extra")),
        ("/v1/feedback", ("labels",)),
    ):
        yield pytest.param(endpoint, _set(BASES[endpoint], path, deep), id=f"{endpoint}:deep200")
    wide = {f"k{i}": PII_TEXT for i in range(3000)}
    yield pytest.param("/v1/map", _set(BASES["/v1/map"], ("output",), wide), id="map:wide")
    many = [{"entity_type": "US_SSN", "start": 0, "end": 1, "score": 0.9}] * 5000
    yield pytest.param("/v1/map", _set(BASES["/v1/map"], ("output",), many), id="map:5000_findings")
    item = {"detector": "presidio", "output": PRESIDIO}
    for n in (0, 101, 1000):
        yield pytest.param("/v1/map/batch", {"items": [item] * n}, id=f"batch:{n}_items")
    yield pytest.param("/v1/map/document", {"outputs": []}, id="document:no_outputs")
    yield pytest.param("/v1/map/document", {"outputs": [item] * 33}, id="document:33_outputs")
    chat = BASES["/v1/chat/completions"]
    for name, override in {
        "role_tool": {"messages": [{"role": "tool", "content": "x"}]},
        "no_messages": {"messages": []},
        "max_tokens_huge": {"max_tokens": 10**9},
        "max_tokens_negative": {"max_tokens": -1},
        "temperature_huge": {"temperature": 1e308},
        "messages_10k": {"messages": [{"role": "user", "content": "x"}] * 10_000},
    }.items():
        yield pytest.param("/v1/chat/completions", {**chat, **override}, id=f"chat:{name}")
    bad_presidio = {
        "span_reversed": [{"entity_type": "US_SSN", "start": 9, "end": 1, "score": 0.9}],
        "span_negative": [{"entity_type": "US_SSN", "start": -5, "end": 1, "score": 0.9}],
        "span_huge": [{"entity_type": "US_SSN", "start": 0, "end": 10**30, "score": 0.9}],
        "score_above_one": [{"entity_type": "US_SSN", "start": 0, "end": 1, "score": 7}],
        "score_string": [{"entity_type": "US_SSN", "start": 0, "end": 1, "score": "high"}],
        "with_text": [
            {"entity_type": "US_SSN", "start": 0, "end": 11, "score": 0.9, "text": v.SSN}
        ],
    }
    for name, output in bad_presidio.items():
        yield pytest.param(
            "/v1/map", _set(BASES["/v1/map"], ("output",), output), id=f"map:presidio_{name}"
        )
    for detector in ("acme-dlp", "google-dlp", "aws-comprehend", "llama-guard", "detect-secrets"):
        for name, output in {
            "pii_text": PII_TEXT,
            "pii_object": {"finding": PII_TEXT, "label": v.SSN, "quote": v.EMAIL},
            "pii_list": [{"type": v.AWS_KEY, "match": v.CARD}],
        }.items():
            yield pytest.param(
                "/v1/map",
                {"detector": detector, "output": output},
                id=f"map:{detector}_{name}",
            )


def _raw_cases():
    for endpoint in BASES:
        for name, body in v.RAW_BODIES.items():
            yield pytest.param(endpoint, body, id=f"{endpoint}:raw_{name}")
    for name, raw in (
        ("deep_arrays", v.deep_arrays()),
        ("deep_objects", v.deep_objects()),
        ("nan", "NaN"),
        ("many_digits", "1" * 5000),
        ("surrogate", '"\\udc00"'),
    ):
        body = '{"detector": "presidio", "output": ' + raw + "}"
        yield pytest.param("/v1/map", body.encode(), id=f"/v1/map:output_raw_{name}")


def _check(case, response, caplog, *, expect_error=False):
    text = response.text
    problems = TALLY.record(
        "http",
        case,
        server_error=response.status_code >= 500,
        texts=[text, json.dumps(dict(response.headers))],
        logs=log_text(caplog),
    )
    assert not problems, f"{response.status_code} {text[:400]}: {problems}"
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["status"] and error["message"], text[:400]
    elif response.request.url.path in ("/v1/map", "/v1/map/batch"):
        body = response.json()
        for item in body.get("results", [body]):
            validate("mapper-output", item["result"])
    if expect_error:
        assert response.status_code >= 400


async def _post(endpoint, **kw):
    core, client = client_for(**kw.pop("settings", {}))
    async with client:
        await core.refresh(force=True)
        for _ in range(200):  # adapter loads run as tasks: mapper and analyst, on a busy machine
            await asyncio.sleep(0.01)
            if all(state.ready for state in core.versions.values()) and len(core.versions) >= 2:
                break
        return await client.post(endpoint, **kw)


@pytest.mark.parametrize(("endpoint", "body"), [*_field_cases(), *_structure_cases()])
def test_hostile_json_bodies(endpoint, body, debug_logs, request):
    # ensure_ascii: a lone surrogate travels as its escape, as any JSON client would send it.
    content = json.dumps(body).encode()
    response = asyncio.run(
        _post(endpoint, content=content, headers={"content-type": "application/json"})
    )
    _check(request.node.callspec.id, response, debug_logs)


@pytest.mark.parametrize(("endpoint", "body"), list(_raw_cases()))
def test_hostile_raw_bodies(endpoint, body, debug_logs, request):
    response = asyncio.run(
        _post(endpoint, content=body, headers={"content-type": "application/json"})
    )
    _check(request.node.callspec.id, response, debug_logs)


BAD_AUTH = {
    "missing": None,
    "empty": b"",
    "bearer_only": b"Bearer",
    "bearer_space": b"Bearer ",
    "basic": b"Basic dXNlcjpwYXNz",
    "wrong": b"Bearer wrong-token-wrong-token",
    "prefix_of_token": b"Bearer " + TOKEN[:-1].encode(),
    "token_plus_one": b"Bearer " + TOKEN.encode() + b"x",
    "lowercase_scheme_wrong": b"bearer nope",
    "huge": b"Bearer " + b"a" * 60_000,
    "latin1": b"Bearer \xe9\xe8\xff",
    "nul": b"Bearer \x00" + TOKEN.encode(),
    "two_tokens": b"Bearer a, Bearer " + TOKEN.encode(),
    "aws_key": b"Bearer " + v.AWS_KEY.encode(),
}


@pytest.mark.parametrize("name", list(BAD_AUTH))
@pytest.mark.parametrize("endpoint", ["/v1/map", "/v1/feedback"])
def test_bad_tokens_are_401(name, endpoint, debug_logs, request, tmp_path):
    headers = {"content-type": "application/json"}
    if BAD_AUTH[name] is not None:
        headers["authorization"] = BAD_AUTH[name]
    body = json.dumps(BASES[endpoint]).encode()
    try:
        response = asyncio.run(
            _post(endpoint, content=body, headers=headers, settings={"auth_token": TOKEN})
        )
    except httpx.LocalProtocolError:  # the client itself refuses to send it: nothing to answer
        pytest.skip("the HTTP client refuses this header")
    _check(request.node.callspec.id, response, debug_logs, expect_error=True)
    assert response.status_code in (400, 401, 431), response.text


@pytest.mark.parametrize("name", ["traversal", "nul", "rtl_override", "newline_end", "sql"])
def test_hostile_tenant_headers(name, debug_logs, request):
    value = v.STRINGS[name].encode("utf-8")
    try:
        response = asyncio.run(
            _post(
                "/v1/map",
                content=json.dumps(BASES["/v1/map"]).encode(),
                headers={"x-tenant-id": value, "content-type": "application/json"},
            )
        )
    except httpx.LocalProtocolError:
        pytest.skip("the HTTP client refuses this header")
    _check(request.node.callspec.id, response, debug_logs)
