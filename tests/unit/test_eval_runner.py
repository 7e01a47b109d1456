"""The evaluation runner on the rules mapper over a small eval set built from the mapping tables."""

import json

import pytest

from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.evaluation.evalset import load_eval_set
from llama_mapper.evaluation.report_dir import PLOTS, load_cases, load_report
from llama_mapper.evaluation.run import EvaluationRunner, RunInputs, RunOptions, run_to_directory
from llama_mapper.evaluation.subjects import HybridSubject
from llama_mapper.inference.hybrid import HybridMapper
from tests.support.eval_cases import RulesBackedModel, build_eval_set


@pytest.fixture(scope="module")
def rules_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    eval_set = load_eval_set(build_eval_set(root / "set"))
    events = []
    runner = EvaluationRunner(progress=lambda *event: events.append(event))
    options = RunOptions(show_progress=False, robustness_per_perturbation=20)
    result = run_to_directory(
        runner, RunInputs(HybridSubject(HybridMapper()), eval_set), options, root / "report"
    )
    return eval_set, result, root / "report", events


def test_rules_only_quality_on_table_entries(rules_run):
    eval_set, result, _, _ = rules_run
    quality = result.report["quality"]
    assert quality["case_count"] == len(eval_set.measured)
    # Exact table entries and gibberish: the rules get every one.
    assert quality["exact_set_accuracy"] == 1.0
    assert quality["schema_valid_rate"] == 1.0
    assert 0 < quality["fallback_rate"] < 0.5  # the gibberish rows are the fallbacks
    taxonomy = default_taxonomy()
    labels = [x["label"] for x in quality["per_label"]]
    assert labels == sorted(labels, key=taxonomy.names.index)


def test_held_out_slice_is_reported_separately(rules_run):
    _, result, _, _ = rules_run
    (held,) = result.report["held_out"]
    assert held["name"] == "held_out_pairs"
    # Misspelt labels are beyond exact tables: the rules answer other.unknown, never an invented label.
    assert held["metrics"]["exact_set_accuracy"] < 0.5
    assert held["metrics"]["schema_valid_rate"] == 1.0


def test_robustness_never_leaves_the_taxonomy(rules_run):
    _, result, _, _ = rules_run
    robustness = result.report["robustness"]
    names = {p["name"] for p in robustness["perturbations"]}
    assert names == {
        "label_case",
        "label_separators",
        "label_typos",
        "prompt_injection",
        "reordered_findings",
        "duplicated_findings",
        "empty_output",
        "huge_output",
    }
    for p in robustness["perturbations"]:
        assert p["out_of_taxonomy_count"] == 0, p
        assert p["schema_valid_rate"] == 1.0, p
    by_name = {p["name"]: p for p in robustness["perturbations"]}
    # Order, duplication, injected text and huge fields change nothing for exact tables.
    for name in ("reordered_findings", "duplicated_findings", "prompt_injection", "huge_output"):
        assert by_name[name]["accuracy_delta"] == 0.0, name
    assert by_name["label_typos"]["accuracy_delta"] < 0
    assert robustness["category_f1_spread"] >= 0 and robustness["per_detector_f1"]


def test_report_directory_is_complete(rules_run):
    _, result, report_dir, events = rules_run
    assert load_report(report_dir)["quality"] == json.loads(json.dumps(result.report["quality"]))
    cases = load_cases(report_dir)
    assert len(cases) == len(result.records)
    for plot in PLOTS:
        assert (report_dir / plot).read_bytes()[:4] == b"\x89PNG"
    summary = (report_dir / "summary.md").read_text()
    assert "exact-set accuracy" in summary and "Robustness" in summary
    phases = {e[0] for e in events}
    assert {"golden", "held_out_pairs", "robustness:label_case"} <= phases
    assert "temperature" not in result.report["calibration"]  # no model: nothing to fit


def test_truncated_run(tmp_path):
    eval_set = load_eval_set(build_eval_set(tmp_path / "set"))
    result = EvaluationRunner().run(
        RunInputs(HybridSubject(HybridMapper()), eval_set),
        RunOptions(max_cases=5, robustness=False, show_progress=False),
    )
    assert result.report["truncated"] and result.report["quality"]["case_count"] <= 5


