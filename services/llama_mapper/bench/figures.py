"""Same-run statistics for benchmark figures: percentiles, bootstrap intervals, probe payloads."""

from __future__ import annotations

import math
import random
from typing import Any

RULES_ONLY = {
    "detector": "presidio",
    "output": [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}],
}
# Every one reaches the model: none is a lexical single either (a label whose words name one
# label alone is answered without the model, inference/hybrid.py; tests/unit/test_bench_*).
RAW_LABELS = [
    "customer reference", "loyalty card", "badge id", "plate reading", "employee number",
    "handset serial", "tracking cookie", "gait signature", "face embedding", "salary figure",
    "patient chart", "insurance policy", "tax file", "wallet string", "api secret",
    "hate remark", "threat phrase", "self injury talk", "adult content", "weapon recipe",
]  # fmt: skip


def model_only(i: int, tag: str) -> dict[str, Any]:
    """A one-finding output no rule maps (a detector without a table, a label no table holds)."""
    label = f"{RAW_LABELS[i % len(RAW_LABELS)]} {tag}{i}"
    return {"detector": "acme-scanner", "output": [{"type": label, "confidence": 0.9}]}


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)] if ordered else float("nan")


def bootstrap_diff(a: list[float], b: list[float], q: float, n: int = 2000) -> tuple[float, float]:
    """95 % interval of pct(a, q) - pct(b, q), resampling each arm."""
    rng = random.Random(0)  # noqa: S311 - a reproducible resample, not cryptography
    diffs = sorted(
        pct(rng.choices(a, k=len(a)), q) - pct(rng.choices(b, k=len(b)), q) for _ in range(n)
    )
    return diffs[int(0.025 * n)], diffs[int(0.975 * n) - 1]
