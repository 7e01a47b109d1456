"""The latency and error targets a bench is judged against, read from the registry, and the verdict."""

# Targets live in the registry per model and hardware profile (`mapperctl registry targets`). The
# p95 target is required: a bench without one proves nothing, so the run is refused with the
# command that sets it. The error budget is `max_error_rate` when set, else DEFAULT_ERROR_BUDGET.
# A run that spends its error budget fails even when p95 passes: fast errors are not a pass.

from __future__ import annotations

import math
from dataclasses import dataclass

from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.registry.client import RegistryClient

DEFAULT_ERROR_BUDGET = 0.01


@dataclass(frozen=True)
class BenchTargets:
    """What one model version must meet on one hardware profile."""

    model: str
    version: int
    hardware_profile: str
    p95_latency_ms: float
    max_error_rate: float
    error_budget_from_registry: bool = True


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reasons: tuple[str, ...]


def set_targets_command(model: str, profile: str) -> str:
    return (
        f"mapperctl registry targets {model} --profile {profile} "
        "--set p95_latency_ms=<ms> --set max_error_rate=<fraction>"
    )


def resolve_version(
    client: RegistryClient, model: str, *, version: int | None, alias: str | None
) -> int:
    """The version number the bench measures: `version`, else `alias` (default champion)."""
    if version is not None:
        return client.get_version(model, version).version.version
    name = alias or "champion"
    try:
        return client.resolve_alias(model, name).version
    except NotFound as error:
        raise NotFound(
            f"{error.message}; pass --version N, or promote one: mapperctl registry promote {model} N --alias {name}"
        ) from None


def load_targets(
    client: RegistryClient, model: str, version: int, hardware_profile: str
) -> BenchTargets:
    """The targets for this profile; FailedPrecondition naming the command when p95 has none."""
    try:
        stored = next(
            (
                t
                for t in client.get_targets(model, hardware_profile)
                if t.hardware_profile == hardware_profile
            ),
            None,
        )
    except NotFound:  # the registry answers NOT_FOUND for a profile without targets
        stored = None
    if stored is None or not stored.HasField("p95_latency_ms"):
        raise FailedPrecondition(
            f"{model} has no p95_latency_ms target for hardware profile {hardware_profile!r}: "
            f"set one with `{set_targets_command(model, hardware_profile)}`"
        )
    from_registry = stored.HasField("max_error_rate")
    return BenchTargets(
        model=model,
        version=version,
        hardware_profile=hardware_profile,
        p95_latency_ms=stored.p95_latency_ms,
        max_error_rate=stored.max_error_rate if from_registry else DEFAULT_ERROR_BUDGET,
        error_budget_from_registry=from_registry,
    )


def judge(
    *, requests: int, failures: int, p95_ms: float, p95_target_ms: float, max_error_rate: float
) -> Verdict:
    """Pass only with requests measured, p95 at or under its target and errors within budget."""
    reasons = []
    if requests <= 0:
        return Verdict(False, ("no request completed: nothing was measured",))
    error_rate = failures / requests
    if error_rate > max_error_rate:
        reasons.append(
            f"error rate {100 * error_rate:.2f}% ({failures}/{requests}) exceeds the budget of "
            f"{100 * max_error_rate:.2f}%"
        )
    if math.isnan(p95_ms):
        reasons.append("no p95 was measured")
    elif p95_ms > p95_target_ms:
        reasons.append(f"p95 {p95_ms:.0f} ms exceeds the target of {p95_target_ms:g} ms")
    return Verdict(not reasons, tuple(reasons))
