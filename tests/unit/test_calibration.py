"""ECE, reliability bins and temperature scaling: an over-confident scorer gets T > 1 and a lower ECE."""

import json
import math
import random

import pytest

from llama_mapper.domain import calibration, calibrators
from llama_mapper.domain import precision as review
from llama_mapper.domain.errors import InvalidArgument


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


# --- more calibrators ----------------------------------------------------------------------------


def _scorer(n, power, seed, low=0.3, high=0.95):
    """True correctness probability p, reported as sigmoid(power * logit(p)): power > 1 is
    over-confident, power < 1 under-confident."""
    rng = random.Random(seed)
    confidences, correct = [], []
    for _ in range(n):
        p = rng.uniform(low, high)
        correct.append(rng.random() < p)
        confidences.append(calibration.sigmoid(power * calibration.logit(p)))
    return confidences, correct


def _mixed(n, seed):
    """PII answers over-confident (power 3), toxicity answers under-confident (power 1/3)."""
    pii_c, pii_y = _scorer(n, 3.0, seed)
    tox_c, tox_y = _scorer(n, 1 / 3, seed + 100)
    return (
        pii_c + tox_c,
        pii_y + tox_y,
        ["pii.email_address"] * n + ["toxicity.insult"] * n,
    )


def test_brier_by_hand():
    assert calibration.brier_score([0.9, 0.2], [True, False]) == pytest.approx((0.01 + 0.04) / 2)
    assert calibration.brier_score([], []) == 0.0


@pytest.mark.parametrize("power", [3.0, 1 / 3], ids=["over-confident", "under-confident"])
def test_every_method_reduces_held_out_ece(power):
    fit_c, fit_y = _scorer(3000, power, seed=10)
    test_c, test_y = _scorer(3000, power, seed=11)
    categories = ["pii"] * len(fit_c)
    before = calibration.expected_calibration_error(test_c, test_y)
    temperature = calibration.fit_temperature(fit_c, fit_y)
    vector = calibrators.fit_category_temperatures(fit_c, fit_y, categories)
    binning = calibrators.fit_histogram_binning(fit_c, fit_y)
    for apply in (
        lambda c: calibration.apply_temperature(c, temperature),
        lambda c: calibrators.apply_category_temperature(c, "pii.other", vector),
        binning,
    ):
        after = calibration.expected_calibration_error([apply(c) for c in test_c], test_y)
        assert after < before / 2
        assert after < 0.05


def test_per_category_temperatures_fit_what_one_temperature_cannot():
    fit_c, fit_y, fit_k = _mixed(2000, seed=20)
    test_c, test_y, test_k = _mixed(2000, seed=30)
    vector = calibrators.fit_category_temperatures(fit_c, fit_y, fit_k)
    assert vector.by_category["pii"] == pytest.approx(3.0, rel=0.2)
    assert vector.by_category["toxicity"] == pytest.approx(1 / 3, rel=0.2)
    one = calibration.fit_temperature(fit_c, fit_y)
    global_ece = calibration.expected_calibration_error(
        [calibration.apply_temperature(c, one) for c in test_c], test_y
    )
    vector_ece = calibration.expected_calibration_error(
        [
            calibrators.apply_category_temperature(c, k, vector)
            for c, k in zip(test_c, test_k, strict=True)
        ],
        test_y,
    )
    assert vector_ece < global_ece


def test_categories_with_few_cases_fall_back_to_the_global_temperature():
    c, y = _scorer(400, 3.0, seed=40)
    categories = ["pii"] * 390 + ["hate"] * 10
    vector = calibrators.fit_category_temperatures(c, y, categories, min_count=50)
    assert set(vector.by_category) == {"pii"}
    assert vector.temperature_for("hate.religion") == vector.temperature
    assert vector.temperature_for(None) == vector.temperature
    assert vector.temperature_for("pii.email_address") == vector.by_category["pii"]


def test_histogram_bins_hold_the_minimum_count_and_are_monotone():
    c, y = _scorer(1000, 3.0, seed=50)
    binning = calibrators.fit_histogram_binning(c, y, n_bins=10, min_count=60)
    assert len(binning.values) == len(binning.edges) + 1 <= 10
    assert all(count >= 60 for count in binning.counts)
    assert sum(binning.counts) == 1000
    assert list(binning.values) == sorted(binning.values)
    assert list(binning.edges) == sorted(binning.edges)
    # Fewer cases than one bin's minimum: one bin, the overall accuracy.
    small = calibrators.fit_histogram_binning([0.2, 0.9, 0.95], [False, True, True], min_count=5)
    assert small.edges == () and small.values == (pytest.approx(2 / 3),)
    # Ties never split across bins.
    tied = calibrators.fit_histogram_binning([0.5] * 50 + [0.9] * 50, [True] * 100, min_count=10)
    assert all(edge not in (0.5, 0.9) for edge in tied.edges)


