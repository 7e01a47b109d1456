"""Metric functions against hand-computed values, with scikit-learn and scipy as the oracle."""

import random

import pytest
from scipy.stats import binomtest, chi2
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)
from sklearn.preprocessing import MultiLabelBinarizer

from llama_mapper.domain import metrics

EXPECTED = [{"pii.email"}, {"pii.ssn"}, {"pii.email"}, {"secrets.key"}, {"pii.ssn", "pii.email"}]
PREDICTED = [{"pii.email"}, {"pii.email"}, {"pii.email"}, {"other.unknown"}, {"pii.ssn"}]


def test_exact_set_accuracy_by_hand():
    # Cases 0 and 2 match exactly; case 4 misses one of two labels.
    assert metrics.exact_set_accuracy(EXPECTED, PREDICTED) == pytest.approx(2 / 5)
    assert metrics.exact_set_correct(EXPECTED, PREDICTED) == [True, False, True, False, False]
    assert metrics.exact_set_accuracy([], []) == 0.0


def test_per_label_by_hand():
    scores = {s.label: s for s in metrics.per_label_scores(EXPECTED, PREDICTED)}
    email = scores["pii.email"]  # expected 3x, predicted 3x, right 2x
    assert (email.precision, email.recall, email.f1, email.support) == pytest.approx(
        (2 / 3, 2 / 3, 2 / 3, 3)
    )
    ssn = scores["pii.ssn"]  # expected 2x, predicted 1x, right 1x
    assert (ssn.precision, ssn.recall, ssn.f1) == pytest.approx((1.0, 0.5, 2 / 3))
    assert scores["other.unknown"].f1 == 0.0 and scores["other.unknown"].support == 0
    assert scores["secrets.key"].recall == 0.0


def _binarized(expected, predicted):
    mlb = MultiLabelBinarizer()
    mlb.fit([*expected, *predicted])
    return mlb, mlb.transform(expected), mlb.transform(predicted)


@pytest.mark.parametrize("seed", range(5))
def test_per_label_and_macro_f1_match_sklearn(seed):
    rng = random.Random(seed)
    labels = [f"cat{i % 3}.l{i}" for i in range(9)]
    expected = [set(rng.sample(labels, rng.choice([1, 1, 1, 2]))) for _ in range(200)]
    predicted = [set(e) if rng.random() < 0.6 else {rng.choice(labels)} for e in expected]
    mlb, y_true, y_pred = _binarized(expected, predicted)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    ours = metrics.per_label_scores(expected, predicted, labels=list(mlb.classes_))
    assert [x.precision for x in ours] == pytest.approx(list(p))
    assert [x.recall for x in ours] == pytest.approx(list(r))
    assert [x.f1 for x in ours] == pytest.approx(list(f))
    assert [x.support for x in ours] == list(s)
    assert metrics.macro_f1(expected, predicted) == pytest.approx(
        f1_score(y_true, y_pred, average="macro", zero_division=0)
    )
    assert metrics.exact_set_accuracy(expected, predicted) == pytest.approx(
        accuracy_score(y_true, y_pred)
    )


def test_confusion_matches_sklearn_for_single_labels():
    rng = random.Random(7)
    labels = ["a.x", "a.y", "b.z", "c.w"]
    y_true = [rng.choice(labels) for _ in range(300)]
    y_pred = [t if rng.random() < 0.5 else rng.choice(labels) for t in y_true]
    ours = metrics.confusion_counts([{t} for t in y_true], [{p} for p in y_pred])
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    for i, e in enumerate(labels):
        for j, p in enumerate(labels):
            assert ours.get((e, p), 0) == matrix[i, j]


def test_confusion_pairs_leftovers_with_empty():
    counts = metrics.confusion_counts([{"a.x", "a.y"}, {"a.x"}], [{"a.x"}, {"a.x", "b.z"}])
    assert counts == {("a.x", "a.x"): 2, ("a.y", ""): 1, ("", "b.z"): 1}


def test_rates_and_percentiles_match_numpy():
    import numpy as np

    assert metrics.rate([True, False, True, True]) == 0.75
    assert metrics.rate([]) == 0.0
    values = [random.Random(3).expovariate(10) for _ in range(101)]
    for q in (0, 50, 95, 99, 100):
        assert metrics.percentile(values, q) == pytest.approx(np.percentile(values, q))
    summary = metrics.latency_percentiles([0.010, 0.020, 0.030])
    assert summary.p50_ms == pytest.approx(20.0)
    assert summary.p99_ms == pytest.approx(29.8)


def test_f1_spread_by_category_and_detector():
    expected = [{"pii.email"}, {"pii.ssn"}, {"secrets.key"}, {"secrets.key"}]
    predicted = [{"pii.email"}, {"pii.ssn"}, {"secrets.key"}, {"pii.ssn"}]
    by_cat = metrics.per_category_spread(expected, predicted)
    # pii cases: email right, ssn right -> macro-F1 1.0; secrets: one of two right -> F1(key)=2/3,
    # and pii.ssn predicted with no support -> F1 0 -> macro (2/3 + 0) / 2.
    assert by_cat.per_group["pii"] == pytest.approx(1.0)
    assert by_cat.per_group["secrets"] == pytest.approx(1 / 3)
    assert by_cat.spread == pytest.approx(2 / 3)
    by_det = metrics.f1_spread(expected, predicted, ["presidio", "presidio", "ds", "ds"])
    assert set(by_det.per_group) == {"ds", "presidio"}


def test_mcnemar_exact_for_few_discordant_pairs():
    candidate = [True] * 10 + [False] * 2 + [True] * 6 + [False] * 2
    baseline = [True] * 10 + [True] * 2 + [False] * 6 + [False] * 2
    result = metrics.mcnemar(candidate, baseline)
    assert (
        result.both_correct,
        result.candidate_only_correct,
        result.baseline_only_correct,
        result.both_wrong,
    ) == (10, 6, 2, 2)
    assert result.exact and result.statistic == 0.0
    assert result.p_value == pytest.approx(binomtest(2, 8, 0.5).pvalue)
    assert metrics.mcnemar([True], [True]).p_value == 1.0


def test_mcnemar_chi_square_with_continuity_correction():
    candidate = [True] * 40 + [False] * 20 + [True] * 50
    baseline = [False] * 40 + [True] * 20 + [True] * 50
    result = metrics.mcnemar(candidate, baseline)
    assert not result.exact
    assert result.statistic == pytest.approx((abs(40 - 20) - 1) ** 2 / 60)
    assert result.p_value == pytest.approx(chi2.sf(result.statistic, 1))
    assert not metrics.significant_regression(result)
    flipped = metrics.mcnemar(baseline, candidate)
    assert metrics.significant_regression(flipped, alpha=0.05)


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        metrics.exact_set_accuracy([{"a.b"}], [])
    with pytest.raises(ValueError):
        metrics.mcnemar([True], [True, False])
