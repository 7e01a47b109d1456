"""/v1/analyze and gRPC Analyze: the same hybrid analyst as evaluation, errors with a path."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from llama_mapper._proto.mapper.v1 import mapper_pb2 as pb
from llama_mapper._proto.mapper.v1 import mapper_pb2_grpc
from llama_mapper.domain import rubric
from llama_mapper.domain.schemas import validate
from llama_mapper.inference.analyst import analyze
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.api import build_app
from llama_mapper.serving.router_core import RouterCore

ANSWER = {"risk_level": "low", "controls": [], "remediation": ["Rotate the key now."]}


class AnalystEngine:
    """An EngineClient whose chat answers the analyst's JSON; `reply` sets what it says."""

    def __init__(self):
        self.reply, self.loaded, self.seen = json.dumps(ANSWER), {}, []

    async def load_version(self, model, version):
        self.loaded[f"{model}-v{version}"] = version
        return {"name": f"{model}-v{version}"}

    async def chat(self, messages, adapter, **kw):
        self.seen.append((messages, adapter, kw))
        return {"text": self.reply, "finish_reason": "stop"}

    async def adapters(self):
        return list(self.loaded)


class Champions:
    def rollout(self, model):
        return None

    def champion(self, model, alias):
        return {"mapper": 1, "analyst": 3}.get(model)

    def temperature(self, model, version):
        return 1.0


def _client(engine, source):
    core = RouterCore(ServingSettings(rollout_refresh_s=0.01, rate_limit_rps=0), engine, source)
    app = build_app(lambda: core)
    return core, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


BODY = {
    "framework": "SOC2",
    "finding": {"label": "credentials.api_key", "confidence": 0.9},
    "context": {"location": "output", "environment": "prod"},
}


def test_http_analyze_uses_the_adapter_for_the_remediation_only():
    engine = AnalystEngine()

    async def go():
        core, client = _client(engine, Champions())
        async with client:
            await core.refresh(force=True)
            await asyncio.sleep(0.05)
            r = await client.post("/v1/analyze", json=BODY)
            assert r.status_code == 200, r.text
            body = r.json()
            validate("analyst-output", body["assessment"])
            assert body["provenance"] == {"adapter": "analyst", "adapter_version": 3}
            q = rubric.query(BODY["framework"], BODY["finding"], BODY["context"])
            # What is served is what `analyze` (the evaluated function) answers for that text.
            assert body["assessment"] == analyze(q, json.dumps(ANSWER))
            assert body["assessment"]["risk_level"] == "critical"
            assert body["assessment"]["methods"]["remediation"] == "model"
            _messages, adapter, kw = engine.seen[0]
            assert adapter == "analyst-v3" and kw["json_schema"] == rubric.completion_schema("SOC2")
            engine.reply = "{ truncated"
            junk = (await client.post("/v1/analyze", json=BODY)).json()["assessment"]
            assert junk["fallback_reason"] == "invalid" and junk["risk_level"] == "critical"

    asyncio.run(go())


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({**BODY, "framework": "NIST"}, "$.framework"),
        ({**BODY, "finding": {"label": "pii.nope"}}, "$.finding.label"),
        ({**BODY, "context": {"environment": "qa"}}, "$.context.environment"),
        ({**BODY, "context": {"co_labels": ["nope.nope"]}}, "$.context.co_labels[0]"),
    ],
)
def test_http_analyze_bad_input_is_422_with_a_path(body, needle):
    async def go():
        _core, client = _client(None, None)
        async with client:
            r = await client.post("/v1/analyze", json=body)
            assert r.status_code == 422, r.text
            assert needle in r.json()["error"]["message"]

    asyncio.run(go())


ingress = pytest.importorskip("llama_mapper.serving.ingress")


class Replica(ingress.MapperRouter.func_or_class):
    def __del__(self):
        pass