def test_choose_calibrator_picks_on_held_out_cases_and_round_trips():
    c, y, k = _mixed(1500, seed=60)
    choice = calibrators.choose_calibrator(c, y, k, seed=1)
    # Without agreements the kind that needs them is not tried.
    assert {s.kind for s in choice.scores} == set(calibrators.KINDS) - {"agreement_histogram"}
    identity = next(s for s in choice.scores if s.kind == "identity")
    best = min(s.ece for s in choice.scores)
    chosen = next(s for s in choice.scores if s.kind == choice.description["kind"])
    floor, _ = calibration.ece_noise_floor([0.5] * round(len(c) * 0.3))
    assert chosen.ece <= best + 0.1 and floor < 0.1  # tied only within chance
    assert chosen.ece < identity.ece
    assert choice.description["kind"] in ("category_temperature", "histogram")
    # The description is JSON and rebuilds the same apply function.
    stored = json.loads(json.dumps(choice.description))
    rebuilt = calibrators.calibrator_from_description(stored)
    for conf, cat in [(0.99, "pii.email_address"), (0.6, "toxicity.insult"), (0.3, None)]:
        assert rebuilt(conf, cat) == pytest.approx(choice.apply(conf, cat))
    json.dumps(choice.as_dict())


def test_choose_calibrator_breaks_ece_ties_by_brier_and_handles_tiny_sets():
    c, y = _scorer(1200, 3.0, seed=70)
    strict = calibrators.choose_calibrator(c, y, ["pii"] * len(c), ece_tolerance=0.0)
    winner = min(strict.scores, key=lambda s: s.ece)
    assert strict.description["kind"] == winner.kind
    lenient = calibrators.choose_calibrator(c, y, ["pii"] * len(c), ece_tolerance=1.0)
    assert lenient.description["kind"] == min(lenient.scores, key=lambda s: s.brier).kind
    tiny = calibrators.choose_calibrator([0.9], [True], ["pii"])
    assert tiny.description == {"kind": "identity"} and tiny.scores == ()


@pytest.mark.parametrize(
    "description",
    [
        {"kind": "identity"},
        {"kind": "temperature", "temperature": 2.0},
        {"kind": "category_temperature", "temperature": 2.0, "by_category": {"pii": 0.5}},
        {"kind": "histogram", "edges": [0.5], "values": [0.2, 0.8], "counts": [10, 10]},
        {
            "kind": "agreement_histogram",
            "top": {"edges": [0.5], "values": [0.8, 0.95], "counts": [40, 40]},
            "other": {"edges": [], "values": [0.3], "counts": [80]},
        },
    ],
)
def test_every_description_round_trips(description):
    apply = calibrators.calibrator_from_description(json.loads(json.dumps(description)))
    assert 0.0 <= apply(0.7, "pii.email_address") <= 1.0


@pytest.mark.parametrize(
    "description",
    [
        {},
        {"kind": "platt"},
        {"kind": "temperature", "temperature": 0},
        {"kind": "temperature", "temperature": "2"},
        {"kind": "category_temperature", "temperature": 1.0, "by_category": {"pii": -1}},
        {"kind": "histogram", "edges": [0.6, 0.4], "values": [0.1, 0.2, 0.3]},
        {"kind": "histogram", "edges": [0.5], "values": [0.2]},
        {"kind": "histogram", "edges": [0.5], "values": [0.2, 1.5]},
        {"kind": "agreement_histogram", "top": {"edges": [], "values": [0.9]}},
        {"kind": "agreement_histogram", "top": [0.9], "other": {"edges": [], "values": [0.3]}},
        {
            "kind": "agreement_histogram",
            "top": {"edges": [], "values": [0.9], "counts": [-1]},
            "other": {"edges": [], "values": [0.3]},
        },
    ],
)
def test_malformed_descriptions_are_invalid_argument(description):
    with pytest.raises(InvalidArgument):
        calibrators.calibrator_from_description(description)


def test_threshold_for_precision_holds_on_held_out_cases():
    # A calibrated scorer: accuracy rises with confidence, so a threshold can buy precision.
    fit_c, fit_y = _scorer(4000, 1.0, seed=80, low=0.2, high=0.99)
    test_c, test_y = _scorer(4000, 1.0, seed=81, low=0.2, high=0.99)
    threshold = review.threshold_for_precision(fit_c, fit_y, 0.9)
    assert threshold is not None and 0.5 < threshold < 0.99
    precision, coverage = review.precision_at(test_c, test_y, threshold)
    assert precision >= 0.9
    assert coverage > 0.1
    # The sample precision is less conservative than its lower bound, and the threshold is the
    # lowest one: any lower confidence brings the sample precision under the target.
    loose = review.threshold_for_precision(fit_c, fit_y, 0.9, confidence_level=None)
    assert loose is not None and loose <= threshold
    assert review.precision_at(fit_c, fit_y, loose)[0] >= 0.9
    below = max(c for c in fit_c if c < loose)
    assert review.precision_at(fit_c, fit_y, below)[0] < 0.9


