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
    ece_noise_floor,
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


@dataclass(frozen=True)
class AgreementBinning:
    """Histogram binning apart for the answers that are the lexical index's first candidate
    (`top`: the model chose what the finding's words point to most) and for the rest (`other`:
    another candidate, or a label chosen among all). On the calibration split the first are right
    94 % of the time and the rest 39 %, at every raw confidence: one binning for both is wrong
    for both (docs/BENCHMARKS.md)."""

    top: HistogramBinning
    other: HistogramBinning

    def __call__(self, confidence: float, agrees: bool | None) -> float:
        return (self.top if agrees else self.other)(confidence)


# --- serializable calibrators and the choice between them ----------------------------------------

IDENTITY, TEMPERATURE, CATEGORY_TEMPERATURE, HISTOGRAM, AGREEMENT_HISTOGRAM = (
    "identity",
    "temperature",
    "category_temperature",
    "histogram",
    "agreement_histogram",
)
KINDS = (IDENTITY, TEMPERATURE, CATEGORY_TEMPERATURE, HISTOGRAM, AGREEMENT_HISTOGRAM)
# (confidence, the category (or label) the model answered, whether that label is the lexical
# index's first candidate (None: not known)) -> calibrated confidence
Calibrator = Callable[[float, str | None, bool | None], float]
Fitted = float | CategoryTemperatures | HistogramBinning | AgreementBinning | None


def _histogram_json(binning: HistogramBinning) -> dict[str, Any]:
    return {
        "edges": list(binning.edges),
        "values": list(binning.values),
        "counts": list(binning.counts),
    }