def test_grpc_analyze_over_a_channel():
    router = Replica.__new__(Replica)
    router.settings = ServingSettings(rate_limit_rps=0)
    router.core = RouterCore(router.settings, None, None)

    async def go():
        server = grpc.aio.server()
        mapper_pb2_grpc.add_MapperServiceServicer_to_server(router, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stub = mapper_pb2_grpc.MapperServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))
        try:
            reply = await stub.Analyze(
                pb.AnalyzeRequest(
                    framework="PCI_DSS",
                    finding_json=json.dumps({"label": "financial.credit_card"}),
                    context_json=json.dumps({"volume": 500}),
                )
            )
            out = json.loads(reply.assessment_json)
            validate("analyst-output", out)
            assert out["risk_level"] == "critical" and out["fallback_reason"] == "no_model"
            assert reply.adapter == "" and reply.adapter_version == 0
            for request, needle in [
                (pb.AnalyzeRequest(framework="SOC2", finding_json="{"), "$.finding_json"),
                (
                    pb.AnalyzeRequest(framework="SOC2", finding_json='{"label": "x.y"}'),
                    "finding.label",
                ),
                (
                    pb.AnalyzeRequest(
                        framework="SOC2",
                        finding_json='{"label": "pii.age"}',
                        context_json='{"volume": -1}',
                    ),
                    "context.volume",
                ),
            ]:
                with pytest.raises(grpc.aio.AioRpcError) as bad:
                    await stub.Analyze(request)
                assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert needle in bad.value.details()
        finally:
            await server.stop(None)

    asyncio.run(go())


class NoChampions(Champions):
    def champion(self, model, alias):
        return None


class SlowEngine(AnalystEngine):
    async def load_version(self, model, version):
        await asyncio.sleep(3600)


def test_healthz_shows_the_analyst_champion_loaded_by_role():
    async def go():
        engine = AnalystEngine()
        core, client = _client(engine, Champions())
        async with client:
            await core.refresh(force=True)
            for _ in range(200):  # the loads run in the background; a busy CPU slows them
                health = (await client.get("/healthz")).json()
                if health["analyst"]["status"] == "ready" and "mapper-v1" in engine.loaded:
                    break
                await asyncio.sleep(0.02)
            # Loaded as the mapper's champion is, by its registry alias, on the main engine.
            assert engine.loaded == {"mapper-v1": 1, "analyst-v3": 3}
            assert health["champions"] == {"mapper": 1, "analyst": 3}
            assert health["adapters"]["analyst-v3"] == "ready"
            assert health["analyst"] == {
                "model": "analyst",
                "champion": 3,
                "status": "ready",
                "remediation": "model",
            }

    asyncio.run(go())


@pytest.mark.parametrize(
    ("engine", "source", "champion", "status"),
    [
        (None, None, None, "none"),  # rules-only serving
        (AnalystEngine(), NoChampions(), None, "none"),  # no analyst champion yet
        (SlowEngine(), Champions(), 3, "loading"),
    ],
)
def test_healthz_says_the_catalogue_answers_without_a_ready_analyst(
    engine, source, champion, status
):
    async def go():
        core, client = _client(engine, source)
        async with client:
            await core.refresh(force=True)
            await asyncio.sleep(0.02)
            health = (await client.get("/healthz")).json()
            assert health["analyst"]["champion"] == champion
            assert health["analyst"]["status"] == status
            assert health["analyst"]["remediation"] == "catalogue"
            body = (await client.post("/v1/analyze", json=BODY)).json()
            assert body["assessment"]["methods"]["remediation"] == "fallback"
            assert body["provenance"] == {"adapter": None, "adapter_version": None}
        for task in list(core._background):
            task.cancel()

    asyncio.run(go())


def test_an_analyst_adapter_is_warmed_under_every_framework_grammar():
    engine_module = pytest.importorskip("llama_mapper.serving.engine")

    class Engine:
        def __init__(self):
            self.chats, self.predicts = [], []

        async def chat(self, messages, adapter, **kw):
            self.chats.append((adapter, kw))
            return {"text": "{", "finish_reason": "length"}

        async def predict(self, queries, adapter):
            self.predicts.append(adapter)
            return []

    replica = engine_module.EngineReplica.__new__(engine_module.EngineReplica)
    replica.settings, replica.engine = ServingSettings(), Engine()
    asyncio.run(replica._warm_adapter("analyst-v3"))
    asyncio.run(replica._warm_adapter("mapper-v1"))
    assert [kw["json_schema"] for _, kw in replica.engine.chats] == [
        rubric.completion_schema(f) for f in rubric.FRAMEWORKS
    ]
    assert {adapter for adapter, _ in replica.engine.chats} == {"analyst-v3"}
    assert all(kw["max_tokens"] == 1 for _, kw in replica.engine.chats)
    assert replica.engine.predicts == ["mapper-v1"]  # the mapper's label grammar, as before
