"""The rules mapper's decisions: exact table match, alias match, thresholds, unknown, no finding."""

import pytest

from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.findings import DetectorReport, NormalizedFinding, Span
from llama_mapper.domain.rules import UNKNOWN_CONFIDENCE, RulesMapper
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.tables import (
    ALIAS_CONFIDENCE,
    EXACT_CONFIDENCE,
    VOCABULARY_CONFIDENCE,
    parse_table,
)
from llama_mapper.domain.taxonomy import default_taxonomy

TABLE = {
    "detector": "acme",
    "version": "2.1.0",
    "min_score": 0.5,
    "labels": {
        "EMAIL": ["pii.email_address"],
        "CARD": {"labels": ["financial.credit_card"], "min_score": 0.8},
        "THREAT_HARASS": ["toxicity.harassment", "toxicity.threat"],
        "HATE": {"labels": "hate.other", "min_severity": 2},
    },
}


@pytest.fixture
def mapper():
    taxonomy = default_taxonomy()
    return RulesMapper(taxonomy, {"acme": parse_table(TABLE, taxonomy)})


def report(*findings, explicit_no_finding=False):
    return DetectorReport("acme", tuple(findings), explicit_no_finding)


def finding(raw, score=None, severity=None, span=None):
    return NormalizedFinding("acme", raw, score=score, severity=severity, span=span)


def test_exact_match(mapper):
    result = mapper.map_report(report(finding("EMAIL", 0.9, span=Span(0, 9))), "req-1")
    validator("mapper-output").validate(result)
    assert result["taxonomy"] == ["pii.email_address"]
    [item] = result["findings"]
    assert item["method"] == "rule"
    assert item["confidence"] == EXACT_CONFIDENCE
    assert item["source"] == {
        "detector": "acme",
        "raw_label": "EMAIL",
        "score": 0.9,
        "span": {"start": 0, "end": 9},
    }
    assert result["provenance"] == {
        "taxonomy_version": "1.0.0",
        "request_id": "req-1",
        "mapping_table_version": "acme@2.1.0",
    }
    assert result["needs_review"] is False


def test_many_to_many(mapper):
    result = mapper.map_report(report(finding("THREAT_HARASS", 0.7)))
    assert result["taxonomy"] == ["toxicity.harassment", "toxicity.threat"]
    assert len(result["findings"]) == 2


def test_thresholds_drop_findings(mapper):
    # The table default (0.5), an entry override (0.8) and a severity floor all apply.
    result = mapper.map_report(
        report(finding("EMAIL", 0.4), finding("CARD", 0.79), finding("HATE", severity=1))
    )
    assert result["taxonomy"] == ["other.no_finding"]
    kept = mapper.map_report(report(finding("CARD", 0.8), finding("HATE", severity=2)))
    assert kept["taxonomy"] == ["financial.credit_card", "hate.other"]


def test_alias_match_after_normalization(mapper):
    result = mapper.map_report(report(finding("SocialSecurityNo", 0.9)))
    [item] = result["findings"]
    assert item["label"] == "pii.national_id"
    assert item["method"] == "rule"
    assert item["confidence"] == ALIAS_CONFIDENCE


def test_vocabulary_tier_normalizes_and_borrows_unanimous_vendor_labels():
    taxonomy = default_taxonomy()
    other = {
        "detector": "other-vendor",
        "labels": {
            "NATIONAL_ID": ["pii.national_id"],
            "MIXED": ["toxicity.insult"],
            "SECRET": {"labels": ["credentials.other"], "min_score": 0.95},
        },
    }
    third = {"detector": "third", "labels": {"MIXED": ["toxicity.harassment"]}}
    mapper = RulesMapper(
        taxonomy,
        {t["detector"]: parse_table(t, taxonomy) for t in (TABLE, other, third)},
    )
    # The detector's own table, written another way; its thresholds still apply.
    [own] = mapper.map_report(report(finding("threat-harass", 0.9)))["findings"][:1]
    assert own["label"] == "toxicity.harassment" and own["confidence"] == VOCABULARY_CONFIDENCE
    assert mapper.map_report(report(finding("card", 0.7)))["taxonomy"] == ["other.no_finding"]
    # Another vendor's word; a subcategory name one category owns.
    for raw, label in [("nationalId", "pii.national_id"), ("Jailbreak", "security.jailbreak")]:
        [item] = mapper.map_report(report(finding(raw, 0.9)))["findings"]
        assert (item["label"], item["method"]) == (label, "rule")
        assert not item.get("needs_review")
    # Vendors disagree, or the word is a subcategory of several categories: no guess.
    for raw in ("mixed", "other", "general"):
        [item] = mapper.map_report(report(finding(raw, 0.9)))["findings"]
        assert item["label"] == "other.unknown", raw


@pytest.mark.parametrize("raw", ["nontoxic", "EMAIL_COUNT", "zzz_unheard_of"])
def test_unknown_label_is_other_unknown_never_invented(mapper, raw):
    result = mapper.map_report(report(finding(raw, 0.99)))
    [item] = result["findings"]
    assert item["label"] == "other.unknown"
    assert item["method"] == "fallback"
    assert item["needs_review"] is True
    assert item["confidence"] == UNKNOWN_CONFIDENCE
    assert result["needs_review"] is True


def test_empty_report_is_no_finding(mapper):
    result = mapper.map_report(report(explicit_no_finding=True))
    assert result["taxonomy"] == ["other.no_finding"]
    assert result["findings"][0]["source"] == {"detector": "acme", "raw_label": ""}


def test_frameworks_follow_labels(mapper):
    result = mapper.map_report(report(finding("CARD", 0.95)))
    frameworks = {ref["framework"] for ref in result["frameworks"]}
    assert "PCI_DSS" in frameworks


def test_unknown_detector_strict_and_lenient(mapper):
    with pytest.raises(NotFound, match="no reader for detector 'mystery'"):
        mapper.map("mystery", [])
    lenient = mapper.map("mystery", [], strict=False)
    assert lenient["taxonomy"] == ["other.unknown"]
    assert lenient["needs_review"] is True


def test_table_pointing_outside_taxonomy_is_refused():
    bad = {"detector": "acme", "labels": {"X": ["pii.invented"]}}
    with pytest.raises(InvalidArgument, match=r"pii\.invented"):
        parse_table(bad, default_taxonomy())


def test_case_insensitive_table():
    taxonomy = default_taxonomy()
    table = parse_table(
        {"detector": "acme", "case_sensitive": False, "labels": {"Email": "pii.email_address"}},
        taxonomy,
    )
    assert table.lookup("EMAIL").labels == ("pii.email_address",)
    assert parse_table(TABLE, taxonomy).lookup("email") is None
