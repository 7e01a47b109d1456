"""Secret and data scanners (Gitleaks, TruffleHog, Amazon Macie): readers and their tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llama_mapper.domain.readers.base import DetectorOutputError, read
from llama_mapper.domain.readers.trufflehog import UNVERIFIED, VERIFICATION_UNKNOWN, VERIFIED
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import default_tables

# A value planted in hostile payloads: it must never be quoted back in an error message.
CANARY = "CANARY-sk_live_FAKE0000"


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    return RulesMapper()


def finding_sources(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["source"]["raw_label"]: f["source"] for f in result["findings"]}


# --- Gitleaks -------------------------------------------------------------------------------------


def gitleaks_finding(rule: str, **extra: Any) -> dict[str, Any]:
    return {
        "RuleID": rule,
        "Description": "",
        "StartLine": 2,
        "EndLine": 2,
        "StartColumn": 1,
        "EndColumn": 20,
        "Match": f"key = {CANARY}",
        "Secret": CANARY,
        "File": "a.env",
        "Commit": "",
        "Entropy": 4.2,
        "Author": "",
        "Email": "",
        "Date": "",
        "Message": "",
        "Tags": [],
        "Fingerprint": "a.env:x:2",
        **extra,
    }


def test_gitleaks_keeps_location_and_rule_not_the_secret(mapper: RulesMapper) -> None:
    report = read("gitleaks", [gitleaks_finding("slack-bot-token", Tags=["slack", "key"])])
    [finding] = report.findings
    assert finding.raw_label == "slack-bot-token"
    assert finding.attributes == {
        "file": "a.env",
        "start_line": 2,
        "end_line": 2,
        "start_column": 1,
        "end_column": 20,
        "tags": ["key", "slack"],
    }
    assert CANARY not in repr(report)
    assert mapper.map("gitleaks", [gitleaks_finding("jwt")])["taxonomy"] == [
        "credentials.access_token"
    ]


def test_gitleaks_empty_report_is_no_finding(mapper: RulesMapper) -> None:
    assert read("gitleaks", "[]").explicit_no_finding
    assert mapper.map("gitleaks", [])["taxonomy"] == ["other.no_finding"]


def test_gitleaks_custom_rule_goes_to_review(mapper: RulesMapper) -> None:
    result = mapper.map("gitleaks", [gitleaks_finding("acme-internal-token-v2")])
    assert result["taxonomy"] == ["other.unknown"] and result["needs_review"]


def test_gitleaks_table_covers_the_default_config_families() -> None:
    entries = default_tables()["gitleaks"].entries
    assert len(entries) >= 222
    for rule, label in [
        ("aws-access-token", "credentials.api_key"),
        ("github-pat", "credentials.access_token"),
        ("private-key", "credentials.private_key"),
        ("generic-api-key", "credentials.other"),
        ("slack-webhook-url", "credentials.access_token"),
        ("stripe-access-token", "credentials.api_key"),
        ("gcp-api-key", "credentials.api_key"),
        ("jwt", "credentials.access_token"),
        ("password-in-url", "credentials.connection_string"),
    ]:
        assert label in entries[rule].labels, rule
    assert all(label.startswith("credentials.") for e in entries.values() for label in e.labels)


# --- TruffleHog -----------------------------------------------------------------------------------


def trufflehog_result(name: str, verified: bool, **extra: Any) -> dict[str, Any]:
    return {
        "SourceMetadata": {"Data": {"Git": {"commit": "abc", "file": "k", "email": CANARY}}},
        "SourceID": 1,
        "SourceType": 16,
        "SourceName": "trufflehog - git",
        "DetectorType": 2,
        "DetectorName": name,
        "DecoderName": "PLAIN",
        "Verified": verified,
        "Raw": CANARY,
        "RawV2": CANARY,
        "Redacted": CANARY,
        "ExtraData": {"account": CANARY},
        "StructuredData": None,
        **extra,
    }


def test_trufflehog_verification_is_the_severity(mapper: RulesMapper) -> None:
    lines = "\n".join(
        json.dumps(r)
        for r in (
            trufflehog_result("AWS", True),
            trufflehog_result("Stripe", False, VerificationError="timeout"),
            trufflehog_result("Github", False),
        )
    )
    report = read("trufflehog", lines)
    severities = {f.raw_label: (f.severity, f.attributes["verified"]) for f in report.findings}
    assert severities == {
        "AWS": (VERIFIED, True),
        "Stripe": (VERIFICATION_UNKNOWN, False),
        "Github": (UNVERIFIED, False),
    }
    result = mapper.map("trufflehog", lines)
    sources = finding_sources(result)
    assert sources["AWS"]["severity"] == 2 and sources["Github"]["severity"] == 0
    assert CANARY not in json.dumps(result) + repr(report)


def test_trufflehog_verified_only_is_one_threshold_away() -> None:
    # The table comment's advice, tested: min_severity 2 keeps exactly the live secrets.
    from llama_mapper.domain.tables import MappingTable

    table = default_tables()["trufflehog"]
    strict = MappingTable(table.detector, table.version, table.entries, min_severity=VERIFIED)
    mapper = RulesMapper(tables={"trufflehog": strict})
    both = [trufflehog_result("AWS", True), trufflehog_result("Slack", False)]
    result = mapper.map("trufflehog", both)
    assert [f["source"]["raw_label"] for f in result["findings"]] == ["AWS"]


def test_trufflehog_accepts_one_object_a_list_and_blank_lines() -> None:
    one = trufflehog_result("PrivateKey", False)
    assert read("trufflehog", one) == read("trufflehog", [one])
    assert read("trufflehog", "\n" + json.dumps(one) + "\n\n") == read("trufflehog", one)
    assert read("trufflehog", "").explicit_no_finding


def test_trufflehog_drops_a_clone_url_with_a_token() -> None:
    result = trufflehog_result("AWS", True)
    result["SourceMetadata"] = {
        "Data": {"Git": {"repository": f"https://x:{CANARY}@github.com/o/r", "file": "k"}}
    }
    [finding] = read("trufflehog", result).findings
    assert "repository" not in finding.attributes and finding.attributes["file"] == "k"


# --- Amazon Macie ---------------------------------------------------------------------------------


def test_macie_event_and_policy_findings(mapper: RulesMapper) -> None:
    event = {
        "detail-type": "Macie Finding",
        "source": "aws.macie",
        "detail": {
            "type": "SensitiveData:S3Object/Credentials",
            "severity": {"score": 3},
            "classificationDetails": {
                "result": {
                    "sensitiveData": [
                        {
                            "category": "CREDENTIALS",
                            "detections": [{"type": "OPENSSH_PRIVATE_KEY", "count": 1}],
                        }
                    ]
                }
            },
        },
    }
    result = mapper.map("aws-macie", event)
    assert result["taxonomy"] == ["credentials.private_key"]
    assert result["findings"][0]["source"]["severity"] == 3
    policy = {"category": "POLICY", "type": "Policy:IAMUser/S3BucketPublic"}
    assert mapper.map("aws-macie", policy)["taxonomy"] == ["other.unknown"]


def test_macie_custom_identifier_keeps_its_name() -> None:
    finding = {
        "classificationDetails": {
            "result": {
                "customDataIdentifiers": {"detections": [{"name": "employee-id", "count": 4}]}
            }
        }
    }
    [f] = read("aws-macie", finding).findings
    assert f.raw_label == "CUSTOM_IDENTIFIER"
    assert f.attributes == {
        "category": "CUSTOM_IDENTIFIER",
        "count": 4,
        "custom_identifier": "employee-id",
    }


# --- Malformed and hostile shapes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("detector", "output", "message"),
    [
        ("gitleaks", {"Leaks": CANARY}, "RuleID"),
        ("gitleaks", CANARY, "not JSON"),
        ("gitleaks", [{"RuleID": ""}], "RuleID must be a non-empty string"),
        ("gitleaks", [{"RuleID": "jwt", "StartLine": -1}], "StartLine"),
        ("gitleaks", [{"RuleID": "jwt", "Tags": [CANARY, 3]}], "Tags"),
        ("gitleaks", [[CANARY]], "must be an object"),
        ("trufflehog", {"Raw": CANARY}, "DetectorName"),
        ("trufflehog", f'{{"DetectorName": "AWS"}}\n{CANARY}', "line 2 is not JSON"),
        ("trufflehog", {"DetectorName": "AWS", "Verified": "yes"}, "Verified"),
        ("trufflehog", {"DetectorName": 7}, "DetectorName must be a non-empty string"),
        ("trufflehog", {"DetectorName": "AWS", "VerificationError": {"x": CANARY}}, "VerificationError"),
        ("trufflehog", b"\xff\xfe", "UTF-8"),
        ("aws-macie", {"classificationDetails": {"result": {"sensitiveData": CANARY}}}, "list"),
        ("aws-macie", {"classificationDetails": {"result": {"sensitiveData": [{"category": "X", "detections": [{"type": 5}]}]}}}, "type"),
        ("aws-macie", {"severity": {"score": 9}, "type": "x"}, "severity.score"),
        ("aws-macie", {"classificationDetails": {"result": {"customDataIdentifiers": {"detections": [{"count": -1}]}}}}, "count"),
        ("aws-macie", CANARY, "not JSON"),
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
