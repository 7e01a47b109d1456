"""The A/B router's decision, as a pure function: sticky, deterministic arm assignment and shadowing."""

# A routing key (the tenant id, else the request key) is hashed with the rollout's salt into one of
# 10,000 buckets. The treatment arm takes buckets below weight x 10,000, so a key keeps its arm for
# a given weight, and raising the weight only moves keys from control to treatment. Shadow mirroring
# draws from an independent hash, so the mirrored share does not overlap the arm split by
# construction.

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

BUCKETS = 10_000
CONTROL, TREATMENT = "control", "treatment"
# The engine deployments an adapter can live on: the main one, and the treatment's own one when
# the rollout's treatment is isolated (ServingSettings.isolate_treatment).
MAIN_ENGINE, TREATMENT_ENGINE = "main", "treatment"
# Stages during which the treatment arm takes traffic or mirrored traffic.
ACTIVE_STAGES = frozenset({"shadow", "canary"})


@dataclass(frozen=True)
class RolloutView:
    """The registry's rollout record as the router needs it (no proto types here)."""

    model: str
    control_version: int
    treatment_version: int
    treatment_weight: float
    stage: str
    shadow: bool = False
    shadow_fraction: float = 0.0
    salt: str = ""
    revision: int = 0
    lease_expires_at: float | None = None  # wall clock; None: no lease

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE_STAGES and self.treatment_version > 0

    def lease_holds(self, now: float) -> bool:
        """A rollout whose controller stopped renewing its lease routes to control."""
        return self.lease_expires_at is None or now < self.lease_expires_at

    def live(self, now: float) -> bool:
        return self.active and self.lease_holds(now)


@dataclass(frozen=True)
class Assignment:
    """Which arm answers, which version that is, and whether to mirror to treatment."""

    arm: str
    version: int
    bucket: int
    mirror: bool = False


def bucket(salt: str, key: str) -> int:
    """The key's bucket in [0, 10000): the first 8 bytes of sha256(salt NUL key), mod 10000."""
    digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def weight_buckets(weight: float) -> int:
    """Buckets owned by treatment at `weight` (a share in [0, 1]); clamps out-of-range weights."""
    return round(min(max(weight, 0.0), 1.0) * BUCKETS)


def routing_key(tenant: str | None, request_key: str) -> str:
    """Sticky per tenant when a tenant is named; per request key otherwise."""
    return f"tenant:{tenant}" if tenant else f"request:{request_key}"


def assign(
    rollout: RolloutView | None,
    key: str,
    *,
    champion_version: int = 0,
    now: float | None = None,
) -> Assignment:
    """The arm for `key`, by role. Without an active rollout every key goes to the champion (a
    finished, aborted or rolled-back rollout pins nothing); an active rollout whose lease ended
    sends every key to its control, the safe default."""
    if rollout is None or not rollout.active:
        return Assignment(CONTROL, champion_version, -1)
    if now is not None and not rollout.lease_holds(now):
        return Assignment(CONTROL, rollout.control_version, -1)
    b = bucket(rollout.salt, key)
    weight = 0.0 if rollout.stage == "shadow" else rollout.treatment_weight
    if b < weight_buckets(weight):
        return Assignment(TREATMENT, rollout.treatment_version, b)
    mirror = rollout.shadow and bucket(rollout.salt + "/shadow", key) < weight_buckets(
        rollout.shadow_fraction
    )
    return Assignment(CONTROL, rollout.control_version, b, mirror=mirror)


def engine_for(arm: str, *, isolated: bool) -> str:
    """The engine that serves `arm`'s adapter. Isolated, the treatment (its share and its shadow
    mirror) runs on an engine of its own, so its failure cannot take control down with it;
    control, champions and the analyst always run on the main engine."""
    return TREATMENT_ENGINE if isolated and arm == TREATMENT else MAIN_ENGINE


def placements(
    rollout: RolloutView | None,
    champions: Mapping[str, int],
    model: str,
    *,
    isolated: bool,
) -> set[tuple[str, int, str]]:
    """(model, version, engine) of every adapter the router needs loaded: each model's champion and,
    during a rollout of `model`, its control and its treatment (on the treatment's engine)."""
    wanted = {(name, version, MAIN_ENGINE) for name, version in champions.items()}
    if rollout is not None and rollout.active:
        wanted.add((model, rollout.control_version, MAIN_ENGINE))
        wanted.add((model, rollout.treatment_version, engine_for(TREATMENT, isolated=isolated)))
    return wanted
