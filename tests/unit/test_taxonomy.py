"""The canonical taxonomy: the shipped file, alias normalization, version lock, migrations."""

import copy
import json
import re

import pytest
import yaml

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.taxonomy import (
    LABEL_PATTERN,
    TaxonomyError,
    check_version_lock,
    default_taxonomy,
    lock_path,
    normalize_label_text,
    parse_taxonomy,
)


@pytest.fixture(scope="module")
def doc():
    from importlib import resources

    path = resources.files("llama_mapper.domain.catalog") / "taxonomy.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def spec_labels() -> set[str]:
    """The label table of the product spec (docs/FRAMEWORKS.md lists it), as it states it."""
    spec = {
        "pii": "person_name email_address phone_number postal_address location date_of_birth age "
        "national_id passport_number drivers_license ip_address online_identifier device_id biometric "
        "vehicle_id other",
        "financial": "credit_card bank_account tax_id crypto_wallet other",
        "phi": "health_identifier medical_condition other",
        "credentials": "api_key password private_key access_token connection_string other",
        "toxicity": "general insult profanity harassment threat",
        "hate": "race_ethnicity religion gender sexual_orientation disability other",
        "violence": "general graphic extremism weapons",
        "sexual": "adult minors",
        "self_harm": "general intent instructions",
        "illicit": "drugs cybercrime fraud other",
        "misinformation": "general elections defamation",
        "security": "jailbreak prompt_injection data_exfiltration tool_abuse",
        "policy": "specialized_advice intellectual_property off_topic other",
        "other": "unknown no_finding",
    }
    return {f"{cat}.{sub}" for cat, subs in spec.items() for sub in subs.split()}


def test_shipped_taxonomy_is_exactly_the_spec():
    taxonomy = default_taxonomy()
    assert taxonomy.version == "1.0.0"
    assert set(taxonomy.labels) == spec_labels()
    assert len(taxonomy.labels) == 67
    for label in taxonomy.labels.values():
        assert LABEL_PATTERN.match(label.name)
        assert label.description
        assert label.name == f"{label.category}.{label.subcategory}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SocialSecurityNo", "social_security_no"),
        ("EMAIL_ADDR", "email_addr"),
        ("cc-number", "cc_number"),
        ("  Credit Card  ", "credit_card"),
        ("IPAddress", "ip_address"),
        ("harassment/threatening", "harassment_threatening"),
    ],
)
def test_normalize_label_text(text, expected):
    assert normalize_label_text(text) == expected


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("EMAIL_ADDR", "pii.email_address"),
        ("SocialSecurityNo", "pii.national_id"),
        ("cc_number", "financial.credit_card"),
        ("pii.email_address", "pii.email_address"),
        ("PII_EMAIL_ADDRESS", "pii.email_address"),
        ("toxic", "toxicity.general"),
    ],
)
def test_alias_resolution(raw, label):
    assert default_taxonomy().resolve_alias(raw) == label


@pytest.mark.parametrize("raw", ["nontoxic", "not_an_email", "emails_sent_count", "", "   ", "xyz"])
def test_alias_resolution_never_guesses_substrings(raw):
    assert default_taxonomy().resolve_alias(raw) is None


def test_get_unknown_label_is_invalid_argument():
    with pytest.raises(InvalidArgument, match=r"pii\.nope"):
        default_taxonomy().get("pii.nope")


def test_version_must_be_semver(doc):
    bad = copy.deepcopy(doc)
    bad["version"] = "1.0"
    with pytest.raises(TaxonomyError, match="semver"):
        parse_taxonomy(bad)


def test_duplicate_alias_is_refused(doc):
    bad = copy.deepcopy(doc)
    bad["categories"]["pii"]["labels"]["phone_number"]["aliases"].append("email")
    with pytest.raises(TaxonomyError, match="alias 'email' names both"):
        parse_taxonomy(bad)


def test_bad_label_name_is_refused(doc):
    bad = copy.deepcopy(doc)
    bad["categories"]["pii"]["labels"]["Bad-Name"] = {"description": "x"}
    with pytest.raises(TaxonomyError, match="does not match"):
        parse_taxonomy(bad)


def test_label_change_without_version_bump_is_refused(doc, tmp_path):
    changed = copy.deepcopy(doc)
    changed["categories"]["pii"]["labels"]["genetic"] = {"description": "Genetic data."}
    taxonomy = parse_taxonomy(changed)
    with pytest.raises(TaxonomyError, match="bump the version"):
        check_version_lock(taxonomy)
    # After a bump the new version must be locked explicitly.
    changed["version"] = "1.1.0"
    with pytest.raises(TaxonomyError, match="not in"):
        check_version_lock(parse_taxonomy(changed))
    lock = json.loads(lock_path().read_text())
    lock["1.1.0"] = {"digest": parse_taxonomy(changed).digest()}
    custom = tmp_path / "lock.json"
    custom.write_text(json.dumps(lock))
    check_version_lock(parse_taxonomy(changed), custom)


def test_shipped_taxonomy_matches_its_lock():
    check_version_lock(default_taxonomy())


def test_migration_carries_labels_forward(doc):
    bumped = copy.deepcopy(doc)
    bumped["version"] = "1.1.0"
    labels = bumped["categories"]["pii"]["labels"]
    labels["online_id"] = labels.pop("online_identifier")
    bumped["migrations"] = [
        {"from": "1.0.0", "to": "1.1.0", "renamed": {"pii.online_identifier": "pii.online_id"}}
    ]
    taxonomy = parse_taxonomy(bumped)
    assert taxonomy.migrate("pii.online_identifier", "1.0.0") == "pii.online_id"
    assert taxonomy.migrate("pii.email_address", "1.0.0") == "pii.email_address"
    with pytest.raises(InvalidArgument, match="no migration path"):
        taxonomy.migrate("pii.email_address", "0.9.0")


def test_migration_to_unknown_label_is_refused(doc):
    bumped = copy.deepcopy(doc)
    bumped["version"] = "1.1.0"
    bumped["migrations"] = [{"from": "1.0.0", "to": "1.1.0", "renamed": {"pii.age": "pii.nope"}}]
    with pytest.raises(TaxonomyError, match=re.escape("'pii.nope'")):
        parse_taxonomy(bumped)