def test_threshold_for_precision_edges():
    assert review.threshold_for_precision([], [], 0.9) is None
    assert review.threshold_for_precision([0.9, 0.8], [False, False], 0.5) is None
    assert review.threshold_for_precision(
        [0.9, 0.8, 0.7], [True, True, False], 0.6, confidence_level=None
    ) == pytest.approx(0.7)
    assert review.threshold_for_precision(
        [0.9, 0.8, 0.7], [True, True, False], 0.9, confidence_level=None
    ) == pytest.approx(0.8)
    # Ties are kept or dropped together, and min_count refuses a threshold certified by one case.
    assert (
        review.threshold_for_precision([0.9, 0.9], [True, False], 0.9, confidence_level=None)
        is None
    )
    assert (
        review.threshold_for_precision(
            [0.95, 0.5], [True, False], 0.9, confidence_level=None, min_count=2
        )
        is None
    )
    with pytest.raises(ValueError):
        review.threshold_for_precision([0.5], [True], 0.0)


def test_reliability_diagram_has_bins_before_and_after():
    c, y = _scorer(1000, 3.0, seed=90)
    t = calibration.fit_temperature(c, y)
    after = [calibration.apply_temperature(x, t) for x in c]
    diagram = calibration.reliability_diagram(c, y, after, n_bins=10)
    json.dumps(diagram)
    assert len(diagram["bins_before"]) == len(diagram["bins_after"]) == 10
    assert sum(b["count"] for b in diagram["bins_before"]) == 1000
    assert set(diagram["bins_before"][0]) == {
        "lower",
        "upper",
        "mean_confidence",
        "accuracy",
        "count",
    }
    assert diagram["ece_after"] < diagram["ece_before"]
    assert diagram["brier_after"] < diagram["brier_before"]
    assert "bins_after" not in calibration.reliability_diagram(c, y)


def _agreeing(n, seed):
    """Answers that are their shortlist's first candidate are right 95 % of the time, the rest
    40 %, whatever the raw confidence: the shape of the mapper's calibration split."""
    rng = random.Random(seed)
    c, y, a = [], [], []
    for _ in range(n):
        agrees = rng.random() < 0.5
        conf = rng.uniform(0.2, 1.0)
        c.append(conf)
        y.append(rng.random() < (0.95 if agrees else 0.4))
        a.append(agrees)
    return c, y, a


def test_agreement_with_the_first_candidate_is_calibrated_apart():
    c, y, a = _agreeing(3000, seed=5)
    labels = ["pii.email_address"] * len(c)
    choice = calibrators.choose_calibrator(c, y, labels, seed=1, agreements=a)
    assert "agreement_histogram" in {s.kind for s in choice.scores}
    assert choice.description["kind"] == "agreement_histogram"
    pooled = next(s for s in choice.scores if s.kind == "histogram")
    chosen = next(s for s in choice.scores if s.kind == "agreement_histogram")
    assert chosen.brier < pooled.brier and chosen.ece <= pooled.ece + 0.03
    rebuilt = calibrators.calibrator_from_description(json.loads(json.dumps(choice.description)))
    assert rebuilt(0.6, "pii.email_address", True) == pytest.approx(0.95, abs=0.05)
    assert rebuilt(0.6, "pii.email_address", False) == pytest.approx(0.4, abs=0.07)
    # Not known (a caller that cannot say): read as not the first candidate, the cautious side.
    assert rebuilt(0.6, "pii.email_address") == rebuilt(0.6, "pii.email_address", False)
    # Measured on new cases, the split calibration is right where one binning is wrong for both.
    test_c, test_y, test_a = _agreeing(3000, seed=6)
    one = calibrators.calibrator_from_description(
        calibrators.describe(calibrators.fit_histogram_binning(c, y))
    )
    split = [rebuilt(x, None, agrees) for x, agrees in zip(test_c, test_a, strict=True)]
    pooled_after = [one(x, None) for x in test_c]
    assert calibration.expected_calibration_error(split, test_y) < 0.03
    assert calibration.brier_score(split, test_y) < calibration.brier_score(pooled_after, test_y)


def test_the_agreement_kind_needs_enough_answers_on_each_side():
    c, y, _ = _agreeing(600, seed=7)
    labels = ["pii"] * len(c)
    never = calibrators.choose_calibrator(c, y, labels, agreements=[False] * len(c))
    assert "agreement_histogram" not in {s.kind for s in never.scores}
    with pytest.raises(ValueError, match="agreements"):
        calibrators.choose_calibrator(c, y, labels, agreements=[True])


def test_the_ece_noise_floor_says_how_much_ece_chance_alone_makes():
    rng = random.Random(3)
    few = [rng.uniform(0.2, 1.0) for _ in range(66)]
    many = [rng.uniform(0.2, 1.0) for _ in range(5000)]
    median_few, p95_few = calibration.ece_noise_floor(few)
    median_many, p95_many = calibration.ece_noise_floor(many, draws=50)
    # On 66 answers a perfectly calibrated scorer shows ~0.1 ECE by chance: a 0.05 goal is noise.
    assert 0.06 < median_few < 0.14 and median_few <= p95_few
    assert median_many < 0.02 and p95_many < 0.03
    assert calibration.ece_noise_floor(few) == (median_few, p95_few)  # seeded
    assert calibration.ece_noise_floor([]) == (0.0, 0.0)
