"""Presidio and detect-secrets run for real on Faker text; their native output goes through the
readers and the rules mapper."""

from __future__ import annotations

import base64
import json
import string
from dataclasses import dataclass
from typing import Any

import pytest
from faker import Faker

from llama_mapper.domain.findings import Span
from llama_mapper.domain.readers.base import read
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import default_tables
from llama_mapper.inference.scanners import presidio_analyzer, run_detect_secrets, run_presidio

pytestmark = pytest.mark.integration

CARD = "4111111111111111"


@pytest.fixture(scope="session")
def analyzer() -> Any:
    # Loading spaCy and every recognizer takes seconds: once per session.
    return presidio_analyzer()


@pytest.fixture(scope="module")
def mapper() -> RulesMapper:
    return RulesMapper()


@dataclass(frozen=True)
class Planted:
    value: str
    span: Span
    label: str


def planted_text(fake: Faker) -> tuple[str, list[Planted]]:
    """A paragraph with one of each entity, and where each one was put."""
    pieces: list[str | tuple[str, str]] = [
        "Patient ",
        (f"{fake.first_name()} {fake.last_name()}", "pii.person_name"),
        " wrote from ",
        (fake.email(), "pii.email_address"),
        ". Call me at ",
        (fake.numerify("(212) 555-01##"), "pii.phone_number"),
        ". My social security number is ",
        (fake.ssn(), "pii.national_id"),
        ". Please charge my credit card ",
        (CARD, "financial.credit_card"),
        ". The server at ",
        (fake.ipv4_public(), "pii.ip_address"),
        " logged it. Wire the refund to IBAN ",
        (fake.iban(), "financial.bank_account"),
        ". My profile: ",
        (f"https://{fake.domain_name()}/u/{fake.user_name()}", "pii.online_identifier"),
        " .",
    ]
    text, planted = "", []
    for piece in pieces:
        if isinstance(piece, tuple):
            value, label = piece
            planted.append(Planted(value, Span(len(text), len(text) + len(value)), label))
            text += value
        else:
            text += piece
    return text, planted


def labels_at(result: dict[str, Any], span: Span) -> set[str]:
    """Labels of the findings that overlap `span`. Overlap, not equality: Presidio's URL pattern
    stops short of some top-level domains (`https://x.biz/u` comes back as `https://x.bi`)."""
    return {
        f["label"]
        for f in result["findings"]
        if "span" in f["source"]
        and f["source"]["span"]["start"] < span.end
        and span.start < f["source"]["span"]["end"]
    }


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_presidio_planted_entities_map_to_their_labels(
    analyzer: Any, mapper: RulesMapper, seed: int
) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    text, planted = planted_text(fake)

    native = run_presidio(text)
    # The runner's output is Presidio's JSON form: it survives a round trip as text.
    report = read("presidio", json.dumps(native))
    result = mapper.map("presidio", native)

    for entity in planted:
        assert entity.label in labels_at(result, entity.span), (entity.label, entity.span)
    assert result["provenance"]["mapping_table_version"] == "presidio@1.1.0"
    # Privacy: the spans point into the text, nothing of the text itself is carried.
    dumped = repr(report) + json.dumps(result)
    for entity in planted:
        assert entity.value not in dumped


def test_presidio_recognizer_results_read_like_their_dicts(analyzer: Any) -> None:
    fake = Faker("en_US")
    fake.seed_instance(11)
    text, _ = planted_text(fake)
    objects = analyzer.analyze(text=text, language="en")
    from_objects = sorted(read("presidio", objects).findings, key=repr)
    from_dicts = sorted(read("presidio", run_presidio(text)).findings, key=repr)
    assert from_objects == from_dicts and from_objects


def test_presidio_text_without_pii_is_no_finding(analyzer: Any, mapper: RulesMapper) -> None:
    native = run_presidio("the quick brown fox jumps over the lazy dog")
    assert native == []
    assert read("presidio", native).explicit_no_finding
    assert mapper.map("presidio", native)["taxonomy"] == ["other.no_finding"]


def test_presidio_table_covers_every_entity_the_analyzer_emits(analyzer: Any) -> None:
    supported = set(analyzer.get_supported_entities("en"))
    # ORGANIZATION is disabled by Presidio's default NER settings and has no canonical label.
    assert supported - set(default_tables()["presidio"].entries) <= {"ORGANIZATION"}


# --- detect-secrets ------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class Secrets:
    text: str
    planted: dict[int, tuple[str, str]]  # line number -> (secret, expected canonical label)


def planted_secrets(fake: Faker) -> Secrets:
    alnum_upper = string.ascii_uppercase + string.digits
    aws_key = "AKIA" + fake.bothify("?" * 16, letters=alnum_upper)
    # Without punctuation: the keyword plugin's value pattern stops at some of it (`$`, `&`), and
    # what is under test here is the mapping of what it finds, not its recall.
    password = fake.password(length=18, special_chars=False)
    claims = {"sub": fake.uuid4(), "name": fake.name(), "iat": 1_700_000_000}
    jwt = ".".join(
        [
            _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()),
            _b64url(json.dumps(claims).encode()),
            _b64url(fake.binary(32)),
        ]
    )
    key_body = [base64.b64encode(fake.binary(48)).decode() for _ in range(4)]
    github = "ghp_" + fake.bothify("?" * 36, letters=string.ascii_letters + string.digits)
    db_password = fake.password(length=14, special_chars=False)
    dsn = f"postgres://{fake.user_name()}:{db_password}@{fake.domain_name()}:5432/app"
    lines = [
        f"aws_access_key_id = {aws_key}",
        f'password = "{password}"',
        f"token: {jwt}",
        "-----BEGIN RSA PRIVATE KEY-----",
        *key_body,
        "-----END RSA PRIVATE KEY-----",
        f"github = {github}",
        f"database_url = {dsn}",
    ]
    planted = {
        1: (aws_key, "credentials.api_key"),
        2: (password, "credentials.other"),
        3: (jwt, "credentials.access_token"),
        4: (key_body[0], "credentials.private_key"),
        10: (github, "credentials.access_token"),
        11: (db_password, "credentials.password"),
    }
    return Secrets("\n".join(lines) + "\n", planted)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detect_secrets_planted_secrets_map_to_their_labels(mapper: RulesMapper, seed: int) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    secrets = planted_secrets(fake)

    native = run_detect_secrets(secrets.text)
    assert native["version"] == "1.5.0" and set(native["results"]) == {"input.txt"}
    report = read("detect-secrets", json.dumps(native))
    result = mapper.map("detect-secrets", native)

    by_line: dict[int, set[str]] = {}
    for finding in report.findings:
        resolved = mapper.match(finding)
        assert resolved is not None and not resolved.needs_review, finding.raw_label
        by_line.setdefault(finding.attributes["line_number"], set()).update(resolved.labels)
    for line, (_, label) in secrets.planted.items():
        assert label in by_line.get(line, set()), (line, label)
    assert {label for _, label in secrets.planted.values()} <= set(result["taxonomy"])

    hashes = [item["hashed_secret"] for items in native["results"].values() for item in items]
    dumped = repr(report) + json.dumps(result)
    for secret in [value for value, _ in secrets.planted.values()] + hashes:
        assert secret not in dumped


def test_detect_secrets_clean_text_is_no_finding(mapper: RulesMapper) -> None:
    native = run_detect_secrets("def add(a, b):\n    return a + b\n", filename="math.py")
    assert native["results"] == {}
    assert read("detect-secrets", native).explicit_no_finding
    assert mapper.map("detect-secrets", native)["taxonomy"] == ["other.no_finding"]
