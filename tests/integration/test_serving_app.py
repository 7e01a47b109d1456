"""The Serve app end to end: registry -> engines (real base, real adapters) -> router, HTTP and gRPC.

One Ray cluster, one deployment. The rollout's treatment is isolated on an engine of its own
(`isolate_treatment`), so both engines start once here and the last test can kill the treatment's
replica under load. The A/B split is measured at the router with payloads the rules answer (the
arm is assigned before the model is needed, and such answers need no engine time); the model path
of each arm is checked with payloads only the model can map.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest

from tests.support.registry import evaluated, start_registry
from tests.support.serving import free_port, make_lora_adapter, register_adapter

pytestmark = pytest.mark.integration

UNMAPPED = [{"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 8, "score": 0.9}]
MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import ray
    from ray import serve

    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.platform.settings.serving import ServingSettings, ray_serve_env
    from llama_mapper.registry.client import RegistryClient
    from llama_mapper.serving.app import deploy

    root = tmp_path_factory.mktemp("serving")
    base = prepare_base_model()
    server, address = start_registry(root / "registry")
    client = RegistryClient(address, actor="test")
    versions = {}
    for seed in (1, 2, 3):
        adapter = make_lora_adapter(base.path, root / f"adapter-{seed}", seed=seed)
        before = set((root / "registry" / "artifacts").rglob("adapter_model.safetensors"))
        versions[seed] = register_adapter(client, "mapper", adapter, base)
        stored = set((root / "registry" / "artifacts").rglob("adapter_model.safetensors")) - before
    # v3's stored artifact is corrupted after registration: its download fails sha256.
    (path,) = stored
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    client.set_alias("mapper", "champion", versions[1], expected_version=0, reason="test")
    evaluated(client, "mapper", *versions.values())

    settings = ServingSettings(
        http_port=free_port(),
        grpc_port=free_port(),
        registry_address=address,
        adapter_cache_dir=root / "cache",
        rollout_refresh_s=0.5,
        deadline_s=90.0,  # two engines on a contended 2-core CI box; the deadline path has unit tests
        threshold=0.0,  # random adapters are unsure of everything: let their labels through
        rate_limit_rps=0,
        engine={"kv_cache_space_gib": 1, "max_num_seqs": 32},
        isolate_treatment=True,  # the treatment's adapters load on MapperEngineTreatment
        treatment_engine_overrides={"max_num_seqs": 16},  # it takes one arm: half the traffic
    )
    ray_serve_env()  # as the shipped Ray images set it
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        info = deploy(settings, timeout_s=400)
        yield {
            "settings": settings,
            "client": client,
            "versions": versions,
            "url": info["url"],
            "info": info,
        }
    finally:
        serve.shutdown()
        ray.shutdown()
        client.close()
        server.stop(None)


def post(url, body, **headers):
    return httpx.post(url, json=body, headers=headers, timeout=120)


def wait_revision(url, revision, timeout_s=30):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        stats = httpx.get(f"{url}/v1/rollout/stats", timeout=30).json()
        if stats["revision"] == revision:
            return stats
        time.sleep(0.3)
    raise AssertionError(f"router never reached rollout revision {revision}")


def wait_adapter_ready(url, version, timeout_s=300):
    """Until the engine has loaded `version` (a treatment loads in the background; until it is
    ready, control answers its tenants)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
        if any(m.get("version") == version and m.get("status") == "ready" for m in models):
            return
        time.sleep(0.5)
    raise AssertionError(f"adapter v{version} never became ready")


@pytest.fixture(autouse=True)
def close_rollout(stack):
    """A test that stops half-way must not leave its rollout open: the next one opens its own."""
    yield
    from llama_mapper.serving.registry_source import RegistrySource

    rollout = RegistrySource(stack["client"]).rollout("mapper")
    if rollout is not None and rollout.active:
        set_rollout(stack, treatment=rollout.treatment_version, weight=0.0, stage="aborted")


def set_rollout(stack, *, treatment, weight, stage="canary"):
    client = stack["client"]
    try:
        revision = client.get_rollout("mapper").revision
    except Exception:
        revision = 0
    record = client.set_rollout(
        "mapper",
        control_version=stack["versions"][1],
        treatment_version=treatment,
        treatment_weight=weight,
        stage=stage,
        expected_revision=revision,
        reason="test",
    )
    wait_revision(stack["url"], record.revision)
    return record


