"""NemoGuard content-safety verdicts (the documented JSON answer) through the rules mapper."""

import json

import pytest

from llama_mapper.domain.readers.base import DetectorOutputError, read
from llama_mapper.domain.rules import RulesMapper


@pytest.fixture(scope="module")
def mapper():
    return RulesMapper()


def test_unsafe_user_prompt_with_categories(mapper):
    output = {
        "User Safety": "unsafe",
        "Response Safety": "safe",
        "Safety Categories": "Controlled/Regulated Substances, Fraud/Deception, Malware",
    }
    result = mapper.map("nemoguard", json.dumps(output))
    assert result["taxonomy"] == ["illicit.cybercrime", "illicit.drugs", "illicit.fraud"]
    assert {f["source"]["raw_label"] for f in result["findings"]} == {
        "Controlled/Regulated Substances",
        "Fraud/Deception",
        "Malware",
    }


def test_safe_is_no_finding(mapper):
    result = mapper.map("nemoguard", {"User Safety": "safe"})
    assert result["taxonomy"] == ["other.no_finding"]


def test_unsafe_response_without_category_needs_review(mapper):
    report = read("nemoguard", {"User Safety": "safe", "Response Safety": "unsafe"})
    assert [f.raw_label for f in report.findings] == ["unsafe"]
    assert report.findings[0].attributes == {"role": "response"}
    result = mapper.map("nemoguard", {"User Safety": "safe", "Response Safety": "unsafe"})
    assert result["taxonomy"] == ["other.unknown"]
    assert result["needs_review"] is True


def test_broad_category_falls_back(mapper):
    result = mapper.map(
        "nemoguard", {"User Safety": "unsafe", "Safety Categories": "Needs Caution"}
    )
    assert result["taxonomy"] == ["other.unknown"]


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ({"Response Safety": "safe"}, "missing 'User Safety'"),
        ({"User Safety": "maybe"}, "must be 'safe' or 'unsafe'"),
        ({"User Safety": "unsafe", "Safety Categories": ["Violence"]}, "must be a string"),
        ({"User Safety": "safe", "Safety Categories": "Violence"}, "every verdict is 'safe'"),
        (["unsafe"], "expected a JSON object"),
        ("not json", "not JSON"),
    ],
)
def test_malformed(output, message):
    with pytest.raises(DetectorOutputError, match=message):
        read("nemoguard", output)
