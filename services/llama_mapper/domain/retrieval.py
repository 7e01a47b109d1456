"""Candidate labels for a finding the rules cannot map: lexical retrieval over the taxonomy.

The 135M mapper picks one label out of ~70. Most of its errors are a neighbour in the wrong
category, or a label that shares no word with the finding at all. This index narrows the choice
before the model is asked: every label is a small document (its name, subcategory, aliases,
description, and the vendor labels every table maps to it), and a finding's words (its raw label,
free-text reason, the names of its metadata) are matched against those documents with the
tolerance vendor spellings need: case and separators, abbreviations by prefix (`viol`, `instr`,
`exfil`) or consonant skeleton (`adr`, `pwd`, `nbr`), one-edit typos (`pasword`). Each match is
weighted by how rare the word is across labels (IDF), so `address` says little and `passport` a lot.

The model then chooses among the top candidates under constrained decoding: the same adapter, a
smaller choice. When no word of the finding matches any label strongly enough, there are no
candidates and the model chooses among every label, as before. Pure and deterministic: serving and
evaluation build the same index from the same taxonomy and tables.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.tables import MappingTable
from llama_mapper.domain.taxonomy import (
    NO_FINDING,
    UNKNOWN,
    Taxonomy,
    normalize_label_text,
    within_one_edit,
)

_DIGITS_OR_SEPARATOR = re.compile(r"[_0-9]+")
# Words that carry no label: articles and the frames vendors put around a verdict.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "with",
        "about",
        "any",
        "other",
        "general",
        "content",
        "text",
        "message",
        "output",
        "input",
        "request",
        "response",
        "user",
        "detected",
        "detection",
        "found",
        "possible",
        "potential",
        "likely",
        "flagged",
        "flag",
        "blocked",
        "block",
        "review",
        "violation",
        "policy",
        "category",
        "type",
        "label",
        "finding",
        "result",
        "match",
        "matched",
        "true",
        "false",
        "none",
        "unsafe",
        "safe",
        # Naming conventions, not meanings: a custom recognizer or infoType (`CUSTOM_...`), a
        # number (`..._NO`, `..._NUM`), a vendor's own "unknown" bucket.
        "custom",
        "no",
        "num",
        "unknown",
    ]
)
_LONG_STOPWORDS = tuple(sorted(w for w in _STOPWORDS if len(w) >= 5))
# How much a word that is not spelled the same still counts.
EXACT, PREFIX, SKELETON, TYPO = 1.0, 0.8, 0.6, 0.7
# Attributes whose values are words about the finding (a reason, a category name), not content.
TEXT_ATTRIBUTES = ("reason", "category", "categories", "type", "description", "message", "title")
MAX_QUERY_WORDS = 48
MAX_CANDIDATES = 6
# A label is a candidate when it scores at least this share of the best label's score...
RELATIVE_CUTOFF = 0.5
# ...and the best label explains at least this share of the query's IDF mass (else: no signal).
MIN_COVERAGE = 0.3


def words(text: str) -> list[str]:
    """Lower-case words of `text`, split as the taxonomy normalizes labels (case, camelCase,
    separators) and at digits; numbers, single letters and stopwords dropped."""
    found = _DIGITS_OR_SEPARATOR.split(normalize_label_text(text[:2000]))
    kept = [w for w in found if len(w) > 1 and w not in _STOPWORDS]
    return kept[:MAX_QUERY_WORDS]


def _stem(word: str) -> str:
    """A crude English stem, enough for plurals and verb forms to meet their word:
    `disabilities` / `disability`, `addresses` / `address`, `mocking` / `mock`."""
    if len(word) > 5 and word.endswith("ies"):
        return word[:-3] + "y"
    for suffix in ("ing", "es", "s", "ed"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _is_subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(ch in it for ch in short)


def similarity(query: str, term: str) -> float:
    """How much query word `query` counts as index word `term` (0 when not at all)."""
    if query == term or _stem(query) == _stem(term):
        return EXACT
    if len(query) >= 3 and term.startswith(query):
        return PREFIX
    if len(term) >= 4 and query.startswith(term):
        return PREFIX
    if (
        len(query) >= 3
        and query[0] == term[0]
        and len(query) * 3 >= len(term)
        and _is_subsequence(query, term)
    ):
        return SKELETON
    if len(query) >= 5 and len(term) >= 5 and within_one_edit(query, term):
        return TYPO
    return 0.0


@dataclass(frozen=True)
class Retrieval:
    """The candidates for one finding, best first, with their scores and the query's coverage."""

    candidates: tuple[str, ...]
    scores: Mapping[str, float]
    coverage: float


