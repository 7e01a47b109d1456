"""The confidence threshold above which answers are right at a target precision."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from llama_mapper.domain.calibration import check_pairs


def precision_at(
    confidences: Sequence[float], correct: Sequence[bool], threshold: float
) -> tuple[float, float]:
    """(precision, coverage) of the answers with confidence >= `threshold`; precision is 1.0
    when none is kept (nothing kept, nothing wrong)."""
    check_pairs(confidences, correct)
    kept = [ok for c, ok in zip(confidences, correct, strict=True) if c >= threshold]
    if not confidences:
        return 1.0, 0.0
    return (sum(kept) / len(kept) if kept else 1.0), len(kept) / len(confidences)


def _wilson_lower(hits: int, n: int, z: float) -> float:
    if n == 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


def threshold_for_precision(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target_precision: float,
    *,
    confidence_level: float | None = 0.95,
    min_count: int = 1,
) -> float | None:
    """The lowest threshold t such that the answers with confidence >= t are right at
    `target_precision` (and there are at least `min_count` of them); None when no t reaches it.

    With `confidence_level` (default 0.95) the precision that must reach the target is the
    one-sided Wilson lower bound at that level, not the sample precision: the threshold then holds
    on new cases from the same distribution with that confidence, so `needs_review` (below t)
    means something measurable. None uses the sample precision.
    """
    check_pairs(confidences, correct)
    if not 0.0 < target_precision <= 1.0:
        raise ValueError("target_precision must be in (0, 1]")
    z = NormalDist().inv_cdf(confidence_level) if confidence_level is not None else 0.0
    pairs = sorted(zip(confidences, correct, strict=True), key=lambda p: -p[0])
    best: float | None = None
    hits = 0
    for index, (c, ok) in enumerate(pairs):
        hits += 1 if ok else 0
        if index + 1 < len(pairs) and pairs[index + 1][0] == c:
            continue  # ties are kept or dropped together
        n = index + 1
        precision = _wilson_lower(hits, n, z) if z > 0 else hits / n
        if n >= min_count and precision >= target_precision:
            best = float(c)
    return best
