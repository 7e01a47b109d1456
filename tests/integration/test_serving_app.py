"""The Serve app end to end: registry -> engine (real base, real adapters) -> router, HTTP and gRPC.

One Ray cluster, one engine start. The A/B split is measured at the router with payloads the rules
answer (the arm is assigned before the model is needed, and such answers need no engine time);
the model path of each arm is checked with payloads only the model can map.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter

import httpx
import pytest
from serving_support import free_port, make_lora_adapter, register_adapter, start_registry

pytestmark = pytest.mark.integration

UNMAPPED = [{"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 8, "score": 0.9}]
MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    import ray
    from ray import serve

    from llama_mapper.core.basemodel import prepare_base_model
    from llama_mapper.registry.client import RegistryClient
    from llama_mapper.serving.app import deploy
    from llama_mapper.serving.settings import ServingSettings

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

    settings = ServingSettings(
        http_port=free_port(),
        grpc_port=free_port(),
        registry_address=address,
        adapter_cache_dir=root / "cache",
        rollout_refresh_s=0.5,
        deadline_s=30.0,  # a contended 2-core CI box; the deadline path has its own unit tests
        threshold=0.0,  # random adapters are unsure of everything: let their labels through
        rate_limit_rps=0,
        engine={"kv_cache_space_gib": 1, "max_num_seqs": 32},
    )
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
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
    tenants = [f"tenant-{i}" for i in range(2000)]
    first = asyncio.run(_arms(url, tenants, MAPPED))
    share = Counter(body["router_arm"] for body in first.values())["treatment"] / len(tenants)
    assert abs(share - 0.25) <= 0.03, share
    # Sticky: the same tenants again land on the same arms.
    again = asyncio.run(_arms(url, tenants[:300], MAPPED))
    assert all(again[t]["router_arm"] == first[t]["router_arm"] for t in tenants[:300])
    # The treatment arm's model really is v2 (once loaded; before that control answers for it).
    wait_adapter_ready(url, stack["versions"][2])
    treated = [t for t in tenants if first[t]["router_arm"] == "treatment"][:3]
    answers = asyncio.run(_arms(url, treated, UNMAPPED))
    assert {a["result"]["provenance"]["model"]["adapter_version"] for a in answers.values()} == {
        stack["versions"][2]
    }
    # Raising the weight only moves tenants from control to treatment.
    set_rollout(stack, treatment=stack["versions"][2], weight=0.5)
    raised = asyncio.run(_arms(url, tenants[:600], MAPPED))
    assert not [
        t
        for t in tenants[:600]
        if first[t]["router_arm"] == "treatment" and raised[t]["router_arm"] == "control"
    ]
    set_rollout(stack, treatment=stack["versions"][2], weight=0.0, stage="aborted")


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
