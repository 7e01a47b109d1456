"""The calibrators beyond one temperature, and the choice between them on held-out cases."""

# Per-category temperatures fit where one global T cannot (the model may be over-confident on PII
# and under-confident on toxicity); histogram binning uses equal-mass bins with a minimum count,
# monotone. `choose_calibrator` fits all of them and keeps the best on held-out cases; its
# JSON-able description is what a registry stores and `calibrator_from_description` turns back
# into the apply function.

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llama_mapper.domain.calibration import (
    DEFAULT_BINS,
    TEMPERATURE_BOUNDS,
    apply_temperature,
    brier_score,
    check_pairs,
    expected_calibration_error,
    fit_temperature,
)
from llama_mapper.domain.errors import InvalidArgument

# A category needs this many cases for a temperature of its own; below it, the global one applies.
DEFAULT_MIN_CATEGORY_COUNT = 50
# A calibrator's description carries the recipe its confidences were produced under
# (inference/hybrid.py HybridMapper.recipe); one recorded without it: NO_RECIPE. The model alone,
# asked among every label (an evaluation of the adapter without the hybrid): ALL_LABELS_RECIPE.
NO_RECIPE = "unrecorded"
ALL_LABELS_RECIPE = "all-labels/1"


def recipe_of(description: Any) -> str | None:
    """The recipe a recorded calibrator description was fitted under (NO_RECIPE for one from
    before recipes were recorded); None when `description` is not a calibrator description."""
    if not isinstance(description, Mapping):
        return None
    return str(description.get("recipe") or NO_RECIPE)


def category_of(label: str | None) -> str | None:
    """The taxonomy category of a label (`pii.email_address` -> `pii`); a category stays itself."""
    return label.split(".", 1)[0] if label else None


@dataclass(frozen=True)
class CategoryTemperatures:
    """One temperature per taxonomy category, the global one for categories with few cases."""

    temperature: float
    by_category: Mapping[str, float]

    def temperature_for(self, category: str | None) -> float:
        return self.by_category.get(category_of(category) or "", self.temperature)


def fit_category_temperatures(
    confidences: Sequence[float],
    correct: Sequence[bool],
    categories: Sequence[str | None],
    *,
    min_count: int = DEFAULT_MIN_CATEGORY_COUNT,
    bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
) -> CategoryTemperatures:
    """A temperature per category (of the predicted label) with at least `min_count` cases, each
    fitted like `fit_temperature` on that category's cases; the global fit for the rest."""
    check_pairs(confidences, correct)
    if len(categories) != len(confidences):
        raise ValueError(f"{len(categories)} categories for {len(confidences)} confidences")
    groups: dict[str, tuple[list[float], list[bool]]] = {}
    for c, ok, category in zip(confidences, correct, categories, strict=True):
        key = category_of(category)
        if key:
            group = groups.setdefault(key, ([], []))
            group[0].append(c)
            group[1].append(ok)
    by_category = {
        key: fit_temperature(cs, ys, bounds)
        for key, (cs, ys) in sorted(groups.items())
        if len(cs) >= max(min_count, 2)
    }
    return CategoryTemperatures(fit_temperature(confidences, correct, bounds), by_category)


def apply_category_temperature(
    confidence: float, category: str | None, temperatures: CategoryTemperatures
) -> float:
    """`apply_temperature` with the temperature of `category` (a category or a full label)."""
    return apply_temperature(confidence, temperatures.temperature_for(category))


# --- histogram binning ---------------------------------------------------------------------------

DEFAULT_HISTOGRAM_BINS = 10
DEFAULT_MIN_BIN_COUNT = 30


@dataclass(frozen=True)
class HistogramBinning:
    """Confidence -> the accuracy of its bin. `edges` are the inner bin boundaries, increasing;
    bin i holds [edges[i-1], edges[i]), so there is one more value than edges."""

    edges: tuple[float, ...]
    values: tuple[float, ...]
    counts: tuple[int, ...]

    def __call__(self, confidence: float) -> float:
        return self.values[bisect.bisect_right(self.edges, float(confidence))]


