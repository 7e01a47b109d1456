"""The label index: candidates for findings the rules cannot map, by fuzzy word match over the
taxonomy and the tables, and how the hybrid hands them to the model."""

import time

import pytest

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.retrieval import LabelIndex, similarity, words
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN
from llama_mapper.inference.hybrid import HybridMapper


@pytest.fixture(scope="module")
def index():
    rules = RulesMapper()
    return LabelIndex(rules.taxonomy, rules.tables)


def finding(label, **attributes):
    return NormalizedFinding("never-seen-vendor", label, score=0.9, attributes=attributes)


def test_words_split_case_separators_and_drop_frames():
    assert words("SocialSecurityNo") == ["social", "security"]
    # Naming conventions are not meanings: a custom recognizer's prefix, "number", "unknown".
    assert words("CUSTOM_TRAVEL_DOCUMENT_NO") == ["travel", "document"]
    assert words("otherUnknown") == words("custom_num") == []
    assert words("policy violation - home_address") == ["home", "address"]
    assert words("CREDENTIALS_CONNECTION_STR v2") == ["credentials", "connection", "str"]


@pytest.mark.parametrize(
    ("query", "term", "matches"),
    [
        ("viol", "violence", True),  # abbreviation by prefix
        ("adr", "address", True),  # consonant skeleton
        ("pwd", "password", True),
        ("pasword", "password", True),  # one deletion
        ("passwrod", "password", True),  # one transposition
        ("threatening", "threat", True),  # the index word is a prefix
        ("ab", "abuse", False),  # too short to stand for anything
        ("xyz", "password", False),
        ("card", "cardinal", True),
        ("disabilities", "disability", True),  # a plural in -ies meets its word in -y
        ("identities", "identity", True),
        ("addresses", "address", True),
    ],
)
def test_similarity(query, term, matches):
    assert bool(similarity(query, term)) is matches


@pytest.mark.parametrize(
    ("raw", "attributes", "expected"),
    [
        ("PostalAdr", {}, "pii.postal_address"),
        ("Viol Extremism", {}, "violence.extremism"),
        ("selfHarmInstr", {}, "self_harm.instructions"),
        ("pasport numbr", {}, "pii.passport_number"),  # typos in both words
        ("CREDENTIALS_CONNECTION_STR", {}, "credentials.connection_string"),
        (
            "flagged",
            {"reason": "possible bitcoin wallet address in content"},
            "financial.crypto_wallet",
        ),
        ("blocked", {"reason": "an email address appears in the output"}, "pii.email_address"),
        (
            "review",
            {"reason": "Misinformation about elections and voting."},
            "misinformation.elections",
        ),
        ("FLAG", {"reason": "mocking people with disabilities"}, "hate.disability"),
    ],
)
def test_the_right_label_is_among_the_candidates(index, raw, attributes, expected):
    candidates = index.candidates(finding(raw, **attributes))
    assert expected in candidates
    assert candidates[-2:] == (NO_FINDING, UNKNOWN)
    assert len(candidates) <= 8


@pytest.mark.parametrize("raw", ["YHHI_352", "dmnpzc", "6e54cb33", "label_27386", "", "flagged"])
def test_no_signal_means_no_candidates(index, raw):
    # Gibberish and bare verdict words narrow nothing: the model chooses among every label.
    assert index.candidates(finding(raw)) == ()


def test_retrieval_is_deterministic_and_bounded(index):
    f = finding("flagged", reason="password " * 50_000)
    started = time.perf_counter()
    first = index.retrieve(f)
    assert time.perf_counter() - started < 1.0
    assert index.retrieve(f) == first
    assert "credentials.password" in first.candidates


def test_the_hybrid_hands_the_candidates_to_the_model():
    output = {"findings": [{"kind": "PostalAdr", "conf": 0.8}]}
    # One label alone explains "PostalAdr": the default hybrid answers it as a lexical rule...
    ((_, ruled),) = HybridMapper().plan("acme-shield", output).ruled
    assert (ruled.label, ruled.method) == ("pii.postal_address", "rule")
    # ... and without lexical answers it goes to the model with its shortlist.
    plan = HybridMapper(lexical_coverage=None).plan("acme-shield", output)
    (query,) = plan.queries
    assert "pii.postal_address" in query.candidates and UNKNOWN in query.candidates
    assert query.finding["label"] == "PostalAdr"
    off = HybridMapper(retrieval=False).plan(
        "acme-shield", {"findings": [{"kind": "PostalAdr", "conf": 0.8}]}
    )
    assert [q.candidates for q in off.queries] == [()]


def test_rules_answers_never_go_through_retrieval():
    plan = HybridMapper().plan(
        "presidio", [{"entity_type": "EMAIL_ADDRESS", "score": 0.9, "start": 0, "end": 5}]
    )
    assert plan.pending == [] and plan.candidates == []


def test_unknown_can_be_left_to_the_threshold():
    rules = RulesMapper()
    shortlist = LabelIndex(rules.taxonomy, rules.tables, offer_unknown=False)
    candidates = shortlist.candidates(finding("PostalAdr"))
    assert "pii.postal_address" in candidates and UNKNOWN not in candidates
    assert candidates[-1] == NO_FINDING
    assert shortlist.candidates(finding("YHHI_352")) == ()  # no signal: every label, unknown too


def test_the_readmes_two_labels_no_table_knows_get_the_right_label_alone(index):
    """A custom Presidio recognizer and a custom DLP infoType (README): the shortlist is the one
    label they stand for (`CUSTOM_...`, `..._NO` no longer pull in pii.other and credentials)."""
    assert index.candidates(finding("MEDICAL_RECORD_NO")) == (
        "phi.health_identifier",
        "other.no_finding",
        "other.unknown",
    )
    assert index.candidates(finding("CUSTOM_TRAVEL_DOCUMENT_NO"))[0] == "pii.passport_number"
    assert len(index.retrieve(finding("CUSTOM_TRAVEL_DOCUMENT_NO")).candidates) == 1


@pytest.mark.parametrize(
    ("frame", "typo"),
    [("blocked", "blokced"), ("review", "reivew"), ("violation", "violaion"), ("match", "mtach")],
)
def test_a_misspelled_verdict_frame_is_still_a_frame(index, frame, typo):
    reason = "detected vehicle identification number"
    clean = index.retrieve(finding(frame, reason=reason))
    misspelled = index.retrieve(finding(typo, reason=reason))
    assert misspelled.candidates == clean.candidates
    assert misspelled.coverage == pytest.approx(clean.coverage)
    assert clean.candidates[0] == "pii.vehicle_id"
    # A label's own word one edit from a frame word is kept: only words no label knows are dropped.
    assert "libel" in index.postings and "libel" in index.query_words(finding("libel"))
    assert "context" in index.query_words(finding("context"))
