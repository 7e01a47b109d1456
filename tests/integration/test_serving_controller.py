"""The canary controller against a real registry server (in-process gRPC, SQLite); no Ray.

The router's statistics are what `GET /v1/rollout/stats` returns; here they come from a function
so each step's numbers are chosen by the test.
"""

from __future__ import annotations

import time

import pytest

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.serving.canary import ADVANCE, HOLD, PROMOTE, ROLLBACK, Gates
from llama_mapper.serving.controller import CanaryController
from llama_mapper.serving.registry_source import RegistrySource
from tests.support.registry import evaluated, lineage, make_adapter, start_registry

pytestmark = pytest.mark.integration

HEALTHY = {
    "requests": 100,
    "errors": 0,
    "p95_ms": 50.0,
    "model_queries": 100,
    "schema_valid": 100,
    "fallbacks": 5,
}


@pytest.fixture
def registry(tmp_path):
    from llama_mapper.registry.client import RegistryClient

    server, address = start_registry(tmp_path)
    client = RegistryClient(address, actor="canary-test")
    for seed in range(3):
        directory = make_adapter(tmp_path / f"a{seed}")
        client.register_directory(
            "mapper",
            directory,
            lineage=lineage(),
            idempotency_key=f"k{seed}",
        )
    client.set_alias("mapper", "champion", 1, expected_version=0, reason="seed")
    evaluated(client, "mapper", 1, 2, 3)
    yield client
    client.close()
    server.stop(None)


def controller(client, stats):
    source = RegistrySource(client)
    state = {"arms": stats}

    def fetch():
        return {"revision": source.rollout("mapper").revision, "arms": state["arms"]}

    return CanaryController(
        source, fetch, gates=Gates(min_requests=50), steps=(0.1, 0.5, 1.0)
    ), state


def test_a_healthy_treatment_steps_through_and_is_promoted(registry):
    ctl, state = controller(registry, {"control": HEALTHY, "treatment": HEALTHY})
    rollout = ctl.start(2)
    assert (rollout.stage, rollout.treatment_weight, rollout.control_version) == ("canary", 0.1, 1)
    with pytest.raises(FailedPrecondition):
        ctl.start(3)  # one rollout at a time
    state["arms"] = {"control": HEALTHY, "treatment": {**HEALTHY, "requests": 10}}
    assert ctl.tick().action == HOLD
    state["arms"] = {"control": HEALTHY, "treatment": HEALTHY}
    actions = [ctl.tick().action for _ in range(3)]
    assert actions == [ADVANCE, ADVANCE, PROMOTE]
    assert registry.resolve_alias("mapper", "champion").version == 2
    rollout = registry.get_rollout("mapper")
    assert rollout.treatment_weight == 1.0 and "promote" in rollout.reason
    steps = [e for e in registry.history("mapper") if e.subject == "rollout"]
    assert len(steps) == 4 and all(e.reason for e in steps)


def test_a_failed_gate_rolls_back_and_abort_stops(registry):
    ctl, _state = controller(
        registry, {"control": HEALTHY, "treatment": {**HEALTHY, "fallbacks": 60}}
    )
    ctl.start(2)
    decision = ctl.tick()
    assert decision.action == ROLLBACK and "fallback_rate" in decision.reason
    rollout = registry.get_rollout("mapper")
    assert rollout.treatment_weight == 0.0 and "fallback_rate" in rollout.reason
    assert registry.resolve_alias("mapper", "champion").version == 1
    ctl.start(3, shadow=True, shadow_fraction=0.2)
    assert registry.get_rollout("mapper").shadow_fraction == pytest.approx(0.2)
    assert ctl.abort("operator said so").stage == "aborted"


def test_bench_gate_runs_each_interval_and_its_failure_rolls_back(registry):
    ctl, _ = controller(registry, {"control": HEALTHY, "treatment": HEALTHY})
    verdicts = iter([(True, "within targets"), (False, "p95 812 ms > target 500 ms")])
    judged = []

    def bench_gate(rollout):
        judged.append(rollout.treatment_weight)
        return next(verdicts)

    ctl.bench_gate = bench_gate
    ctl.start(2)
    assert ctl.tick().action == ADVANCE  # the bench passed: the stats decide
    decision = ctl.tick()
    assert decision.action == ROLLBACK and "bench gate failed at weight 0.5" in decision.reason
    assert judged == [0.1, 0.5]
    rollout = registry.get_rollout("mapper")
    assert rollout.treatment_weight == 0.0 and "p95 812 ms" in rollout.reason
    assert registry.resolve_alias("mapper", "champion").version == 1


