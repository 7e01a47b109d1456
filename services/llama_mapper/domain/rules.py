"""The rules mapper: detector readers + mapping tables -> canonical result, never an invented label."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import NotFound
from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import read
from llama_mapper.domain.result import CanonicalFinding, build_result
from llama_mapper.domain.tables import (
    ALIAS_CONFIDENCE,
    EXACT_CONFIDENCE,
    SPELLING_CONFIDENCE,
    VOCABULARY_CONFIDENCE,
    MappingTable,
    TableEntry,
    default_tables,
)
from llama_mapper.domain.taxonomy import (
    NO_FINDING,
    UNKNOWN,
    Taxonomy,
    default_taxonomy,
    normalize_label_text,
    within_one_edit,
)

# other.unknown says "we could not map this": its confidence is the chance that the fallback label
# is right, which is low by construction; needs_review sends it to a person.
UNKNOWN_CONFIDENCE = 0.1


@dataclass(frozen=True)
class RuleMatch:
    """How the rules resolved one raw finding: labels, confidence, and whether a person should look."""

    labels: tuple[str, ...]
    confidence: float
    needs_review: bool
    matched: bool


# A label one edit away from a vendor label or alias (a dropped, doubled, swapped or wrong
# letter: `CREDITCARD`, `EMIAL_ADDRESS`) is read as it only from this many characters on, and only
# when every known spelling within that edit names the same labels: short codes (`S1`, `hate`)
# are a different label one letter away.
SPELLING_MIN_LENGTH = 6


def _deletions(key: str) -> set[str]:
    return {key[:i] + key[i + 1 :] for i in range(len(key))}


class _Spellings:
    """Known keys within one edit of a query, by the symmetric-delete index (a key and its
    one-letter deletions): a query shares a variant with every key one substitution, insertion,
    deletion or adjacent swap away, without comparing it to every key."""

    def __init__(self, readings: Mapping[str, Iterable[tuple[str, ...]]]) -> None:
        self.readings = {
            k: frozenset(v) for k, v in readings.items() if len(k) >= SPELLING_MIN_LENGTH
        }
        self._by_variant: dict[str, set[str]] = {}
        for key in self.readings:
            for variant in (key, *_deletions(key)):
                self._by_variant.setdefault(variant, set()).add(key)

    def resolve(self, query: str) -> tuple[str | None, tuple[str, ...]]:
        """(the nearest key, the labels) when every key within one edit of `query` reads the
        same, else (None, ())."""
        if len(query) < SPELLING_MIN_LENGTH:
            return None, ()
        near: set[str] = set()
        for variant in (query, *_deletions(query)):
            near.update(self._by_variant.get(variant, ()))
        keys = sorted(k for k in near if within_one_edit(query, k))
        readings = {labels for k in keys for labels in self.readings[k]}
        if len(readings) != 1:
            return None, ()
        (labels,) = readings
        if UNKNOWN in labels or NO_FINDING in labels:
            return None, ()  # "nothing" and "we cannot say" are not read into a near spelling
        return keys[0], labels


class Vocabulary:
    """Every table's vendor labels and the taxonomy's subcategory names, normalized.

    Vendors reuse each other's words (`NATIONAL_ID`, `jailbreak`, `sslCertificate`), and a detector
    nobody wrote a table for speaks them too. A normalized key resolves only when it is unambiguous:
    the detector's own table first, else every table holding it names the same labels; a
    subcategory name counts only when one category has it (`jailbreak`, never `other`). A key no
    spelling matches is read as the known spelling one edit away (SPELLING_MIN_LENGTH), the
    detector's own first, then every table's, the subcategories and the taxonomy's aliases.
    """

    def __init__(self, taxonomy: Taxonomy, tables: dict[str, MappingTable]) -> None:
        self._own: dict[str, dict[str, TableEntry]] = {}
        shared: dict[str, set[tuple[str, ...]]] = {}
        for detector, table in tables.items():
            own = self._own.setdefault(detector, {})
            for raw, entry in table.entries.items():
                key = normalize_label_text(raw)
                own.setdefault(key, entry)
                shared.setdefault(key, set()).add(entry.labels)
        subcategories: dict[str, set[str]] = {}
        aliases: dict[str, set[tuple[str, ...]]] = {}
        for name, label in taxonomy.labels.items():
            subcategories.setdefault(normalize_label_text(label.subcategory), set()).add(name)
            for text in (name, *label.aliases):
                aliases.setdefault(normalize_label_text(text), set()).add((name,))
        for key, names in subcategories.items():
            if len(names) == 1 and key not in shared:
                shared[key] = {tuple(names)}
        self._shared = {key: next(iter(v)) for key, v in shared.items() if len(v) == 1}
        # Every reading a key has: one near a key that tables disagree on never resolves.
        readings: dict[str, set[tuple[str, ...]]] = {k: set(v) for k, v in shared.items()}
        for source in (subcategories, aliases):
            for key, labels in source.items():
                readings.setdefault(key, set()).update(
                    labels if source is aliases else {(name,) for name in labels}
                )
        self._readings = readings
        # The one-edit indexes are built on the first spelling no key matches (most processes
        # that build a mapper never meet one; a build is ~50 ms): racing builds are identical.
        self._own_spellings: dict[str, _Spellings] = {}
        self._all_spellings: _Spellings | None = None

    def _spellings_of(self, detector: str | None) -> _Spellings | None:
        if detector is None:
            if self._all_spellings is None:
                self._all_spellings = _Spellings(self._readings)
            return self._all_spellings
        own = self._own.get(detector)
        if own is None:
            return None
        if detector not in self._own_spellings:
            self._own_spellings[detector] = _Spellings({k: [e.labels] for k, e in own.items()})
        return self._own_spellings[detector]

    def lookup(self, detector: str, raw_label: str) -> tuple[TableEntry | None, tuple[str, ...]]:
        """(the detector's own entry, if that is what matched; the labels), or (None, ())."""
        key = normalize_label_text(raw_label)
        if not key:
            return None, ()
        own = self._own.get(detector, {}).get(key)
        if own is not None:
            return own, own.labels
        return None, self._shared.get(key, ())

    def respell(self, detector: str, raw_label: str) -> tuple[TableEntry | None, tuple[str, ...]]:
        """`lookup` of the one reading of the known spellings one edit away from `raw_label`."""
        key = normalize_label_text(raw_label)
        if len(key) < SPELLING_MIN_LENGTH:
            return None, ()
        own = self._spellings_of(detector)
        if own is not None:
            nearest, labels = own.resolve(key)
            if nearest is not None:
                return self._own[detector][nearest], labels
        everything = self._spellings_of(None)
        assert everything is not None
        return None, everything.resolve(key)[1]


class RulesMapper:
    """Exact table match, then normalized alias match against the taxonomy, then the normalized
    vendor vocabulary, then a known spelling one edit away, then other.unknown. Never a
    substring, never a guess between two labels."""

    def __init__(
        self,
        taxonomy: Taxonomy | None = None,
        tables: dict[str, MappingTable] | None = None,
    ) -> None:
        self.taxonomy = taxonomy or default_taxonomy()
        self.tables = tables if tables is not None else default_tables()
        self.vocabulary = Vocabulary(self.taxonomy, self.tables)

    def knows(self, detector: str) -> bool:
        return detector in self.tables

    def match(self, finding: NormalizedFinding) -> RuleMatch | None:
        """Resolves one finding; None when it falls below its detector's threshold."""
        table = self.tables.get(finding.detector)
        entry = table.lookup(finding.raw_label) if table else None
        if table and not table.passes(entry, finding.score, finding.severity):
            return None
        if entry is not None:
            return RuleMatch(entry.labels, entry.confidence, needs_review=False, matched=True)
        alias = self.taxonomy.resolve_alias(finding.raw_label)
        if alias is not None and alias != UNKNOWN:
            return RuleMatch((alias,), ALIAS_CONFIDENCE, needs_review=False, matched=True)
        own, labels = self.vocabulary.lookup(finding.detector, finding.raw_label)
        if own is not None and table and not table.passes(own, finding.score, finding.severity):
            return None
        if labels and UNKNOWN not in labels:
            return RuleMatch(labels, VOCABULARY_CONFIDENCE, needs_review=False, matched=True)
        if own is None and not labels:
            own, labels = self.vocabulary.respell(finding.detector, finding.raw_label)
            if own is not None and table and not table.passes(own, finding.score, finding.severity):
                return None
            if labels:
                return RuleMatch(labels, SPELLING_CONFIDENCE, needs_review=False, matched=True)
        return RuleMatch((UNKNOWN,), UNKNOWN_CONFIDENCE, needs_review=True, matched=False)

    def map_report(self, report: DetectorReport, request_id: str | None = None) -> dict[str, Any]:
        findings: list[CanonicalFinding] = []
        for raw in report.findings:
            resolved = self.match(raw)
            if resolved is None:
                continue
            method = "rule" if resolved.matched else "fallback"
            findings.extend(
                CanonicalFinding(
                    label=label,
                    confidence=resolved.confidence,
                    method=method,
                    source=raw,
                    needs_review=resolved.needs_review,
                )
                for label in resolved.labels
            )
        if not findings:
            # Nothing at or above threshold: the detector's answer is "no finding", said with the
            # same certainty as an exact table entry.
            findings.append(
                CanonicalFinding(
                    label=NO_FINDING,
                    confidence=EXACT_CONFIDENCE,
                    method="rule",
                    source=NormalizedFinding(detector=report.detector, raw_label=""),
                )
            )
        table = self.tables.get(report.detector)
        return build_result(
            findings,
            taxonomy=self.taxonomy,
            mapping_table_version=table.version_tag if table else None,
            request_id=request_id or str(uuid.uuid4()),
        )

    def map(
        self,
        detector: str,
        output: Any,
        *,
        request_id: str | None = None,
        strict: bool = True,
    ) -> dict[str, Any]:
        """Maps one detector output. An unknown detector raises NotFound when `strict`, else it
        yields other.unknown with needs_review (the hybrid path's answer when no model can help)."""
        jsonio.check(output, what="$.output")
        try:
            report = read(detector, output)
        except NotFound:
            if strict:
                raise
            unknown = CanonicalFinding(
                label=UNKNOWN,
                confidence=UNKNOWN_CONFIDENCE,
                method="fallback",
                source=NormalizedFinding(detector=detector, raw_label=""),
                needs_review=True,
            )
            return build_result(
                [unknown],
                taxonomy=self.taxonomy,
                mapping_table_version=None,
                request_id=request_id or str(uuid.uuid4()),
            )
        return self.map_report(report, request_id)
