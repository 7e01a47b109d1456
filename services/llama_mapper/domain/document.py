"""One result per document: several detectors' canonical findings for one text, merged by position."""

# Detectors locate what they find in different units: most in characters of the text, Google DLP
# in UTF-8 bytes when it inspected bytes, the secret scanners in lines. Given the text, every
# position is converted to characters of it and every finding can be compared with every other;
# without it each span stays in its detector's unit, and findings in different units are never
# merged or compared. The text serves the conversion and nothing else: no slice of it, and no
# digest the caller did not send, ever reaches the result. docs/DATA.md has the rules.

from __future__ import annotations

import hashlib
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate
from typing import Any

from llama_mapper.domain.errors import InvalidArgument, PayloadTooLarge
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.result import CanonicalFinding, framework_controls
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy

# Most detector outputs one document takes, and most findings all of them may hold together (a
# 1 MiB line of Presidio findings holds about 15,000). The merge is O(n log n) in the findings;
# the schema check of the result, like build_result's, is linear with a large constant.
MAX_OUTPUTS = 32
MAX_SOURCES = 20_000

CHAR, BYTE, LINE = "char", "byte", "line"
_UNIT_ORDER = {CHAR: 0, BYTE: 1, LINE: 2}

# Where each secret scanner's reader keeps a finding's line: the first line, and the last when
# the scanner reports a range. Line 0 is what a scanner writes when it does not know the line.
LINE_ATTRIBUTES: dict[str, tuple[str, str | None]] = {
    "detect-secrets": ("line_number", None),
    "gitleaks": ("start_line", "end_line"),
    "trufflehog": ("line", None),
}

# other.unknown says "could not map" and other.no_finding "nothing here": neither claims anything
# about a span, so neither is in conflict with a label that does.
_NO_CLAIM = frozenset({UNKNOWN, NO_FINDING})
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class DetectorResult:
    """One detector output of the document, mapped: its canonical result and the findings that
    result was built from, in the result's order (the hybrid's `Outcome.findings`)."""

    detector: str
    result: Mapping[str, Any]
    findings: Sequence[CanonicalFinding]


@dataclass(frozen=True)
class Position:
    """A half-open [start, end) in `unit`: characters and bytes from 0, lines from 1."""

    unit: str
    start: int
    end: int

    def overlaps(self, other: Position) -> bool:
        """They share a position; an empty span is a point, inside a span or at its start."""
        return (self.start < other.end and other.start < self.end) or self.start == other.start


def reported_position(raw: NormalizedFinding, where: str) -> Position | None:
    """Where the detector says the finding is, in its own unit; None when it does not say.
    A negative or reversed position is refused, naming `where`."""
    if raw.span is not None:
        unit = BYTE if raw.attributes.get("span_unit") == "byte" else CHAR
        start, end = raw.span.start, raw.span.end
    else:
        keys = LINE_ATTRIBUTES.get(raw.detector)
        first = raw.attributes.get(keys[0]) if keys else None
        if first is None or first == 0:
            return None
        last = raw.attributes.get(keys[1], first) if keys and keys[1] else first
        if not _is_int(first) or not _is_int(last):
            raise InvalidArgument(f"{where}: line numbers must be integers")
        if first < 0:
            raise InvalidArgument(f"{where}: line {first} is negative")
        if last < first:
            raise InvalidArgument(f"{where}: last line {last} is before first line {first}")
        return Position(LINE, first, last + 1)
    if not _is_int(start) or not _is_int(end):
        raise InvalidArgument(f"{where}: span offsets must be integers")
    if start < 0:
        raise InvalidArgument(f"{where}: span start {start} is negative")
    if end < start:
        raise InvalidArgument(f"{where}: span end {end} is before its start {start}")
    return Position(unit, start, end)


class TextPositions:
    """Byte and line positions of one text as character positions; tables built on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._byte_starts: list[int] | None = None
        self._line_starts: list[int] | None = None

    def to_chars(self, position: Position, where: str) -> Position:
        if position.unit == CHAR:
            self._within(position.end, len(self.text), "characters", where)
            return position
        if position.unit == BYTE:
            starts = self._bytes()
            self._within(position.end, starts[-1], "bytes", where)
            # A byte offset inside a character widens the span to the whole character.
            start = bisect_right(starts, position.start) - 1
            return Position(CHAR, start, bisect_left(starts, position.end))
        lines = self._lines()
        last = position.end - 1
        if last > len(lines):
            raise InvalidArgument(f"{where}: line {last} is past the text's {len(lines)} lines")
        start = lines[position.start - 1]
        # A line's span ends before its line break ("\n", or "\r\n").
        end = lines[last] - 1 if last < len(lines) else len(self.text)
        if end > start and self.text[end - 1] == "\r":
            end -= 1
        return Position(CHAR, start, end)

    def _bytes(self) -> list[int]:
        """starts[i]: the UTF-8 offset of character i; starts[-1]: the text's length in bytes."""
        if self._byte_starts is None:
            if self.text.isascii():
                self._byte_starts = list(range(len(self.text) + 1))
            else:
                self._byte_starts = [0, *accumulate(map(_utf8_length, self.text))]
        return self._byte_starts

    def _lines(self) -> list[int]:
        if self._line_starts is None:
            self._line_starts = [0, *(m.end() for m in re.finditer("\n", self.text))]
        return self._line_starts

    @staticmethod
    def _within(end: int, limit: int, what: str, where: str) -> None:
        if end > limit:
            raise InvalidArgument(f"{where}: span end {end} is past the text's {limit} {what}")


