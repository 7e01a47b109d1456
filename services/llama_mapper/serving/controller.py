"""The canary controller loop: read the router's per-arm stats, decide, write the registry."""

# Every change goes through the registry's rollout record (compare-and-set on its revision), so the
# registry history holds every step with its reason. The controller holds a lease on the rollout and
# renews it every step: a controller that dies stops renewing, routers send the traffic back to
# control and the registry aborts the rollout. Promotion and rollback are each one registry
# transaction (FinishRollout). The decision itself is `canary.decide`, a pure function.

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
    # How long the rollout keeps its split without a renewal from this controller.
    lease_s: float = 120.0

    def start(
        self,
        treatment: int,
        *,
        control: int | None = None,
        shadow: bool = False,
        shadow_fraction: float = 0.1,
        force: bool = False,
        reason: str = "",
    ) -> RolloutView:
        """Opens a rollout of `treatment` against `control` (default: the champion; without one,
        version 0: the rules mapper alone, which is what answers before any adapter is promoted).
        The registry refuses a treatment without a passing gate and a fitted temperature unless
        `force`, whose `reason` the history records."""
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
        why = f"start: v{treatment} vs v{control}" + (" (shadow)" if shadow else f" at {weight:g}")
        return self.source.set_rollout(
            base,
            weight=weight,
            stage=stage,
            reason=f"{why}; {reason}" if reason else why,
            control_version=control,
            treatment_version=treatment,
            shadow=shadow,
            shadow_fraction=shadow_fraction if shadow else 0.0,
            lease_s=self.lease_s,
            force=force,
            hardware_profile=self.hardware_profile,
        )

    def tick(self) -> Decision:
        """One interval: decide on the current step's stats and apply the decision."""
        rollout = self.source.rollout(self.model)
        if rollout is None or not rollout.active:
            raise NotFound(f"no active rollout of {self.model}")
        rollout = self._renew(rollout)
        if self.bench_gate is not None and rollout.stage == "canary":
            passed, reason = self.bench_gate(rollout)
            rollout = self._renew(rollout)  # the load step can take a while
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
                self.source.finish(rollout, "rolled_back", reason=decision.reason)
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
            # One transaction: the champion alias moves, the rollout closes, both in the history.
            self.source.finish(
                rollout, "complete", reason=decision.reason, alias=self.champion_alias
            )
        elif decision.action == ROLLBACK:
            self.source.finish(rollout, "rolled_back", reason=decision.reason)
        else:
            self.source.set_rollout(
                rollout,
                weight=decision.weight,
                stage=decision.stage,
                reason=decision.reason,
                shadow=rollout.shadow,
                lease_s=self.lease_s,
            )
        return decision

    def _renew(self, rollout: RolloutView) -> RolloutView:
        if rollout.lease_expires_at is None:
            return rollout
        return self.source.renew_lease(rollout, self.lease_s)

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
        return self.source.finish(rollout, "aborted", reason=f"abort: {reason}")

    def status(self) -> dict[str, Any]:
        """The rollout (with its lease: how long it holds without this controller) and the stats."""
        rollout = self.source.rollout(self.model)
        lease = None
        if rollout is not None and rollout.lease_expires_at is not None:
            left = rollout.lease_expires_at - time.time()
            lease = {
                "expires_at": rollout.lease_expires_at,
                "seconds_left": round(left, 1),
                "holds": left > 0,
            }
        return {"rollout": rollout, "lease": lease, "stats": self.stats()}
