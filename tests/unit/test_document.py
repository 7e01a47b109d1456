"""One result per document: merging by position and label, units, conflicts, hostile positions."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from llama_mapper.domain.document import (
    MAX_OUTPUTS,
    MAX_SOURCES,
    DetectorResult,
    build_document,
)
from llama_mapper.domain.errors import InvalidArgument, PayloadTooLarge
from llama_mapper.domain.findings import NormalizedFinding, Span
from llama_mapper.domain.result import CanonicalFinding
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.inference.hybrid import HybridMapper

TAXONOMY = default_taxonomy()


@pytest.fixture(scope="module")
def hybrid():
    mapper = HybridMapper()
    yield mapper
    mapper.close()


def found(label, detector="presidio", raw="X", span=None, *, confidence=0.9, **attributes):
    source = NormalizedFinding(
        detector, raw, score=0.8, span=Span(*span) if span else None, attributes=attributes
    )
    return CanonicalFinding(
        label, confidence, "rule", source, needs_review=label == "other.unknown"
    )


def output(detector, *findings):
    """A mapped output as the hybrid hands it over; the result dict is not schema-checked here,
    so that hostile positions reach the document function."""
    labels = sorted({f.label for f in findings}) or ["other.no_finding"]
    result = {
        "taxonomy": labels,
        "needs_review": any(f.needs_review for f in findings),
        "provenance": {"taxonomy_version": TAXONOMY.version, "request_id": "r"},
    }
    return DetectorResult(detector, result, list(findings))


def document(*outputs, text=None, text_sha256=None):
    doc = build_document(
        list(outputs), taxonomy=TAXONOMY, request_id="doc", text=text, text_sha256=text_sha256
    )
    validate("document-output", doc)
    return doc


def mapped(hybrid, detector, native):
    outcome = hybrid.map(detector, native, request_id="doc")
    return DetectorResult(detector, outcome.result, outcome.findings)


def summary(doc):
    return [
        (f["label"], (f["span"]["start"], f["span"]["end"]) if "span" in f else None)
        for f in doc["findings"]
    ]


# --- merging -------------------------------------------------------------------------------


def test_agreeing_detectors_on_one_span_are_one_finding_with_both_sources():
    doc = document(
        output("presidio", found("pii.email_address", "presidio", "EMAIL_ADDRESS", (5, 22))),
        output("aws-comprehend", found("pii.email_address", "aws-comprehend", "EMAIL", (5, 22))),
    )
    [finding] = doc["findings"]
    assert finding["label"] == "pii.email_address"
    assert finding["span"] == {"start": 5, "end": 22} and finding["span_unit"] == "char"
    assert [(s["output"], s["detector"], s["raw_label"]) for s in finding["sources"]] == [
        (0, "presidio", "EMAIL_ADDRESS"),
        (1, "aws-comprehend", "EMAIL"),
    ]
    assert all(s["span"] == {"start": 5, "end": 22} for s in finding["sources"])
    assert "conflict" not in finding and doc["needs_review"] is False
    assert doc["taxonomy"] == ["pii.email_address"]
    assert {c["framework"] for c in doc["frameworks"]} >= {"GDPR"}


def test_partial_overlaps_chain_into_one_finding_spanning_their_union():
    doc = document(
        output("a", found("pii.person_name", "a", span=(0, 6))),
        output("b", found("pii.person_name", "b", span=(4, 12))),
        output("c", found("pii.person_name", "c", span=(10, 15))),  # overlaps b, not a
    )
    [finding] = doc["findings"]
    assert finding["span"] == {"start": 0, "end": 15}
    assert [s["detector"] for s in finding["sources"]] == ["a", "b", "c"]
    assert finding["confidence"] == 0.9


def test_touching_spans_are_not_overlapping():
    doc = document(
        output("a", found("pii.person_name", "a", span=(0, 5))),
        output("b", found("pii.person_name", "b", span=(5, 9))),
    )
    assert summary(doc) == [("pii.person_name", (0, 5)), ("pii.person_name", (5, 9))]


def test_nested_spans_of_one_label_merge_into_the_outer():
    doc = document(
        output("a", found("pii.postal_address", "a", span=(10, 60), confidence=0.7)),
        output("b", found("pii.postal_address", "b", span=(20, 30), confidence=0.95)),
    )
    [finding] = doc["findings"]
    assert finding["span"] == {"start": 10, "end": 60}
    assert finding["confidence"] == 0.95  # the best evidence
    assert [s["span"] for s in finding["sources"]] == [
        {"start": 10, "end": 60},
        {"start": 20, "end": 30},
    ]


def test_empty_spans_are_points():
    doc = document(
        output("a", found("pii.ip_address", "a", span=(5, 5))),
        output("b", found("pii.ip_address", "b", span=(5, 9))),  # starts at the point
        output("c", found("pii.ip_address", "c", span=(1, 5))),  # ends at it: no overlap
    )
    assert summary(doc) == [("pii.ip_address", (1, 5)), ("pii.ip_address", (5, 9))]
    assert [s["detector"] for s in doc["findings"][1]["sources"]] == ["a", "b"]


def test_conflicting_labels_on_one_span_are_both_kept_and_flagged():
    doc = document(
        output("presidio", found("pii.phone_number", "presidio", "PHONE_NUMBER", (41, 57))),
        output(
            "aws-comprehend", found("pii.postal_address", "aws-comprehend", "ADDRESS", (41, 57))
        ),
        output("presidio-2", found("pii.email_address", "presidio-2", span=(0, 10))),
    )
    assert summary(doc) == [
        ("pii.email_address", (0, 10)),
        ("pii.phone_number", (41, 57)),
        ("pii.postal_address", (41, 57)),
    ]
    email, phone, address = doc["findings"]
    assert "conflict" not in email
    assert phone["conflict"] is True and phone["conflicts_with"] == [2]
    assert address["conflict"] is True and address["conflicts_with"] == [1]
    assert "needs_review" not in phone  # no source asks for review; the document does
    assert doc["needs_review"] is True


def test_nested_spans_of_different_labels_conflict_with_each_one_they_overlap():
    doc = document(
        output("a", found("pii.postal_address", "a", span=(0, 100))),
        output("b", found("pii.person_name", "b", span=(10, 20))),
        output("c", found("pii.phone_number", "c", span=(50, 60))),
    )
    address, name, phone = doc["findings"]
    assert address["label"] == "pii.postal_address"
    assert address["conflicts_with"] == [1, 2]
    assert name["conflicts_with"] == [0] and phone["conflicts_with"] == [0]


def test_one_raw_finding_with_two_labels_is_not_a_conflict():
    # A table's many-to-many entry (Prompt Guard 2's MALICIOUS: injection and jailbreak) says
    # the span may be both: no disagreement between detectors.
    raw = NormalizedFinding("lakera-guard", "prompt_attack", span=Span(0, 30))
    both = output(
        "lakera-guard",
        CanonicalFinding("security.prompt_injection", 0.6, "rule", raw),
        CanonicalFinding("security.jailbreak", 0.6, "rule", raw),
    )
    doc = document(both)
    assert [f["label"] for f in doc["findings"]] == [
        "security.jailbreak",
        "security.prompt_injection",
    ]
    assert not any(f.get("conflict") for f in doc["findings"])
    assert doc["needs_review"] is False


def test_other_unknown_claims_nothing_so_it_conflicts_with_nothing():
    doc = document(
        output("presidio", found("pii.email_address", span=(0, 9))),
        output("custom", found("other.unknown", "custom", "ACME_ID", (0, 9))),
    )
    assert not any(f.get("conflict") for f in doc["findings"])
    unknown = next(f for f in doc["findings"] if f["label"] == "other.unknown")
    assert unknown["needs_review"] is True and doc["needs_review"] is True


def test_findings_without_a_position_merge_by_label_and_never_into_located_ones():
    doc = document(
        output("llama-guard", found("hate.other", "llama-guard", "S10")),
        output("openai-moderation", found("hate.other", "openai-moderation", "hate")),
        output(
            "azure-content-safety", found("violence.general", "azure-content-safety", "Violence")
        ),
        output("lakera-guard", found("hate.other", "lakera-guard", "hate", (3, 9))),
    )
    assert summary(doc) == [
        ("hate.other", (3, 9)),
        ("hate.other", None),
        ("violence.general", None),
    ]
    unlocated = doc["findings"][1]
    assert "span_unit" not in unlocated
    assert [s["detector"] for s in unlocated["sources"]] == ["llama-guard", "openai-moderation"]
    assert not any(f.get("conflict") for f in doc["findings"])


def test_no_finding_is_kept_per_output_and_is_a_finding_only_when_nobody_found_anything():
    nothing = output("llama-guard", found("other.no_finding", "llama-guard", ""))
    doc = document(nothing, output("presidio", found("pii.email_address", span=(0, 9))))
    assert doc["taxonomy"] == ["pii.email_address"]
    assert doc["outputs"][0]["taxonomy"] == ["other.no_finding"]
    quiet = document(nothing, output("detoxify", found("other.no_finding", "detoxify", "")))
    [finding] = quiet["findings"]
    assert finding["label"] == "other.no_finding"
    assert [s["detector"] for s in finding["sources"]] == ["llama-guard", "detoxify"]


def test_order_of_outputs_changes_sources_indices_not_the_merge():
    a = output("a", found("pii.person_name", "a", span=(4, 12)))
    b = output("b", found("pii.person_name", "b", span=(0, 6)))
    assert summary(document(a, b)) == summary(document(b, a)) == [("pii.person_name", (0, 12))]


# --- units ---------------------------------------------------------------------------------

TEXT = "Zoë Müller <zoe.muller@example.com> rang +44 20 7946 0958.\naws_key = AKIAFAKE\n"
PHONE = "+44 20 7946 0958"


def char_span(sub, text=TEXT):
    start = text.index(sub)
    return start, start + len(sub)


def byte_span(sub, text=TEXT):
    start = len(text[: text.index(sub)].encode())
    return start, start + len(sub.encode())


def dlp(name, span, unit="byteRange"):
    return {
        "result": {
            "findings": [
                {
                    "infoType": {"name": name},
                    "likelihood": "LIKELY",
                    "location": {unit: {"start": str(span[0]), "end": str(span[1])}},
                }
            ]
        }
    }


def test_dlp_byte_offsets_become_characters_of_the_text_and_merge(hybrid):
    assert byte_span(PHONE) != char_span(PHONE)  # two 2-byte characters before it
    presidio = [
        {
            "entity_type": "PHONE_NUMBER",
            "start": char_span(PHONE)[0],
            "end": char_span(PHONE)[1],
            "score": 0.75,
        }
    ]
    outputs = [
        mapped(hybrid, "presidio", presidio),
        mapped(hybrid, "google-dlp", dlp("PHONE_NUMBER", byte_span(PHONE))),
    ]
    doc = document(*outputs, text=TEXT)
    [finding] = doc["findings"]
    assert (finding["span"]["start"], finding["span"]["end"]) == char_span(PHONE)
    dlp_source = finding["sources"][1]
    assert dlp_source["span_unit"] == "byte"
    assert (dlp_source["span"]["start"], dlp_source["span"]["end"]) == byte_span(PHONE)
    assert doc["provenance"]["positions"] == "text"


def test_without_the_text_units_are_never_merged_or_compared(hybrid):
    presidio = [{"entity_type": "PHONE_NUMBER", "start": 43, "end": 59, "score": 0.75}]
    outputs = [
        mapped(hybrid, "presidio", presidio),
        # DLP's byte range happens to equal presidio's characters: still not comparable.
        mapped(hybrid, "google-dlp", dlp("PHONE_NUMBER", (43, 59))),
        mapped(hybrid, "google-dlp", dlp("EMAIL_ADDRESS", (43, 59))),
    ]
    doc = document(*outputs)
    assert doc["provenance"]["positions"] == "reported"
    assert [(f["label"], f["span_unit"]) for f in doc["findings"]] == [
        ("pii.phone_number", "char"),
        ("pii.email_address", "byte"),
        ("pii.phone_number", "byte"),
    ]
    # Within one unit they are compared: the two DLP findings conflict, presidio's does not.
    assert doc["findings"][0].get("conflict") is None
    assert doc["findings"][1]["conflicts_with"] == [2]


def test_dlp_codepoint_ranges_are_characters(hybrid):
    outputs = [
        mapped(hybrid, "google-dlp", dlp("PHONE_NUMBER", char_span(PHONE), "codepointRange"))
    ]
    [finding] = document(*outputs, text=TEXT)["findings"]
    assert finding["sources"][0]["span_unit"] == "char"
    assert (finding["span"]["start"], finding["span"]["end"]) == char_span(PHONE)


def test_four_byte_characters_and_offsets_inside_a_character():
    text = "🙂 id 🙂🙂 x"
    assert len("🙂".encode()) == 4
    doc = document(
        output(
            "google-dlp",
            found("pii.online_identifier", "google-dlp", span=(5, 7), span_unit="byte"),
        ),
        # Byte 9 is inside the first emoji of the pair (bytes 8-11), byte 14 inside the second
        # (12-15): the span widens to both whole characters.
        output("google-dlp", found("pii.device_id", "google-dlp", span=(9, 14), span_unit="byte")),
        text=text,
    )
    assert summary(doc) == [("pii.online_identifier", (2, 4)), ("pii.device_id", (5, 7))]
    assert text[2:4] == "id" and text[5:7] == "🙂🙂"


def test_a_byte_span_past_the_text_is_refused_naming_the_output():
    with pytest.raises(InvalidArgument, match=r"\$\.outputs\[0\]\.output: finding 0: .*bytes"):
        document(
            output(
                "google-dlp", found("pii.device_id", "google-dlp", span=(0, 9), span_unit="byte")
            ),
            text="Zoë",
        )


def test_line_numbers_become_the_characters_of_their_lines(hybrid):
    text = "first line\r\nsecond = AKIAFAKE\nthird line\nlast, no newline"
    secrets = {
        "version": "1.5.0",
        "results": {"f": [{"type": "AWS Access Key", "filename": "f", "line_number": 2}]},
    }
    gitleaks = [{"RuleID": "generic-api-key", "StartLine": 3, "EndLine": 4}]
    trufflehog = {
        "DetectorName": "AWS",
        "SourceMetadata": {"Data": {"Filesystem": {"file": "f", "line": 1}}},
    }
    outputs = [
        mapped(hybrid, "detect-secrets", secrets),
        mapped(hybrid, "gitleaks", gitleaks),
        mapped(hybrid, "trufflehog", trufflehog),
    ]
    doc = document(*outputs, text=text)
    spans = {
        f["sources"][0]["detector"]: (f["span"]["start"], f["span"]["end"]) for f in doc["findings"]
    }
    assert text[slice(*spans["trufflehog"])] == "first line"  # the \r\n is not part of it
    assert text[slice(*spans["detect-secrets"])] == "second = AKIAFAKE"
    assert text[slice(*spans["gitleaks"])] == "third line\nlast, no newline"
    reported = {f["sources"][0]["detector"]: f["sources"][0]["span"] for f in doc["findings"]}
    assert reported["gitleaks"] == {"start": 3, "end": 5}  # lines 3-4, counted from 1
    assert all(s["span_unit"] == "line" for f in doc["findings"] for s in f["sources"])
    assert {f["span_unit"] for f in doc["findings"]} == {"char"}
    without_text = document(*outputs)
    assert {f["span_unit"] for f in without_text["findings"]} == {"line"}


def test_a_line_scanner_and_a_span_detector_agree_on_a_line():
    text = "user: x\npassword = hunter2\n"
    doc = document(
        output("detect-secrets", found("credentials.password", "detect-secrets", line_number=2)),
        output(
            "presidio", found("credentials.password", "presidio", span=char_span("hunter2", text))
        ),
        text=text,
    )
    [finding] = doc["findings"]
    assert text[finding["span"]["start"] : finding["span"]["end"]] == "password = hunter2"
    assert [s["span_unit"] for s in finding["sources"]] == ["line", "char"]


def test_line_zero_is_no_position_and_a_line_past_the_text_is_refused():
    unknown_line = output(
        "detect-secrets", found("credentials.password", "detect-secrets", line_number=0)
    )
    [finding] = document(unknown_line, text="a\nb")["findings"]
    assert "span" not in finding and "span" not in finding["sources"][0]
    past = output("trufflehog", found("credentials.api_key", "trufflehog", line=3))
    with pytest.raises(
        InvalidArgument, match=r"\$\.outputs\[0\]\.output: finding 0: line 3 .* 2 lines"
    ):
        document(past, text="a\nb")


def test_line_numbers_of_several_files_are_not_one_text():
    scan = output(
        "gitleaks",
        found("credentials.api_key", "gitleaks", start_line=3, file="a.py"),
        found("credentials.api_key", "gitleaks", start_line=3, file="b.py"),
    )
    with pytest.raises(InvalidArgument, match=r"\$\.outputs\[0\]\.output: line numbers in 2 files"):
        document(scan)


# --- empty, huge and hostile inputs --------------------------------------------------------


def test_no_outputs_and_too_many_outputs_are_refused():
    with pytest.raises(InvalidArgument, match=r"\$\.outputs: at least one"):
        document()
    one = output("presidio", found("pii.email_address", span=(0, 9)))
    with pytest.raises(InvalidArgument, match=rf"at most {MAX_OUTPUTS}"):
        document(*[one] * (MAX_OUTPUTS + 1))


def test_an_output_that_found_nothing_and_an_empty_text(hybrid):
    doc = document(mapped(hybrid, "presidio", []), text="")
    assert doc["taxonomy"] == ["other.no_finding"]
    with pytest.raises(InvalidArgument, match="past the text's 0 characters"):
        document(output("presidio", found("pii.email_address", span=(0, 1))), text="")


@pytest.mark.parametrize(
    ("finding", "message"),
    [
        (found("pii.email_address", span=(-3, 4)), "span start -3 is negative"),
        (found("pii.email_address", span=(9, 2)), "span end 2 is before its start 9"),
        (
            found("credentials.api_key", "gitleaks", start_line=5, end_line=2),
            "last line 2 is before first line 5",
        ),
        (found("credentials.api_key", "trufflehog", line=-1), "line -1 is negative"),
        (found("credentials.api_key", "gitleaks", start_line="7"), "line numbers must be integers"),
        (found("pii.email_address", span=(True, 4)), "span offsets must be integers"),
    ],
)
def test_hostile_positions_are_invalid_argument_with_a_path(finding, message):
    ok = output("presidio", found("pii.email_address", span=(0, 9)))
    with pytest.raises(InvalidArgument) as raised:
        document(ok, output(finding.source.detector, ok.findings[0], finding))
    assert raised.value.message.startswith("$.outputs[1].output: finding 1: ")
    assert message in raised.value.message


def test_hostile_text_and_digests():
    one = output("presidio", found("pii.email_address", span=(0, 3)))
    with pytest.raises(InvalidArgument, match="lone surrogate at character 1"):
        document(one, text="a\ud800bc")
    with pytest.raises(InvalidArgument, match="64 lowercase hex"):
        document(one, text_sha256="ABC")
    with pytest.raises(InvalidArgument, match="does not match the text"):
        document(one, text="abc", text_sha256=hashlib.sha256(b"abd").hexdigest())


def test_the_digest_is_echoed_never_computed_and_no_content_leaves():
    digest = hashlib.sha256(TEXT.encode()).hexdigest()
    email = "zoe.muller@example.com"
    one = output("presidio", found("pii.email_address", span=char_span(email)))
    with_digest = document(one, text=TEXT, text_sha256=digest)
    assert with_digest["provenance"]["text_sha256"] == digest
    without = document(one, text=TEXT)
    assert "text_sha256" not in without["provenance"]
    body = json.dumps(without)
    assert digest not in body
    for fragment in ("zoe", "Müller", "AKIA", "example.com"):
        assert fragment not in body


def test_a_huge_document_is_merged_in_bounded_time(monkeypatch):
    # The bound of findings, in a row of four labels, and one span over all of them. Each
    # finding overlaps its neighbours (other labels: conflicts) but not the next of its own
    # label 40 characters on, so nothing merges, and the covering address conflicts with every
    # one. A pairwise merge would compare 2 x 10^8 pairs; the sweep is O(n log n). The schema
    # check is left out of the timing: it is linear, per finding as in build_result.
    checked = []
    monkeypatch.setattr(
        "llama_mapper.domain.document.validator",
        lambda name: type("Skip", (), {"validate": lambda self, doc: checked.append(name)})(),
    )
    labels = ["pii.email_address", "pii.person_name", "pii.phone_number", "pii.ip_address"]
    n = MAX_SOURCES - 1
    many = output("presidio", *(found(labels[i % 4], span=(i * 10, i * 10 + 12)) for i in range(n)))
    cover = output(
        "aws-comprehend", found("pii.postal_address", "aws-comprehend", span=(0, 10 * n))
    )
    started = time.perf_counter()
    doc = build_document([many, cover], taxonomy=TAXONOMY, request_id="doc")
    elapsed = time.perf_counter() - started
    assert checked == ["document-output"]
    assert len(doc["findings"]) == n + 1
    # By start, then end: the first email [0, 12), the address [0, 10n), then the rest in a row.
    assert [f["label"] for f in doc["findings"][:3]] == [labels[0], "pii.postal_address", labels[1]]
    assert doc["findings"][1]["conflicts_with"] == [0, *range(2, n + 1)]
    assert doc["findings"][5]["conflicts_with"] == [1, 4, 6]
    assert elapsed < 60, elapsed  # seconds, on a shared 2-core machine; about 2 s unloaded


def test_a_long_chain_against_many_small_findings_is_bounded_too(monkeypatch):
    # Half the bound in one chain of a label (one finding of 10,000 sources), the other half
    # small findings of another label inside it: 10,000 conflicts, each checked once.
    monkeypatch.setattr(
        "llama_mapper.domain.document.validator",
        lambda name: type("Skip", (), {"validate": lambda self, doc: None})(),
    )
    half = MAX_SOURCES // 2
    chain = output("a", *(found("pii.postal_address", "a", span=(i, i + 2)) for i in range(half)))
    small = output("b", *(found("pii.person_name", "b", span=(i, i + 1)) for i in range(half)))
    started = time.perf_counter()
    doc = build_document([chain, small], taxonomy=TAXONOMY, request_id="doc")
    elapsed = time.perf_counter() - started
    address = next(f for f in doc["findings"] if f["label"] == "pii.postal_address")
    assert len(address["sources"]) == half and len(address["conflicts_with"]) == half
    assert elapsed < 60, elapsed


def test_more_findings_than_the_bound_is_refused_before_any_work():
    raw = NormalizedFinding("presidio", "EMAIL_ADDRESS", span=Span(0, 1))
    finding = CanonicalFinding("pii.email_address", 0.9, "rule", raw)
    big = DetectorResult(
        "presidio", output("presidio", finding).result, [finding] * (MAX_SOURCES + 1)
    )
    with pytest.raises(PayloadTooLarge, match=f"more than {MAX_SOURCES} findings"):
        document(big)
