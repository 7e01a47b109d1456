"""The canary controller loop: read the router's per-arm stats, decide, write the registry.

Every change goes through the registry's rollout record (compare-and-set on its revision), so the
registry history holds every step with its reason; a finished rollout moves the champion alias to
the treatment. The decision itself is `canary.decide`, a pure function.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.serving.arms import CONTROL, TREATMENT, RolloutView
from llama_mapper.serving.canary import (
    DEFAULT_STEPS,
    HOLD,
    PROMOTE,
    ROLLBACK,
    ArmStats,
    Decision,
    Gates,
    decide,
    decide_shadow,
)
from llama_mapper.serving.registry_source import RegistrySource

log = logging.getLogger(__name__)


def http_stats(router_url: str, token: str | None = None) -> Callable[[], dict[str, Any]]:
    """Reads GET /v1/rollout/stats from the router."""
    headers = {"authorization": f"Bearer {token}"} if token else {}

    def fetch() -> dict[str, Any]:
        response = httpx.get(
            f"{router_url.rstrip('/')}/v1/rollout/stats", headers=headers, timeout=10
        )
        response.raise_for_status()
        return response.json()

    return fetch


def _arm(stats: dict[str, Any], name: str) -> ArmStats:
    return ArmStats(**stats.get("arms", {}).get(name, {}))


@dataclass
class CanaryController:
    source: RegistrySource
    stats: Callable[[], dict[str, Any]]
    model: str = "mapper"
    gates: Gates = field(default_factory=Gates)
    steps: Sequence[float] = DEFAULT_STEPS
    champion_alias: str = "champion"
    hardware_profile: str = "cpu-2core"
    # Optional load step run at each canary interval before the stats are read: it drives traffic
    # through the router and judges the treatment arm against the registry's latency and error
    # targets. Returns (passed, reason); a failure rolls the treatment back.
    bench_gate: Callable[[RolloutView], tuple[bool, str]] | None = None

    def start(
        self,
        treatment: int,
        *,
        control: int | None = None,
        shadow: bool = False,
        shadow_fraction: float = 0.1,
    ) -> RolloutView:
        """Opens a rollout of `treatment` against `control` (default: the champion; without one,
        version 0: the rules mapper alone, which is what answers before any adapter is promoted)."""
        if control is None:
            control = self.source.champion(self.model, self.champion_alias) or 0
        if control == treatment:
            raise FailedPrecondition(f"v{treatment} is already the control")
        current = self.source.rollout(self.model)
        if current is not None and current.active:
            raise FailedPrecondition(
                f"a rollout of {self.model} v{current.treatment_version} is already {current.stage}: abort it first"
            )
        base = current or RolloutView(self.model, control, treatment, 0.0, "aborted", revision=0)
        stage, weight = ("shadow", 0.0) if shadow else ("canary", self.steps[0])
        return self.source.set_rollout(
            base,
            weight=weight,
            stage=stage,
            reason=f"start: v{treatment} vs v{control}"
            + (" (shadow)" if shadow else f" at {weight:g}"),
            control_version=control,
            treatment_version=treatment,
            shadow=shadow,
            shadow_fraction=shadow_fraction if shadow else 0.0,
        )

    def tick(self) -> Decision:
        """One interval: decide on the current step's stats and apply the decision."""
        rollout = self.source.rollout(self.model)
        if rollout is None or not rollout.active:
            raise NotFound(f"no active rollout of {self.model}")
        if self.bench_gate is not None and rollout.stage == "canary":
            passed, reason = self.bench_gate(rollout)
            if not passed:
                decision = Decision(
                    ROLLBACK,
                    0.0,
                    "rolled_back",
                    f"bench gate failed at weight {rollout.treatment_weight:g}: {reason}",
                )
                log.info(
                    "canary %s v%s: %s", self.model, rollout.treatment_version, decision.reason
                )
                self.source.set_rollout(
                    rollout, weight=0.0, stage=decision.stage, reason=decision.reason, shadow=False
                )
                return decision
        stats = self.stats()
        if stats.get("revision") != rollout.revision:
            return Decision(
                HOLD,
                rollout.treatment_weight,
                rollout.stage,
                "router has not picked up this step yet",
            )
        gates = self.gates
        if gates.p95_ms is None:
            target = self.source.p95_target(self.model, self.hardware_profile)
            if target is not None:
                gates = Gates(**{**gates.__dict__, "p95_ms": target})
        control, treatment = _arm(stats, CONTROL), _arm(stats, TREATMENT)
        if rollout.stage == "shadow":
            decision = decide_shadow(treatment, gates, self.steps)
        else:
            decision = decide(
                rollout.treatment_weight, control, treatment, gates, self.steps,
                # Version 0 is "the champion", which is the rules alone until one is promoted.
                rules_only_control=not rollout.control_version
                and not self.source.champion(self.model, self.champion_alias),
            )  # fmt: skip
        log.info("canary %s v%s: %s", self.model, rollout.treatment_version, decision.reason)
        if decision.action == HOLD:
            return decision
        if decision.action == PROMOTE:
            self.source.client.set_alias(
                self.model,
                self.champion_alias,
                rollout.treatment_version,
                expected_version=rollout.control_version,
                reason=f"canary complete: {decision.reason}",
            )
        self.source.set_rollout(
            rollout,
            weight=decision.weight,
            stage=decision.stage,
            reason=decision.reason,
            shadow=False if decision.action in (ROLLBACK, PROMOTE) else rollout.shadow,
        )
        return decision

    def run(
        self,
        *,
        interval_s: float,
        max_ticks: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Decision:
        """Ticks until the rollout completes or rolls back (or max_ticks)."""
        ticks = 0
        while True:
            if self.bench_gate is None:  # a bench gate spends the interval generating load
                sleep(interval_s)
            decision = self.tick()
            ticks += 1
            if decision.action in (PROMOTE, ROLLBACK) or (
                max_ticks is not None and ticks >= max_ticks
            ):
                return decision

    def abort(self, reason: str) -> RolloutView:
        rollout = self.source.rollout(self.model)
        if rollout is None or not rollout.active:
            raise NotFound(f"no active rollout of {self.model}")
        return self.source.set_rollout(
            rollout, weight=0.0, stage="aborted", reason=f"abort: {reason}", shadow=False
        )

    def status(self) -> dict[str, Any]:
        return {"rollout": self.source.rollout(self.model), "stats": self.stats()}
