"""Data-protection readers (Presidio, detect-secrets, Comprehend, DLP, Bedrock) and their tables."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from llama_mapper.domain.findings import DetectorReport, Span
from llama_mapper.domain.readers.base import DetectorOutputError, known_detectors, read
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import MappingTable, parse_table
from llama_mapper.domain.taxonomy import default_taxonomy

MAPPINGS = (
    Path(__file__).resolve().parents[2]
    / "services"
    / "llama_mapper"
    / "domain"
    / "catalog"
    / "mappings"
)
DETECTORS = ("presidio", "detect-secrets", "aws-comprehend", "google-dlp", "bedrock-guardrails")


def load_table(detector: str) -> MappingTable:
    doc = yaml.safe_load((MAPPINGS / f"{detector}.yaml").read_text(encoding="utf-8"))
    return parse_table(doc, default_taxonomy())


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    # Only this file's tables: the other detectors' tables are someone else's to get right.
    return RulesMapper(tables={detector: load_table(detector) for detector in DETECTORS})


def labels_by_raw(result: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in result["findings"]:
        out.setdefault(finding["source"]["raw_label"], []).append(finding["label"])
    return out


def assert_no_content(report: DetectorReport, result: dict[str, Any], *secrets: str) -> None:
    """Neither the normalized findings nor the canonical result carry the detected content."""
    dumped = repr(report) + json.dumps(result)
    for secret in secrets:
        assert secret not in dumped


def test_readers_are_registered() -> None:
    assert set(DETECTORS) <= set(known_detectors())


# --- Presidio ------------------------------------------------------------------------------------

# The analyzer's REST / to_dict() shape; the explanation is what return_decision_process=True adds.
PRESIDIO_OUTPUT = [
    {
        "entity_type": "PERSON",
        "start": 0,
        "end": 10,
        "score": 0.85,
        "analysis_explanation": None,
        "recognition_metadata": {
            "recognizer_name": "SpacyRecognizer",
            "recognizer_identifier": "SpacyRecognizer_140180382864400",
        },
    },
    {
        "entity_type": "EMAIL_ADDRESS",
        "start": 22,
        "end": 44,
        "score": 1.0,
        "analysis_explanation": {
            "recognizer": "EmailRecognizer",
            "pattern_name": "Email (Medium)",
            "pattern": "\\b...\\b",
            "original_score": 0.5,
            "score": 1.0,
            "textual_explanation": "Detected by `EmailRecognizer` using pattern `Email (Medium)`",
            "score_context_improvement": 0.5,
            "supportive_context_word": "email",
            "validation_result": True,
        },
        "recognition_metadata": {"recognizer_name": "EmailRecognizer"},
    },
    {"entity_type": "CREDIT_CARD", "start": 51, "end": 67, "score": 1.0},
    # Presidio's weak pattern without context: below the table's min_score.
    {"entity_type": "US_BANK_NUMBER", "start": 51, "end": 67, "score": 0.05},
]


def test_presidio_results_map_to_pii_and_card(mapper: RulesMapper) -> None:
    result = mapper.map("presidio", PRESIDIO_OUTPUT)
    assert labels_by_raw(result) == {
        "PERSON": ["pii.person_name"],
        "EMAIL_ADDRESS": ["pii.email_address"],
        "CREDIT_CARD": ["financial.credit_card"],
    }
    card = next(f for f in result["findings"] if f["label"] == "financial.credit_card")
    assert card["source"] == {
        "detector": "presidio",
        "raw_label": "CREDIT_CARD",
        "score": 1.0,
        "span": {"start": 51, "end": 67},
    }
    assert result["provenance"]["mapping_table_version"] == "presidio@1.1.0"
    assert not result["needs_review"]


def test_presidio_keeps_recognizer_but_not_context_word() -> None:
    report = read("presidio", json.dumps(PRESIDIO_OUTPUT))
    email = report.findings[1]
    assert email.span == Span(22, 44)
    # Exactly these: the explanation's supportive_context_word is a word of the analyzed text.
    assert email.attributes == {"recognizer": "EmailRecognizer", "pattern_name": "Email (Medium)"}


def test_presidio_empty_list_is_an_explicit_no_finding(mapper: RulesMapper) -> None:
    report = read("presidio", "[]")
    assert report.findings == () and report.explicit_no_finding
    assert mapper.map("presidio", [])["taxonomy"] == ["other.no_finding"]


def test_presidio_only_weak_findings_means_no_finding(mapper: RulesMapper) -> None:
    weak = [{"entity_type": "US_DRIVER_LICENSE", "start": 3, "end": 12, "score": 0.01}]
    assert mapper.map("presidio", weak)["taxonomy"] == ["other.no_finding"]


def test_presidio_unknown_entity_goes_to_review(mapper: RulesMapper) -> None:
    custom = [{"entity_type": "ACME_EMPLOYEE_BADGE", "start": 0, "end": 8, "score": 0.9}]
    result = mapper.map("presidio", custom)
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"entity_type": "PERSON"}, "presidio: expected a list of results, got an object"),
        ("not json", "presidio: output is not JSON"),
        ([{"start": 0, "end": 4, "score": 0.9}], "presidio: item 0 has no entity_type"),
        (
            [PRESIDIO_OUTPUT[0], {"entity_type": "PERSON", "end": 4, "score": 0.9}],
            "presidio: item 1 has no start",
        ),
        (
            [{"entity_type": "PERSON", "start": 9, "end": 4, "score": 0.9}],
            "presidio: item 0.start (9) is after end (4)",
        ),
        (
            [{"entity_type": "PERSON", "start": -1, "end": 4, "score": 0.9}],
            "presidio: item 0.start must be a non-negative integer",
        ),
        (
            [{"entity_type": "PERSON", "start": 0, "end": 4, "score": 1.5}],
            "presidio: item 0.score must be a number between 0 and 1, got 1.5",
        ),
        (
            [{"entity_type": "PERSON", "start": 0, "end": 4, "score": "high"}],
            "presidio: item 0.score must be a number between 0 and 1, got a string",
        ),
        (["PERSON"], "presidio: item 0 must be an object, got a string"),
    ],
)
def test_presidio_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError, match="^" + _re(message)):
        read("presidio", output)


# --- detect-secrets ------------------------------------------------------------------------------

HASH_AWS = "25910f981e85ca04baf359199dd0bd4a3ae738b6"
HASH_KEYWORD = "b7e6683c1d22a12e920c25bb6fe4e62ab340408b"
# `detect-secrets scan` output, as detect_secrets.core.baseline.format_for_output writes it.
DETECT_SECRETS_REPORT = {
    "version": "1.5.0",
    "plugins_used": [
        {"name": "AWSKeyDetector"},
        {"name": "KeywordDetector", "keyword_exclude": ""},
    ],
    "filters_used": [{"path": "detect_secrets.filters.heuristic.is_likely_id_string"}],
    "results": {
        "config/settings.py": [
            {
                "type": "AWS Access Key",
                "filename": "config/settings.py",
                "hashed_secret": HASH_AWS,
                "is_verified": False,
                "line_number": 2,
            },
            {
                "type": "Secret Keyword",
                "filename": "config/settings.py",
                "hashed_secret": HASH_KEYWORD,
                "is_verified": False,
                "line_number": 3,
            },
        ],
        "deploy/id_rsa": [
            {
                "type": "Private Key",
                "filename": "deploy/id_rsa",
                "hashed_secret": "be4fc4886bd949b369d5e092eb87494f12e57e5b",
                "is_verified": False,
                "line_number": 1,
            }
        ],
    },
    "generated_at": "2026-11-25T15:08:26Z",
}


def test_detect_secrets_report_maps_each_secret(mapper: RulesMapper) -> None:
    result = mapper.map("detect-secrets", DETECT_SECRETS_REPORT)
    assert labels_by_raw(result) == {
        "AWS Access Key": ["credentials.api_key"],
        "Secret Keyword": ["credentials.other"],
        "Private Key": ["credentials.private_key"],
    }
    report = read("detect-secrets", DETECT_SECRETS_REPORT)
    assert report.findings[0].attributes == {
        "filename": "config/settings.py",
        "line_number": 2,
        "is_verified": False,
    }
    assert_no_content(report, result, HASH_AWS, HASH_KEYWORD)


def test_detect_secrets_accepts_the_bare_results_map() -> None:
    bare = json.dumps(DETECT_SECRETS_REPORT["results"])
    assert (
        read("detect-secrets", bare).findings
        == read("detect-secrets", DETECT_SECRETS_REPORT).findings
    )


def test_detect_secrets_empty_results_are_an_explicit_no_finding(mapper: RulesMapper) -> None:
    empty = {**DETECT_SECRETS_REPORT, "results": {}}
    assert read("detect-secrets", empty).explicit_no_finding
    assert read("detect-secrets", {}).explicit_no_finding
    assert mapper.map("detect-secrets", empty)["taxonomy"] == ["other.no_finding"]


def test_detect_secrets_audited_false_positive_is_no_finding(mapper: RulesMapper) -> None:
    audited = copy.deepcopy(DETECT_SECRETS_REPORT["results"])
    for secrets in audited.values():
        for secret in secrets:
            secret["is_secret"] = False
    audited["config/settings.py"][0]["is_secret"] = True
    result = mapper.map("detect-secrets", audited)
    assert result["taxonomy"] == ["credentials.api_key"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([], "detect-secrets: expected a JSON object, got a list"),
        ({"version": "1.5.0"}, "detect-secrets: report has no results"),
        ({"version": "1.5.0", "results": []}, "detect-secrets: results must be an object"),
        ({"a.py": {"type": "Private Key"}}, "detect-secrets: results for a file must be a list"),
        ({"a.py": [{"line_number": 3}]}, "detect-secrets: secret 0 of a file has no type"),
        (
            {"a.py": [{"type": "Private Key", "line_number": "3"}]},
            "detect-secrets: secret 0 of a file.line_number must be a non-negative integer",
        ),
        (
            {"a.py": [{"type": "Private Key", "is_verified": "no"}]},
            "detect-secrets: secret 0 of a file.is_verified must be true or false",
        ),
    ],
)
def test_detect_secrets_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError, match="^" + _re(message)):
        read("detect-secrets", output)


# --- Amazon Comprehend ---------------------------------------------------------------------------

# DetectPiiEntities example of the Comprehend developer guide ("Hello Paulo Santos. The latest
# statement for your credit card account 1111-0000-1111-0000 was mailed to 123 Any Street, ...").
COMPREHEND_ENTITIES = {
    "Entities": [
        {"Score": 0.9999669790267944, "Type": "NAME", "BeginOffset": 6, "EndOffset": 18},
        {
            "Score": 0.8905550241470337,
            "Type": "CREDIT_DEBIT_NUMBER",
            "BeginOffset": 69,
            "EndOffset": 88,
        },
        {"Score": 0.9999889731407166, "Type": "ADDRESS", "BeginOffset": 103, "EndOffset": 138},
        # Below the table's 0.5.
        {"Score": 0.31, "Type": "DATE_TIME", "BeginOffset": 140, "EndOffset": 150},
    ],
    "ResponseMetadata": {"RequestId": "4c1f0e2a", "HTTPStatusCode": 200},
}
# ContainsPiiEntities example of the same guide.
COMPREHEND_LABELS = {
    "Labels": [
        {"Name": "NAME", "Score": 0.9149109721183777},
        {"Name": "CREDIT_DEBIT_NUMBER", "Score": 0.5698626637458801},
        {"Name": "ADDRESS", "Score": 0.9951046109199524},
    ]
}


def test_comprehend_detect_pii_entities_maps_with_spans(mapper: RulesMapper) -> None:
    result = mapper.map("aws-comprehend", COMPREHEND_ENTITIES)
    assert labels_by_raw(result) == {
        "NAME": ["pii.person_name"],
        "CREDIT_DEBIT_NUMBER": ["financial.credit_card"],
        "ADDRESS": ["pii.postal_address"],
    }
    spans = {f["source"]["raw_label"]: f["source"]["span"] for f in result["findings"]}
    assert spans["CREDIT_DEBIT_NUMBER"] == {"start": 69, "end": 88}


def test_comprehend_contains_pii_entities_maps_without_spans(mapper: RulesMapper) -> None:
    report = read("aws-comprehend", json.dumps(COMPREHEND_LABELS))
    assert [f.span for f in report.findings] == [None, None, None]
    assert {f.attributes["api"] for f in report.findings} == {"ContainsPiiEntities"}
    result = mapper.map("aws-comprehend", COMPREHEND_LABELS)
    assert result["taxonomy"] == ["financial.credit_card", "pii.person_name", "pii.postal_address"]


def test_comprehend_empty_entities_are_an_explicit_no_finding(mapper: RulesMapper) -> None:
    assert read("aws-comprehend", {"Entities": []}).explicit_no_finding
    assert mapper.map("aws-comprehend", {"Labels": []})["taxonomy"] == ["other.no_finding"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([], "aws-comprehend: expected a JSON object, got a list"),
        ({"Items": []}, "aws-comprehend: expected Entities (DetectPiiEntities) or Labels"),
        (
            {"Entities": [], "Labels": []},
            "aws-comprehend: a response has either Entities or Labels",
        ),
        ({"Entities": {}}, "aws-comprehend: Entities must be a list, got an object"),
        ({"Entities": [{"Score": 0.9}]}, "aws-comprehend: Entities[0] has no Type"),
        ({"Labels": [{"Score": 0.9}]}, "aws-comprehend: Labels[0] has no Name"),
        (
            {"Entities": [{"Type": "NAME", "Score": 7}]},
            "aws-comprehend: Entities[0].Score must be a number between 0 and 1, got 7",
        ),
        (
            {"Entities": [{"Type": "NAME", "BeginOffset": 9, "EndOffset": 3}]},
            "aws-comprehend: Entities[0].BeginOffset (9) is after EndOffset (3)",
        ),
        (
            {"Entities": [{"Type": "NAME", "BeginOffset": 3}]},
            "aws-comprehend: Entities[0].EndOffset must be a non-negative integer, got null",
        ),
    ],
)
def test_comprehend_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError, match="^" + _re(message)):
        read("aws-comprehend", output)


# --- Google Cloud DLP ----------------------------------------------------------------------------

DLP_QUOTE_EMAIL = "jbeck@example.org"
DLP_QUOTE_PHONE = "(206) 555-0123"
# content.inspect response (REST JSON: int64 offsets as strings, a 0 start omitted) with
# includeQuote set, so that the test can check the quote never leaves the reader.
DLP_RESPONSE = {
    "result": {
        "findings": [
            {
                "quote": DLP_QUOTE_EMAIL,
                "infoType": {
                    "name": "EMAIL_ADDRESS",
                    "sensitivityScore": {"score": "SENSITIVITY_MODERATE"},
                },
                "likelihood": "LIKELY",
                "location": {
                    "byteRange": {"end": "17"},
                    "codepointRange": {"end": "17"},
                },
                "createTime": "2026-11-25T15:00:00.123Z",
                "findingId": "2026-11-25150000123456-1234567890",
            },
            {
                "quote": DLP_QUOTE_PHONE,
                "infoType": {"name": "PHONE_NUMBER"},
                "likelihood": "VERY_LIKELY",
                "location": {
                    "byteRange": {"start": "32", "end": "46"},
                    "codepointRange": {"start": "30", "end": "44"},
                },
            },
            {
                "quote": "Seattle",
                "infoType": {"name": "LOCATION"},
                "likelihood": "UNLIKELY",
                "location": {"codepointRange": {"start": "50", "end": "57"}},
            },
        ]
    }
}


def test_dlp_inspect_response_maps_and_applies_likelihood(mapper: RulesMapper) -> None:
    report = read("google-dlp", json.dumps(DLP_RESPONSE))
    email, phone, location = report.findings
    assert (email.severity, email.span, email.attributes) == (
        4,
        Span(0, 17),
        {"likelihood": "LIKELY", "sensitivity": "SENSITIVITY_MODERATE", "span_unit": "codepoint"},
    )
    # Codepoint offsets win over byte offsets: spans index characters.
    assert phone.span == Span(30, 44) and phone.severity == 5
    assert location.severity == 2
    result = mapper.map("google-dlp", DLP_RESPONSE)
    # UNLIKELY is below DLP's default minimum, POSSIBLE.
    assert result["taxonomy"] == ["pii.email_address", "pii.phone_number"]
    assert_no_content(report, result, DLP_QUOTE_EMAIL, DLP_QUOTE_PHONE, "Seattle")


def test_dlp_unspecified_likelihood_reads_as_possible(mapper: RulesMapper) -> None:
    # Enum value 0 is "Default value; same as POSSIBLE"; proto3 JSON may omit it altogether.
    findings = [
        {"infoType": {"name": "US_SOCIAL_SECURITY_NUMBER"}, "likelihood": "LIKELIHOOD_UNSPECIFIED"},
        {"infoType": {"name": "CREDIT_CARD_NUMBER"}},
    ]
    report = read("google-dlp", findings)
    assert [f.severity for f in report.findings] == [3, 3]
    assert mapper.map("google-dlp", findings)["taxonomy"] == [
        "financial.credit_card",
        "pii.national_id",
    ]


def test_dlp_accepts_inspect_result_list_and_snake_case() -> None:
    inspect_result = DLP_RESPONSE["result"]
    assert read("google-dlp", inspect_result).findings == read("google-dlp", DLP_RESPONSE).findings
    snake = [
        {
            "info_type": {"name": "IBAN_CODE"},
            "likelihood": 5,
            "location": {"byte_range": {"start": 4, "end": 26}},
        }
    ]
    (finding,) = read("google-dlp", snake).findings
    assert (finding.raw_label, finding.severity, finding.span) == ("IBAN_CODE", 5, Span(4, 26))
    assert finding.attributes["span_unit"] == "byte"


def test_dlp_no_findings_is_an_explicit_no_finding(mapper: RulesMapper) -> None:
    # An InspectResult without findings serializes as {}.
    assert read("google-dlp", {"result": {}}).explicit_no_finding
    assert read("google-dlp", {"result": {"findings": []}}).explicit_no_finding
    assert mapper.map("google-dlp", [])["taxonomy"] == ["other.no_finding"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"results": []}, "google-dlp: expected an InspectContentResponse (result)"),
        ({"result": []}, "google-dlp: result must be an object, got a list"),
        ({"result": {"findings": {}}}, "google-dlp: findings must be a list, got an object"),
        ([{"likelihood": "LIKELY"}], "google-dlp: findings[0] has no infoType"),
        ([{"infoType": {}}], "google-dlp: findings[0].infoType.name must be a non-empty string"),
        (
            [{"infoType": {"name": "AGE"}, "likelihood": "SURE"}],
            "google-dlp: findings[0].likelihood must be one of LIKELIHOOD_UNSPECIFIED",
        ),
        (
            [{"infoType": {"name": "AGE"}, "likelihood": 9}],
            "google-dlp: findings[0].likelihood must be 0-5, got 9",
        ),
        (
            [{"infoType": {"name": "AGE"}, "location": {"byteRange": {"start": "x", "end": "3"}}}],
            "google-dlp: findings[0].location.byteRange.start must be a non-negative integer",
        ),
        (
            [{"infoType": {"name": "AGE"}, "location": {"codepointRange": {"start": 5, "end": 3}}}],
            "google-dlp: findings[0].location.codepointRange.start (5) is after end (3)",
        ),
    ],
)
def test_dlp_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError, match="^" + _re(message)):
        read("google-dlp", output)


# --- Amazon Bedrock Guardrails -------------------------------------------------------------------

BEDROCK_MATCH_EMAIL = "maria.garcia@example.com"
BEDROCK_MATCH_WORD = "frobnicate"
BEDROCK_MATCH_SWEAR = "darn"
BEDROCK_MATCH_REGEX = "EMP-884213"
# ApplyGuardrail response in the shape of the Bedrock Runtime API reference.
BEDROCK_APPLY = {
    "usage": {
        "topicPolicyUnits": 1,
        "contentPolicyUnits": 1,
        "wordPolicyUnits": 1,
        "sensitiveInformationPolicyUnits": 1,
        "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0,
    },
    "action": "GUARDRAIL_INTERVENED",
    "outputs": [{"text": "Sorry, the model cannot answer this question."}],
    "assessments": [
        {
            "topicPolicy": {
                "topics": [{"name": "Investment advice", "type": "DENY", "action": "BLOCKED"}]
            },
            "contentPolicy": {
                "filters": [
                    {
                        "type": "HATE",
                        "confidence": "HIGH",
                        "filterStrength": "HIGH",
                        "action": "BLOCKED",
                    },
                    {"type": "PROMPT_ATTACK", "confidence": "MEDIUM", "action": "BLOCKED"},
                    {"type": "VIOLENCE", "confidence": "NONE", "action": "NONE"},
                    {
                        "type": "SEXUAL",
                        "confidence": "LOW",
                        "action": "NONE",
                        "detected": False,
                    },
                ]
            },
            "wordPolicy": {
                "customWords": [{"match": BEDROCK_MATCH_WORD, "action": "BLOCKED"}],
                "managedWordLists": [
                    {"match": BEDROCK_MATCH_SWEAR, "type": "PROFANITY", "action": "BLOCKED"}
                ],
            },
            "sensitiveInformationPolicy": {
                "piiEntities": [
                    {"match": BEDROCK_MATCH_EMAIL, "type": "EMAIL", "action": "ANONYMIZED"}
                ],
                "regexes": [
                    {
                        "name": "employee id",
                        "match": BEDROCK_MATCH_REGEX,
                        "regex": "EMP-\\d{6}",
                        "action": "BLOCKED",
                    }
                ],
            },
            "invocationMetrics": {"guardrailProcessingLatency": 214},
        }
    ],
}


def test_bedrock_apply_guardrail_maps_every_policy(mapper: RulesMapper) -> None:
    result = mapper.map("bedrock-guardrails", BEDROCK_APPLY)
    assert labels_by_raw(result) == {
        "topic:DENY": ["policy.off_topic"],
        "content:HATE": ["hate.other"],
        "content:PROMPT_ATTACK": ["security.prompt_injection"],
        "word:custom": ["policy.other"],
        "word:PROFANITY": ["toxicity.profanity"],
        "pii:EMAIL": ["pii.email_address"],
        "regex:custom": ["pii.other"],
    }
    report = read("bedrock-guardrails", BEDROCK_APPLY)
    by_label = {f.raw_label: f for f in report.findings}
    assert by_label["topic:DENY"].attributes == {
        "policy": "topicPolicy",
        "topic": "Investment advice",
        "action": "BLOCKED",
    }
    assert by_label["content:HATE"].severity == 3
    assert by_label["content:HATE"].attributes["filter_strength"] == "HIGH"
    # Confidence NONE is read, then dropped by the table's min_severity; detected: false is not
    # a finding at all.
    assert by_label["content:VIOLENCE"].severity == 0
    assert "content:SEXUAL" not in by_label
    assert by_label["regex:custom"].attributes["regex_name"] == "employee id"
    assert_no_content(
        report,
        result,
        BEDROCK_MATCH_EMAIL,
        BEDROCK_MATCH_WORD,
        BEDROCK_MATCH_SWEAR,
        BEDROCK_MATCH_REGEX,
        "EMP-\\d{6}",
        "Sorry, the model",
    )


def test_bedrock_action_none_without_assessments_is_no_finding(mapper: RulesMapper) -> None:
    quiet = {"action": "NONE", "assessments": [], "outputs": []}
    assert read("bedrock-guardrails", json.dumps(quiet)).explicit_no_finding
    assert mapper.map("bedrock-guardrails", quiet)["taxonomy"] == ["other.no_finding"]


def test_bedrock_unexplained_intervention_goes_to_review(mapper: RulesMapper) -> None:
    result = mapper.map(
        "bedrock-guardrails", {"action": "GUARDRAIL_INTERVENED", "assessments": [{}]}
    )
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]


def test_bedrock_converse_trace_marks_input_and_output(mapper: RulesMapper) -> None:
    converse = {
        "output": {"message": {"role": "assistant", "content": [{"text": "blocked"}]}},
        "stopReason": "guardrail_intervened",
        "trace": {
            "guardrail": {
                "modelOutput": ['{"text": "' + BEDROCK_MATCH_EMAIL + '"}'],
                "inputAssessment": {
                    "gr-1abc": {
                        "contentPolicy": {
                            "filters": [
                                {"type": "INSULTS", "confidence": "HIGH", "action": "BLOCKED"}
                            ]
                        }
                    }
                },
                "outputAssessments": {
                    "gr-1abc": [
                        {
                            "sensitiveInformationPolicy": {
                                "piiEntities": [
                                    {
                                        "match": BEDROCK_MATCH_EMAIL,
                                        "type": "EMAIL",
                                        "action": "BLOCKED",
                                    }
                                ],
                                "regexes": [],
                            }
                        }
                    ]
                },
            }
        },
    }
    report = read("bedrock-guardrails", converse)
    assert [(f.raw_label, f.attributes["source"]) for f in report.findings] == [
        ("content:INSULTS", "input"),
        ("pii:EMAIL", "output"),
    ]
    result = mapper.map("bedrock-guardrails", converse)
    assert result["taxonomy"] == ["pii.email_address", "toxicity.insult"]
    assert_no_content(report, result, BEDROCK_MATCH_EMAIL)


def test_bedrock_invoke_model_trace_and_grounding(mapper: RulesMapper) -> None:
    body = {
        "amazon-bedrock-guardrailAction": "INTERVENED",
        "amazon-bedrock-trace": {
            "guardrail": {
                "input": {"gr-1abc": {"topicPolicy": {"topics": []}}},
                "outputs": [
                    {
                        "gr-1abc": {
                            "contextualGroundingPolicy": {
                                "filters": [
                                    {
                                        "type": "GROUNDING",
                                        "threshold": 0.75,
                                        "score": 0.12,
                                        "action": "BLOCKED",
                                    },
                                    {
                                        "type": "RELEVANCE",
                                        "threshold": 0.5,
                                        "score": 0.97,
                                        "action": "NONE",
                                    },
                                ]
                            }
                        }
                    }
                ],
            }
        },
    }
    report = read("bedrock-guardrails", body)
    (grounding,) = report.findings
    assert grounding.raw_label == "grounding:GROUNDING"
    assert grounding.attributes["grounding_score"] == pytest.approx(0.12)
    assert mapper.map("bedrock-guardrails", body)["taxonomy"] == ["misinformation.general"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ([], "bedrock-guardrails: expected a JSON object, got a list"),
        ({"verdict": "ok"}, "bedrock-guardrails: expected an ApplyGuardrail response"),
        ({"action": "MAYBE"}, "bedrock-guardrails: action must be NONE or GUARDRAIL_INTERVENED"),
        (
            {"action": "NONE", "assessments": {}},
            "bedrock-guardrails: assessments must be a list, got an object",
        ),
        (
            {"action": "NONE", "assessments": [{"contentPolicy": {"filters": {}}}]},
            "bedrock-guardrails: assessments[0].contentPolicy.filters must be a list",
        ),
        (
            {
                "action": "NONE",
                "assessments": [{"contentPolicy": {"filters": [{"confidence": "HIGH"}]}}],
            },
            "bedrock-guardrails: assessments[0].contentPolicy.filters[0] has no type",
        ),
        (
            {
                "action": "NONE",
                "assessments": [
                    {"contentPolicy": {"filters": [{"type": "HATE", "confidence": "VERY"}]}}
                ],
            },
            "bedrock-guardrails: assessments[0].contentPolicy.filters[0].confidence must be one of",
        ),
        (
            {"action": "NONE", "assessments": [{"topicPolicy": {"topics": [{"type": "DENY"}]}}]},
            "bedrock-guardrails: assessments[0].topicPolicy.topics[0] has no name",
        ),
        (
            {"amazon-bedrock-guardrailAction": "BLOCKED"},
            "bedrock-guardrails: amazon-bedrock-guardrailAction must be NONE or INTERVENED",
        ),
    ],
)
def test_bedrock_malformed_output_is_rejected(output: Any, message: str) -> None:
    with pytest.raises(DetectorOutputError, match="^" + _re(message)):
        read("bedrock-guardrails", output)


# --- tables against the vendors' enumerations ---------------------------------------------------


def test_detect_secrets_table_covers_every_plugin() -> None:
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    shipped = set(get_mapping_from_secret_type_to_class())
    assert shipped == set(load_table("detect-secrets").entries)


def test_comprehend_and_bedrock_tables_cover_the_api_enums() -> None:
    import botocore.session

    session = botocore.session.get_session()
    comprehend = session.get_service_model("comprehend")
    # ALL is a request-side value (redact everything), never a detected type.
    pii_types = set(comprehend.shape_for("PiiEntityType").enum) - {"ALL"}
    assert pii_types == set(load_table("aws-comprehend").entries)

    runtime = session.get_service_model("bedrock-runtime")
    expected = {f"pii:{t}" for t in runtime.shape_for("GuardrailPiiEntityType").enum}
    expected |= {f"content:{t}" for t in runtime.shape_for("GuardrailContentFilterType").enum}
    expected |= {f"word:{t}" for t in runtime.shape_for("GuardrailManagedWordType").enum}
    expected |= {f"topic:{t}" for t in runtime.shape_for("GuardrailTopicType").enum}
    expected |= {
        f"grounding:{t}" for t in runtime.shape_for("GuardrailContextualGroundingFilterType").enum
    }
    expected |= {"word:custom", "regex:custom"}
    assert expected == set(load_table("bedrock-guardrails").entries)


def test_dlp_table_keys_are_infotype_names() -> None:
    # infoType names are upper snake case; a typo with a space or lower case would never match.
    for name in load_table("google-dlp").entries:
        assert name == name.upper() and " " not in name, name


def _re(text: str) -> str:
    import re

    return re.escape(text)
