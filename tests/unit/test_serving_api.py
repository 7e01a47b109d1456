"""The router's HTTP API over RouterCore, without Ray: status codes on the wire via ASGI."""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import replace

import httpx
import pytest

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.schemas import validate
from llama_mapper.inference.model import Prediction
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.api import build_app
from llama_mapper.serving.arms import RolloutView
from llama_mapper.serving.router_core import RouterCore


class TableEngine:
    """An EngineClient answering from a lookup table per adapter; `broken` adapters fail to load."""

    def __init__(self, tables, broken=()):
        self.tables = tables
        self.broken = set(broken)
        self.loaded = {}

    async def load_version(self, model, version):
        name = f"{model}-v{version}"
        if name in self.broken:
            raise RuntimeError("sha256 mismatch")
        self.loaded[name] = version
        return {"name": name}

    async def load_local(self, model, path):
        self.loaded[f"{model}-local"] = 0
        return {"name": f"{model}-local"}

    async def predict(self, adapter, queries):
        table = self.tables[adapter]
        out = [
            Prediction(table.get(q.finding["label"], "other.unknown"), 0.9, math.log(0.9), 0.001)
            for q in queries
        ]
        return out, {"base_model": "tiny", "base_model_sha256": "0" * 64, "adapter": adapter}

    async def chat(self, messages, adapter, **kw):
        return {
            "text": f"echo:{adapter}",
            "finish_reason": "stop",
            "prompt_tokens": 3,
            "completion_tokens": 1,
        }

    async def adapters(self):
        return list(self.loaded)


class StaticSource:
    def __init__(self, rollout=None, champion=1):
        self.view = rollout
        self.champ = champion

    def rollout(self, model):
        return self.view

    def champion(self, model, alias):
        return self.champ if model == "mapper" else None

    def temperature(self, model, version):
        return 1.0


UNMAPPED = [{"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 5, "score": 0.9}]
MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 5, "score": 0.9}]


def make_client(source, engine, **settings):
    cfg = ServingSettings(rollout_refresh_s=0.01, **settings)
    core = RouterCore(cfg, engine, source)
    app = build_app(lambda: core)
    return core, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def run(coro):
    return asyncio.run(coro)


async def _settle(client, core):
    await core.refresh(force=True)
    await asyncio.sleep(0.05)  # adapter loads run as tasks


