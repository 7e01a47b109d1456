"""The values of a generic detector output: labels, free-text verdicts, numbers, offsets."""

# A raw label is a short label-like token, redacted, or "": a sentence is a reason, never a label.

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llama_mapper.domain.findings import Span
from llama_mapper.domain.prompt import MAX_TEXT_CHARS
from llama_mapper.domain.readers.generic_keys import (
    CLEAN_VERDICTS,
    LIKELIHOODS,
    POSITIVE_VERDICTS,
    SEVERITY_WORDS,
    Role,
    key_meaning,
)
from llama_mapper.domain.redaction import clip_words, redact
from llama_mapper.domain.taxonomy import normalize_label_text

MAX_LABEL_CHARS = 64
MAX_LABEL_WORDS = 4
MAX_REASON_CHARS = MAX_TEXT_CHARS
MAX_ATTRIBUTES = 6
REASON = "reason"  # the attribute the model reads a verdict's free text from (as in training)


@dataclass
class Draft:
    label: str
    score: float | None = None
    severity: int | None = None
    span: Span | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    weak: bool = False  # named by nothing but a flag ({"flagged": true}): an entity around it wins

    def inherit(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            if key not in self.attributes and len(self.attributes) < MAX_ATTRIBUTES:
                self.attributes[key] = value


# --- text ----------------------------------------------------------------------------------------


def collapse(text: str, limit: int) -> str:
    """Whitespace folded, cut to `limit` at a word boundary: a word running past the cut is
    dropped whole, so no value is split into a half that redaction no longer recognizes."""
    return " ".join(clip_words(text, limit).split())


def redacted_reason(text: str) -> str:
    """Free text as the model may see it: redacted, whitespace folded, at most MAX_REASON_CHARS."""
    clean = redact(collapse(text, 2 * MAX_REASON_CHARS))
    return clean if len(clean) <= MAX_REASON_CHARS else clean[: MAX_REASON_CHARS - 1] + "…"


def label_like(text: str) -> bool:
    if not text or len(text) > MAX_LABEL_CHARS or len(text.split()) > MAX_LABEL_WORDS:
        return False
    return text[-1] not in ".!?" and ": " not in text and ". " not in text and ", " not in text


def redacted_label(text: str) -> str:
    return redact(text)[:MAX_LABEL_CHARS]


def verdict_word(text: str) -> str:
    return normalize_label_text(text[:MAX_LABEL_CHARS])


_VERDICT_SEPARATORS = frozenset(":-|>\n\u2014\u2013")  # and the em / en dash


def verdict_split(text: str) -> tuple[str, str] | None:
    """`BLOCK: the message asks for ...`, `[FLAGGED] ...`, `unsafe - ...` -> (verdict, reason)."""
    head = text.lstrip()[: MAX_LABEL_CHARS + 2]
    if head.startswith("["):
        verdict, sep, _ = head[1:].partition("]")
        rest = text.lstrip()[len(verdict) + 2 :] if sep else ""
    else:
        cut = next((i for i, c in enumerate(head) if c in _VERDICT_SEPARATORS), -1)
        verdict, rest = (head[:cut], text.lstrip()[cut + 1 :]) if cut > 0 else ("", "")
    verdict = verdict.strip()
    word = verdict_word(verdict)
    if not rest.strip() or (word not in POSITIVE_VERDICTS and word not in CLEAN_VERDICTS):
        return None
    return verdict, rest


def text_findings(text: str) -> tuple[list[Draft], bool]:
    """A string where a verdict may stand: ([findings], recognized). A clean verdict is none."""
    if not text or text.isspace():
        return [], True
    short = collapse(text, 4 * MAX_LABEL_CHARS)
    if short and verdict_word(short) in CLEAN_VERDICTS:
        return [], True
    if label_like(short):
        return [Draft(redacted_label(short))], True
    split = verdict_split(text[: 4 * MAX_REASON_CHARS])
    if split is not None:
        verdict, rest = split
        if verdict_word(verdict) in CLEAN_VERDICTS:
            return [], True
        return [Draft(redacted_label(verdict), attributes={REASON: redacted_reason(rest)})], True
    # A sentence, or one huge token (nothing of it is readable: an empty label, no reason).
    reason = redacted_reason(text)
    return [Draft("", attributes={REASON: reason} if reason else {})], True


def label_or_reason(text: str) -> tuple[str, str | None]:
    """A value under a label key: the label, or ("", reason) when it is a sentence."""
    short = collapse(text, 4 * MAX_LABEL_CHARS)
    if label_like(short):
        return redacted_label(short), None
    split = verdict_split(text[: 4 * MAX_REASON_CHARS])
    if split is not None:
        return redacted_label(split[0].strip()), redacted_reason(split[1])
    return "", redacted_reason(text) if short else None


def attribute_key(key: str) -> str | None:
    if not label_like(key) or redact(key) != key:
        return None
    return normalize_label_text(key)[:32] or None


# --- numbers -------------------------------------------------------------------------------------


def as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) <= 2**53 else None
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and 0 < len(value) <= 24:
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def score_of(value: Any, *, percent: bool) -> float | None:
    number = as_number(value)
    if number is None or number < 0:
        return None
    if number <= 1:
        return number
    return number / 100 if percent and number <= 100 else None


def offset_of(value: Any) -> int | None:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53:
        return value
    return None


def severity_word(value: str) -> tuple[int, bool] | None:
    word = normalize_label_text(value[:32])
    return LIKELIHOODS.get(word) or SEVERITY_WORDS.get(word)


def named(text: str) -> Draft:
    """A finding named by `text`: the label when it is one, else an empty label and the reason."""
    label, reason = label_or_reason(text)
    return Draft(label, attributes={REASON: reason} if reason else {})


def span_of(value: Any, depth: int = 0) -> Span | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        start, end = offset_of(value[0]), offset_of(value[1])
        return Span(start, end) if start is not None and end is not None and start <= end else None
    if not isinstance(value, Mapping) or depth > 1:
        return None
    starts, ends, lengths = [], [], []
    for key, item in itertools.islice(value.items(), 16):
        if not isinstance(key, str):
            continue
        role = key_meaning(key).role
        if isinstance(item, Mapping | list) and role is Role.SPAN:
            inner = span_of(item, depth + 1)
            if inner is not None:
                return inner
        offset = offset_of(item)
        if offset is None:
            continue
        {Role.SPAN_START: starts, Role.SPAN_END: ends, Role.SPAN_LENGTH: lengths}.get(
            role, []
        ).append(offset)
    if starts and ends and starts[0] <= ends[0]:
        return Span(starts[0], ends[0])
    if starts and lengths:
        return Span(starts[0], starts[0] + lengths[0])
    return None
