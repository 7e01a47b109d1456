"""Guardrail readers (LLM Guard, Lakera, Prompt Guard, Prompt Shields, Granite Guardian, ShieldGemma,
Model Armor, any-guardrail, OpenGuardrails) and their tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llama_mapper.domain.findings import Span
from llama_mapper.domain.readers.base import DetectorOutputError, read
from llama_mapper.domain.rules import RulesMapper

CANARY = "CANARY-ignore-all-previous-instructions"


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    return RulesMapper()


def labels(mapper: RulesMapper, detector: str, output: Any) -> list[str]:
    return mapper.map(detector, output, request_id="t")["taxonomy"]


# --- LLM Guard ------------------------------------------------------------------------------------


def test_llm_guard_tuple_dict_and_api_read_alike(mapper: RulesMapper) -> None:
    valid = {"PromptInjection": False, "Toxicity": True}
    scores = {"PromptInjection": 0.9, "Toxicity": -0.4}
    as_dict = {"sanitized_prompt": CANARY, "results_valid": valid, "results_score": scores}
    as_tuple = [CANARY, valid, scores]
    as_api = {"is_valid": False, "scanners": scores, "sanitized_prompt": CANARY}
    for output in (as_dict, as_tuple, as_api):
        report = read("llm-guard", output)
        assert [(f.raw_label, f.score) for f in report.findings] == [("PromptInjection", 0.9)]
        assert CANARY not in repr(report)
        assert labels(mapper, "llm-guard", output) == ["security.prompt_injection"]


def test_llm_guard_all_valid_is_no_finding(mapper: RulesMapper) -> None:
    ok = {"sanitized_output": CANARY, "results_valid": {"Toxicity": True}, "results_score": {}}
    assert read("llm-guard", ok).explicit_no_finding
    assert labels(mapper, "llm-guard", {"is_valid": True, "scanners": {"Toxicity": -1.0}}) == [
        "other.no_finding"
    ]


def test_llm_guard_negative_risk_of_a_failed_scanner_is_score_zero() -> None:
    out = {"results_valid": {"Regex": False}, "results_score": {"Regex": -1.0}}
    [finding] = read("llm-guard", out).findings
    assert finding.score == 0.0 and finding.attributes == {"risk_score": -1.0}


# --- Lakera Guard ---------------------------------------------------------------------------------


def test_lakera_payload_gives_spans_and_flag_without_detector_goes_to_review(
    mapper: RulesMapper,
) -> None:
    out = {
        "flagged": True,
        "payload": [{"start": 3, "end": 9, "text": CANARY, "detector_type": "pii/name"}],
    }
    [finding] = read("lakera-guard", out).findings
    assert finding.raw_label == "pii/name" and finding.span == Span(3, 9)
    result = mapper.map("lakera-guard", {"flagged": True})
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]
    assert labels(mapper, "lakera-guard", {"flagged": False}) == ["other.no_finding"]


# --- Prompt Guard ---------------------------------------------------------------------------------


def test_prompt_guard_shapes_and_the_honest_label_set(mapper: RulesMapper) -> None:
    assert labels(mapper, "prompt-guard", {"label": "INJECTION", "score": 0.97}) == [
        "security.prompt_injection"
    ]
    assert labels(mapper, "prompt-guard", [{"label": "benign", "score": 0.99}]) == [
        "other.no_finding"
    ]
    # Prompt Guard 2: MALICIOUS is injection or jailbreak; both labels, lower confidence each.
    result = mapper.map("prompt-guard", [{"label": "MALICIOUS", "score": 0.99}])
    assert result["taxonomy"] == ["security.jailbreak", "security.prompt_injection"]
    assert {f["confidence"] for f in result["findings"]} == {0.6}
    # A batch of top labels: one per text, with its index.
    batch = read(
        "prompt-guard", [{"label": "LABEL_0", "score": 0.9}, {"label": "LABEL_1", "score": 0.8}]
    )
    assert [(f.raw_label, f.attributes) for f in batch.findings] == [("LABEL_1", {"index": 1})]
    # top_k=None over a batch: a list per text; a weak class falls under min_score.
    weak = [[{"label": "JAILBREAK", "score": 0.3}, {"label": "BENIGN", "score": 0.7}]]
    assert labels(mapper, "prompt-guard", weak) == ["other.no_finding"]


# --- Azure Prompt Shields -------------------------------------------------------------------------


def test_prompt_shields_user_attack_and_document_index(mapper: RulesMapper) -> None:
    out = {"userPromptAnalysis": {"attackDetected": True}, "documentsAnalysis": []}
    assert labels(mapper, "azure-prompt-shields", out) == ["security.jailbreak"]
    docs = read("azure-prompt-shields", {"documentsAnalysis": [{"attackDetected": True}]})
    assert docs.findings[0].attributes == {"index": 0}


# --- Granite Guardian -----------------------------------------------------------------------------


def test_granite_guardian_verdict_forms(mapper: RulesMapper) -> None:
    assert labels(mapper, "granite-guardian", {"risk_name": "Violence", "label": "Yes"}) == [
        "violence.general"
    ]
    three_two = {"risk_name": "profanity", "label": "Yes\n<confidence> High </confidence>"}
    [finding] = read("granite-guardian", three_two).findings
    assert finding.severity == 2 and finding.attributes == {"confidence": "high"}
    # The umbrella risk names no category: review.
    harm = mapper.map("granite-guardian", {"risk_name": "harm", "label": "Yes"})
    assert harm["taxonomy"] == ["other.unknown"] and harm["needs_review"]
    # Below the table's 0.5 a Yes with a low probability is dropped.
    unsure = {"risk_name": "jailbreak", "label": "Yes", "prob_of_risk": 0.2}
    assert labels(mapper, "granite-guardian", unsure) == ["other.no_finding"]


# --- ShieldGemma ----------------------------------------------------------------------------------


def test_shieldgemma_yes_no_pairs_and_thresholds(mapper: RulesMapper) -> None:
    out = {"hate speech": {"Yes": 0.7, "No": 0.3}, "Harassment": {"Yes": 0.1, "No": 0.9}}
    assert labels(mapper, "shieldgemma", out) == ["hate.other"]
    assert read("shieldgemma", {"Harassment": 0.2}).explicit_no_finding


# --- Model Armor ----------------------------------------------------------------------------------


def test_model_armor_snake_case_and_deidentify(mapper: RulesMapper) -> None:
    out = {
        "sanitization_result": {
            "filter_match_state": "MATCH_FOUND",
            "filter_results": {
                "csam": {"csam_filter_filter_result": {"match_state": "MATCH_FOUND"}},
                "sdp": {
                    "sdp_filter_result": {
                        "deidentify_result": {
                            "match_state": "MATCH_FOUND",
                            "data": {"text": CANARY},
                            "info_types": ["EMAIL_ADDRESS"],
                        }
                    }
                },
            },
        }
    }
    report = read("model-armor", out)
    assert [f.raw_label for f in report.findings] == ["csam", "EMAIL_ADDRESS"]
    assert CANARY not in repr(report)
    # EMAIL_ADDRESS is not in the model-armor table: the google-dlp vocabulary answers it.
    assert labels(mapper, "model-armor", out) == ["pii.email_address", "sexual.minors"]


@pytest.mark.parametrize("start", [float("inf"), float("-inf"), float("nan"), "x", [1], None])
def test_model_armor_a_span_that_is_no_integer_is_dropped_not_a_crash(start: Any) -> None:
    # read() is called by library users without the router's JSON check (which refuses inf).
    location = {"codepointRange": {"start": start, "end": "9"}}
    finding = {"infoType": "EMAIL_ADDRESS", "location": location}
    out = {
        "sanitizationResult": {
            "filterMatchState": "MATCH_FOUND",
            "filterResults": {
                "sdp": {
                    "sdpFilterResult": {
                        "inspectResult": {"matchState": "MATCH_FOUND", "findings": [finding]}
                    }
                }
            },
        }
    }
    (only,) = read("model-armor", out).findings
    assert only.raw_label == "EMAIL_ADDRESS"
    assert only.span is None


def test_model_armor_no_match_and_unexplained_match(mapper: RulesMapper) -> None:
    clean = {"sanitizationResult": {"filterMatchState": "NO_MATCH_FOUND", "filterResults": {}}}
    assert labels(mapper, "model-armor", clean) == ["other.no_finding"]
    odd = {"sanitizationResult": {"filterMatchState": 2, "filterResults": {}}}
    assert labels(mapper, "model-armor", odd) == ["other.unknown"]


# --- any-guardrail --------------------------------------------------------------------------------


def test_any_guardrail_codes_and_bare_invalid_go_to_review(mapper: RulesMapper) -> None:
    llama = {"valid": False, "categories": [{"name": "S1", "triggered": True}]}
    result = mapper.map("any-guardrail", llama)
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]
    bare = {"valid": False, "explanation": CANARY, "score": 0.8}
    report = read("any-guardrail", bare)
    assert report.findings[0].raw_label == "invalid" and CANARY not in repr(report)
    criteria = {"valid": False, "categories": [{"name": CANARY * 3, "triggered": True}]}
    assert read("any-guardrail", criteria).findings[0].raw_label == "criteria_met"
    shields = {"valid": False, "categories": [{"name": "document_2", "triggered": True}]}
    [doc] = read("any-guardrail", shields).findings
    assert (doc.raw_label, doc.attributes) == ("document", {"category_index": 2})
    assert labels(mapper, "any-guardrail", shields) == ["security.prompt_injection"]


# --- OpenGuardrails -------------------------------------------------------------------------------


def test_openguardrails_rollup_whitelist_and_unjudged(mapper: RulesMapper) -> None:
    verdict = {
        "event_id": "e",
        "provider": "p",
        "decision": "allow",
        "findings": [
            {"category": "security.secret_leak.github_pat", "severity": "high", "subject": CANARY},
            {"category": "privacy.pii.tax_id.de.vat", "whitelisted": True},
        ],
    }
    report = read("openguardrails", verdict)
    [finding] = report.findings
    assert finding.raw_label == "security.secret_leak"
    assert finding.attributes["category"] == "security.secret_leak.github_pat"
    assert finding.severity == 3 and CANARY not in repr(report)
    assert labels(mapper, "openguardrails", verdict) == ["credentials.other"]
    unjudged = {"event_id": "e", "provider": "p", "decision": "allow", "unjudged": ["payload.x"]}
    result = mapper.map("openguardrails", unjudged)
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]
    clean = {"event_id": "e", "provider": "p", "decision": "allow", "findings": []}
    assert labels(mapper, "openguardrails", clean) == ["other.no_finding"]


# --- Malformed and hostile shapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "output", "message"),
    [
        ("llm-guard", {"sanitized_prompt": CANARY}, "expected results_valid"),
        ("llm-guard", {"results_valid": {"Toxicity": CANARY}}, "must be true or false"),
        ("llm-guard", {"results_valid": {CANARY + " x": False}}, "scanner class names"),
        ("llm-guard", {"results_valid": {"Toxicity": False}, "results_score": {"Toxicity": 7}}, "between -1 and 1"),
        ("llm-guard", {"is_valid": False, "scanners": {"Toxicity": -0.5}}, "no scanner has a positive"),
        ("llm-guard", [CANARY, {}], "got a list of 2"),
        ("lakera-guard", {"breakdown": []}, "flagged must be true or false"),
        ("lakera-guard", {"flagged": True, "breakdown": [{"detector_type": "pii/name", "detected": CANARY}]}, "detected"),
        ("lakera-guard", {"flagged": True, "payload": [{"detector_type": "pii/name", "start": 9, "end": 3, "text": CANARY}]}, "is after end"),
        ("prompt-guard", CANARY, "not JSON"),
        ("prompt-guard", [{"label": "INJECTION", "score": 1.5}], "between 0 and 1"),
        ("prompt-guard", [{"score": 0.5}], "has no label"),
        ("azure-prompt-shields", {"flagged": CANARY}, "expected userPromptAnalysis"),
        ("azure-prompt-shields", {"userPromptAnalysis": {"attackDetected": CANARY}}, "attackDetected"),
        ("granite-guardian", {"label": "Yes"}, "risk_name"),
        ("granite-guardian", {"risk_name": CANARY * 3, "label": "Yes"}, "not a risk name"),
        ("granite-guardian", {"risk_name": "harm", "label": CANARY}, "no Yes/No verdict"),
        ("granite-guardian", {"risk_name": "harm", "label": "No", "prob_of_risk": "high"}, "prob_of_risk"),
        ("shieldgemma", {}, "empty object"),
        ("shieldgemma", {CANARY * 3: 0.9}, "policy names"),
        ("shieldgemma", {"Harassment": {"No": 0.2}}, "probability of 'Yes'"),
        ("shieldgemma", [{"policy": "Harassment"}], "has no probability"),
        ("model-armor", {"flagged": CANARY}, "expected sanitizationResult"),
        ("model-armor", {"sanitizationResult": {"filterResults": {"rai": {"raiFilterResult": {"matchState": CANARY}}}}}, "MATCH_FOUND or NO_MATCH_FOUND"),
        ("model-armor", {"sanitizationResult": {"filterResults": {"pi_and_jailbreak": {"r": {"matchState": "MATCH_FOUND", "confidenceLevel": CANARY}}}}}, "confidenceLevel"),
        ("model-armor", {"sanitizationResult": {"filterResults": {"sdp": {"sdpFilterResult": {"inspectResult": {"matchState": "MATCH_FOUND", "findings": [{"infoType": 3}]}}}}}}, "infoType"),
        ("any-guardrail", {"explanation": CANARY}, "valid must be true or false"),
        ("any-guardrail", {"valid": False, "categories": [{"name": "x", "triggered": CANARY}]}, "triggered"),
        ("any-guardrail", {"valid": False, "score": CANARY}, "score must be a number"),
        ("openguardrails", {"decision": CANARY}, "decision must be allow or block"),
        ("openguardrails", {"decision": "block", "findings": [{"category": CANARY}]}, "dotted id"),
        ("openguardrails", {"decision": "block", "findings": [{"category": "safety.toxicity", "severity": CANARY}]}, "severity"),
        # An unhashable severity was a TypeError (a 500), not a path-named refusal.
        ("openguardrails", {"decision": "block", "findings": [{"category": "safety.toxicity", "severity": [CANARY]}]}, "severity"),
        ("openguardrails", {"decision": "block", "findings": [{"category": "safety.toxicity", "start": 5, "end": 1}]}, "is after end"),
    ],
)  # fmt: skip
def test_malformed_output_is_refused_without_quoting_it(
    detector: str, output: Any, message: str
) -> None:
    with pytest.raises(DetectorOutputError) as caught:
        read(detector, output)
    assert caught.value.message.startswith(f"{detector}: ")
    assert message in caught.value.message
    assert CANARY not in caught.value.message


@pytest.mark.parametrize(
    "detector",
    [
        "llm-guard",
        "lakera-guard",
        "prompt-guard",
        "azure-prompt-shields",
        "granite-guardian",
        "shieldgemma",
        "model-armor",
        "any-guardrail",
        "openguardrails",
        "gitleaks",
        "trufflehog",
        "aws-macie",
    ],
)
@pytest.mark.parametrize("output", [None, 42, True, "[1, 2", json.dumps([None]), [[[]]]])
def test_nonsense_is_an_invalid_argument_never_a_crash(detector: str, output: Any) -> None:
    try:
        read(detector, output)
    except DetectorOutputError as error:
        assert error.message.startswith(f"{detector}: ")
