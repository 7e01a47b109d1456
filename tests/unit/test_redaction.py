"""Redaction: personal data and secrets become placeholders; vendor labels and prose stay readable."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_mapper.domain.redaction import (
    clip_words,
    contains_sensitive,
    looks_secret,
    luhn_valid,
    redact,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contact jane.doe@example.com now", "contact <EMAIL> now"),
        ("ssn 123-45-6789", "ssn <SSN>"),
        ("ssn 123 45 6789", "ssn <SSN>"),
        ("card 4111 1111 1111 1111 ok", "card <CARD> ok"),
        ("card 4111-1111-1111-1111", "card <CARD>"),
        ("not luhn 4111111111111112", "not luhn <NUMBER>"),
        ("call +1 (415) 555-0100", "call <PHONE>"),
        ("call 415-555-0100", "call <PHONE>"),
        ("iban GB82 WEST 1234 5698 7654 32", "iban <IBAN>"),
        ("GB82WEST12345698765432", "<IBAN>"),
        ("ip 192.168.1.20", "ip <IP>"),
        ("ip 2001:db8::8a2e:370:7334", "ip <IP>"),
        ("key AKIAIOSFODNN7EXAMPLE", "key <SECRET>"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "<SECRET>"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "<SECRET>"),
        ("password=hunter2", "password=<SECRET>"),
        ("api_key: s3cr3t!", "api_key=<SECRET>"),
        ("postgres://admin:pw123@db.example.com:5432/app", "<URL_WITH_CREDENTIALS>"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123", "Bearer <SECRET>"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "token <SECRET>"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY----- x", "<SECRET> x"),
        ("random x8f2k9q0zb4m7n1p3r5t", "random <SECRET>"),
        ("md5 d41d8cd98f00b204e9800998ecf8427e", "md5 <SECRET>"),
        ("account 000123456789", "account <NUMBER>"),
    ],
)
def test_values_become_placeholders(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "US_SOCIAL_SECURITY_NUMBER",
        "SocialSecurityNumber2",
        "Base64 High Entropy String",
        "CREDIT_CARD",
        "unsafe S1,S10",
        "2024-01-15",
        "version 1.5.0",
        "12:30:45",
        "US_DRIVER_LICENSE_2023_v2_extended",
        "label_12345",
        "presidio.EMAIL_ADDRESS",
        "password: found in the config file",
        "basic authentication scheme",
        "the reply names a private individual",
        "<EMAIL>",
    ],
)
def test_labels_and_prose_are_left_alone(text):
    assert redact(text) == text
    assert not contains_sensitive(text)


def test_luhn_and_secret_heuristics():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert not luhn_valid("41x1")
    assert looks_secret("4eC39HqLyjWDarjtT1zdp7dc")
    assert not looks_secret("SocialSecurityNumber")


def test_long_text_is_cut_at_a_word_before_redaction():
    text = "word " * 30_000 + "jane@example.com"
    out = redact(text)
    assert "jane" not in out and len(out) <= 100_000


@settings(deadline=None)
@given(st.text(max_size=200))
def test_redaction_is_idempotent(text):
    once = redact(text)
    assert redact(once) == once


def test_clip_words_never_splits_a_word():
    assert clip_words("abc def", 5) == "abc "
    assert clip_words("abc def", 4) == "abc "
    assert clip_words("abc def", 3) == "abc"
    assert clip_words(" 4111111111111111", 8) == " "
    assert clip_words("short", 10) == "short"
