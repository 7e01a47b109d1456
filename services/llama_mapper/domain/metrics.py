"""Mapping-quality metrics as pure functions of expected and predicted label sets."""

# Every case is a set of labels (one finding usually has one). The functions take parallel sequences
# of expected and predicted sets and return plain numbers or dataclasses: the evaluation service, the
# canary controller and the benchmarks all compute quality the same way, and tests check them against
# scikit-learn. Pure Python on purpose: the core stays importable without numpy or scipy.

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

LabelSets = Sequence[Iterable[str]]

# Below this many discordant pairs McNemar's chi-square approximation is poor; the exact binomial
# test is used instead (the usual rule of thumb is 25).
MCNEMAR_EXACT_BELOW = 25


def _sets(values: LabelSets) -> list[frozenset[str]]:
    return [frozenset(v) for v in values]


def _paired(expected: LabelSets, predicted: LabelSets) -> tuple[list[frozenset], list[frozenset]]:
    exp, pred = _sets(expected), _sets(predicted)
    if len(exp) != len(pred):
        raise ValueError(f"{len(exp)} expected label sets but {len(pred)} predicted")
    return exp, pred


def exact_set_correct(expected: LabelSets, predicted: LabelSets) -> list[bool]:
    """Per case: is the predicted label set exactly the expected one?"""
    exp, pred = _paired(expected, predicted)
    return [e == p for e, p in zip(exp, pred, strict=True)]


def exact_set_accuracy(expected: LabelSets, predicted: LabelSets) -> float:
    """Share of cases whose predicted set equals the expected set; 0.0 for no cases."""
    correct = exact_set_correct(expected, predicted)
    return sum(correct) / len(correct) if correct else 0.0


@dataclass(frozen=True)
class LabelScore:
    """Precision, recall and F1 of one label; support counts cases that expect it."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int
    predicted: int


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def per_label_scores(
    expected: LabelSets, predicted: LabelSets, labels: Iterable[str] | None = None
) -> list[LabelScore]:
    """Per-label precision / recall / F1 over label sets (multi-label, one-vs-rest).

    `labels` fixes the labels reported and their order; by default every label that occurs in
    either side, sorted. A label never expected nor predicted scores 0 (scikit-learn's
    zero_division=0).
    """
    exp, pred = _paired(expected, predicted)
    tp: Counter[str] = Counter()
    support: Counter[str] = Counter()
    npred: Counter[str] = Counter()
    for e, p in zip(exp, pred, strict=True):
        support.update(e)
        npred.update(p)
        tp.update(e & p)
    names = list(labels) if labels is not None else sorted(set(support) | set(npred))
    scores = []
    for name in names:
        precision = _ratio(tp[name], npred[name])
        recall = _ratio(tp[name], support[name])
        f1 = _ratio(2 * tp[name], support[name] + npred[name])
        scores.append(LabelScore(name, precision, recall, f1, support[name], npred[name]))
    return scores


def macro_f1(
    expected: LabelSets, predicted: LabelSets, labels: Iterable[str] | None = None
) -> float:
    """Unweighted mean of per-label F1 over `labels` (default: labels seen on either side)."""
    scores = per_label_scores(expected, predicted, labels)
    return sum(s.f1 for s in scores) / len(scores) if scores else 0.0


def confusion_counts(expected: LabelSets, predicted: LabelSets) -> dict[tuple[str, str], int]:
    """Sparse confusion between labels: {(expected, predicted): count}.

    Labels on both sides of a case count on the diagonal. The remaining expected and predicted
    labels of a case are paired in sorted order; a leftover on either side pairs with "" (expected
    but not predicted, or predicted with no expected counterpart). For single-label cases this is
    the ordinary confusion matrix.
    """
    exp, pred = _paired(expected, predicted)
    counts: Counter[tuple[str, str]] = Counter()
    for e, p in zip(exp, pred, strict=True):
        for label in e & p:
            counts[(label, label)] += 1
        missed, extra = sorted(e - p), sorted(p - e)
        for i in range(max(len(missed), len(extra))):
            counts[(missed[i] if i < len(missed) else "", extra[i] if i < len(extra) else "")] += 1
    return dict(sorted(counts.items()))


def rate(flags: Iterable[bool]) -> float:
    """Share of true flags; 0.0 for none (schema-valid rate, fallback rate)."""
    values = list(flags)
    return sum(1 for v in values if v) / len(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation, numpy's default method."""
    if not values:
        return 0.0
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LatencySummary:
    p50_ms: float
    p95_ms: float
    p99_ms: float


