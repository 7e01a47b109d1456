"""Confidence calibration: ECE, Brier score, reliability bins and temperature scaling."""

# The mapper's confidence is exp(sum of the chosen label tokens' log-probabilities), a probability
# that the label is right. Temperature scaling rescales its log-odds, c_T = sigmoid(logit(c) / T):
# T > 1 softens an over-confident model, T < 1 sharpens an under-confident one, and the ranking of
# predictions never changes. T is fitted on a calibration split by minimizing the negative
# log-likelihood of correctness; serving applies it with `apply_temperature`.
# More calibrators (per category, histogram binning) and the choice between them: calibrators.py;
# the confidence threshold for a precision target: precision.py.

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_BINS = 15
# Confidences are clipped away from 0 and 1 so their log-odds stay finite: a model that says
# "certain" (logprob 0.0) is treated as 1 - 1e-6 sure, which temperature can still soften.
_EPS = 1e-6
TEMPERATURE_BOUNDS = (0.05, 20.0)


def clip_confidence(c: float) -> float:
    return min(max(float(c), _EPS), 1.0 - _EPS)


def logit(c: float) -> float:
    c = clip_confidence(c)
    return math.log(c / (1.0 - c))


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def apply_temperature(confidence: float, temperature: float) -> float:
    """c_T = sigmoid(logit(c) / T). T = 1 leaves c unchanged (up to clipping at 1e-6)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return float(confidence)
    return sigmoid(logit(confidence) / temperature)


@dataclass(frozen=True)
class ReliabilityBin:
    """One equal-width confidence bin: [lower, upper), the last bin closed."""

    lower: float
    upper: float
    mean_confidence: float
    accuracy: float
    count: int


def check_pairs(confidences: Sequence[float], correct: Sequence[bool]) -> None:
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} outcomes")
    if any(not 0.0 <= c <= 1.0 for c in confidences):
        raise ValueError("confidences must lie in [0, 1]")


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_BINS
) -> list[ReliabilityBin]:
    """Every one of `n_bins` equal-width bins over [0, 1], empty ones with count 0."""
    check_pairs(confidences, correct)
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    sums = [0.0] * n_bins
    hits = [0] * n_bins
    counts = [0] * n_bins
    for c, ok in zip(confidences, correct, strict=True):
        index = min(int(c * n_bins), n_bins - 1)
        sums[index] += c
        hits[index] += 1 if ok else 0
        counts[index] += 1
    return [
        ReliabilityBin(
            lower=i / n_bins,
            upper=(i + 1) / n_bins,
            mean_confidence=sums[i] / counts[i] if counts[i] else 0.0,
            accuracy=hits[i] / counts[i] if counts[i] else 0.0,
            count=counts[i],
        )
        for i in range(n_bins)
    ]


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], n_bins: int = DEFAULT_BINS
) -> float:
    """ECE = sum over bins of (bin size / n) * |accuracy - mean confidence|; 0.0 for no cases."""
    bins = reliability_bins(confidences, correct, n_bins)
    total = sum(b.count for b in bins)
    if not total:
        return 0.0
    return sum(b.count / total * abs(b.accuracy - b.mean_confidence) for b in bins)


def correctness_nll(
    confidences: Sequence[float], correct: Sequence[bool], temperature: float
) -> float:
    """Mean negative log-likelihood of the outcomes under the temperature-scaled confidences."""
    check_pairs(confidences, correct)
    if not confidences:
        return 0.0
    total = 0.0
    for c, ok in zip(confidences, correct, strict=True):
        z = logit(c) / temperature
        # -log sigmoid(z) = softplus(-z), computed stably.
        margin = z if ok else -z
        total += max(-margin, 0.0) + math.log1p(math.exp(-abs(margin)))
    return total / len(confidences)


def fit_temperature(
    confidences: Sequence[float],
    correct: Sequence[bool],
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
    *,
    tolerance: float = 1e-5,
) -> float:
    """The T in `bounds` that minimizes the correctness NLL (golden-section search on log T).

    The NLL is unimodal in log T for these one-parameter fits. A split with only right (or only
    wrong) answers pushes T to a bound; fewer than two cases returns 1.0 (nothing to learn).
    """
    check_pairs(confidences, correct)
    if len(confidences) < 2:
        return 1.0
    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return correctness_nll(confidences, correct, math.exp(log_t))

    a, b = low, high
    x1, x2 = b - ratio * (b - a), a + ratio * (b - a)
    f1, f2 = loss(x1), loss(x2)
    while b - a > tolerance:
        if f1 <= f2:
            b, x2, f2 = x2, x1, f1
            x1 = b - ratio * (b - a)
            f1 = loss(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + ratio * (b - a)
            f2 = loss(x2)
    return math.exp((a + b) / 2)


# --- more metrics --------------------------------------------------------------------------------


def brier_score(confidences: Sequence[float], correct: Sequence[bool]) -> float:
    """Mean squared error of the confidence as a probability of being right; 0.0 for no cases."""
    check_pairs(confidences, correct)
    if not confidences:
        return 0.0
    return sum(
        (c - (1.0 if ok else 0.0)) ** 2 for c, ok in zip(confidences, correct, strict=True)
    ) / len(confidences)


def bin_dicts(bins: Sequence[ReliabilityBin]) -> list[dict[str, Any]]:
    """Bins as JSON-able dicts (the report's and the reliability plot's shape)."""
    return [asdict(b) for b in bins]


def reliability_diagram(
    confidences: Sequence[float],
    correct: Sequence[bool],
    calibrated: Sequence[float] | None = None,
    n_bins: int = DEFAULT_BINS,
) -> dict[str, Any]:
    """What a reliability plot draws, JSON-able: the bins, ECE and Brier score before calibration
    and, when `calibrated` (the same cases' calibrated confidences) is given, after."""
    out: dict[str, Any] = {
        "n_bins": n_bins,
        "case_count": len(confidences),
        "ece_before": expected_calibration_error(confidences, correct, n_bins),
        "brier_before": brier_score(confidences, correct),
        "bins_before": bin_dicts(reliability_bins(confidences, correct, n_bins)),
    }
    if calibrated is not None:
        if len(calibrated) != len(confidences):
            raise ValueError(f"{len(calibrated)} calibrated confidences for {len(confidences)}")
        out.update(
            ece_after=expected_calibration_error(calibrated, correct, n_bins),
            brier_after=brier_score(calibrated, correct),
            bins_after=bin_dicts(reliability_bins(calibrated, correct, n_bins)),
        )
    return out


def ece_noise_floor(
    confidences: Sequence[float],
    n_bins: int = DEFAULT_BINS,
    *,
    draws: int = 200,
    seed: int = 0,
) -> tuple[float, float]:
    """(median, 95th percentile) of the ECE a perfectly calibrated scorer with these confidences
    shows on this many answers by chance alone: each answer right with exactly its confidence,
    `draws` seeded draws. An ECE inside this range says nothing against the calibration; on 66
    answers in 15 bins the median is near 0.10, so an ECE goal of 0.05 cannot be shown there."""
    if not confidences:
        return 0.0, 0.0
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not cryptography
    values = sorted(
        expected_calibration_error(confidences, [rng.random() < c for c in confidences], n_bins)
        for _ in range(max(1, draws))
    )
    return values[len(values) // 2], values[min(len(values) - 1, int(0.95 * len(values)))]