def test_model_answers_what_rules_cannot_with_provenance(stack):
    r = post(
        f"{stack['url']}/v1/map",
        {"detector": "presidio", "output": UNMAPPED + MAPPED, "request_id": "e2e-1"},
    )
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    methods = [f["method"] for f in result["findings"]]
    assert methods[1] == "rule" and methods[0] in ("model", "fallback")
    assert methods[0] == "model", result  # threshold 0: any valid label is kept
    model = result["provenance"]["model"]
    assert model["adapter_version"] == stack["versions"][1]
    assert len(model["base_model_sha256"]) == 64
    assert 0 < result["findings"][0]["confidence"] <= 1
    models = httpx.get(f"{stack['url']}/v1/models", timeout=30).json()["data"]
    assert any(m["id"] == "mapper-v1" and m["status"] == "ready" for m in models)
    chat = post(
        f"{stack['url']}/v1/chat/completions",
        {"model": "mapper", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4},
    )
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["role"] == "assistant"
    # The openai client's stream=True through Serve's proxy (server-sent events) yields the same
    # completion: the role, the engine's text, the finish reason, and usage when asked.
    from openai import OpenAI

    oai = OpenAI(base_url=f"{stack['url']}/v1", api_key="unused", timeout=120)
    messages = [{"role": "user", "content": "Say hi"}]
    chunks = list(
        oai.chat.completions.create(
            model="mapper",
            messages=messages,
            max_tokens=4,
            temperature=0.0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    whole = oai.chat.completions.create(
        model="mapper", messages=messages, max_tokens=4, temperature=0.0
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens > 0
    assert "mapper_requests_total" in httpx.get(f"{stack['url']}/metrics", timeout=30).text


def test_grpc_map_over_a_real_channel(stack):
    import grpc

    from llama_mapper._proto.mapper.v1 import mapper_pb2 as pb
    from llama_mapper._proto.mapper.v1 import mapper_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{stack['settings'].grpc_port}") as channel:
        stub = pb_grpc.MapperServiceStub(channel)
        reply = stub.Map(
            pb.MapRequest(detector="presidio", output_json=json.dumps(MAPPED), tenant="g"),
            timeout=60,
        )
        assert json.loads(reply.result.result_json)["taxonomy"] == ["pii.email_address"]
        batch = stub.MapBatch(
            pb.MapBatchRequest(
                items=[pb.MapBatchItem(detector="presidio", output_json=json.dumps(MAPPED))] * 3
            ),
            timeout=60,
        )
        assert len(batch.results) == 3
        with pytest.raises(grpc.RpcError) as err:
            stub.Map(pb.MapRequest(detector="presidio", output_json="{not json"), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _arms(url, tenants, output, concurrency=16):
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120) as client:

        async def one(tenant):
            async with sem:
                r = await client.post(
                    f"{url}/v1/map",
                    json={"detector": "presidio", "output": output, "tenant": tenant},
                )
                assert r.status_code == 200, r.text
                return tenant, r.json()

        return dict(await asyncio.gather(*(one(t) for t in tenants)))


def test_weights_are_honoured_sticky_and_only_move_control_to_treatment(stack):
    url = stack["url"]
    set_rollout(stack, treatment=stack["versions"][2], weight=0.25)
    tenants = [f"tenant-{i}" for i in range(1000)]
    first = asyncio.run(_arms(url, tenants, MAPPED))
    share = Counter(body["router_arm"] for body in first.values())["treatment"] / len(tenants)
    # The rollout's salt is random: 1,000 tenants put the share within 0.045 of 0.25 (3.3 sigma).
    assert abs(share - 0.25) <= 0.045, share
    # Sticky: the same tenants again land on the same arms.
    again = asyncio.run(_arms(url, tenants[:200], MAPPED))
    assert all(again[t]["router_arm"] == first[t]["router_arm"] for t in tenants[:200])
    # The treatment arm's model really is v2 (once loaded; before that control answers for it).
    wait_adapter_ready(url, stack["versions"][2])
    treated = [t for t in tenants if first[t]["router_arm"] == "treatment"][:3]
    answers = asyncio.run(_arms(url, treated, UNMAPPED))
    model_versions = {
        (a["result"]["provenance"].get("model") or {}).get("adapter_version")
        for a in answers.values()
    }
    methods = [[f["method"] for f in a["result"]["findings"]] for a in answers.values()]
    assert model_versions == {stack["versions"][2]}, f"answered by {methods}"
    # Raising the weight only moves tenants from control to treatment.
    set_rollout(stack, treatment=stack["versions"][2], weight=0.5)
    raised = asyncio.run(_arms(url, tenants[:400], MAPPED))
    assert not [
        t
        for t in tenants[:400]
        if first[t]["router_arm"] == "treatment" and raised[t]["router_arm"] == "control"
    ]


def test_failing_treatment_is_answered_by_control_and_the_canary_rolls_back(stack):
    from llama_mapper.serving.canary import ROLLBACK, Gates
    from llama_mapper.serving.controller import CanaryController, http_stats
    from llama_mapper.serving.registry_source import RegistrySource

    url, client = stack["url"], stack["client"]
    controller = CanaryController(
        RegistrySource(client), http_stats(url), gates=Gates(min_requests=10), steps=(0.5, 1.0)
    )
    record = controller.start(stack["versions"][3])  # v3's artifact fails its checksum
    wait_revision(url, record.revision)
    tenants = [f"canary-{i}" for i in range(60)]
    answers = asyncio.run(_arms(url, tenants, UNMAPPED, concurrency=8))  # every one 200 (asserted)
    assert {a["router_arm"] for a in answers.values()} == {"control"}
    decision = controller.tick()
    assert decision.action == ROLLBACK and "error_rate" in decision.reason
    rollout = client.get_rollout("mapper")
    assert rollout.treatment_weight == 0.0 and "error_rate" in rollout.reason
    history = [e for e in client.history("mapper") if e.subject == "rollout"]
    assert "error_rate" in history[-1].reason
    models = httpx.get(f"{url}/v1/models", timeout=30).json()["data"]
    v3 = [m for m in models if m.get("version") == stack["versions"][3]]
    assert v3 and v3[0]["status"] == "failed" and "sha256" in v3[0]["error"]


def kill_replica(app_name, deployment):
    """Kills the deployment's one replica actor (as a crash would) and returns once Ray has it dead."""
    import ray

    prefix = f"SERVE_REPLICA::{app_name}#{deployment}#"
    (name,) = [
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(prefix)
    ]
    actor = ray.get_actor(name, namespace="serve")
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            ray.get(actor.__ray_ready__.remote(), timeout=5)
        except ray.exceptions.RayActorError:
            return name
        except ray.exceptions.GetTimeoutError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{name} still alive after ray.kill")


async def _load_with_kill(url, tenants, treated, kill, *, sent_after, concurrency=8, most=400):
    """Round-robin model requests from `tenants` (`treated`: those on the treatment arm). Once the
    treatment's model answered four and two treatment requests are in flight, `kill` runs in a
    thread while the load goes on; the load stops once `sent_after` requests from `treated` tenants
    were sent after `kill` returned (counted per treated tenant, so the figure holds however the
    round-robin falls and however fast the answers come). Every response is recorded with the phase it was sent in: before, during or after the kill."""
    phase = {"now": "before", "after": 0, "sent": 0, "answered": 0, "in_flight": 0}
    records = []
    kill_task = None

    async def killer():
        phase["now"] = "during"
        await asyncio.to_thread(kill)
        phase["now"] = "after"

    async with httpx.AsyncClient(timeout=180) as client:

        async def worker(start):
            nonlocal kill_task
            i = start
            while phase["after"] < sent_after and phase["sent"] < most:
                tenant, sent = tenants[i % len(tenants)], phase["now"]
                i += concurrency
                phase["after"] += sent == "after" and tenant in treated
                phase["sent"] += 1
                phase["in_flight"] += tenant in treated
                try:
                    r = await client.post(
                        f"{url}/v1/map",
                        json={"detector": "presidio", "output": UNMAPPED, "tenant": tenant},
                    )
                    records.append((sent, tenant, r.status_code, r.json()))
                    phase["answered"] += r.json()["router_arm"] == "treatment" and (
                        r.json()["result"]["findings"][0]["method"] == "model"
                    )
                except httpx.TransportError as exc:
                    records.append((sent, tenant, None, repr(exc)))
                finally:
                    phase["in_flight"] -= tenant in treated
                if kill_task is None and phase["answered"] >= 4 and phase["in_flight"] >= 2:
                    kill_task = asyncio.ensure_future(killer())

        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        if kill_task is not None:
            await kill_task
    return records


@pytest.mark.slow
def test_killing_the_treatment_engine_under_load_fails_over_to_control_and_rolls_back(stack):
    from llama_mapper.domain.schemas import validate
    from llama_mapper.serving.arms import TREATMENT, assign, routing_key
    from llama_mapper.serving.canary import ROLLBACK, Gates
    from llama_mapper.serving.controller import CanaryController, http_stats
    from llama_mapper.serving.registry_source import RegistrySource

    url, client, versions = stack["url"], stack["client"], stack["versions"]
    control, treatment = versions[1], versions[2]
    source = RegistrySource(client)
    controller = CanaryController(
        source, http_stats(url), gates=Gates(min_requests=10), steps=(0.5, 1.0)
    )
    record = controller.start(treatment)
    wait_revision(url, record.revision)
    wait_adapter_ready(url, treatment)
    rollout = source.rollout("mapper")
    tenants = [f"kill-{i}" for i in range(16)]
    treated = {t for t in tenants if assign(rollout, routing_key(t, "")).arm == TREATMENT}
    assert 4 <= len(treated) <= 12, treated  # both arms take load

    app = stack["settings"].app_name
    records = asyncio.run(
        _load_with_kill(
            url, tenants, treated, lambda: kill_replica(app, "MapperEngineTreatment"), sent_after=8
        )
    )
    # No 5xx, no transport error, every answer valid against the output schema.
    assert [r for r in records if r[2] != 200] == []
    for _, _, _, body in records:
        validate("mapper-output", body["result"])
    # Before the kill the treatment's own engine answered its tenants with v2; whatever model
    # answered on the treatment arm was v2 (a request caught by the kill is answered by control).
    modelled = [b for _, _, _, b in records if b["result"]["findings"][0]["method"] == "model"]
    versions_by_arm = {(b["router_arm"], _model_version(b)) for b in modelled}
    assert versions_by_arm <= {(TREATMENT, treatment), ("control", control)}, versions_by_arm
    before = [b for p, _, _, b in records if p == "before" and b["router_arm"] == TREATMENT]
    assert len([b for b in before if b in modelled]) >= 4
    # After it, control's model (or the rules' fallback) answered those tenants.
    after = [b for p, t, _, b in records if p == "after" and t in treated]
    assert len(after) >= 4, records  # also fails when the kill never came (`most` reached)
    for body in after:
        (finding,) = body["result"]["findings"]
        assert body["router_arm"] == "control", body
        if finding["method"] == "model":
            assert _model_version(body) == control
        else:
            assert finding["method"] == "fallback", body

    stats = httpx.get(f"{url}/v1/rollout/stats", timeout=30).json()
    assert stats["arms"][TREATMENT]["errors"] > 0, stats
    decision = controller.tick()  # the real controller step against the real router's stats
    assert decision.action == ROLLBACK and "error_rate" in decision.reason, decision
    rolled_back = source.rollout("mapper")
    assert (rolled_back.treatment_weight, rolled_back.stage) == (0.0, "rolled_back")
    history = [e for e in client.history("mapper") if e.subject == "rollout"]
    assert "error_rate" in history[-1].reason
    # The dead engine was seen as such (not as an adapter that never loaded).
    from prometheus_client.parser import text_string_to_metric_families

    metrics = text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text)
    lost = [
        sample.value
        for family in metrics
        for sample in family.samples
        if sample.name == "mapper_errors_total"
        and sample.labels == {"arm": TREATMENT, "endpoint": "map", "code": "engine_unavailable"}
    ]
    assert lost and lost[0] >= 1, lost
    # Tenants of the old treatment arm are control's again: answered by v1 on the main engine.
    wait_revision(url, rolled_back.revision)
    (again,) = asyncio.run(_arms(url, sorted(treated)[:1], UNMAPPED)).values()
    assert again["router_arm"] is None
    assert _model_version(again) == control


def _model_version(body):
    return body["result"]["provenance"]["model"]["adapter_version"]
