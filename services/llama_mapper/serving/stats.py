"""Per-arm statistics of the current rollout step (for the canary gates) and Prometheus metrics."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from llama_mapper.serving.canary import ArmStats

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class ArmWindow:
    """Counts for one arm since the rollout's revision last changed; latencies keep the last 5,000."""

    def __init__(self) -> None:
        self.requests = self.errors = 0
        self.model_queries = self.schema_valid = self.fallbacks = 0
        self.agreement_pairs = self.agreements = 0
        self.feedback = self.feedback_correct = 0
        self.latencies_ms: deque[float] = deque(maxlen=5000)

    def snapshot(self, *, p95: bool = True) -> ArmStats:
        """The arm's statistics; `p95=False` skips sorting the latency window (the rates do not
        need it, and the router updates them on every request)."""
        return ArmStats(
            requests=self.requests,
            errors=self.errors,
            p95_ms=percentile(list(self.latencies_ms), 95) if p95 else None,
            model_queries=self.model_queries,
            schema_valid=self.schema_valid,
            fallbacks=self.fallbacks,
            agreement_pairs=self.agreement_pairs,
            agreements=self.agreements,
            feedback=self.feedback,
            feedback_correct=self.feedback_correct,
        )


class RolloutWindows:
    """The windows of both arms, reset whenever the rollout revision changes (a new step)."""

    def __init__(self) -> None:
        self.revision = -1
        self.arms: dict[str, ArmWindow] = {}

    def for_revision(self, revision: int) -> None:
        if revision != self.revision:
            self.revision = revision
            self.arms = {}

    def arm(self, name: str) -> ArmWindow:
        return self.arms.setdefault(name, ArmWindow())

    def as_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "arms": {name: asdict(w.snapshot()) for name, w in sorted(self.arms.items())},
        }


class ServingMetrics:
    """The router's Prometheus metrics, in a registry of its own (one per replica)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        r = self.registry
        self.requests = Counter(
            "mapper_requests",
            "Requests answered, by arm, endpoint and status.",
            ["arm", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "mapper_request_latency_seconds",
            "Request latency in the router.",
            ["arm", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "mapper_errors", "Failed requests by code.", ["arm", "endpoint", "code"], registry=r
        )
        self.findings = Counter(
            "mapper_findings",
            "Findings by arm and answering method.",
            ["arm", "method"],
            registry=r,
        )
        self.model_queries = Counter(
            "mapper_model_queries", "Findings sent to the model.", ["arm"], registry=r
        )
        self.schema_valid = Counter(
            "mapper_model_schema_valid",
            "Model answers that were valid taxonomy labels.",
            ["arm"],
            registry=r,
        )
        self.fallbacks = Counter(
            "mapper_fallbacks", "Findings that fell back, by reason.", ["arm", "reason"], registry=r
        )
        self.fallback_rate = Gauge(
            "mapper_fallback_rate",
            "Fallbacks / model queries in the current rollout step.",
            ["arm"],
            registry=r,
        )
        self.schema_valid_rate = Gauge(
            "mapper_schema_valid_rate",
            "Valid answers / model queries in the current rollout step.",
            ["arm"],
            registry=r,
        )
        self.feedback = Counter(
            "mapper_feedback", "Feedback verdicts.", ["arm", "outcome"], registry=r
        )
        self.shadow = Counter(
            "mapper_shadow_comparisons", "Shadowed requests by agreement.", ["outcome"], registry=r
        )
        self.treatment_weight = Gauge(
            "mapper_rollout_treatment_weight", "Current treatment weight.", registry=r
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, cached: the router records ~8 samples per request, and
        prometheus_client's lookup takes a lock and builds the label tuple every time."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def update_rates(self, windows: RolloutWindows) -> None:
        for name, window in windows.arms.items():
            stats = window.snapshot(p95=False)
            self.child(self.fallback_rate, name).set(stats.fallback_rate)
            self.child(self.schema_valid_rate, name).set(stats.schema_valid_rate)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