def _histogram_from(description: Any, what: str) -> HistogramBinning:
    if not isinstance(description, Mapping):
        raise InvalidArgument(f"calibrator {what} must be a histogram (edges, values, counts)")
    edges = _unit_floats(description.get("edges"), f"{what} edges")
    values = _unit_floats(description.get("values"), f"{what} values")
    if len(values) != len(edges) + 1 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise InvalidArgument(f"calibrator {what} needs increasing edges and one more value")
    counts = description.get("counts") or [0] * len(values)
    if not isinstance(counts, list | tuple) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
    ):
        raise InvalidArgument(f"calibrator {what} counts must be non-negative integers")
    return HistogramBinning(edges, values, tuple(counts))


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
        return {"kind": HISTOGRAM, **_histogram_json(fitted)}
    if isinstance(fitted, AgreementBinning):
        return {
            "kind": AGREEMENT_HISTOGRAM,
            "top": _histogram_json(fitted.top),
            "other": _histogram_json(fitted.other),
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
        return lambda confidence, category=None, agrees=None: float(confidence)
    if kind == TEMPERATURE:
        temperature = _positive(description.get("temperature"), "temperature")
        return lambda confidence, category=None, agrees=None: apply_temperature(
            confidence, temperature
        )
    if kind == CATEGORY_TEMPERATURE:
        by_category = description.get("by_category", {})
        if not isinstance(by_category, Mapping) or not all(isinstance(k, str) for k in by_category):
            raise InvalidArgument("calibrator by_category must map category names to temperatures")
        temperatures = CategoryTemperatures(
            _positive(description.get("temperature"), "temperature"),
            {k: _positive(v, f"temperature of {k!r}") for k, v in by_category.items()},
        )
        return lambda confidence, category=None, agrees=None: apply_category_temperature(
            confidence, category, temperatures
        )
    if kind == HISTOGRAM:
        binning = _histogram_from(description, "histogram")
        return lambda confidence, category=None, agrees=None: binning(confidence)
    if kind == AGREEMENT_HISTOGRAM:
        by_agreement = AgreementBinning(
            _histogram_from(description.get("top"), "top"),
            _histogram_from(description.get("other"), "other"),
        )
        return lambda confidence, category=None, agrees=None: by_agreement(confidence, agrees)
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
    agreements: Sequence[bool | None] | None = None,
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
    if kind == AGREEMENT_HISTOGRAM:
        assert agreements is not None  # the kind is only tried with them
        sides = []
        for side in (True, False):
            pairs = [
                (c, ok)
                for c, ok, a in zip(confidences, correct, agreements, strict=True)
                if bool(a) is side
            ]
            sides.append(
                fit_histogram_binning(
                    [c for c, _ in pairs],
                    [ok for _, ok in pairs],
                    n_bins=options["histogram_bins"],
                    min_count=options["min_bin_count"],
                )
            )
        return AgreementBinning(*sides)
    return None


# Kinds whose held-out ECE is within chance of the best count as tied, and the Brier score decides.
# "Within chance" is the ECE a perfectly calibrated scorer with the best kind's confidences shows on
# that many held-out answers (calibration.ece_noise_floor, its median: ~0.035 on 400 answers).
# A fixed tolerance picks on noise: on the mapper's 1,134 calibration answers the held-out ECE
# moves by 0.01-0.02 with the split's seed alone (histogram 0.039 / 0.056 / 0.052, by agreement
# 0.059 / 0.046 / 0.064 over seeds 0-2) while the Brier score ranks the kinds the same way every
# time (0.139 / 0.127 / 0.136 by agreement against 0.154 / 0.139 / 0.143). Brier is a proper score
# (calibration and resolution); ECE alone is lowest for a calibrator that answers the base rate.
ECE_TOLERANCE = None


def choose_calibrator(
    confidences: Sequence[float],
    correct: Sequence[bool],
    categories: Sequence[str | None],
    *,
    holdout_fraction: float = 0.3,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    ece_tolerance: float | None = ECE_TOLERANCE,
    min_category_count: int = DEFAULT_MIN_CATEGORY_COUNT,
    histogram_bins: int = DEFAULT_HISTOGRAM_BINS,
    min_bin_count: int = DEFAULT_MIN_BIN_COUNT,
    refit: bool = True,
    agreements: Sequence[bool | None] | None = None,
) -> CalibratorChoice:
    """Fits every kind (identity, temperature, per-category temperature, histogram binning, and
    with `agreements` histogram binning apart by agreement with the lexical index's first
    candidate) on a seeded split stratified by category, measures each on the held-out rest,
    and keeps the lowest ECE; kinds within `ece_tolerance` of it count as tied (None: within the
    ECE chance alone makes on that many answers, ECE_TOLERANCE) and the lowest Brier score among
    them wins, the simpler kind on an exact tie. The winner is refitted on all cases unless `refit` is False. `categories` are the
    categories (or labels) the model answered, one per case; `agreements` whether each answer
    was its shortlist's first candidate. Too few cases for a split: identity."""
    check_pairs(confidences, correct)
    if len(categories) != len(confidences):
        raise ValueError(f"{len(categories)} categories for {len(confidences)} confidences")
    if agreements is not None and len(agreements) != len(confidences):
        raise ValueError(f"{len(agreements)} agreements for {len(confidences)} confidences")
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

    agreed = list(agreements) if agreements is not None else [None] * len(confidences)
    fit_c, fit_y, fit_k, fit_a = (
        pick(fit_idx, v) for v in (confidences, correct, categories, agreed)
    )
    held_c, held_y, held_k, held_a = (
        pick(holdout_idx, v) for v in (confidences, correct, categories, agreed)
    )
    kinds = [k for k in KINDS if k != AGREEMENT_HISTOGRAM]
    if agreements is not None and min(
        sum(1 for a in fit_a if a), sum(1 for a in fit_a if not a)
    ) >= max(min_bin_count, 1):
        kinds.append(AGREEMENT_HISTOGRAM)
    scores, held_out = [], {}
    for kind in kinds:
        fitted = _fit(kind, fit_c, fit_y, fit_k, options, fit_a)
        apply = calibrator_from_description(describe(fitted))
        calibrated = [apply(c, k, a) for c, k, a in zip(held_c, held_k, held_a, strict=True)]
        held_out[kind] = calibrated
        scores.append(
            CandidateScore(
                kind,
                expected_calibration_error(calibrated, held_y, n_bins),
                brier_score(calibrated, held_y),
            )
        )
    best = min(scores, key=lambda s: s.ece)
    if ece_tolerance is None:
        ece_tolerance = ece_noise_floor(held_out[best.kind], n_bins, seed=seed)[0]
    tied = [s for s in scores if s.ece <= best.ece + ece_tolerance]
    winner = min(tied, key=lambda s: (s.brier, KINDS.index(s.kind)))
    fitted = (
        _fit(winner.kind, confidences, correct, categories, options, agreed)
        if refit
        else _fit(winner.kind, fit_c, fit_y, fit_k, options, fit_a)
    )
    description = describe(fitted)
    return CalibratorChoice(
        description,
        calibrator_from_description(description),
        tuple(scores),
        len(confidences) if refit else len(fit_idx),
        len(holdout_idx),
    )
