"""Per-principal token buckets: pure state + an injected clock, so the 429 decision is testable."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """`rate` tokens/s refill up to `burst`; a request takes `cost` (a batch of N items takes N).
    Remembers `max_tenants` keys (LRU). Keys are authenticated principals, never a header the
    client chooses."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_tenants: int = 100_000,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_tenants = max_tenants
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def acquire(self, tenant: str, cost: float = 1.0) -> float:
        """0.0 when allowed, else the seconds until `cost` tokens are available (Retry-After).
        A cost above the burst can never be met: it is charged as the burst."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.pop(tenant, None) or _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
        bucket.stamp = now
        self._buckets[tenant] = bucket
        if len(self._buckets) > self.max_tenants:
            self._buckets.popitem(last=False)
        cost = min(cost, self.burst)
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate


def retry_after_header(wait_s: float) -> str:
    """Retry-After takes whole seconds; never 0 for a refused request."""
    return str(max(1, math.ceil(wait_s)))