def test_map_uses_the_champion_and_feedback_counts():
    engine = TableEngine({"mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"}})

    async def go():
        core, client = make_client(StaticSource(), engine)
        async with client:
            await _settle(client, core)
            r = await client.post(
                "/v1/map", json={"detector": "presidio", "output": UNMAPPED, "request_id": "q1"}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["result"]["findings"][0]["label"] == "financial.bank_account"
            assert body["result"]["findings"][0]["method"] == "model"
            assert body["result"]["provenance"]["model"]["adapter_version"] == 1
            assert body["router_arm"] is None
            f = await client.post("/v1/feedback", json={"request_id": "q1", "verdict": "correct"})
            assert f.json()["correct"] is True
            missing = await client.post(
                "/v1/feedback", json={"request_id": "nope", "verdict": "correct"}
            )
            assert missing.status_code == 404
            metrics = (await client.get("/metrics")).text
            assert 'mapper_findings_total{arm="control",method="model"} 1.0' in metrics
            models = (await client.get("/v1/models")).json()["data"]
            assert [m["id"] for m in models] == ["smollm2-135m-instruct", "mapper-v1"]
            chat = await client.post(
                "/v1/chat/completions",
                json={"model": "mapper", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert chat.json()["choices"][0]["message"]["content"] == "echo:mapper-v1"

    run(go())


def test_errors_on_the_wire():
    async def go():
        _core, client = make_client(StaticSource(), TableEngine({}), rate_limit_rps=0)
        async with client:
            big = {"detector": "presidio", "output": "x" * 70_000}
            assert (await client.post("/v1/map", json=big)).status_code == 413
            bad = await client.post(
                "/v1/map/batch",
                json={"items": [{"detector": "presidio", "output": []}, {"output": 1}]},
            )
            assert bad.status_code == 422
            assert bad.json()["error"]["path"] == "$.items[1].detector"
            malformed = await client.post(
                "/v1/map", json={"detector": "presidio", "output": {"x": 1}}
            )
            assert malformed.status_code == 422
            too_many = {"items": [{"detector": "presidio", "output": []}] * 101}
            assert (await client.post("/v1/map/batch", json=too_many)).status_code == 422
            # No analyst adapter: the rubric answers, its catalogue writes the remediation.
            analyzed = await client.post(
                "/v1/analyze",
                json={"framework": "GDPR", "finding": {"label": "pii.email_address"}},
            )
            assert analyzed.status_code == 200
            assert analyzed.json()["assessment"]["fallback_reason"] == "no_model"
            assert (await client.get("/openapi.json")).json()["paths"]["/v1/map"]

    run(go())


def _tokens_file(tmp_path, **tokens):
    from llama_mapper.platform.auth import token_sha256

    path = tmp_path / "tokens.json"
    principals = [
        {"name": name, "token_sha256": token_sha256(token), "rights": ["read", "write"]}
        for name, token in tokens.items()
    ]
    path.write_text(json.dumps({"principals": principals}))
    return path


def test_the_rate_is_the_principals_and_a_batch_costs_its_items(tmp_path):
    """A tenant header the client chooses does not buy it a new bucket; a batch of N is N requests."""
    alice, bob = "alice-token-" + "a" * 20, "bob-token-" + "b" * 20
    tokens = _tokens_file(tmp_path, alice=alice, bob=bob)

    async def go():
        _core, client = make_client(
            StaticSource(),
            TableEngine({}),
            rate_limit_rps=0.01,
            rate_limit_burst=3,
            auth_tokens_file=tokens,
        )
        body = {"detector": "presidio", "output": MAPPED}
        as_alice = {"authorization": f"Bearer {alice}"}
        async with client:
            codes = [
                (
                    await client.post(
                        "/v1/map", json=body, headers={**as_alice, "x-tenant-id": f"t{i}"}
                    )
                ).status_code
                for i in range(4)
            ]
            assert codes == [200, 200, 200, 429]
            limited = await client.post("/v1/map", json=body, headers=as_alice)
            assert int(limited.headers["retry-after"]) >= 1
            as_bob = {"authorization": f"Bearer {bob}"}
            batch = {"items": [body] * 3}
            assert (
                await client.post("/v1/map/batch", json=batch, headers=as_bob)
            ).status_code == 200
            assert (await client.post("/v1/map", json=body, headers=as_bob)).status_code == 429
            metrics = (await client.get("/metrics")).text
            assert (
                'endpoint="map"' in metrics
                and "/v1/" not in metrics.split("mapper_errors_total")[-1]
            )

    run(go())


def test_bearer_token_when_configured():
    async def go():
        _core, client = make_client(StaticSource(), None, auth_token="s3cret-s3cret-s3cret")
        async with client:
            body = {"detector": "presidio", "output": MAPPED}
            assert (await client.post("/v1/map", json=body)).status_code == 401
            assert (
                await client.post("/v1/map", json=body, headers={"authorization": "Bearer nope"})
            ).status_code == 401
            ok = await client.post(
                "/v1/map", json=body, headers={"authorization": "Bearer s3cret-s3cret-s3cret"}
            )
            assert ok.status_code == 200
            assert (await client.get("/healthz")).status_code == 200

    run(go())


def test_rollout_split_and_failed_treatment_is_answered_by_control_and_counted():
    rollout = RolloutView("mapper", 1, 2, 0.5, "canary", salt="x", revision=4)
    engine = TableEngine(
        {"mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"}}, broken={"mapper-v2"}
    )

    async def go():
        core, client = make_client(StaticSource(rollout), engine, rate_limit_rps=0)
        async with client:
            await _settle(client, core)
            arms = []
            for i in range(200):
                r = await client.post(
                    "/v1/map", json={"detector": "presidio", "output": UNMAPPED, "tenant": f"t{i}"}
                )
                assert r.status_code == 200
                arms.append(r.json()["router_arm"])
                assert r.json()["result"]["findings"][0]["label"] == "financial.bank_account"
            assert set(arms) == {"control"}  # treatment failed to load: control answered all
            stats = (await client.get("/v1/rollout/stats")).json()
            treatment = stats["arms"]["treatment"]
            assert treatment["errors"] == treatment["requests"] > 60
            # Rules-only answers keep the assigned arm: the split itself is visible.
            split = [
                (
                    await client.post(
                        "/v1/map",
                        json={"detector": "presidio", "output": MAPPED, "tenant": f"t{i}"},
                    )
                ).json()["router_arm"]
                for i in range(200)
            ]
            assert 0.35 < split.count("treatment") / 200 < 0.65

    run(go())


def test_the_guard_bounds_a_body_sent_without_content_length():
    async def chunked(body: bytes):
        for i in range(0, len(body), 40):
            yield body[i : i + 40]

    async def go():
        _core, client = make_client(StaticSource(), None, max_body_bytes=300)
        async with client:
            small = json.dumps({"detector": "presidio", "output": MAPPED}).encode()
            ok = await client.post(
                "/v1/map", content=chunked(small), headers={"content-type": "application/json"}
            )
            assert "content-length" not in ok.request.headers
            assert ok.status_code == 200, ok.text  # the body the guard read reached the route
            assert ok.json()["result"]["taxonomy"] == ["pii.email_address"]
            big = json.dumps({"detector": "presidio", "output": "x" * 400}).encode()
            refused = await client.post(
                "/v1/map", content=chunked(big), headers={"content-type": "application/json"}
            )
            assert refused.status_code == 413
            assert refused.json()["error"]["code"] == "PayloadTooLarge"

    run(go())


def test_what_would_make_an_invalid_result_never_leaves():
    # A model label outside the taxonomy, an answer the engine itself flagged invalid, and a
    # request id longer than the result schema allows: the first two fall back, the third is
    # the caller's error; every answer that leaves is valid against mapper-output.json.
    engine = TableEngine({"mapper-v1": {"ACME_CUSTOMER_NO": "financial.no_such_label"}})

    async def go():
        core, client = make_client(StaticSource(), engine)
        async with client:
            await _settle(client, core)
            r = await client.post("/v1/map", json={"detector": "presidio", "output": UNMAPPED})
            assert r.status_code == 200, r.text
            validate("mapper-output", r.json()["result"])
            (finding,) = r.json()["result"]["findings"]
            assert (finding["label"], finding["method"]) == ("other.unknown", "fallback")
            assert finding["needs_review"] is True
            metrics = (await client.get("/metrics")).text
            assert 'mapper_fallbacks_total{arm="control",reason="invalid"} 1.0' in metrics
            assert 'mapper_fallback_rate{arm="control"} 1.0' in metrics
            assert 'mapper_schema_valid_rate{arm="control"} 1.0' in metrics

            body = {"detector": "presidio", "output": MAPPED}
            longest = await client.post("/v1/map", json=body, headers={"x-request-id": "r" * 128})
            assert longest.status_code == 200
            validate("mapper-output", longest.json()["result"])
            assert longest.json()["result"]["provenance"]["request_id"] == "r" * 128
            too_long = await client.post("/v1/map", json=body, headers={"x-request-id": "r" * 129})
            assert too_long.status_code == 422
            assert too_long.json()["error"]["code"] == "InvalidArgument"
            with pytest.raises(InvalidArgument, match=r"\$\.items\[1\]\.request_id"):
                await core.map_batch([body, {**body, "request_id": "r" * 129}], None)

    run(go())


def test_an_engine_flagged_invalid_answer_falls_back():
    class InvalidEngine(TableEngine):
        async def predict(self, adapter, queries):
            predictions, description = await super().predict(adapter, queries)
            return [replace(p, valid=False) for p in predictions], description

    engine = InvalidEngine({"mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"}})

    async def go():
        core, client = make_client(StaticSource(), engine)
        async with client:
            await _settle(client, core)
            r = await client.post("/v1/map", json={"detector": "presidio", "output": UNMAPPED})
            validate("mapper-output", r.json()["result"])
            assert r.json()["result"]["findings"][0]["method"] == "fallback"
            metrics = (await client.get("/metrics")).text
            assert 'mapper_schema_valid_rate{arm="control"} 0.0' in metrics

    run(go())


class SwitchableSource(StaticSource):
    """A registry that can hang (as a SIGSTOPped process does) and whose champion can move."""

    def __init__(self, **kw):
        super().__init__(**kw)
        import threading

        self.release = threading.Event()
        self.release.set()

    def rollout(self, model):
        self.release.wait()
        return self.view


def test_a_hung_registry_never_delays_a_request_and_healthz_says_stale():
    import gc
    import time

    engine = TableEngine({"mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"}})
    source = SwitchableSource()

    async def go():
        core, client = make_client(source, engine, registry_timeout_s=0.2)
        async with client:
            await _settle(client, core)
            assert (await client.get("/healthz")).json()["registry"]["state"] == "fresh"
            source.release.clear()  # the registry stops answering
            await asyncio.sleep(0.5)  # several refreshes time out in the background
            slowest = 0.0
            # A full suite's heap makes one garbage collection take longer than the registry's
            # timeout: collect first, and keep the collector out of what is timed.
            gc.collect()
            gc.disable()
            try:
                for i in range(20):
                    started = time.perf_counter()
                    r = await client.post(
                        "/v1/map",
                        json={"detector": "presidio", "output": UNMAPPED, "request_id": f"h{i}"},
                    )
                    slowest = max(slowest, time.perf_counter() - started)
                    assert r.status_code == 200
                    assert r.json()["adapter_version"] == 1  # the last-known-good champion
            finally:
                gc.enable()
            assert slowest < 0.2, slowest
            health = (await client.get("/healthz")).json()["registry"]
            assert (
                health["state"] == "stale"
                and health["stale_since"]
                and "Timeout" in health["error"]
            )
            source.release.set()
            await asyncio.sleep(0.3)
            assert (await client.get("/healthz")).json()["registry"]["state"] == "fresh"

    try:
        run(go())
    finally:
        source.release.set()