@dataclass
class _Source:
    output: int
    finding: CanonicalFinding
    raw: tuple[int, int]  # (output, position of its raw finding): one raw finding, many labels
    reported: Position | None
    at: Position | None  # in the document's positions


@dataclass(eq=False)
class _Merged:
    label: str
    sources: list[_Source]
    at: Position | None
    conflicts: list[_Merged] = field(default_factory=list)

    @cached_property
    def raws(self) -> frozenset[tuple[int, int]]:
        """Taken once the merge is done: a long chain is compared with many findings."""
        return frozenset(source.raw for source in self.sources)


def build_document(
    results: Sequence[DetectorResult],
    *,
    taxonomy: Taxonomy,
    request_id: str,
    text: str | None = None,
    text_sha256: str | None = None,
) -> dict[str, Any]:
    """The document result (schemas/document-output.json), validated.

    Findings whose spans overlap and whose labels agree become one finding with every source;
    overlapping findings with different labels are both kept and flagged `conflict`; findings
    without a position are merged only with position-less findings of the same label. A bad
    position is InvalidArgument naming `$.outputs[i].output: finding j`, j its index among that
    output's canonical findings (the `findings` /v1/map returns for it)."""
    _check_request(results, text, text_sha256)
    positions = TextPositions(text) if text is not None else None
    sources = _sources(results, positions)
    # "Nothing found" from one detector says nothing against another's finding: it stays in that
    # output's own `taxonomy`, and is a finding only when no detector found anything.
    claims = [source for source in sources if source.finding.label != NO_FINDING]
    merged = _merge(claims or sources)
    _flag_conflicts(merged)
    merged.sort(key=_order)
    index = {id(m): i for i, m in enumerate(merged)}
    findings = [_finding_dict(m, taxonomy, index) for m in merged]
    provenance: dict[str, Any] = {
        "taxonomy_version": taxonomy.version,
        "request_id": request_id,
        "positions": "text" if text is not None else "reported",
    }
    if text_sha256 is not None:
        provenance["text_sha256"] = text_sha256
    labels = sorted({finding["label"] for finding in findings})
    document = {
        "taxonomy": labels,
        "findings": findings,
        "frameworks": [],
        "needs_review": any(f.get("needs_review") or f.get("conflict") for f in findings),
        "outputs": [_output_dict(result) for result in results],
        "provenance": provenance,
    }
    validator("document-output").validate(document)
    document["frameworks"] = framework_controls(labels)
    return document


def _check_request(
    results: Sequence[DetectorResult], text: str | None, text_sha256: str | None
) -> None:
    if not results:
        raise InvalidArgument("$.outputs: at least one detector output is required")
    if len(results) > MAX_OUTPUTS:
        raise InvalidArgument(
            f"$.outputs: at most {MAX_OUTPUTS} detector outputs, got {len(results)}"
        )
    if text is not None and not isinstance(text, str):
        raise InvalidArgument("$.text must be a string")
    if text_sha256 is not None and not (
        isinstance(text_sha256, str) and _SHA256.match(text_sha256)
    ):
        raise InvalidArgument("$.text_sha256 must be 64 lowercase hex digits")
    if text is None:
        return
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidArgument(f"$.text: a lone surrogate at character {exc.start}") from None
    if text_sha256 is not None and hashlib.sha256(encoded).hexdigest() != text_sha256:
        raise InvalidArgument("$.text_sha256 does not match the text")


