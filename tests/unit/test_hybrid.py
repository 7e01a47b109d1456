"""The hybrid mapper's routing: rules first, model for the rest, fallback on every model failure."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.readers.generic import extract_generic
from llama_mapper.domain.schemas import validator
from llama_mapper.inference.hybrid import HybridMapper, ModelArm
from llama_mapper.inference.model import MapperQuery, Prediction


class LookupModel:
    """A real MapperModel: a lookup table from raw label to (label, confidence)."""

    def __init__(self, table, *, delay_s=0.0, fail=False, valid=True):
        self.table = table
        self.delay_s = delay_s
        self.fail = fail
        self.valid = valid
        self.seen: list[MapperQuery] = []

    @property
    def description(self):
        return {"base_model": "tiny", "base_model_sha256": "ab" * 32, "adapter": "mapper"}

    def predict(self, queries):
        self.seen.extend(queries)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("engine down")
        out = []
        for q in queries:
            label, conf = self.table.get(q.finding["label"], ("other.unknown", 0.3))
            if not self.valid:
                out.append(Prediction("other.unknown", 0.0, float("-inf"), 0.01, valid=False))
            else:
                out.append(Prediction(label, conf, math.log(conf), 0.01))
        return out


PRESIDIO = [
    {"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99},
    {"entity_type": "ACME_CUSTOMER_NO", "start": 12, "end": 20, "score": 0.9},
]
ARM = ModelArm("mapper", version=3, temperature=1.0, arm="control")


@pytest.fixture
def hybrid():
    mapper = HybridMapper(threshold=0.5, deadline_s=0.5)
    yield mapper
    mapper.close()


def methods(result):
    return [(f["label"], f["method"], f.get("needs_review", False)) for f in result["findings"]]


def test_rules_answer_what_they_know_and_the_model_only_the_rest(hybrid):
    model = LookupModel({"ACME_CUSTOMER_NO": ("financial.bank_account", 0.9)})
    outcome = hybrid.map("presidio", PRESIDIO, model=model, arm=ARM, request_id="r1")
    assert [q.finding["label"] for q in model.seen] == ["ACME_CUSTOMER_NO"]
    assert methods(outcome.result) == [
        ("pii.email_address", "rule", False),
        ("financial.bank_account", "model", False),
    ]
    prov = outcome.result["provenance"]
    assert prov["request_id"] == "r1"
    assert prov["model"] == {
        "base_model": "tiny",
        "base_model_sha256": "ab" * 32,
        "adapter": "mapper",
        "adapter_version": 3,
        "temperature": 1.0,
        "arm": "control",
    }
    assert outcome.model_answered == 1 and outcome.schema_valid == 1
    validator("mapper-output").validate(outcome.result)


def test_nothing_reaches_the_model_when_rules_map_everything(hybrid):
    model = LookupModel({})
    outcome = hybrid.map("presidio", PRESIDIO[:1], model=model, arm=ARM)
    assert model.seen == []
    assert "model" not in outcome.result["provenance"]


@pytest.mark.parametrize(
    ("model", "reason"),
    [
        (LookupModel({}, fail=True), "unavailable"),
        (LookupModel({}, delay_s=2.0), "timeout"),
        (
            LookupModel({"ACME_CUSTOMER_NO": ("financial.bank_account", 0.9)}, valid=False),
            "invalid",
        ),
        (LookupModel({"ACME_CUSTOMER_NO": ("financial.bank_account", 0.2)}), "low_confidence"),
    ],
)
def test_model_failures_fall_back_to_unknown_with_review(hybrid, model, reason):
    started = time.perf_counter()
    outcome = hybrid.map("presidio", PRESIDIO, model=model, arm=ARM)
    assert time.perf_counter() - started < 1.5  # the deadline holds even when the model hangs
    assert methods(outcome.result) == [
        ("pii.email_address", "rule", False),
        ("other.unknown", "fallback", True),
    ]
    assert outcome.result["needs_review"] is True
    assert outcome.fallbacks == {reason: 1}


def test_out_of_taxonomy_label_never_leaves(hybrid):
    model = LookupModel({"ACME_CUSTOMER_NO": ("pii.none", 0.99)})
    outcome = hybrid.map("presidio", PRESIDIO, model=model, arm=ARM)
    assert methods(outcome.result)[1] == ("other.unknown", "fallback", True)
    assert outcome.fallbacks == {"invalid": 1}


def test_temperature_scales_confidence_before_the_threshold(hybrid):
    model = LookupModel({"ACME_CUSTOMER_NO": ("financial.bank_account", 0.6)})
    warm = hybrid.map("presidio", PRESIDIO, model=model, arm=ModelArm("mapper", 1, temperature=1.0))
    assert warm.result["findings"][1]["method"] == "model"
    assert warm.result["findings"][1]["confidence"] == pytest.approx(0.6)
    # T=0.5 sharpens 0.6 to ~0.69; T=4 softens 0.4 (logit<0) further below the threshold.
    sharp = hybrid.map(
        "presidio", PRESIDIO, model=model, arm=ModelArm("mapper", 1, temperature=0.5)
    )
    assert sharp.result["findings"][1]["confidence"] == pytest.approx(0.6923, abs=1e-3)
    low = LookupModel({"ACME_CUSTOMER_NO": ("financial.bank_account", 0.45)})
    soft = hybrid.map("presidio", PRESIDIO, model=low, arm=ModelArm("mapper", 1, temperature=4.0))
    assert soft.result["findings"][1]["method"] == "fallback"


def test_unknown_detector_goes_through_the_generic_envelope(hybrid):
    model = LookupModel(
        {"customer id": ("financial.bank_account", 0.8), "rudeness": ("toxicity.insult", 0.7)}
    )
    listed = hybrid.map(
        "acme-dlp", [{"type": "customer id", "confidence": 0.9}], model=model, arm=ARM
    )
    assert methods(listed.result) == [("financial.bank_account", "model", False)]
    scored = hybrid.map("acme-tox", {"rudeness": 0.91, "insult": 0.1}, model=model, arm=ARM)
    assert methods(scored.result) == [("toxicity.insult", "model", False)]
    # An alias the taxonomy knows is a rule answer even for an unknown detector.
    aliased = hybrid.map("acme-dlp", [{"label": "EMAIL"}], model=model, arm=ARM)
    assert aliased.result["findings"][0]["method"] == "rule"


def test_without_a_model_unknown_findings_fall_back(hybrid):
    outcome = hybrid.map("acme", "something odd happened")
    assert methods(outcome.result) == [("other.unknown", "fallback", True)]
    assert outcome.fallbacks == {"no_model": 1}


def test_malformed_output_of_a_known_detector_is_invalid_argument(hybrid):
    with pytest.raises(InvalidArgument):
        hybrid.map("presidio", {"not": "a list"})


def test_nothing_found_is_no_finding(hybrid):
    outcome = hybrid.map("acme-tox", {"toxicity": 0.01})
    assert methods(outcome.result) == [("other.no_finding", "rule", False)]


def test_async_path_honours_the_deadline_and_router_arm(hybrid):
    async def slow(queries):
        await asyncio.sleep(5)

    async def fast(queries):
        return [Prediction("financial.bank_account", 0.9, math.log(0.9), 0.01)], {
            "base_model": "tiny"
        }

    async def run():
        timed_out = await hybrid.amap("presidio", PRESIDIO, predict=slow, arm=ARM, deadline_s=0.05)
        answered = await hybrid.amap(
            "presidio", PRESIDIO, predict=fast, arm=ARM, router_arm="treatment"
        )
        return timed_out, answered

    timed_out, answered = asyncio.run(run())
    assert timed_out.fallbacks == {"timeout": 1}
    assert answered.result["provenance"]["router_arm"] == "treatment"
    assert answered.result["findings"][1]["method"] == "model"


@pytest.mark.parametrize(
    ("output", "labels"),
    [
        ([{"entity_type": "X", "score": 0.2}, {"entity_type": "Y", "score": 0.7}], ["Y"]),
        ({"results": [{"category": "hate"}]}, ["hate"]),
        ({"flagged": True, "spam": False}, ["flagged"]),
        ("unsafe\nS1", ["unsafe S1"]),
        ('"just text"', ["just text"]),
        ([], []),
        (42, None),
    ],
)
def test_generic_shapes(output, labels):
    found = extract_generic("d", output)
    assert (None if found is None else [f.raw_label for f in found]) == labels


def test_a_free_text_verdict_reaches_the_model_as_a_reason_not_a_label(hybrid):
    model = LookupModel({"BLOCK": ("pii.national_id", 0.9)})
    text = "BLOCK: the message asks for the SSN 078-05-1120 of jane@example.com " + "x " * 500
    outcome = hybrid.map("acme-guard", text, model=model, arm=ARM)
    (query,) = model.seen
    assert query.finding["label"] == "BLOCK"
    assert query.finding["reason"].startswith("the message asks for the SSN <SSN> of <EMAIL>")
    (finding,) = outcome.result["findings"]
    assert finding["source"]["raw_label"] == "BLOCK"
    assert "078-05-1120" not in str(outcome.result) and "jane" not in str(outcome.result)


def test_an_unrecognized_document_is_never_sent_as_a_label(hybrid):
    model = LookupModel({})
    document = {"blob": {"payload_size": 12, "owner": "jane"}, "note": "x" * 10_000}
    outcome = hybrid.map("acme-guard", document, model=model, arm=ARM)
    (query,) = model.seen
    assert query.finding == {"label": "", "fields": "blob, blob.owner, blob.payload_size, note"}
    assert outcome.result["findings"][0]["source"]["raw_label"] == ""
    assert outcome.result["findings"][0]["label"] == "other.unknown"


def test_a_hostile_document_for_an_unknown_detector_is_invalid_argument(hybrid):
    deep: list = []
    node = deep
    for _ in range(5_000):
        node.append([])
        node = node[0]
    with pytest.raises(InvalidArgument):
        hybrid.map("acme-guard", deep)


def test_the_arms_calibrator_and_threshold_decide_as_its_evaluation_chose():
    from llama_mapper.inference.model import Prediction

    hybrid = HybridMapper(threshold=0.5)
    plan = hybrid.plan("acme", [{"label": "zq-unknown-kind", "score": 0.9}])
    assert plan.pending
    unsure = [Prediction("pii.email_address", 0.8, -0.2, 0.001)]
    assert (
        hybrid.finish(plan, unsure, arm=ModelArm("m", 1)).result["findings"][0]["method"] == "model"
    )
    strict = ModelArm("m", 1, threshold=0.9)
    assert hybrid.finish(plan, unsure, arm=strict).result["findings"][0]["method"] == "fallback"
    halve = ModelArm("m", 1, calibrator=lambda confidence, label: confidence / 2)
    answered = hybrid.finish(plan, unsure, arm=halve).result["findings"][0]
    assert answered["method"] == "fallback"  # 0.4 after calibration, under 0.5


@pytest.mark.parametrize(
    "output", [{"findings": [{"label": ""}]}, {"findings": [{"label": "  ", "flagged": True}]}]
)
def test_an_empty_label_with_nothing_else_is_unknown_without_asking_the_model(output):
    class Refuses:
        description: dict = {}

        def predict(self, queries):
            raise AssertionError("the model was asked about nothing")

    outcome = HybridMapper().map("acme-shield", output, model=Refuses())
    (finding,) = outcome.result["findings"]
    assert finding["label"] == "other.unknown" and finding["needs_review"]
    assert finding["method"] == "fallback" and outcome.model_queries == 0


def test_lexical_singles_answer_without_the_model_only_when_one_label_explains_the_words():
    from llama_mapper.inference.hybrid import LEXICAL_CONFIDENCE

    lexical = HybridMapper(lexical_coverage=0.5)
    output = [
        {"entity_type": "MEDICAL_RECORD_NO", "start": 0, "end": 4, "score": 0.8},  # one label
        {"entity_type": "ACME_WIDGET_CODE", "start": 5, "end": 9, "score": 0.8},  # none
    ]
    plan = lexical.plan("presidio", output)
    ((index, finding),) = plan.ruled
    assert (index, finding.label, finding.method) == (0, "phi.health_identifier", "rule")
    assert finding.confidence == LEXICAL_CONFIDENCE and not finding.needs_review
    assert [i for i, _ in plan.pending] == [1] and plan.candidates == [()]
    assert lexical.recipe == "shortlist/1+lexical@0.5" != HybridMapper().recipe
    assert HybridMapper(lexical_coverage=None).recipe == "shortlist/1"
    # Off, the same finding goes to the model with its one-label shortlist.
    default = HybridMapper(lexical_coverage=None).plan("presidio", output)
    assert [i for i, _ in default.pending] == [0, 1]
    assert default.candidates[0][0] == "phi.health_identifier"
    # Without retrieval there is nothing lexical to answer with.
    assert HybridMapper(retrieval=False, lexical_coverage=0.5).plan("presidio", output).ruled == []


def test_the_calibrator_is_told_whether_the_model_chose_the_first_candidate():
    """Serving's finish hands the calibrator the same agreement the evaluation fitted it on."""
    from llama_mapper.inference.hybrid import first_candidate

    mapper = HybridMapper(lexical_coverage=None)
    output = [
        {"entity_type": "MEDICAL_RECORD_NO", "start": 0, "end": 4, "score": 0.8},
        {"entity_type": "MEDICAL_RECORD_NO", "start": 5, "end": 9, "score": 0.8},
        {"entity_type": "ACME_WIDGET_CODE", "start": 10, "end": 14, "score": 0.8},
    ]
    plan = mapper.plan("presidio", output)
    first, second = plan.candidates[0][0], plan.candidates[0][1]
    assert first == "phi.health_identifier" and plan.candidates[2] == ()
    told: list[bool | None] = []

    def calibrator(confidence, label, agrees=None):
        told.append(agrees)
        return 0.9 if agrees else 0.2

    arm = ModelArm("mapper", version=3, calibrator=calibrator, threshold=0.5)
    predictions = [
        Prediction(first, 0.6, math.log(0.6), 0.01),  # the first candidate
        Prediction(second, 0.6, math.log(0.6), 0.01),  # another candidate
        Prediction("pii.other", 0.6, math.log(0.6), 0.01),  # chosen among all labels
    ]
    outcome = mapper.finish(plan, predictions, arm=arm)
    assert told == [True, False, False]
    # 0.9 for the first candidate clears the threshold; 0.2 for the others does not.
    labels = [f["label"] for f in outcome.result["findings"]]
    assert labels == [first, "other.unknown", "other.unknown"]
    assert first_candidate(plan.candidates[0], first)
    assert not first_candidate((), "pii.other") and not first_candidate(plan.candidates[0], None)
    mapper.close()
