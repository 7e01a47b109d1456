"""The analyst takes traffic by promotion, which the registry holds to its traffic check (a
passed gate for the profile); a canary of the analyst is refused with the way to do it."""

import argparse
from types import SimpleNamespace

import pytest

from llama_mapper.cli import registry as registry_cli
from llama_mapper.cli import serving as serving_cli
from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import FileEntry
from llama_mapper.registry.db import make_engine, migrate
from llama_mapper.registry.store import RegistryStore

CALLER = d.Caller("test")


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate(engine)
    store = RegistryStore(engine)
    for model in ("analyst", "mapper"):
        for n in (1, 2):
            artifact = d.PublishedArtifact(
                f"{model}-{n}",
                (FileEntry("adapter_config.json", f"{n}" * 64, 10),),
                f"{n}" * 64,
                8,
                ("q_proj",),
            )
            store.register(d.VersionSpec(model, d.Lineage("base", "c" * 64)), artifact, CALLER)
    yield store
    engine.dispose()


def _gate(store, model, version, profile, passed):
    summary = "passed" if passed else "failed: min_control_f1"
    store.record_gate(model, version, d.GateResult(profile, passed, summary), CALLER)


def _promote(store, model, version, expected=0, **kw):
    alias, _ = store.set_alias(
        model, "champion", version, expected_version=expected, caller=CALLER, **kw
    )
    return alias.version


def test_gate_problems_is_the_traffic_check():
    assert d.gate_problems(None, "cpu-2core") == [
        "no gate result for 'cpu-2core' (run `mapperctl eval gate`)"
    ]
    failed = SimpleNamespace(passed=False, summary="too slow")
    assert d.gate_problems(failed, "x") == ["its latest 'x' gate failed (too slow)"]
    assert d.gate_problems(SimpleNamespace(passed=True, summary=""), "x") == []


def test_the_analyst_champion_needs_a_passed_gate_on_the_profile(store):
    with pytest.raises(FailedPrecondition, match="no gate result for 'cpu-2core'"):
        _promote(store, "analyst", 1)
    _gate(store, "analyst", 1, "h100", True)  # another profile's gate does not count
    with pytest.raises(FailedPrecondition, match="no gate result for 'cpu-2core'"):
        _promote(store, "analyst", 1)
    assert _promote(store, "analyst", 1, hardware_profile="h100") == 1
    _gate(store, "analyst", 2, "cpu-2core", True)
    _gate(store, "analyst", 2, "cpu-2core", False)  # the latest counts
    with pytest.raises(FailedPrecondition, match="min_control_f1"):
        _promote(store, "analyst", 2, expected=1)
    _gate(store, "analyst", 2, "cpu-2core", True)
    assert _promote(store, "analyst", 2, expected=1) == 2
    assert store.resolve_alias("analyst", "champion").version == 2


def test_a_forced_analyst_promotion_needs_a_reason(store):
    from llama_mapper.domain.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="reason"):
        _promote(store, "analyst", 1, force=True)
    assert _promote(store, "analyst", 1, force=True, reason="hotfix") == 1
    entry = store.history("analyst", subject="champion")[-1]
    assert entry.reason == "hotfix"


def test_the_mapper_champion_keeps_its_rule_only_a_failed_gate_blocks(store):
    assert _promote(store, "mapper", 1) == 1  # no gate: the canary is its traffic gate
    _gate(store, "mapper", 2, "cpu-2core", False)
    with pytest.raises(FailedPrecondition, match="failed its latest gate"):
        _promote(store, "mapper", 2, expected=1)


class FakeRegistry:
    def __init__(self):
        self.moves = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def resolve_alias(self, model, alias):
        raise NotFound("no alias")

    def set_alias(self, model, alias, version, **kw):
        self.moves.append((model, alias, version, kw))


def test_mapperctl_promote_names_the_profile_and_needs_a_reason_to_force(monkeypatch):
    fake = FakeRegistry()
    monkeypatch.setattr(registry_cli, "_client", lambda args: fake)

    def promote(**kw):
        args = {"model": "analyst", "version": 3, "alias": "champion", "reason": "", "force": False}
        return registry_cli.cmd_promote(argparse.Namespace(**{**args, "profile": "h100", **kw}))

    with pytest.raises(FailedPrecondition, match="--reason"):
        promote(force=True)
    assert promote() == 0
    ((_, _, version, kw),) = fake.moves
    assert version == 3 and kw["hardware_profile"] == "h100" and kw["expected_version"] == 0


def test_canary_of_the_analyst_points_to_promotion():
    args = argparse.Namespace(model="analyst", url="http://x")
    with pytest.raises(FailedPrecondition, match="mapperctl registry promote analyst N"):
        serving_cli._controller(args)
