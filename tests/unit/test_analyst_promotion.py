"""The analyst takes traffic by promotion, held to the registry's traffic check (a passed gate
for the profile); a canary of the analyst is refused with the way to do it."""

import argparse
from types import SimpleNamespace

import pytest

from llama_mapper.cli import registry as registry_cli
from llama_mapper.cli import serving as serving_cli
from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.registry.domain import gate_problems


def _gate(profile, passed, summary=""):
    return SimpleNamespace(hardware_profile=profile, passed=passed, summary=summary)


class FakeRegistry:
    def __init__(self, gates, champion=0):
        self.gates = gates
        self.champion = champion
        self.moves = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_version(self, model, version):
        return SimpleNamespace(gate_results=self.gates)

    def resolve_alias(self, model, alias):
        if not self.champion:
            raise NotFound("no alias")
        return SimpleNamespace(version=self.champion)

    def set_alias(self, model, alias, version, **kw):
        self.moves.append((model, alias, version, kw["expected_version"], kw["force"]))


def _promote(monkeypatch, fake, model="analyst", **kw):
    monkeypatch.setattr(registry_cli, "_client", lambda args: fake)
    args = argparse.Namespace(
        model=model,
        version=3,
        alias="champion",
        reason=kw.get("reason", ""),
        force=kw.get("force", False),
        profile="cpu-2core",
    )
    return registry_cli.cmd_promote(args)


def test_gate_problems_is_the_traffic_check():
    assert gate_problems(None, "cpu-2core") == [
        "no gate result for 'cpu-2core' (run `mapperctl eval gate`)"
    ]
    assert "failed (too slow)" in gate_problems(_gate("cpu-2core", False, "too slow"), "x")[0]
    assert gate_problems(_gate("cpu-2core", True), "cpu-2core") == []


def test_analyst_promotion_needs_a_passed_gate_on_the_profile(monkeypatch):
    fake = FakeRegistry([_gate("h100", True)])
    with pytest.raises(FailedPrecondition, match="no gate result for 'cpu-2core'"):
        _promote(monkeypatch, fake)
    fake.gates.append(_gate("cpu-2core", True))
    fake.gates.append(_gate("cpu-2core", False, "failed: min_control_f1"))
    with pytest.raises(FailedPrecondition, match="min_control_f1"):
        _promote(monkeypatch, fake)  # the latest gate counts
    assert fake.moves == []
    fake.gates.append(_gate("cpu-2core", True))
    fake.champion = 2
    assert _promote(monkeypatch, fake) == 0
    assert fake.moves == [("analyst", "champion", 3, 2, False)]


def test_forced_analyst_promotion_needs_a_reason_and_skips_the_check(monkeypatch):
    fake = FakeRegistry([])
    with pytest.raises(FailedPrecondition, match="--reason"):
        _promote(monkeypatch, fake, force=True)
    assert _promote(monkeypatch, fake, force=True, reason="hotfix") == 0
    assert fake.moves == [("analyst", "champion", 3, 0, True)]


def test_mapper_promotion_is_left_to_the_registry(monkeypatch):
    fake = FakeRegistry([])  # no gate: the registry's own rule (a failed gate blocks) decides
    assert _promote(monkeypatch, fake, model="mapper") == 0
    assert fake.moves == [("mapper", "champion", 3, 0, False)]


def test_canary_of_the_analyst_points_to_promotion():
    args = argparse.Namespace(model="analyst", url="http://x")
    with pytest.raises(FailedPrecondition, match="mapperctl registry promote analyst N"):
        serving_cli._controller(args)