def _sources(results: Sequence[DetectorResult], text: TextPositions | None) -> list[_Source]:
    sources: list[_Source] = []
    for i, result in enumerate(results):
        if len(sources) + len(result.findings) > MAX_SOURCES:
            raise PayloadTooLarge(f"$.outputs: more than {MAX_SOURCES} findings in one document")
        raws: dict[int, int] = {}
        files: set[str] = set()
        for j, finding in enumerate(result.findings):
            where = f"$.outputs[{i}].output: finding {j}"
            reported = reported_position(finding.source, where)
            if reported is not None and reported.unit == LINE:
                file = finding.source.attributes.get("file")
                if isinstance(file, str):
                    files.add(file)
            at = text.to_chars(reported, where) if text is not None and reported else reported
            # The findings of one raw finding (a table's many-to-many entry) share its object.
            raw = (i, raws.setdefault(id(finding.source), j))
            sources.append(_Source(i, finding, raw, reported, at))
        if len(files) > 1:
            raise InvalidArgument(
                f"$.outputs[{i}].output: line numbers in {len(files)} files; "
                "a document is one text (send one output per file)"
            )
    return sources


def _merge(sources: list[_Source]) -> list[_Merged]:
    """Same label and overlapping positions in one unit: one finding (transitively: a chain of
    overlaps is one finding). Same label and no position: one finding."""
    groups: dict[tuple[str, str | None], list[_Source]] = {}
    for source in sources:
        unit = source.at.unit if source.at else None
        groups.setdefault((source.finding.label, unit), []).append(source)
    merged: list[_Merged] = []
    for (label, unit), members in groups.items():
        if unit is None:
            merged.append(_Merged(label, members, None))
            continue
        located = sorted(((s.at, s) for s in members if s.at), key=lambda p: _start(p[0]))
        current: _Merged | None = None
        for at, source in located:
            if current is not None and current.at and current.at.overlaps(at):
                current.sources.append(source)
                current.at = Position(unit, current.at.start, max(current.at.end, at.end))
            else:
                current = _Merged(label, [source], at)
                merged.append(current)
    for m in merged:
        m.sources.sort(key=lambda s: s.raw)
    return merged


def _flag_conflicts(merged: list[_Merged]) -> None:
    """Overlapping findings of one unit with different labels, unless one raw finding answered
    both (the table says the span may be both). A sweep by start: the findings still open at a
    start are at most one per label, so the work is O(n log n + n x labels)."""
    located = sorted(
        ((m.at, m) for m in merged if m.at and m.label not in _NO_CLAIM),
        key=lambda p: _start(p[0]),
    )
    active: list[tuple[Position, _Merged]] = []
    for at, m in located:
        active = [
            (a, other)
            for a, other in active
            if a.unit == at.unit and (a.end > at.start or a.start == at.start)
        ]
        for _, other in active:
            if other.label != m.label and not (other.raws & m.raws):
                other.conflicts.append(m)
                m.conflicts.append(other)
        active.append((at, m))


def _start(at: Position) -> tuple[int, int, int]:
    return (_UNIT_ORDER[at.unit], at.start, at.end)


def _order(m: _Merged) -> tuple[int, int, int, int, str]:
    if m.at is None:
        return (1, 0, 0, 0, m.label)
    return (0, _UNIT_ORDER[m.at.unit], m.at.start, m.at.end, m.label)


def _finding_dict(m: _Merged, taxonomy: Taxonomy, index: dict[int, int]) -> dict[str, Any]:
    label = taxonomy.get(m.label)
    out: dict[str, Any] = {
        "label": label.name,
        "category": label.category,
        "subcategory": label.subcategory,
        "confidence": max(_confidence(s.finding.confidence) for s in m.sources),
    }
    if m.at is not None:
        out["span"] = {"start": m.at.start, "end": m.at.end}
        out["span_unit"] = m.at.unit
    if any(s.finding.needs_review for s in m.sources):
        out["needs_review"] = True
    if m.conflicts:
        out["conflict"] = True
        out["conflicts_with"] = sorted({index[id(other)] for other in m.conflicts})
    out["sources"] = [_source_dict(s) for s in m.sources]
    return out


def _source_dict(source: _Source) -> dict[str, Any]:
    finding = source.finding
    out: dict[str, Any] = {"output": source.output, **finding.source.source()}
    out.pop("span", None)
    if source.reported is not None:
        out["span"] = {"start": source.reported.start, "end": source.reported.end}
        out["span_unit"] = source.reported.unit
    out["confidence"] = _confidence(finding.confidence)
    out["method"] = finding.method
    if finding.needs_review:
        out["needs_review"] = True
    return out


def _output_dict(result: DetectorResult) -> dict[str, Any]:
    provenance = result.result.get("provenance", {})
    out: dict[str, Any] = {
        "detector": result.detector,
        "taxonomy": list(result.result["taxonomy"]),
        "needs_review": bool(result.result.get("needs_review", False)),
    }
    for key in ("mapping_table_version", "model", "router_arm"):
        if key in provenance:
            out[key] = provenance[key]
    return out


def _confidence(value: float) -> float:
    return round(min(max(float(value), 0.0), 1.0), 6)


def _utf8_length(char: str) -> int:
    code = ord(char)
    return 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