def fit_histogram_binning(
    confidences: Sequence[float],
    correct: Sequence[bool],
    *,
    n_bins: int = DEFAULT_HISTOGRAM_BINS,
    min_count: int = DEFAULT_MIN_BIN_COUNT,
    monotone: bool = True,
) -> HistogramBinning:
    """Equal-mass bins (at most `n_bins`, each with at least `min_count` cases; equal confidences
    never split), each mapped to its accuracy. `monotone` pools adjacent bins whose accuracy
    would go down as confidence goes up, so a higher confidence never calibrates lower and a
    threshold on calibrated confidence keeps its meaning."""
    check_pairs(confidences, correct)
    if not confidences:
        raise ValueError("histogram binning needs at least one case")
    if n_bins < 1 or min_count < 1:
        raise ValueError("n_bins and min_count must be >= 1")
    pairs = sorted(zip((float(c) for c in confidences), correct, strict=True))
    n = len(pairs)
    k = max(1, min(n_bins, n // min_count))
    # [start, end) index ranges of the bins, moved forward past ties.
    cuts = [0]
    for i in range(1, k):
        cut = max(round(i * n / k), cuts[-1] + 1)
        while 0 < cut < n and pairs[cut][0] == pairs[cut - 1][0]:
            cut += 1
        if cut < n and cut - cuts[-1] >= min_count and n - cut >= min_count:
            cuts.append(cut)
    cuts.append(n)
    bins = [
        [sum(1 for _, ok in pairs[a:b] if ok), b - a, pairs[a][0], pairs[b - 1][0]]
        for a, b in itertools.pairwise(cuts)
    ]
    if monotone:
        pooled: list[list[Any]] = []
        for hits, count, low, high in bins:
            pooled.append([hits, count, low, high])
            while len(pooled) > 1 and pooled[-2][0] / pooled[-2][1] > pooled[-1][0] / pooled[-1][1]:
                h, c, _, hi = pooled.pop()
                pooled[-1][0] += h
                pooled[-1][1] += c
                pooled[-1][3] = hi
        bins = pooled
    edges = tuple((bins[i][3] + bins[i + 1][2]) / 2 for i in range(len(bins) - 1))
    return HistogramBinning(
        edges=edges,
        values=tuple(hits / count for hits, count, _, _ in bins),
        counts=tuple(count for _, count, _, _ in bins),
    )


# --- serializable calibrators and the choice between them ----------------------------------------

IDENTITY, TEMPERATURE, CATEGORY_TEMPERATURE, HISTOGRAM = (
    "identity",
    "temperature",
    "category_temperature",
    "histogram",
)
KINDS = (IDENTITY, TEMPERATURE, CATEGORY_TEMPERATURE, HISTOGRAM)
# confidence, and the category (or label) the model answered -> calibrated confidence
Calibrator = Callable[[float, str | None], float]
Fitted = float | CategoryTemperatures | HistogramBinning | None


def describe(fitted: Fitted) -> dict[str, Any]:
    """The JSON-able description of a fitted calibrator: `kind` and its parameters."""
    if fitted is None:
        return {"kind": IDENTITY}
    if isinstance(fitted, CategoryTemperatures):
        return {
            "kind": CATEGORY_TEMPERATURE,
            "temperature": fitted.temperature,
            "by_category": dict(sorted(fitted.by_category.items())),
        }
    if isinstance(fitted, HistogramBinning):
        return {
            "kind": HISTOGRAM,
            "edges": list(fitted.edges),
            "values": list(fitted.values),
            "counts": list(fitted.counts),
        }
    return {"kind": TEMPERATURE, "temperature": float(fitted)}


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidArgument(f"calibrator {what} must be a positive number, got {value!r}")
    return float(value)


def _unit_floats(value: Any, what: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0 for v in value
    ):
        raise InvalidArgument(f"calibrator {what} must be a list of numbers in [0, 1]")
    return tuple(float(v) for v in value)


def calibrator_from_description(description: Mapping[str, Any]) -> Calibrator:
    """The apply function a description stands for; InvalidArgument for a malformed one."""
    kind = description.get("kind") if isinstance(description, Mapping) else None
    if kind == IDENTITY:
        return lambda confidence, category=None: float(confidence)
    if kind == TEMPERATURE:
        temperature = _positive(description.get("temperature"), "temperature")
        return lambda confidence, category=None: apply_temperature(confidence, temperature)
    if kind == CATEGORY_TEMPERATURE:
        by_category = description.get("by_category", {})
        if not isinstance(by_category, Mapping) or not all(isinstance(k, str) for k in by_category):
            raise InvalidArgument("calibrator by_category must map category names to temperatures")
        temperatures = CategoryTemperatures(
            _positive(description.get("temperature"), "temperature"),
            {k: _positive(v, f"temperature of {k!r}") for k, v in by_category.items()},
        )
        return lambda confidence, category=None: apply_category_temperature(
            confidence, category, temperatures
        )
    if kind == HISTOGRAM:
        edges = _unit_floats(description.get("edges"), "edges")
        values = _unit_floats(description.get("values"), "values")
        if len(values) != len(edges) + 1 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise InvalidArgument("calibrator histogram needs increasing edges and one more value")
        counts = description.get("counts") or [0] * len(values)
        binning = HistogramBinning(edges, values, tuple(int(c) for c in counts))
        return lambda confidence, category=None: binning(confidence)
    raise InvalidArgument(f"unknown calibrator kind {kind!r}; expected one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class CandidateScore:
    """A calibrator kind fitted on the fit split, measured on the held-out split."""

    kind: str
    ece: float
    brier: float


@dataclass(frozen=True)
class CalibratorChoice:
    """The chosen calibrator (description and apply function) and how each candidate scored."""

    description: dict[str, Any]
    apply: Calibrator
    scores: tuple[CandidateScore, ...]
    fit_count: int
    holdout_count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "calibrator": self.description,
            "candidates": [asdict(s) for s in self.scores],
            "fit_count": self.fit_count,
            "holdout_count": self.holdout_count,
        }


def _split_by_category(
    categories: Sequence[str | None], holdout_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Seeded, stratified by category: each category keeps its share on both sides."""
    groups: dict[str, list[int]] = {}
    for index, category in enumerate(categories):
        groups.setdefault(category_of(category) or "", []).append(index)
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not cryptography
    fit, holdout = [], []
    for key in sorted(groups):
        indices = groups[key]
        rng.shuffle(indices)
        cut = round(len(indices) * holdout_fraction)
        holdout.extend(indices[:cut])
        fit.extend(indices[cut:])
    return sorted(fit), sorted(holdout)


def _fit(
    kind: str,
    confidences: Sequence[float],
    correct: Sequence[bool],
    categories: Sequence[str | None],
    options: Mapping[str, int],
) -> Fitted:
    if kind == TEMPERATURE:
        return fit_temperature(confidences, correct)
    if kind == CATEGORY_TEMPERATURE:
        return fit_category_temperatures(
            confidences, correct, categories, min_count=options["min_category_count"]
        )
    if kind == HISTOGRAM:
        return fit_histogram_binning(
            confidences,
            correct,
            n_bins=options["histogram_bins"],
            min_count=options["min_bin_count"],
        )
    return None


def choose_calibrator(
    confidences: Sequence[float],
    correct: Sequence[bool],
    categories: Sequence[str | None],
    *,
    holdout_fraction: float = 0.3,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    ece_tolerance: float = 0.005,
    min_category_count: int = DEFAULT_MIN_CATEGORY_COUNT,
    histogram_bins: int = DEFAULT_HISTOGRAM_BINS,
    min_bin_count: int = DEFAULT_MIN_BIN_COUNT,
    refit: bool = True,
) -> CalibratorChoice:
    """Fits every kind (identity, temperature, per-category temperature, histogram binning) on
    a seeded split stratified by category, measures each on the held-out rest, and keeps the
    lowest ECE; kinds within `ece_tolerance` of it count as tied (ECE is noisy on a few hundred
    cases) and the lowest Brier score among them wins, the simpler kind on an exact tie. The
    winner is refitted on all cases unless `refit` is False. `categories` are the categories
    (or labels) the model answered, one per case. Too few cases for a split: identity."""
    check_pairs(confidences, correct)
    if len(categories) != len(confidences):
        raise ValueError(f"{len(categories)} categories for {len(confidences)} confidences")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError("holdout_fraction must be in (0, 1)")
    fit_idx, holdout_idx = _split_by_category(categories, holdout_fraction, seed)
    if len(fit_idx) < 2 or not holdout_idx:
        return CalibratorChoice(
            describe(None), calibrator_from_description(describe(None)), (), len(fit_idx), 0
        )
    options = {
        "min_category_count": min_category_count,
        "histogram_bins": histogram_bins,
        "min_bin_count": min_bin_count,
    }

    def pick(indices: Sequence[int], values: Sequence[Any]) -> list[Any]:
        return [values[i] for i in indices]

    fit_c, fit_y, fit_k = (pick(fit_idx, v) for v in (confidences, correct, categories))
    held_c, held_y, held_k = (pick(holdout_idx, v) for v in (confidences, correct, categories))
    scores = []
    for kind in KINDS:
        apply = calibrator_from_description(describe(_fit(kind, fit_c, fit_y, fit_k, options)))
        calibrated = [apply(c, k) for c, k in zip(held_c, held_k, strict=True)]
        scores.append(
            CandidateScore(
                kind,
                expected_calibration_error(calibrated, held_y, n_bins),
                brier_score(calibrated, held_y),
            )
        )
    best_ece = min(s.ece for s in scores)
    tied = [s for s in scores if s.ece <= best_ece + ece_tolerance]
    winner = min(tied, key=lambda s: (s.brier, KINDS.index(s.kind)))
    fitted = (
        _fit(winner.kind, confidences, correct, categories, options)
        if refit
        else _fit(winner.kind, fit_c, fit_y, fit_k, options)
    )
    description = describe(fitted)
    return CalibratorChoice(
        description,
        calibrator_from_description(description),
        tuple(scores),
        len(confidences) if refit else len(fit_idx),
        len(holdout_idx),
    )
