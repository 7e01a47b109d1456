"""Redaction of detected content: personal data and secrets in free text become placeholders."""

# Readers keep labels, scores and spans, never the matched text; but a detector without a reader may
# put anything in a field, and a verdict sentence may quote what it found ("the reply contains
# jane@example.com"). Everything derived from a value that reaches a raw label or the model goes
# through `redact` first. The patterns are deliberately greedy: a false placeholder costs a little
# recall, a leaked card number costs a compliance incident.

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections import Counter

EMAIL, PHONE, SSN, CARD, IBAN, IP, SECRET, URL, NUMBER = (
    "<EMAIL>",
    "<PHONE>",
    "<SSN>",
    "<CARD>",
    "<IBAN>",
    "<IP>",
    "<SECRET>",
    "<URL_WITH_CREDENTIALS>",
    "<NUMBER>",
)
PLACEHOLDERS = (EMAIL, PHONE, SSN, CARD, IBAN, IP, SECRET, URL, NUMBER)

# Regex work is linear in the text, but callers should still bound what they pass in: a reader
# redacts a clipped window, never a whole document.
MAX_REDACT_CHARS = 100_000

_PEM = re.compile(r"-----BEGIN[ A-Z0-9]*PRIVATE KEY-----.*?(?:-----END[ A-Z0-9]*-----|\Z)", re.S)
_URL_WITH_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{1,15}://[^\s/:@]+:[^\s/@]+@[^\s]+")
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# `password=x`, `api_key: s3cr3t!`: after ":" a plain word ("password: found") is prose, not a value.
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_\-]?key|access[_\-]?(?:key|token)|auth)"
    r"(\s*=\s*['\"]?[^\s'\",;]+|\s*:\s*['\"]?(?![A-Za-z]+\b)[^\s'\",;]+)"
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)(?=\S*\d)[A-Za-z0-9._~+/\-]{8,}=*")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*")
_KNOWN_KEYS = re.compile(
    r"\b(?:"
    r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}"  # AWS access key ids
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"  # GitHub tokens
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack tokens
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{10,}"  # Stripe keys
    r"|sk-[A-Za-z0-9_\-]{16,}"  # OpenAI-style keys
    r"|AIza[A-Za-z0-9_\-]{30,}"  # Google API keys
    r")"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
_SSN = re.compile(r"(?<!\d)\d{3}([\- ]?)\d{2}\1\d{4}(?!\d)")
# 13-19 digits, optionally grouped by single spaces or dashes: a card when the Luhn sum checks.
_CARD = re.compile(r"(?<!\d)\d(?:[ \-]?\d){12,18}(?!\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .\-])(?:\+\d{1,3}[ .\-]?)?(?:\(\d{2,4}\)[ .\-]?|\d{2,4}[ .\-])"
    r"\d{3,4}[ .\-]?\d{3,4}(?![ .\-]?\d)"
    r"|(?<![\w+])\+\d{8,15}(?!\d)"
)
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])")
# Any other run of nine or more digits (account numbers, national ids without separators).
_LONG_NUMBER = re.compile(r"(?<!\d)\d(?:[ .\-/]?\d){8,}(?!\d)")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_\-.]{16,}")
_SEGMENT = re.compile(r"[A-Za-z0-9+/=]{16,}")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (card numbers carry one)."""
    if not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def _class_switches(text: str) -> int:
    def kind(c: str) -> int:
        return 0 if c.isdigit() else 1 if c.islower() else 2 if c.isupper() else 3

    return sum(kind(a) != kind(b) for a, b in itertools.pairwise(text))


def looks_secret(token: str) -> bool:
    """A high-entropy token: some 16+ character alphanumeric segment that mixes letters and
    digits, switches character class often (random, not camelCase words) and has high entropy;
    or 32+ hex digits. `SocialSecurityNumber2` and `US_DRIVER_LICENSE` are not secrets."""
    for segment in _SEGMENT.findall(token):
        if len(segment) >= 32 and all(c in "0123456789abcdefABCDEF" for c in segment):
            return True
        has_digit = any(c.isdigit() for c in segment)
        has_alpha = any(c.isalpha() for c in segment)
        if (
            has_digit
            and has_alpha
            and _class_switches(segment) * 3 >= len(segment)
            and _entropy(segment) >= 3.0
        ):
            return True
    return False


def _card_or_number(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return CARD if luhn_valid(digits) else match.group()


def _ip(match: re.Match[str], placeholder: str = IP) -> str:
    try:
        ipaddress.ip_address(match.group())
    except ValueError:
        return match.group()
    return placeholder


def _ipv6(match: re.Match[str]) -> str:
    text = match.group()
    # "::" alone or "a::b" are valid addresses but read as separators and labels, not data.
    if sum(c.isdigit() for c in text) < 2 or len(text) < 6:
        return text
    return _ip(match)


_LAST_WORD = re.compile(r"\S+\Z")


def clip_words(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters without splitting a word: a word that runs past
    the cut is dropped whole (half a card number would no longer read as one)."""
    if len(text) <= limit:
        return text
    window = text[:limit]
    return window if text[limit].isspace() else _LAST_WORD.sub("", window)


def redact(text: str) -> str:
    """`text` with personal data and secrets replaced by placeholders (`<EMAIL>`, `<CARD>`, ...).

    Pure and deterministic. Texts over MAX_REDACT_CHARS are cut there first (at a whitespace, so
    no value is split into an unredacted half). Secrets go first (a DSN holds an email-like part),
    then identifiers from most to least specific; leftover runs of nine or more digits become
    `<NUMBER>`.
    """
    text = clip_words(text, MAX_REDACT_CHARS)
    text = _PEM.sub(SECRET, text)
    text = _URL_WITH_CREDENTIALS.sub(URL, text)
    text = _ASSIGNED_SECRET.sub(lambda m: f"{m.group(1)}={SECRET}", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET}", text)
    text = _JWT.sub(SECRET, text)
    text = _KNOWN_KEYS.sub(SECRET, text)
    text = _EMAIL.sub(EMAIL, text)
    text = _IBAN.sub(lambda m: IBAN if _iban_valid(m.group()) else m.group(), text)
    text = _CARD.sub(_card_or_number, text)
    text = _SSN.sub(SSN, text)
    text = _IPV4.sub(_ip, text)
    text = _IPV6.sub(_ipv6, text)
    text = _PHONE.sub(PHONE, text)
    text = _LONG_NUMBER.sub(NUMBER, text)
    return _TOKEN.sub(lambda m: SECRET if looks_secret(m.group()) else m.group(), text)


def contains_sensitive(text: str) -> bool:
    """Whether `redact` would change `text`: it holds a value, not just words."""
    return redact(text) != text
