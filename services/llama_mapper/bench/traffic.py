"""The traffic mix of the bench: tenants, task weights and per-arm request names (stdlib only)."""

# Production traffic is skewed: a few tenants send most requests. The router assigns arms by a
# hash of the tenant id, so a bench with uniform tenants would split exactly by the rollout weight,
# while real traffic splits by which tenants happen to be heavy. `TenantMix` draws tenants from a
# Zipf law (P(rank k) proportional to 1 / k**s) over `count` tenants, as request logs of
# multi-tenant APIs show, so the bench sees the split production sees.

from __future__ import annotations

import bisect
import itertools
import random
import re

# The task weights of the HTTP user (see services/llama_mapper/bench/locustfile.py for why these numbers).
DEFAULT_TASK_WEIGHTS = {"map": 8, "batch": 1, "analyze": 1}
NO_ARM = "none"
_ARM_NAME = re.compile(r"^(?P<base>.*) \[(?P<arm>[^\]]*)\]$")


class TenantMix:
    """Tenant ids `tenant-0001`.. with Zipf-distributed request shares."""

    def __init__(self, count: int = 200, exponent: float = 1.1, prefix: str = "tenant") -> None:
        if count < 1 or exponent < 0:
            raise ValueError("tenant count must be >= 1 and the Zipf exponent >= 0")
        self.tenants = [f"{prefix}-{rank:04d}" for rank in range(1, count + 1)]
        weights = [1.0 / rank**exponent for rank in range(1, count + 1)]
        self._cumulative = list(itertools.accumulate(weights))

    def share(self, rank: int) -> float:
        """The expected share of requests from the tenant of this rank (1 = heaviest)."""
        below = self._cumulative[rank - 2] if rank > 1 else 0.0
        return (self._cumulative[rank - 1] - below) / self._cumulative[-1]

    def draw(self, rng: random.Random) -> str:
        point = rng.random() * self._cumulative[-1]
        return self.tenants[
            min(bisect.bisect_right(self._cumulative, point), len(self.tenants) - 1)
        ]


def parse_weights(
    text: str, known: tuple[str, ...] = tuple(DEFAULT_TASK_WEIGHTS)
) -> dict[str, int]:
    """`map=8,batch=1,analyze=0` -> {"map": 8, "batch": 1}; names outside `known` are refused."""
    weights: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, raw = item.partition("=")
        if not sep or name not in known or not raw.isdigit():
            raise ValueError(
                f"task weight {item!r}: use NAME=INT with NAME one of {', '.join(known)}"
            )
        if int(raw) > 0:
            weights[name] = int(raw)
    if not weights:
        raise ValueError(f"task weights {text!r} leave no task to run")
    return weights


def arm_name(base: str, arm: str | None) -> str:
    """The Locust request name that carries the arm: `map [treatment]`."""
    return f"{base} [{arm or NO_ARM}]"


def split_arm(name: str) -> tuple[str, str | None]:
    """(`map`, `treatment`) from `map [treatment]`; (name, None) for a name without an arm."""
    match = _ARM_NAME.match(name)
    return (match["base"], match["arm"]) if match else (name, None)