def test_hybrid_temperature_is_fitted_on_the_cases_the_model_answers():
    """In the hybrid the model only answers rule misses; the calibration split is cut to those."""
    from llama_mapper.domain.rules import RulesMapper
    from llama_mapper.evaluation.evalset import MapperCase
    from llama_mapper.evaluation.run import MIN_MODEL_SHARE_CASES, _model_share

    def case(i: int, label: str) -> MapperCase:
        return MapperCase(f"c{i}", "presidio", {"label": label, "score": 0.9}, frozenset())

    mapped = [case(i, "EMAIL_ADDRESS") for i in range(100)]
    misses = [case(100 + i, f"zq_{i}_xv") for i in range(MIN_MODEL_SHARE_CASES)]
    hybrid = HybridSubject(HybridMapper(RulesMapper()), RulesBackedModel(wrong_every=0))
    assert [c.id for c in _model_share(hybrid, mapped + misses)] == [c.id for c in misses]
    # Too few misses to fit on: the whole split; the model alone and the rules are never cut.
    assert _model_share(hybrid, mapped + misses[:3]) == mapped + misses[:3]
    rules = HybridSubject(HybridMapper(RulesMapper()))
    assert _model_share(rules, mapped + misses) == mapped + misses


class _Unsure:
    """Answers every query with one label at a fixed confidence: below the threshold it falls back."""

    def __init__(self, confidence: float) -> None:
        self.confidence = confidence

    @property
    def description(self):
        return {"adapter": "mapper"}

    def predict(self, queries):
        from llama_mapper.inference.model import Prediction

        return [Prediction("pii.email_address", self.confidence, -1.0, 0.001) for _ in queries]


@pytest.mark.parametrize("confidence", [0.3, 0.9])
def test_the_evaluated_hybrid_answers_as_serving_does(tmp_path, confidence):
    """One hybrid: each case's labels and method are what HybridMapper.map gives serving, with the
    same threshold and temperature; an unsure model shows up as fallbacks in the report."""
    from llama_mapper.evaluation.evalset import MapperCase
    from llama_mapper.inference.hybrid import ModelArm

    cases = [
        MapperCase(
            "a",
            "presidio",
            {"label": "EMAIL_ADDRESS", "score": 0.9},
            frozenset({"pii.email_address"}),
        ),
        MapperCase(
            "b",
            "acme",
            {"label": "zq-unknown-kind", "score": 0.9},
            frozenset({"pii.email_address"}),
        ),
        MapperCase(
            "c", "acme", {"label": "xv-other-kind", "score": 0.9}, frozenset({"pii.email_address"})
        ),
    ]
    model = _Unsure(confidence)
    hybrid = HybridMapper(threshold=0.5)
    arm = ModelArm("mapper", 1, temperature=1.0)
    answers = HybridSubject(hybrid, model, arm=arm).answer(cases)
    for case, answer in zip(cases, answers, strict=True):
        served = hybrid.plan_findings(case.detector, [case.normalized()])
        outcome = hybrid.finish(
            served,
            model.predict(served.queries) if served.pending else None,
            arm=arm if served.pending else None,
        )
        assert list(answer.labels) == [f["label"] for f in outcome.result["findings"]]
        assert answer.method == outcome.result["findings"][0]["method"]
    expected_method = "fallback" if confidence < 0.5 else "model"
    assert [a.method for a in answers] == ["rule", expected_method, expected_method]
    assert all(a.model_answered and a.raw_confidence == confidence for a in answers[1:])