class LabelIndex:
    """Every label as a bag of words; candidates for a finding by IDF-weighted fuzzy word match."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        tables: Mapping[str, MappingTable] | None = None,
        *,
        offer_unknown: bool = True,
    ):
        self.taxonomy = taxonomy
        # With a shortlist, "unknown" can still be a label the model picks, or only what a
        # confidence below the threshold means (the calibration decides it from the same plan).
        self.offer_unknown = offer_unknown
        docs: dict[str, set[str]] = defaultdict(set)
        for name, label in taxonomy.labels.items():
            if name in (UNKNOWN, NO_FINDING):
                continue
            texts = [label.subcategory, label.description, *label.aliases]
            if label.subcategory != "other":
                texts.append(label.category)
            for text in texts:
                docs[name].update(words(text))
        for table in (tables or {}).values():
            for raw, entry in table.entries.items():
                for name in entry.labels:
                    if name in docs:
                        docs[name].update(words(raw))
        self.docs = {name: frozenset(terms) for name, terms in docs.items()}
        postings: dict[str, set[str]] = defaultdict(set)
        for name, terms in self.docs.items():
            for term in terms:
                postings[term].add(name)
        n = len(self.docs)
        self.postings = {t: frozenset(names) for t, names in postings.items()}
        self.idf = {t: math.log(1 + n / len(names)) for t, names in self.postings.items()}
        self.max_idf = math.log(1 + n)
        grouped: dict[str, list[str]] = defaultdict(list)
        for term in sorted(self.postings):
            grouped[term[0]].append(term)
        self._by_initial = {k: tuple(v) for k, v in grouped.items()}
        self._expand = lru_cache(maxsize=8192)(self._expand_uncached)

    def _expand_uncached(self, query: str) -> tuple[tuple[str, float], ...]:
        """Index words `query` may stand for, with their weights (exact first)."""
        if query in self.postings:
            return ((query, EXACT),)
        out = []
        # Prefix, skeleton and typo matches all keep the first letter: only those words are tried.
        for term in self._by_initial.get(query[0], ()):
            weight = similarity(query, term)
            if weight:
                out.append((term, weight))
        return tuple(out)

    def query_words(self, finding: NormalizedFinding) -> list[str]:
        texts = [finding.raw_label]
        for key in TEXT_ATTRIBUTES:
            value = finding.attributes.get(key)
            if isinstance(value, str):
                texts.append(value)
            elif isinstance(value, list):
                texts.extend(v for v in value[:8] if isinstance(v, str))
        seen: list[str] = []
        for text in texts:
            for word in words(text):
                if word not in seen and not self._misspelled_stopword(word):
                    seen.append(word)
        return seen[:MAX_QUERY_WORDS]

    def _misspelled_stopword(self, word: str) -> bool:
        """A verdict frame misspelled (`blokced`, `reivew`, `violaion`) is still a frame, not a
        word no label knows: one edit from a stopword of 5 letters or more, and no index word."""
        if len(word) < 5 or word in self.postings:
            return False
        return any(
            abs(len(stop) - len(word)) <= 1 and within_one_edit(word, stop)
            for stop in _LONG_STOPWORDS
        )

    def retrieve(self, finding: NormalizedFinding, k: int = MAX_CANDIDATES) -> Retrieval:
        scores: dict[str, float] = defaultdict(float)
        mass = 0.0
        for word in self.query_words(finding):
            best: dict[str, float] = {}
            expansions = self._expand(word)
            word_idf = max((self.idf[t] for t, _ in expansions), default=0.0)
            for term, weight in expansions:
                value = weight * self.idf[term]
                for name in self.postings[term]:
                    if value > best.get(name, 0.0):
                        best[name] = value
            # A word no label knows still counts, at the rarest word's weight: the more of a
            # finding the index cannot read, the less its candidates can be trusted.
            mass += word_idf if best else self.max_idf
            for name, value in best.items():
                scores[name] += value
        if not scores or mass <= 0:
            return Retrieval((), {}, 0.0)
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
        top = ranked[0][1]
        coverage = top / mass
        if coverage < MIN_COVERAGE:
            return Retrieval((), dict(ranked[:k]), coverage)
        chosen = tuple(name for name, s in ranked[:k] if s >= RELATIVE_CUTOFF * top)
        return Retrieval(chosen, dict(ranked[:k]), coverage)

    def candidates(self, finding: NormalizedFinding, k: int = MAX_CANDIDATES) -> tuple[str, ...]:
        """The labels the model chooses among, other.no_finding always among them (and
        other.unknown when `offer_unknown`); () for all."""
        return self.shortlist(self.retrieve(finding, k))

    def shortlist(self, retrieval: Retrieval) -> tuple[str, ...]:
        """`candidates` of a retrieval already made."""
        chosen = retrieval.candidates
        if not chosen:
            return ()
        return (*chosen, NO_FINDING, UNKNOWN) if self.offer_unknown else (*chosen, NO_FINDING)