def test_without_a_champion_the_rules_are_the_control_and_promotion_sets_one(tmp_path):
    from llama_mapper.registry.client import RegistryClient

    server, address = start_registry(tmp_path)
    client = RegistryClient(address, actor="canary-test")
    try:
        client.register_directory(
            "mapper", make_adapter(tmp_path / "a"), lineage=lineage(), idempotency_key="k"
        )
        ctl, _ = controller(client, {"control": HEALTHY, "treatment": HEALTHY})
        # An unevaluated version takes no traffic: no gate, no temperature.
        with pytest.raises(FailedPrecondition, match=r"no gate result.*no fitted temperature"):
            ctl.start(1)
        evaluated(client, "mapper", 1)
        rollout = ctl.start(1)
        assert rollout.control_version == 0  # rules only
        assert [ctl.tick().action for _ in range(3)] == [ADVANCE, ADVANCE, PROMOTE]
        assert client.resolve_alias("mapper", "champion").version == 1
    finally:
        client.close()
        server.stop(None)


def test_force_opens_an_unevaluated_rollout_and_the_history_says_why(registry, tmp_path):
    registry.register_directory(
        "mapper", make_adapter(tmp_path / "new"), lineage=lineage(), idempotency_key="k-new"
    )  # v4: never evaluated
    ctl, _ = controller(registry, {"control": HEALTHY, "treatment": HEALTHY})
    with pytest.raises(FailedPrecondition):
        ctl.start(4)
    rollout = ctl.start(4, force=True, reason="hotfix; evaluation runs tonight")
    assert rollout.stage == "canary"
    (entry,) = registry.history("mapper", subject="rollout")[-1:]
    assert "forced past the traffic gate: " in entry.reason and "hotfix" in entry.reason


def test_promotion_is_one_transaction_a_moved_alias_leaves_the_rollout_untouched(registry):
    ctl, _ = controller(registry, {"control": HEALTHY, "treatment": HEALTHY})
    rollout = ctl.start(2)
    # Someone promotes v3 by hand meanwhile: the rollout's completion must not half-happen.
    registry.set_alias("mapper", "champion", 3, expected_version=1, reason="manual")
    from llama_mapper.domain.errors import Aborted

    with pytest.raises(Aborted):
        registry.finish_rollout(
            "mapper", "complete", expected_revision=rollout.revision, reason="done"
        )
    after = RegistrySource(registry).rollout("mapper")
    assert after.active and after.revision == rollout.revision  # nothing changed
    assert registry.resolve_alias("mapper", "champion").version == 3
    done = registry.finish_rollout(
        "mapper", "aborted", expected_revision=rollout.revision, reason="superseded"
    )
    assert done.rollout.stage == pb.ROLLOUT_STAGE_ABORTED and not done.HasField("alias")


def test_a_lease_that_is_not_renewed_expires_to_control_and_the_history_says_why(tmp_path):
    from llama_mapper.platform.settings.registry import RegistrySettings
    from llama_mapper.registry.client import RegistryClient
    from llama_mapper.registry.db import make_engine
    from llama_mapper.registry.store import RegistryStore

    server, address = start_registry(tmp_path)
    client = RegistryClient(address, actor="canary-test")
    try:
        client.register_directory(
            "mapper", make_adapter(tmp_path / "a"), lineage=lineage(), idempotency_key="k"
        )
        evaluated(client, "mapper", 1)
        ctl, _ = controller(client, {"control": HEALTHY, "treatment": HEALTHY})
        ctl.lease_s = 5.0
        rollout = ctl.start(1)
        assert rollout.lease_expires_at is not None and rollout.live(time.time())
        assert ctl.status()["lease"]["holds"]
        # The controller dies here: nobody renews.
        time.sleep(5.5)
        view = RegistrySource(client).rollout("mapper")
        assert view.active and not view.live(time.time())  # routers already send control
        assert not ctl.status()["lease"]["holds"]
        store = RegistryStore(
            make_engine(
                RegistrySettings(database_url=f"sqlite:///{tmp_path / 'registry.db'}").database_url
            )
        )
        (expired,) = store.expire_leases()
        assert expired.spec.stage.value == "aborted"
        entry = client.history("mapper", subject="rollout")[-1]
        assert entry.actor == "registry" and "lease ended" in entry.reason
        assert store.expire_leases() == []  # once
    finally:
        client.close()
        server.stop(None)
