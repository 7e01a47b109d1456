"""What a key means in a detector output nobody wrote a reader for: label, score, flag, span, ..."""

# Keys are matched by meaning, not by a fixed list of spellings: a key is normalized (`entityType`,
# `entity-type` -> `entity_type`), split into words, plurals folded, and its last meaningful word
# decides (`threat_category` is a category, `category_scores` are scores, `is_flagged` is a flag).

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from llama_mapper.domain.taxonomy import normalize_label_text

MAX_KEY_CHARS = 64


class Role(Enum):
    LABEL = "label"  # names what was found (tiered: entity_type beats category beats verdict)
    SCORE = "score"  # a probability or confidence
    SEVERITY = "severity"  # an ordinal, or a likelihood / severity word
    THRESHOLD = "threshold"  # the vendor's own cut-off for the score next to it
    FLAG = "flag"  # true when something was found
    INVERSE_FLAG = "inverse_flag"  # true when nothing was found (safe, allowed)
    REASON = "reason"  # free text explaining a verdict
    CONTENT = "content"  # the detected text itself: never read
    SPAN_START = "span_start"
    SPAN_END = "span_end"
    SPAN_LENGTH = "span_length"
    SPAN = "span"  # an object or pair holding the offsets
    METADATA = "metadata"  # ids, versions, timestamps, file names: neither label nor finding
    OTHER = "other"  # a word this vocabulary does not know: may name a category


@dataclass(frozen=True)
class KeyMeaning:
    role: Role
    tier: int = 0  # for LABEL: lower wins
    structural: bool = False  # an envelope word (results, data): never names a finding
    polarity: bool | None = None  # for a boolean value: True = found, False = clean, None = a name

    compound: bool = False  # more than one word (`sexual_content`, not `content`)

    @property
    def nameable(self) -> bool:
        """Whether the key may itself be a finding's label (`{"hate": 0.9}`, `{"EMAIL": [...]}`)."""
        if self.structural:
            return False
        return self.role is Role.OTHER or (self.role is Role.CONTENT and self.compound)

    @property
    def opaque(self) -> bool:
        """A container never walked: detected content (`text`, `context`) or metadata (`usage`)."""
        return self.role is Role.METADATA or (self.role is Role.CONTENT and not self.compound)


_LABEL_TIERS = {
    # what was found, most specific first
    "type": 0,
    "entity": 0,
    "label": 0,
    "hazard": 0,
    "subcategory": 0,
    "infotype": 0,
    "category": 1,
    "class": 1,
    "classification": 1,
    "kind": 1,
    "tag": 1,
    "rule": 1,
    "name": 1,
    "topic": 1,
    "prediction": 1,
    "violation": 1,
    "policy": 2,
    "detector": 2,
    "recognizer": 2,
    "group": 2,
    "filter": 2,
    "check": 2,
    "guardrail": 2,
    # a verdict: the label only when nothing more specific is there
    "verdict": 3,
    "decision": 3,
    "action": 3,
    "result": 3,
    "status": 3,
    "outcome": 3,
    "assessment": 3,
    "judgement": 3,
    "judgment": 3,
    "rating": 3,
    "safety": 3,
}
_WORDS = {
    Role.SCORE: {"score", "confidence", "conf", "p", "prob", "probability", "certainty", "risk"},
    Role.SEVERITY: {"severity", "level", "grade", "likelihood"},
    Role.THRESHOLD: {"threshold", "cutoff"},
    Role.FLAG: {
        "flagged",
        "flag",
        "detected",
        "blocked",
        "block",
        "unsafe",
        "violation",
        "violated",
        "triggered",
        "trigger",
        "match",
        "matched",
        "hit",
        "alert",
        "positive",
        "found",
        "harmful",
        "intervened",
        "filtered",
        "denied",
        "rejected",
        "refused",
    },
    Role.INVERSE_FLAG: {"safe", "allowed", "allow", "pass", "passed", "ok", "clean", "compliant"},
    Role.REASON: {
        "reason",
        "explanation",
        "message",
        "msg",
        "description",
        "rationale",
        "justification",
        "detail",
        "comment",
        "note",
        "summary",
        "why",
        "cause",
    },
    Role.CONTENT: {
        "text",
        "content",
        "value",
        "snippet",
        "quote",
        "excerpt",
        "input",
        "prompt",
        "original",
        "secret",
        "sample",
        "context",
        "evidence",
        "raw",
        "string",
        "substring",
        "fragment",
        "word",
        "token",
        "redacted",
        "masked",
    },
    Role.SPAN_START: {"start", "begin", "offset"},
    Role.SPAN_END: {"end", "stop", "until"},
    Role.SPAN_LENGTH: {"length", "len"},
    Role.SPAN: {"span", "location", "range", "position", "offsets", "loc", "codepointrange"},
    Role.METADATA: {
        "id",
        "uuid",
        "version",
        "timestamp",
        "time",
        "date",
        "created",
        "updated",
        "model",
        "request",
        "trace",
        "url",
        "uri",
        "file",
        "filename",
        "path",
        "line",
        "column",
        "language",
        "lang",
        "locale",
        "count",
        "total",
        "index",
        "key",
        "hash",
        "duration",
        "latency",
        "usage",
        "region",
        "tenant",
        "user",
        "session",
        "metadata",
        "meta",
        "info",
    },
}
_WORD_ROLES = {word: role for role, words in _WORDS.items() for word in words}
# Envelope words: containers of findings, never the name of one.
_STRUCTURAL = {
    "result",
    "finding",
    "detection",
    "item",
    "data",
    "response",
    "output",
    "payload",
    "body",
    "annotation",
    "analysis",
    "record",
    "report",
    "issue",
    "event",
    "entry",
    "element",
    "hit",
    "object",
    "list",
    "array",
    "answer",
    "scan",
    "inspect",
    "moderation",
    "guard",
    "check",
    "evaluation",
    "summary",
    "error",
    "warning",
}
_PREFIXES = {"is", "was", "has", "any", "min", "max"}