def test_after_a_promotion_every_answer_names_the_new_champion():
    engine = TableEngine(
        {
            "mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"},
            "mapper-v2": {"ACME_CUSTOMER_NO": "pii.phone_number"},
        }
    )
    done = RolloutView("mapper", 1, 2, 1.0, "complete", salt="s", revision=5)
    source = StaticSource(rollout=done, champion=1)

    async def go():
        core, client = make_client(source, engine)
        async with client:
            await _settle(client, core)
            source.champ = 2  # the rollout completed: the alias moved to v2
            await _settle(client, core)
            for i in range(12):
                r = await client.post(
                    "/v1/map",
                    json={"detector": "presidio", "output": UNMAPPED},
                    headers={"x-tenant-id": f"t{i}"},
                )
                assert r.json()["adapter_version"] == 2
                assert r.json()["result"]["provenance"]["model"]["adapter_version"] == 2

    run(go())


def test_feedback_counts_once_per_request_and_only_for_its_tenant():
    engine = TableEngine({"mapper-v1": {}})

    async def go():
        core, client = make_client(StaticSource(), engine)
        async with client:
            await _settle(client, core)
            body = {"detector": "presidio", "output": MAPPED, "request_id": "fb1"}
            await client.post("/v1/map", json=body, headers={"x-tenant-id": "acme"})
            verdict = {"request_id": "fb1", "verdict": "incorrect"}
            other = await client.post("/v1/feedback", json=verdict, headers={"x-tenant-id": "evil"})
            assert other.status_code == 404
            first = await client.post("/v1/feedback", json=verdict, headers={"x-tenant-id": "acme"})
            again = await client.post(
                "/v1/feedback",
                json={**verdict, "verdict": "correct"},
                headers={"x-tenant-id": "acme"},
            )
            assert first.json()["counted"] is True and again.json()["counted"] is False
            assert again.json()["correct"] is False  # the first verdict stands
            assert core.windows.arm("control").feedback == 1

    run(go())