def test_a_hybrid_run_chooses_a_calibrator_and_a_review_threshold(tmp_path):
    """The run fits every calibrator kind on the model's answers, keeps the best, sets the
    threshold for the target precision, and measures the golden set under them as serving will."""
    from llama_mapper.domain.calibrators import KINDS, calibrator_from_description

    eval_set = load_eval_set(build_eval_set(tmp_path / "set", per_detector=4))
    model = RulesBackedModel(wrong_every=4)
    subject = HybridSubject(HybridMapper(), model)
    result = EvaluationRunner().run(
        RunInputs(subject, eval_set, calibration_model=model),
        RunOptions(show_progress=False, robustness=False),
    )
    calibration = result.report["calibration"]
    assert calibration["calibrator"]["kind"] in KINDS
    calibrator_from_description(calibration["calibrator"])  # what the registry will store loads
    # ... with the way the model was asked, which serving compares with its own before applying it
    assert calibration["calibrator"]["recipe"] == HybridMapper().recipe == "shortlist/1+lexical@0.6"
    assert {c["kind"] for c in calibration["calibrator_candidates"]} <= set(KINDS)
    assert calibration["target_precision"] == 0.9
    assert calibration["threshold"] is None or 0.0 <= calibration["threshold"] <= 1.0
    assert "brier_before" in calibration and "brier_after" in calibration


def test_the_calibration_is_fitted_on_the_queries_serving_sends():
    """The hybrid's rule misses go to the model with their retrieved candidates, in the
    calibration fit as on the golden set: the confidences fitted are the ones served."""
    from llama_mapper.evaluation.evalset import EvalSet, MapperCase
    from llama_mapper.inference.model import Prediction

    asked = []

    class Records:
        description = {"adapter": "mapper"}

        def predict(self, queries):
            asked.extend(queries)
            return [
                Prediction(q.candidates[0] if q.candidates else "pii.other", 0.8, -0.2, 0.0)
                for q in queries
            ]

    def case(i, label, split, expected):
        return MapperCase(
            f"{split}{i}",
            "acme",
            {"label": label, "score": 0.9},
            frozenset({expected}),
            split=split,
        )

    golden = EvalSet(
        "golden",
        "0" * 64,
        tuple(case(i, "PostalAdr", "golden", "pii.postal_address") for i in range(5)),
    )
    calibration = EvalSet(
        "cal",
        "1" * 64,
        tuple(case(i, f"mail adr {i}", "calibration", "pii.email_address") for i in range(60)),
    )
    model = Records()
    report = (
        EvaluationRunner()
        .run(
            RunInputs(
                # Lexical answers off: these spellings name one label alone, which the default
                # hybrid answers without the model (tests/unit/test_hybrid.py).
                HybridSubject(HybridMapper(lexical_coverage=None), model),
                golden,
                calibration_set=calibration,
                calibration_model=model,
            ),
            RunOptions(show_progress=False, robustness=False),
        )
        .report
    )
    assert report["calibration"]["calibration_case_count"] == 60
    # 60 calibration queries and the golden one (its five cases ask the same thing, once).
    assert len(asked) == 61 and all(q.candidates for q in asked)
    assert all("pii.email_address" in q.candidates for q in asked if "mail" in q.finding["label"])


def test_a_native_case_is_mapped_from_the_raw_output_as_serving_maps_it():
    """An eval row with `native` goes through the readers and the generic reader: a label under
    `kind` in a `results` list is read, retrieved and asked like a /v1/map request."""
    from llama_mapper.evaluation.evalset import EvalSet, mapper_case
    from llama_mapper.inference.model import Prediction

    asked = []

    class Records:
        description = {"adapter": "mapper"}

        def predict(self, queries):
            asked.extend(queries)
            return [Prediction(q.candidates[0], 0.9, -0.1, 0.0) for q in queries]

    native = {"results": [{"kind": "PostalAdr", "conf": 0.9}], "model": "v3"}
    row = {
        "id": "n1",
        "detector": "orbit-guard",
        "finding": {"label": "ignored"},
        "labels": ["pii.postal_address"],
        "split": "heldout_shape",
        "native": native,
    }
    case = mapper_case(row)
    assert case.native == native
    subject = HybridSubject(HybridMapper(lexical_coverage=None), Records())  # the model's path
    (answer,) = subject.answer([case])
    assert answer.labels == ("pii.postal_address",)
    (query,) = asked
    assert query.finding["label"] == "PostalAdr" and query.detector == "orbit-guard"
    assert subject.rule_miss(case)
    report = (
        EvaluationRunner()
        .run(
            RunInputs(subject, EvalSet("g", "0" * 64, (case,))),
            RunOptions(show_progress=False, robustness=False, calibrate=False),
        )
        .report
    )
    assert [h["name"] for h in report["held_out"]] == ["heldout_shape"]