def _singular(word: str) -> str:
    """`categories` -> `category`, `scores` -> `score`, `class` stays."""
    if word in _WORD_ROLES or word in _LABEL_TIERS or word in _STRUCTURAL:
        return word
    candidates = (
        word[:-3] + "y" if word.endswith("ies") else "",
        word[:-2] if word.endswith("es") else "",
        word[:-1] if word.endswith("s") else "",
    )
    for candidate in candidates:
        if candidate in _WORD_ROLES or candidate in _LABEL_TIERS or candidate in _STRUCTURAL:
            return candidate
    return word


@lru_cache(maxsize=4096)
def _meaning(normalized: str) -> KeyMeaning:
    words = [_singular(w) for w in normalized.split("_") if w]
    if not words or normalized.isdigit():
        return KeyMeaning(Role.METADATA, structural=True)
    structural = any(w in _STRUCTURAL for w in words)
    meaningful = [w for w in words if w not in _PREFIXES] or words
    last = meaningful[-1]
    polarity = (
        True if last in _WORDS[Role.FLAG] else False if last in _WORDS[Role.INVERSE_FLAG] else None
    )
    if (len(words) > 1 and words[0] in ("min", "max")) or "threshold" in words or "cutoff" in words:
        role = Role.THRESHOLD if words[0] != "max" else Role.METADATA
        return KeyMeaning(role, structural=True)
    # start_offset, begin_offset, char_start, start_index; end_offset, char_end
    if words[0] in ("start", "begin") or last in ("start", "begin"):
        return KeyMeaning(Role.SPAN_START, structural=True)
    if words[0] in ("end", "stop") or last in ("end", "stop"):
        return KeyMeaning(Role.SPAN_END, structural=True)
    for word in ("".join(words), last):  # infoType, codepointRange: one word, camel-split
        if word in _LABEL_TIERS:
            return KeyMeaning(Role.LABEL, _LABEL_TIERS[word], structural, polarity)
        if word in _WORD_ROLES:
            role = _WORD_ROLES[word]
            # `sexual_content` may name a category; `score` or `start` never does.
            structural = structural or role is not Role.CONTENT
            return KeyMeaning(
                role, structural=structural, polarity=polarity, compound=len(words) > 1
            )
    return KeyMeaning(Role.OTHER, structural=structural, polarity=polarity)


def key_meaning(key: str) -> KeyMeaning:
    """What `key` means, from its words (bounded: only the first MAX_KEY_CHARS characters)."""
    return _meaning(normalize_label_text(key[:MAX_KEY_CHARS]))


# Verdict words a free-text verdict or a verdict field starts with.
POSITIVE_VERDICTS = frozenset(
    {
        "block",
        "blocked",
        "flag",
        "flagged",
        "unsafe",
        "violation",
        "deny",
        "denied",
        "reject",
        "rejected",
        "review",
        "warn",
        "warning",
        "alert",
        "harmful",
        "fail",
        "failed",
        "refuse",
        "refused",
        "detected",
        "match",
        "intervened",
        "guardrail_intervened",
        "redact",
        "redacted",
        "mask",
        "masked",
        "anonymized",
    }
)
CLEAN_VERDICTS = frozenset(
    {
        "safe",
        "allow",
        "allowed",
        "pass",
        "passed",
        "ok",
        "clean",
        "none",
        "benign",
        "accept",
        "accepted",
        "approved",
        "compliant",
        "no_violation",
        "no_finding",
        "no_findings",
        "nothing_found",
        "not_flagged",
    }
)
# What a status field says about the request, not about the content: never a label.
NOT_VERDICTS = frozenset(
    {
        "success",
        "succeeded",
        "done",
        "complete",
        "completed",
        "processed",
        "finished",
        "pending",
        "running",
        "error",
        "true",
        "false",
        "null",
        "200",
    }
)
# Google DLP likelihoods (the ordinal is the severity, below POSSIBLE is not a finding) and
# severity words (NONE is not a finding).
LIKELIHOODS = {
    "very_unlikely": (1, False),
    "unlikely": (2, False),
    "possible": (3, True),
    "likely": (4, True),
    "very_likely": (5, True),
}
SEVERITY_WORDS = {
    "none": (0, False),
    "negligible": (0, False),
    "safe": (0, False),
    "low": (1, True),
    "medium": (2, True),
    "moderate": (2, True),
    "high": (3, True),
    "critical": (4, True),
    "severe": (4, True),
}