# --- one result per document, crosswalks -----------------------------------------------------

DOC_TEXT = "Zoë <zoe@example.com> +44 20 7946 0958"
PHONE_CHARS = (DOC_TEXT.index("+44"), len(DOC_TEXT))
PHONE_BYTES = (len(DOC_TEXT[: PHONE_CHARS[0]].encode()), len(DOC_TEXT.encode()))
DOC_OUTPUTS = [
    {
        "detector": "presidio",
        "output": [
            {
                "entity_type": "PHONE_NUMBER",
                "start": PHONE_CHARS[0],
                "end": PHONE_CHARS[1],
                "score": 0.75,
            },
            {"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 3, "score": 0.9},
        ],
    },
    {
        "detector": "google-dlp",
        "output": [
            {
                "infoType": {"name": "PHONE_NUMBER"},
                "likelihood": "LIKELY",
                "location": {
                    "byteRange": {"start": str(PHONE_BYTES[0]), "end": str(PHONE_BYTES[1])}
                },
            }
        ],
    },
    {"detector": "llama-guard", "output": "safe"},
]


def test_map_document_merges_the_outputs_through_the_hybrid_and_never_returns_the_text():
    engine = TableEngine({"mapper-v1": {"ACME_CUSTOMER_NO": "financial.bank_account"}})

    async def go():
        core, client = make_client(StaticSource(), engine)
        async with client:
            await _settle(client, core)
            body = {"outputs": DOC_OUTPUTS, "text": DOC_TEXT, "request_id": "d1"}
            r = await client.post("/v1/map/document", json=body, headers={"x-tenant-id": "acme"})
            assert r.status_code == 200, r.text
            assert PHONE_BYTES != PHONE_CHARS  # "ë" is two bytes
            assert "zoe@example.com" not in r.text and "Zoë" not in r.text
            doc = r.json()["result"]
            validate("document-output", doc)
            assert r.json()["adapter_version"] == 1 and r.json()["router_arm"] is None
            assert doc["taxonomy"] == ["financial.bank_account", "pii.phone_number"]
            assert doc["provenance"] == {
                "taxonomy_version": "1.0.0",
                "request_id": "d1",
                "positions": "text",
            }
            bank, phone = doc["findings"]
            assert bank["sources"][0]["method"] == "model"  # the same hybrid path as /v1/map
            assert (phone["span"]["start"], phone["span"]["end"]) == PHONE_CHARS
            assert [(s["detector"], s["span_unit"]) for s in phone["sources"]] == [
                ("presidio", "char"),
                ("google-dlp", "byte"),
            ]
            assert [o["detector"] for o in doc["outputs"]] == [
                "presidio",
                "google-dlp",
                "llama-guard",
            ]
            assert doc["outputs"][0]["model"]["adapter_version"] == 1
            assert doc["outputs"][2]["taxonomy"] == ["other.no_finding"]
            # Feedback is on the document: its request id, its labels, its tenant.
            verdict = {"request_id": "d1", "labels": doc["taxonomy"]}
            fb = await client.post("/v1/feedback", json=verdict, headers={"x-tenant-id": "acme"})
            assert fb.status_code == 200 and fb.json()["correct"] is True
            metrics = (await client.get("/metrics")).text
            assert 'endpoint="document"' in metrics
            no_text = {"outputs": DOC_OUTPUTS}
            reported = (await client.post("/v1/map/document", json=no_text)).json()["result"]
            assert reported["provenance"]["positions"] == "reported"
            assert len(reported["findings"]) == 3  # DLP's bytes are not compared with chars

    run(go())


def test_map_document_errors_name_the_output():
    async def go():
        _core, client = make_client(StaticSource(), None, rate_limit_rps=0)
        async with client:

            async def refused(body, status=422):
                r = await client.post("/v1/map/document", json=body)
                assert r.status_code == status, r.text
                return r.json()["error"]

            assert (await refused({"outputs": []}))["path"] == "$.outputs"
            assert (await refused({"outputs": DOC_OUTPUTS[2:] * 33}))["path"] == "$.outputs"
            bad = [DOC_OUTPUTS[0], {"detector": "presidio", "output": {"x": 1}}]
            assert (await refused({"outputs": bad}))["message"].startswith("$.outputs[1].output:")
            past = await refused({"outputs": DOC_OUTPUTS[:1], "text": "short"})
            assert "$.outputs[0].output: finding 0" in past["message"]
            assert "past the text" in past["message"]
            digest = await refused(
                {"outputs": DOC_OUTPUTS, "text": DOC_TEXT, "text_sha256": "0" * 64}
            )
            assert "does not match" in digest["message"]
            assert (await refused({"outputs": DOC_OUTPUTS, "text_sha256": "xyz"}))["path"] == (
                "$.text_sha256"
            )
            hostile = [
                {
                    "detector": "google-dlp",
                    "output": [
                        {
                            "infoType": {"name": "PHONE_NUMBER"},
                            "location": {"byteRange": {"start": "9", "end": "2"}},
                        }
                    ],
                }
            ]
            assert "$.outputs[0].output" in (await refused({"outputs": hostile}))["message"]

    run(go())


def test_a_document_costs_its_outputs_of_the_rate():
    async def go():
        _core, client = make_client(StaticSource(), None, rate_limit_rps=0.001, rate_limit_burst=4)
        async with client:
            body = {"outputs": DOC_OUTPUTS}
            assert (await client.post("/v1/map/document", json=body)).status_code == 200
            again = await client.post("/v1/map/document", json=body)
            assert (
                again.status_code == 429 and "a document of 3" in again.json()["error"]["message"]
            )

    run(go())


def test_crosswalk_query_adds_the_block_on_every_map_route():
    llama_guard = {"detector": "llama-guard", "output": "unsafe\nS4"}
    expected = {
        "ailuminate": [{"label": "sexual.minors", "ids": ["cse"]}],
        "llama-guard": [{"label": "sexual.minors", "ids": ["S4"]}],
    }

    async def go():
        _core, client = make_client(StaticSource(), None, rate_limit_rps=0)
        async with client:
            plain = (await client.post("/v1/map", json=llama_guard)).json()["result"]
            assert "crosswalks" not in plain
            for query in (
                "crosswalk=ailuminate,llama-guard",
                "crosswalk=ailuminate&crosswalk=llama-guard",
            ):
                r = await client.post(f"/v1/map?{query}", json=llama_guard)
                assert r.status_code == 200, r.text
                result = r.json()["result"]
                validate("mapper-output", result)
                assert result["crosswalks"] == expected
                assert set(result["provenance"]["crosswalk_versions"]) == set(expected)
            batch = await client.post(
                "/v1/map/batch?crosswalk=llama-guard", json={"items": [llama_guard] * 2}
            )
            assert [r["result"]["crosswalks"] for r in batch.json()["results"]] == [
                {"llama-guard": expected["llama-guard"]}
            ] * 2
            doc = await client.post(
                "/v1/map/document?crosswalk=ailuminate",
                json={"outputs": [llama_guard, DOC_OUTPUTS[2]]},
            )
            assert doc.status_code == 200, doc.text
            validate("document-output", doc.json()["result"])
            assert doc.json()["result"]["crosswalks"] == {"ailuminate": expected["ailuminate"]}
            unknown = await client.post("/v1/map?crosswalk=ailuminate,nope", json=llama_guard)
            assert unknown.status_code == 422
            message = unknown.json()["error"]["message"]
            assert "'nope'" in message and "ailuminate, llama-guard" in message
            assert (
                await client.post("/v1/map/document?crosswalk=nope", json={"outputs": DOC_OUTPUTS})
            ).status_code == 422

    run(go())


def test_chat_stream_true_is_what_the_openai_client_streams():
    """`stream=True` answers server-sent `chat.completion.chunk` events and `[DONE]`: the openai
    client's stream yields the role, the content and the finish reason, and usage when asked."""
    from openai import AsyncOpenAI

    async def go():
        core, client = make_client(StaticSource(), TableEngine({"mapper-v1": {}}))
        async with client:
            await _settle(client, core)
            oai = AsyncOpenAI(base_url="http://t/v1", api_key="unused", http_client=client)
            stream = await oai.chat.completions.create(
                model="mapper",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
            raw = await client.post(
                "/v1/chat/completions",
                json={"model": "mapper", "messages": [{"role": "user", "content": "hi"}],
                      "stream": True},
            )  # fmt: skip
        return chunks, raw

    chunks, raw = run(go())
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "echo:mapper-v1"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"
    assert raw.headers["content-type"].startswith("text/event-stream")
    assert raw.text.rstrip().endswith("data: [DONE]")