def latency_percentiles(latencies_s: Sequence[float]) -> LatencySummary:
    """p50 / p95 / p99 in milliseconds of per-case latencies given in seconds."""
    ms = [1000.0 * v for v in latencies_s]
    return LatencySummary(percentile(ms, 50), percentile(ms, 95), percentile(ms, 99))


@dataclass(frozen=True)
class GroupSpread:
    """Macro-F1 per group (category or detector) and the max - min spread: the bias measure."""

    per_group: dict[str, float]
    spread: float


def f1_spread(
    expected: LabelSets, predicted: LabelSets, groups: Sequence[str], *, min_cases: int = 1
) -> GroupSpread:
    """Macro-F1 of the cases of each group, and max - min across groups with >= min_cases cases."""
    exp, pred = _paired(expected, predicted)
    if len(groups) != len(exp):
        raise ValueError(f"{len(groups)} groups for {len(exp)} cases")
    members: dict[str, list[int]] = {}
    for i, group in enumerate(groups):
        members.setdefault(group, []).append(i)
    per_group = {
        group: macro_f1([exp[i] for i in idx], [pred[i] for i in idx])
        for group, idx in sorted(members.items())
        if len(idx) >= min_cases
    }
    values = list(per_group.values())
    return GroupSpread(per_group, max(values) - min(values) if values else 0.0)


def category_of(label: str) -> str:
    """`pii.email_address` -> `pii`."""
    return label.split(".", 1)[0]


def per_category_spread(
    expected: LabelSets, predicted: LabelSets, category: Callable[[str], str] = category_of
) -> GroupSpread:
    """Per-category macro-F1: each case belongs to the category of its (first, sorted) expected label."""
    exp, pred = _paired(expected, predicted)
    groups = [category(min(e)) if e else "" for e in exp]
    return f1_spread(exp, pred, groups)


@dataclass(frozen=True)
class McNemarResult:
    both_correct: int
    candidate_only_correct: int
    baseline_only_correct: int
    both_wrong: int
    statistic: float
    p_value: float
    exact: bool


def _binomial_two_sided(k: int, n: int) -> float:
    """Two-sided exact binomial p-value of min(k, n-k) successes in n trials at p = 0.5."""
    low = min(k, n - k)
    tail = sum(math.comb(n, i) for i in range(low + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar(candidate_correct: Sequence[bool], baseline_correct: Sequence[bool]) -> McNemarResult:
    """McNemar's paired test on per-case correctness of two systems over the same cases.

    With fewer than 25 discordant pairs the exact binomial test is used (statistic 0); otherwise
    the chi-square statistic with continuity correction, (|b - c| - 1)^2 / (b + c), one degree of
    freedom. No discordant pair at all: p = 1.
    """
    if len(candidate_correct) != len(baseline_correct):
        raise ValueError("McNemar's test needs the same cases on both sides")
    pairs = Counter(zip(map(bool, candidate_correct), map(bool, baseline_correct), strict=True))
    b, c = pairs[(True, False)], pairs[(False, True)]
    discordant = b + c
    if discordant == 0:
        statistic, p_value, exact = 0.0, 1.0, True
    elif discordant < MCNEMAR_EXACT_BELOW:
        statistic, p_value, exact = 0.0, _binomial_two_sided(b, discordant), True
    else:
        statistic = (abs(b - c) - 1) ** 2 / discordant
        # Survival function of chi-square with one degree of freedom.
        p_value, exact = math.erfc(math.sqrt(statistic / 2)), False
    return McNemarResult(
        both_correct=pairs[(True, True)],
        candidate_only_correct=b,
        baseline_only_correct=c,
        both_wrong=pairs[(False, False)],
        statistic=statistic,
        p_value=p_value,
        exact=exact,
    )


def significant_regression(result: McNemarResult, alpha: float = 0.05) -> bool:
    """The candidate is significantly worse: p < alpha and fewer cases only it got right."""
    return result.p_value < alpha and result.candidate_only_correct < result.baseline_only_correct


def as_plain(scores: Iterable[LabelScore]) -> list[Mapping[str, float | int | str]]:
    """Per-label scores as JSON-ready dicts (report.json)."""
    return [
        {
            "label": s.label,
            "precision": s.precision,
            "recall": s.recall,
            "f1": s.f1,
            "support": s.support,
            "predicted": s.predicted,
        }
        for s in scores
    ]
