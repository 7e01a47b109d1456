"""Every canonical label is reachable from a real vendor label (or a real vendor answer)."""

from llama_mapper.domain.readers.base import known_detectors
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import default_tables
from llama_mapper.domain.taxonomy import default_taxonomy

# No vendor we read documents a label for these; they are reached through the taxonomy's aliases
# (a detector that reports `fingerprint`, `terrorism` or `exfiltration`) and through the model.
# The test fails when a table starts reaching one, so this list only shrinks.
NO_VENDOR_LABEL = {
    "pii.biometric": "fingerprint",
    "violence.extremism": "violent_extremism",
}


def reached_by_tables() -> dict[str, list[str]]:
    reached: dict[str, list[str]] = {}
    for table in default_tables().values():
        for entry in table.entries.values():
            for label in entry.labels:
                reached.setdefault(label, []).append(f"{table.detector}:{entry.raw_label}")
    return reached


def test_every_label_reachable_from_a_vendor_label():
    taxonomy = default_taxonomy()
    reached = reached_by_tables()
    answers = {"other.no_finding", "other.unknown"}  # answers, not labels: tested below
    missing = set(taxonomy.labels) - set(reached) - answers
    assert missing == set(NO_VENDOR_LABEL), sorted(missing)


def test_labels_without_a_vendor_label_resolve_by_alias():
    mapper = RulesMapper()
    for label, raw in NO_VENDOR_LABEL.items():
        result = mapper.map("nemoguard", {"User Safety": "unsafe", "Safety Categories": raw})
        assert result["taxonomy"] == [label], raw


def test_no_finding_and_unknown_come_from_real_answers():
    mapper = RulesMapper()
    assert mapper.map("llama-guard", "safe")["taxonomy"] == ["other.no_finding"]
    assert mapper.map("presidio", [])["taxonomy"] == ["other.no_finding"]
    unknown = mapper.map("llama-guard", "unsafe\nS15")
    assert unknown["taxonomy"] == ["other.unknown"] and unknown["needs_review"]


def test_every_detector_has_a_reader_and_a_table():
    readers = set(known_detectors())
    tables = set(default_tables())
    named = {
        "presidio",
        "detect-secrets",
        "aws-comprehend",
        "google-dlp",
        "azure-content-safety",
        "openai-moderation",
        "llama-guard",
        "bedrock-guardrails",
        "detoxify",
        "gitleaks",
        "trufflehog",
        "llm-guard",
        "lakera-guard",
        "prompt-guard",
        "azure-prompt-shields",
        "granite-guardian",
        "shieldgemma",
        "aws-macie",
        "model-armor",
        "any-guardrail",
        "openguardrails",
    }
    assert named <= readers and len(readers) >= 20
    assert readers == tables
