"""ECE, reliability bins and temperature scaling: an over-confident scorer gets T > 1 and a lower ECE."""

import math
import random

import pytest

from llama_mapper.domain import calibration


def test_ece_by_hand():
    # Two bins (n_bins=2): [0, .5) holds 0.2 and 0.4 (one right), [.5, 1] holds 0.9 (right).
    confidences = [0.2, 0.4, 0.9]
    correct = [False, True, True]
    bins = calibration.reliability_bins(confidences, correct, n_bins=2)
    assert [b.count for b in bins] == [2, 1]
    assert bins[0].mean_confidence == pytest.approx(0.3) and bins[0].accuracy == 0.5
    expected = 2 / 3 * abs(0.5 - 0.3) + 1 / 3 * abs(1.0 - 0.9)
    assert calibration.expected_calibration_error(confidences, correct, n_bins=2) == pytest.approx(
        expected
    )
    # confidence 1.0 lands in the last (closed) bin.
    assert calibration.reliability_bins([1.0], [True], n_bins=4)[-1].count == 1
    assert calibration.expected_calibration_error([], []) == 0.0


def test_apply_temperature():
    assert calibration.apply_temperature(0.8, 1.0) == 0.8
    assert calibration.apply_temperature(0.5, 3.0) == pytest.approx(0.5)
    softened = calibration.apply_temperature(0.99, 2.0)
    assert 0.5 < softened < 0.99
    assert softened == pytest.approx(1 / (1 + math.exp(-math.log(99) / 2)))
    assert calibration.apply_temperature(0.2, 0.5) < 0.2
    with pytest.raises(ValueError):
        calibration.apply_temperature(0.5, 0.0)


def _overconfident(n, seed=0):
    """True correctness probability p, reported as sigmoid(3 * logit(p)): far too sure."""
    rng = random.Random(seed)
    confidences, correct = [], []
    for _ in range(n):
        p = rng.uniform(0.3, 0.95)
        correct.append(rng.random() < p)
        confidences.append(calibration.sigmoid(3 * calibration.logit(p)))
    return confidences, correct


def test_overconfident_scorer_gets_temperature_above_one_and_lower_ece():
    fit_c, fit_y = _overconfident(2000, seed=1)
    test_c, test_y = _overconfident(2000, seed=2)
    temperature = calibration.fit_temperature(fit_c, fit_y)
    assert temperature > 1.0
    assert temperature == pytest.approx(3.0, rel=0.15)
    before = calibration.expected_calibration_error(test_c, test_y)
    after = calibration.expected_calibration_error(
        [calibration.apply_temperature(c, temperature) for c in test_c], test_y
    )
    assert after < before
    assert after < 0.05


def test_fit_is_bounded_and_degenerate_splits_are_safe():
    low, high = calibration.TEMPERATURE_BOUNDS
    all_right = calibration.fit_temperature([0.6, 0.7, 0.8], [True, True, True])
    assert low <= all_right <= high
    assert all_right < 1.0  # everything right: sharpen
    assert calibration.fit_temperature([0.9], [True]) == 1.0


def test_nll_is_minimal_at_the_fitted_temperature():
    c, y = _overconfident(500, seed=4)
    t = calibration.fit_temperature(c, y)
    best = calibration.correctness_nll(c, y, t)
    assert best <= calibration.correctness_nll(c, y, t * 1.1)
    assert best <= calibration.correctness_nll(c, y, t / 1.1)
