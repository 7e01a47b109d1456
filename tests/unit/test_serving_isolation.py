"""The rollout's treatment on an engine of its own: placement, failover to control, settings, graph.

RouterCore is driven with two small engines that implement EngineClient, so which engine loads
and answers what is visible, and the treatment's engine can die, hang or error on cue.
"""

from __future__ import annotations

import asyncio
import math

import pytest
from pydantic import ValidationError

from llama_mapper.inference.model import Prediction
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.arms import (
    MAIN_ENGINE,
    TREATMENT,
    TREATMENT_ENGINE,
    RolloutView,
    assign,
    routing_key,
)
from llama_mapper.serving.canary import ROLLBACK, ArmStats, Gates, decide
from llama_mapper.serving.router_core import RouterCore

UNMAPPED = [{"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 5, "score": 0.9}]
ROLLOUT = RolloutView("mapper", 1, 2, 0.5, "canary", salt="x", revision=7)
# What each version answers for the unmapped entity: the answer names the version that gave it.
LABELS = {1: "financial.bank_account", 2: "pii.online_identifier"}


class Engine:
    """An EngineClient that answers from LABELS; `dead` fails every call, `hang` holds predictions
    (and `mute` every call) until it is set, as Serve holds requests to a dead replica."""

    def __init__(self, name):
        self.name = name
        self.loaded: list[str] = []
        self.predicted: list[str] = []
        self.dead = False
        self.hang: asyncio.Event | None = None
        self.mute: asyncio.Event | None = None

    async def load_version(self, model, version):
        if self.dead:
            raise RuntimeError(f"{self.name} replica died")
        self.loaded.append(f"{model}-v{version}")
        return {"name": f"{model}-v{version}"}

    async def load_local(self, model, path):
        raise AssertionError("no local adapters here")

    async def predict(self, adapter, queries):
        self.predicted.append(adapter)
        for held in (self.hang, self.mute):
            if held is not None:
                await held.wait()
        if self.dead:
            raise ConnectionError(f"{self.name} replica died")
        label = LABELS[int(adapter.rsplit("-v", 1)[1])]
        return [Prediction(label, 0.9, math.log(0.9), 0.001) for _ in queries], {
            "base_model": "tiny",
            "base_model_sha256": "0" * 64,
            "adapter": adapter,
        }

    async def chat(self, messages, adapter, **kw):
        return {"text": f"{self.name}:{adapter}", "finish_reason": "stop"}

    async def adapters(self):
        if self.mute is not None:
            await self.mute.wait()
        return [{"name": name} for name in self.loaded]


class Source:
    def __init__(self, rollout):
        self.view = rollout

    def rollout(self, model):
        return self.view

    def champion(self, model, alias):
        return 1 if model == "mapper" else None

    def temperature(self, model, version):
        return 1.0


def tenants(arm, n):
    """`n` tenants that ROLLOUT assigns to `arm`."""
    out = []
    i = 0
    while len(out) < n:
        if assign(ROLLOUT, routing_key(f"t{i}", "r")).arm == arm:
            out.append(f"t{i}")
        i += 1
    return out


async def started(*, isolated=True, rollout=ROLLOUT, **settings):
    main, treatment = Engine("main"), Engine("treatment")
    core = RouterCore(
        ServingSettings(rollout_refresh_s=3600, threshold=0.0, **settings),
        main,
        Source(rollout),
        treatment_engine=treatment if isolated else None,
    )
    await core.refresh(force=True)
    await asyncio.sleep(0.05)  # adapter loads run as tasks
    return core, main, treatment


async def map_unmapped(core, tenant):
    return await core.map_one("presidio", UNMAPPED, tenant=tenant)


def test_isolated_treatment_is_loaded_and_asked_on_its_own_engine():
    async def go():
        core, main, treatment = await started()
        assert main.loaded == ["mapper-v1"] and treatment.loaded == ["mapper-v2"]
        for tenant in tenants(TREATMENT, 3) + tenants("control", 3):
            mapped = await map_unmapped(core, tenant)
            label = mapped.result["findings"][0]["label"]
            assert (
                label == LABELS[mapped.version]
                and mapped.result["findings"][0]["method"] == "model"
            )
        assert main.predicted == ["mapper-v1"] * 3 and treatment.predicted == ["mapper-v2"] * 3
        health = core.health()["adapters"]
        assert health == {"mapper-v1": "ready", f"mapper-v2@{TREATMENT_ENGINE}": "ready"}
        engines = {m["version"]: m["engine"] for m in core.models() if m["kind"] == "adapter"}
        assert engines == {1: MAIN_ENGINE, 2: TREATMENT_ENGINE}
        # The OpenAI route reaches a version on the engine that holds it.
        chat = await core.chat("mapper-v2", [], max_tokens=1, temperature=0)
        assert chat["text"] == "treatment:mapper-v2"
        assert (await core.chat("mapper", [], max_tokens=1, temperature=0))["text"] == (
            "main:mapper-v1"
        )

    asyncio.run(go())


def test_without_isolation_everything_stays_on_the_one_engine():
    async def go():
        core, main, treatment = await started(isolated=False)
        assert sorted(main.loaded) == ["mapper-v1", "mapper-v2"] and treatment.loaded == []
        mapped = await map_unmapped(core, tenants(TREATMENT, 1)[0])
        assert mapped.version == 2 and main.predicted == ["mapper-v2"]
        # A failing shared engine is not failed over (control would fail the same way).
        main.dead = True
        mapped = await map_unmapped(core, tenants(TREATMENT, 1)[0])
        assert mapped.arm == TREATMENT and mapped.result["findings"][0]["method"] == "fallback"
        assert core.windows.arm(TREATMENT).errors == 0

    asyncio.run(go())


def test_a_dead_treatment_engine_is_answered_by_control_counted_and_rolled_back():
    async def go():
        core, _main, treatment = await started()
        healthy = tenants(TREATMENT, 10)
        for tenant in healthy:
            assert (await map_unmapped(core, tenant)).version == 2
        treatment.dead = True
        for tenant in tenants(TREATMENT, 30)[10:]:
            mapped = await map_unmapped(core, tenant)
            finding = mapped.result["findings"][0]
            assert mapped.arm == "control" and mapped.version == 1
            assert finding["method"] == "model" and finding["label"] == LABELS[1]
            assert mapped.result["provenance"]["router_arm"] == "control"
        # One request found the engine dead; the rest went straight to control.
        assert treatment.predicted.count("mapper-v2") == 11
        window = core.windows.arm(TREATMENT)
        assert (window.requests, window.errors) == (30, 20)
        state = core.versions[("mapper", 2, TREATMENT_ENGINE)]
        assert state.status == "failed" and "replica died" in state.error
        metrics = core.metrics.exposition().decode()
        assert 'code="engine_unavailable"' in metrics and 'code="adapter_failed"' not in metrics
        stats = core.rollout_stats()["arms"]
        decision = decide(
            0.5, ArmStats(**stats["control"]), ArmStats(**stats[TREATMENT]), Gates(min_requests=20)
        )
        assert decision.action == ROLLBACK and "error_rate" in decision.reason

    asyncio.run(go())


def test_requests_waiting_on_the_treatment_engine_give_up_when_it_is_found_dead():
    async def go():
        core, _main, treatment = await started(deadline_s=60.0)
        treatment.hang = asyncio.Event()  # Serve holds requests to a dead replica like this
        first, second = tenants(TREATMENT, 2)
        waiting = asyncio.ensure_future(map_unmapped(core, first))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        treatment.hang = None
        treatment.dead = True
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        failed_over = await map_unmapped(core, second)
        answered = await asyncio.wait_for(waiting, timeout=5)
        assert loop.time() - t0 < 5  # not the 60 s deadline
        for mapped in (failed_over, answered):
            assert mapped.arm == "control" and mapped.result["findings"][0]["method"] == "model"
        assert core.windows.arm(TREATMENT).errors == 2

    asyncio.run(go())


def test_a_failed_treatment_engine_is_reloaded_after_the_retry_interval(monkeypatch):
    from llama_mapper.serving import adapters

    async def go():
        core, _main, treatment = await started()
        treatment.dead = True
        await map_unmapped(core, tenants(TREATMENT, 1)[0])
        assert core.versions[("mapper", 2, TREATMENT_ENGINE)].status == "failed"
        treatment.dead = False  # Serve has replaced the replica (without the adapter)
        monkeypatch.setattr(adapters, "FAILED_RETRY_S", 0.0)
        await core.refresh(force=True)
        await asyncio.sleep(0.05)
        assert core.versions[("mapper", 2, TREATMENT_ENGINE)].status == "ready"
        assert treatment.loaded == ["mapper-v2", "mapper-v2"]
        assert (await map_unmapped(core, tenants(TREATMENT, 1)[0])).version == 2

    asyncio.run(go())


def test_shadow_mirrors_go_to_the_treatment_engine():
    shadow = RolloutView(
        "mapper", 1, 2, 0.0, "shadow", shadow=True, shadow_fraction=1.0, salt="x", revision=8
    )

    async def go():
        core, main, treatment = await started(rollout=shadow)
        for i in range(5):
            assert (await map_unmapped(core, f"s{i}")).arm == "control"
        await asyncio.sleep(0.05)
        assert treatment.predicted == ["mapper-v2"] * 5 and main.predicted == ["mapper-v1"] * 5
        assert core.windows.arm(TREATMENT).agreement_pairs == 5
        treatment.dead = True
        await map_unmapped(core, "s-dead")
        await asyncio.sleep(0.05)
        assert core.versions[("mapper", 2, TREATMENT_ENGINE)].status == "failed"
        assert core.windows.arm(TREATMENT).agreement_pairs == 5  # a lost mirror compares nothing

    asyncio.run(go())


def test_settings_validate_the_treatment_engine_overrides():
    settings = ServingSettings(
        isolate_treatment=True,
        treatment_engine_overrides={"omp_threads_bind": "1", "kv_cache_space_gib": 1},
    )
    assert settings.treatment_engine_deployed
    treatment = settings.treatment_engine_settings()
    assert (treatment.engine.omp_threads_bind, treatment.engine.kv_cache_space_gib) == ("1", 1.0)
    assert settings.engine.omp_threads_bind == "all"  # the main engine keeps its own
    with pytest.raises(
        ValidationError, match=r"treatment_engine_overrides: \[.threads.\] are not engine fields"
    ):
        ServingSettings(treatment_engine_overrides={"threads": 2})
    with pytest.raises(ValidationError, match="max_num_seqs"):
        ServingSettings(treatment_engine_overrides={"max_num_seqs": "many"})
    assert not ServingSettings(
        isolate_treatment=True, engine_enabled=False
    ).treatment_engine_deployed
    assert not ServingSettings(
        isolate_treatment=True, external_engine_url="http://x:1"
    ).treatment_engine_deployed


def test_the_app_graph_binds_a_treatment_engine_only_when_isolated():
    from llama_mapper.serving.app import build, engine_deployments

    assert engine_deployments(ServingSettings()) == ["MapperEngine"]
    assert engine_deployments(ServingSettings(engine_enabled=False)) == []
    isolated = ServingSettings(
        isolate_treatment=True,
        treatment_engine_num_cpus=0.5,
        treatment_engine_overrides={"omp_threads_bind": "1"},
    )
    assert engine_deployments(isolated) == ["MapperEngine", "MapperEngineTreatment"]
    # Serve's Application keeps the router's bound arguments (the engines are nested Applications).
    router = build(isolated)._bound_deployment
    treatment = router.init_kwargs["treatment_engine"]._bound_deployment
    assert treatment.name == "MapperEngineTreatment"
    assert treatment.ray_actor_options["num_cpus"] == 0.5
    assert treatment.init_args[0]["engine"]["omp_threads_bind"] == "1"
    assert router.init_args[0]._bound_deployment.init_args[0]["engine"]["omp_threads_bind"] == "all"
    assert "treatment_engine" not in build(ServingSettings())._bound_deployment.init_kwargs


def test_the_probe_notices_a_dead_treatment_engine_with_nothing_in_flight():
    async def go():
        core, _main, treatment = await started(
            deadline_s=60.0, treatment_probe_s=0.05, treatment_probe_timeout_s=0.2
        )
        assert (await map_unmapped(core, tenants(TREATMENT, 1)[0])).version == 2
        treatment.mute = asyncio.Event()  # killed while idle: every call now waits for a replica
        waiting = asyncio.ensure_future(map_unmapped(core, tenants(TREATMENT, 2)[1]))
        mapped = await asyncio.wait_for(waiting, timeout=5)  # not the 60 s deadline
        assert mapped.arm == "control" and mapped.result["findings"][0]["label"] == LABELS[1]
        state = core.versions[("mapper", 2, TREATMENT_ENGINE)]
        assert state.status == "failed" and "probe" in state.error

    asyncio.run(go())


def test_the_probe_notices_a_replacement_replica_that_lost_the_adapter():
    async def go():
        core, _main, treatment = await started(treatment_probe_s=0.05)
        treatment.loaded.clear()  # Serve replaced the replica: it started empty
        await asyncio.sleep(0.3)
        state = core.versions[("mapper", 2, TREATMENT_ENGINE)]
        assert state.status == "failed" and "no longer loaded" in state.error
        mapped = await map_unmapped(core, tenants(TREATMENT, 1)[0])
        assert mapped.arm == "control" and treatment.predicted == []
        assert core.windows.arm(TREATMENT).errors == 1

    asyncio.run(go())
