"""The generic reader on invented vendor shapes: labels, scores, spans and verdicts under any key,
free text kept apart from labels and redacted, and bounded work on hostile documents."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_mapper.domain.errors import InvalidArgument, PayloadTooLarge
from llama_mapper.domain.findings import Span
from llama_mapper.domain.prompt import finding_payload
from llama_mapper.domain.readers.generic import (
    FIELDS,
    MAX_DEPTH,
    MAX_LABEL_CHARS,
    MAX_REASON_CHARS,
    REASON,
    GenericOutputError,
    extract_generic,
    read_generic,
    short_text,
)


def labels(output, **kwargs):
    found = extract_generic("acme", output, **kwargs)
    return None if found is None else [f.raw_label for f in found]


def one(output, **kwargs):
    (finding,) = extract_generic("acme", output, **kwargs)
    return finding


# (id, output, expected raw labels; None = nothing in it reads as a finding)
SHAPES = [
    (
        "presidio-like list",
        [{"entity_type": "X", "score": 0.2}, {"entity_type": "Y", "score": 0.7}],
        ["Y"],
    ),
    ("envelope under results", {"results": [{"category": "hate"}]}, ["hate"]),
    ("flag map with a verdict", {"flagged": True, "spam": False}, ["flagged"]),
    ("llama-guard-like text", "unsafe\nS1", ["unsafe S1"]),
    ("json-quoted label", '"just text"', ["just text"]),
    ("empty list", [], []),
    ("bare number", 42, None),
    ("clean verdict", {"flagged": False}, []),
    ("all scores below", {"toxicity": 0.01}, []),
    ("score map", {"rudeness": 0.91, "insult": 0.1}, ["rudeness"]),
    ("type + confidence", [{"type": "customer id", "confidence": 0.9}], ["customer id"]),
    (
        "openai-like flags and scores",
        {
            "results": [
                {
                    "flagged": True,
                    "categories": {"hate": True, "violence": False},
                    "category_scores": {"hate": 0.91, "violence": 0.02},
                }
            ]
        },
        ["hate"],
    ),
    (
        "three levels under odd keys",
        {"response": {"data": {"analysis": [{"threatType": "PROMPT_INJECTION", "conf": 0.93}]}}},
        ["PROMPT_INJECTION"],
    ),
    (
        "zero-shot parallel lists",
        {"sequence": "you idiot", "labels": ["toxic", "insult"], "scores": [0.9, 0.1]},
        ["toxic"],
    ),
    ("label/score tuples", [["toxic", 0.9], ["insult", 0.2]], ["toxic"]),
    ("score/label tuples under a key", {"predictions": [[0.8, "spam"]]}, ["spam"]),
    ("hf pipeline nested lists", [[{"label": "NEGATIVE", "score": 0.98}]], ["NEGATIVE"]),
    ("deep nested lists", {"data": [[[{"label": "deep", "score": 0.99}]]]}, ["deep"]),
    ("clean decision", {"decision": "allow"}, []),
    ("status is not a verdict", {"status": "success", "findings": []}, []),
    (
        "http status around findings",
        {"status": "ok", "data": [{"tag": "PHONE", "p": 0.8}]},
        ["PHONE"],
    ),
    ("category -> values", {"EMAIL_ADDRESS": ["a@b.com", "c@d.com"]}, ["EMAIL_ADDRESS"] * 2),
    ("category -> one value", {"EMAIL_ADDRESS": "jane@example.com"}, ["EMAIL_ADDRESS"]),
    (
        "entity with matches and metadata",
        {"type": "EMAIL", "matches": ["a@b.com"], "metadata": {"flagged": True}},
        ["EMAIL"],
    ),
    (
        "likelihood below possible",
        {"findings": [{"infoType": {"name": "EMAIL"}, "likelihood": "UNLIKELY"}]},
        [],
    ),
    (
        "severity list",
        {
            "categoriesAnalysis": [
                {"category": "Hate", "severity": 2},
                {"category": "Violence", "severity": 0},
            ]
        },
        ["Hate"],
    ),
    ("severity map", {"severity": {"hate": 4, "sexual": 0}}, ["hate"]),
    (
        "category -> verdict objects",
        {"hate": {"flagged": True, "score": 0.8}, "violence": {"flagged": False, "score": 0.1}},
        ["hate"],
    ),
    (
        "json inside a string",
        {"body": '{"results": [{"label": "jailbreak", "score": 0.97}]}'},
        ["jailbreak"],
    ),
    ("inverse flag: safe", {"is_safe": True}, []),
    ("unknown structure", {"foo": {"bar": 12}}, None),
    ("bare label list", ["pii", "credentials"], ["pii", "credentials"]),
    ("flagged but all scores low", {"flagged": True, "hate": 0.3, "violence": 0.2}, ["hate"]),
    (
        "vendor threshold above score",
        {"result": {"label": "toxic", "threshold": 0.95, "score": 0.9}},
        [],
    ),
    (
        "vendor threshold below score",
        {"result": {"label": "toxic", "threshold": 0.8, "score": 0.9}},
        ["toxic"],
    ),
    ("boolean category + score", {"toxic": True, "score": 0.88}, ["toxic"]),
    (
        "rule with detected value",
        {"rule": "SECRET_AWS", "value": "AKIAIOSFODNN7EXAMPLE"},
        ["SECRET_AWS"],
    ),
    ("clean free-text verdict", "SAFE: nothing sensitive found", []),
    (
        "flag + label list",
        {"pii_detected": True, "pii_types": ["EMAIL_ADDRESS", "PHONE_NUMBER"]},
        ["EMAIL_ADDRESS", "PHONE_NUMBER"],
    ),
    (
        "hazard codes deep",
        {"moderation": {"output": {"unsafe": True, "hazards": ["S1", "S10"]}}},
        ["S1", "S10"],
    ),
    ("null", None, []),
    ("empty string", "", []),
    ("whitespace", "  \n ", []),
    ("empty object", {}, []),
    ("bare true", True, ["flagged"]),
    ("bare false", False, []),
    ("numbers only", {"x": [0.1, 0.2]}, None),
    (
        "percent confidence",
        {"detections": [{"detector": "secrets", "kind": "password", "confidence": 87}]},
        ["password"],
    ),
    (
        "detect-secrets-like files map",
        {
            "results": {
                "app/settings.py": [
                    {"type": "Secret Keyword", "line_number": 1, "hashed_secret": "ab"}
                ]
            }
        },
        ["Secret Keyword"],
    ),
    ("verdict object", {"verdict": "BLOCK", "reason": "contains jane@example.com"}, ["BLOCK"]),
    ("bytes input", b'[{"label": "spam", "probability": 0.7}]', ["spam"]),
    ("score as a string", [{"label": "spam", "score": "0.93"}], ["spam"]),
    ("likelihood as a number", [{"class": "threat", "likelihood": 0.4}], []),
    (
        "mixed list",
        ["toxic", 3, None, {"label": "insult", "score": 0.7}, ["threat", 0.9]],
        ["toxic", "insult", "threat"],
    ),
    (
        "camelCase envelope",
        {"Output": {"Assessments": [{"PolicyName": "deny-finance", "Action": "BLOCKED"}]}},
        ["deny-finance"],
    ),
    ("flag strings", {"category": "violence", "flagged": "false"}, []),
    ("rating word", [{"topic": "medical_advice", "severity": "HIGH"}], ["medical_advice"]),
    ("rating none", [{"topic": "medical_advice", "severity": "NONE"}], []),
    (
        "verdict with reason in list",
        {"checks": [{"name": "pii", "passed": False}, {"name": "toxicity", "passed": True}]},
        ["pii"],
    ),
    ("guard intervened", {"guard": {"triggered": True, "tag": "jailbreak"}}, ["jailbreak"]),
    (
        "parent category to children",
        {"category": "privacy", "entities": [{"type": "EMAIL"}]},
        ["EMAIL"],
    ),
    ("key named with an email", {"jane@example.com": 0.9}, ["<EMAIL>"]),
    ("label list with values", ["4111 1111 1111 1111"], ["<CARD>"]),
]


@pytest.mark.parametrize(
    ("output", "expected"), [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES]
)
def test_shapes(output, expected):
    assert labels(output) == expected


def test_there_are_many_distinct_shapes():
    assert len({s[0] for s in SHAPES}) >= 60


def test_scores_severities_and_spans_are_read_under_any_name():
    assert one([{"type": "EMAIL", "probability": 0.83, "begin": 4, "end": 20}]).score == 0.83
    assert one([{"type": "EMAIL", "start": 4, "end": 20}]).span == Span(4, 20)
    assert one([{"type": "EMAIL", "BeginOffset": 4, "EndOffset": 9}]).span == Span(4, 9)
    assert one([{"type": "EMAIL", "offset": 3, "length": 10}]).span == Span(3, 13)
    assert one([{"type": "EMAIL", "span": [2, 7]}]).span == Span(2, 7)
    dlp = one(
        {
            "infoType": {"name": "US_SOCIAL_SECURITY_NUMBER"},
            "likelihood": "VERY_LIKELY",
            "location": {"codepointRange": {"start": "3", "end": "14"}},
        }
    )
    assert (dlp.raw_label, dlp.severity, dlp.span) == ("US_SOCIAL_SECURITY_NUMBER", 5, Span(3, 14))
    assert one([{"category": "Hate", "severity": 2}]).severity == 2
    assert one({"detections": [{"kind": "password", "confidence": 87}]}).score == pytest.approx(
        0.87
    )
    assert one([["toxic", 0.9]]).score == 0.9
    assert one([["EMAIL", 3, 9, 0.8]]).span == Span(3, 9)
    merged = one({"categories": {"hate": True}, "category_scores": {"hate": 0.91}})
    assert merged.score == 0.91
    # An inverted or backwards span is no span.
    assert one([{"type": "EMAIL", "start": 9, "end": 2}]).span is None


def test_min_score_is_the_cut_when_the_vendor_gives_none():
    assert labels({"a": 0.4, "b": 0.6}, min_score=0.3) == ["a", "b"]
    assert labels({"a": 0.4, "b": 0.6}, min_score=0.9) == []


def test_free_text_is_a_reason_never_a_label():
    verdict = one("BLOCK: the message asks for the user's SSN 123-45-6789")
    assert verdict.raw_label == "BLOCK"
    assert verdict.attributes[REASON] == "the message asks for the user's SSN <SSN>"
    sentence = one("The assistant reply includes the home address of a private person.")
    assert sentence.raw_label == ""
    assert sentence.attributes[REASON].startswith("The assistant reply includes")
    bracketed = one("[FLAGGED] user requests weapon instructions")
    assert (bracketed.raw_label, bracketed.attributes[REASON]) == (
        "FLAGGED",
        "user requests weapon instructions",
    )
    under_label = one([{"label": "Mentions jane@example.com and asks for her card", "score": 0.9}])
    assert under_label.raw_label == ""
    assert under_label.attributes[REASON] == "Mentions <EMAIL> and asks for her card"
    safe_flag = one({"safe": False, "reason": "The prompt tries to override the system prompt"})
    assert safe_flag.attributes[REASON] == "The prompt tries to override the system prompt"


def test_what_reaches_the_model_is_the_label_the_reason_and_metadata():
    finding = one({"verdict": "flagged", "category": "privacy", "reason": "SSN 078-05-1120 shown"})
    # The category names the finding better than the verdict; the verdict stays as metadata.
    assert finding_payload(finding) == {
        "label": "privacy",
        "verdict": "flagged",
        "reason": "SSN <SSN> shown",
    }


def test_parent_context_reaches_the_findings_inside():
    finding = one({"policy": "strict", "reason": "PII found", "entities": [{"type": "EMAIL"}]})
    assert finding.attributes == {"policy": "strict", "reason": "PII found"}


def test_reasons_are_bounded():
    long = "the message " + "asks for private data " * 200
    finding = one(f"BLOCK: {long}")
    assert len(finding.attributes[REASON]) <= MAX_REASON_CHARS
    assert one(long).raw_label == ""


def test_unrecognized_output_becomes_an_empty_label_and_its_key_outline():
    (finding,) = read_generic("acme", {"foo": {"bar": 12, "baz": "hello"}})
    assert finding.raw_label == ""
    assert finding.attributes == {FIELDS: "foo, foo.bar, foo.baz"}
    assert read_generic("acme", 42)[0].attributes == {FIELDS: "a number"}
    assert "jane" not in short_text({"jane@example.com": {"x": 1}})


def test_a_reason_cut_at_its_bound_never_keeps_half_a_value():
    text = "BLOCK: " + "word " * 78 + "ab 4111111111111111" + "1" * 500
    reason = one(text).attributes[REASON]
    assert "4111" not in reason and len(reason) <= MAX_REASON_CHARS
    # One huge token: nothing readable, but still something the detector reported.
    assert one("z" * 100_000).raw_label == ""


def test_a_huge_document_is_never_a_label():
    found = read_generic("acme", {"blob": "x" * 100_000, "more": list(range(100))})
    assert all(len(f.raw_label) <= MAX_LABEL_CHARS for f in found)
    assert all(len(json.dumps(f.attributes)) < 1_000 for f in found)


# --- hostile documents ---------------------------------------------------------------------------


def _nested(depth):
    root: list = []
    node = root
    for _ in range(depth):
        child: list = []
        node.append(child)
        node = child
    return root


@pytest.mark.parametrize(
    "output",
    [
        _nested(10_000),
        "[" * 10_000 + "]" * 10_000,
        '{"a":' * 10_000 + "1" + "}" * 10_000,
        [0] * 2_000_000,
        [{"label": f"L{i}"} for i in range(5_000)],
    ],
    ids=["deep-object", "deep-text", "deep-object-text", "wide", "too-many-findings"],
)
def test_hostile_documents_are_refused_fast_with_a_path(output):
    started = time.perf_counter()
    with pytest.raises(GenericOutputError) as caught:
        extract_generic("acme", output)
    # Generous (the test machine is shared): a hang or a quadratic walk takes far longer.
    assert time.perf_counter() - started < 5.0
    assert caught.value.details["path"].startswith("$")
    assert isinstance(caught.value, InvalidArgument)


def test_a_cycle_is_refused():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(GenericOutputError, match=f"deeper than {MAX_DEPTH}"):
        extract_generic("acme", loop)


def test_a_100_mb_document_is_refused_before_parsing():
    document = "[" + '"x",' * 25_000_000 + '"x"]'
    started = time.perf_counter()
    with pytest.raises(PayloadTooLarge):
        extract_generic("acme", document)
    assert time.perf_counter() - started < 1.0


def test_nesting_up_to_the_limit_is_read():
    output: dict = {"label": "deep", "score": 0.9}
    for _ in range(MAX_DEPTH // 2 - 1):
        output = {"data": output}
    assert labels(output) == ["deep"]


# --- properties ----------------------------------------------------------------------------------

PLANTED = ("jane.doe@example.com", "078-05-1120", "4111 1111 1111 1111", "4012888888881881")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(PLANTED),
    st.builds(
        lambda a, p, b: f"{a}{p}{b}",
        st.text(max_size=8),
        st.sampled_from(PLANTED),
        st.text(max_size=8),
    ),
    st.sampled_from(["label", "type", "score", "confidence", "flagged", "reason", "BLOCK: x"]),
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "label",
            "type",
            "category",
            "score",
            "p",
            "severity",
            "flagged",
            "safe",
            "reason",
            "text",
            "start",
            "end",
            "results",
            "data",
            "threshold",
            "labels",
            "scores",
            *PLANTED,
        ]
    ),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(keys, children, max_size=6),
        st.tuples(st.text(max_size=12), st.floats(min_value=0, max_value=1)).map(list),
    ),
    max_leaves=40,
)


def _leaks(text: str) -> bool:
    digits = "".join(c for c in text if c.isdigit())
    return any(p in text for p in PLANTED) or "4111111111111111" in digits or "078051120" in digits


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_reads_or_raises_invalid_argument_and_never_leaks(document):
    for output in (document, json.dumps(document, default=str)):
        try:
            found = read_generic("acme", output)
        except InvalidArgument:
            continue
        for finding in found:
            assert len(finding.raw_label) <= MAX_LABEL_CHARS
            assert not _leaks(finding.raw_label)
            for value in finding.attributes.values():
                assert not _leaks(str(value))
                assert len(str(value)) <= MAX_REASON_CHARS


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.sampled_from(PLANTED), st.text(max_size=300))
def test_free_text_with_planted_values_never_leaks(before, planted, after):
    for output in (f"{before} {planted} {after}", f"BLOCK: {before} {planted} {after}"):
        for finding in read_generic("acme", output):
            assert not _leaks(finding.raw_label)
            assert not _leaks(json.dumps(finding.attributes))
