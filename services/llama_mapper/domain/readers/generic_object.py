"""One object of a generic detector output, its entries sorted by what their keys mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llama_mapper.domain.findings import Span
from llama_mapper.domain.readers.generic_keys import (
    CLEAN_VERDICTS,
    NOT_VERDICTS,
    KeyMeaning,
    Role,
    key_meaning,
)
from llama_mapper.domain.readers.generic_values import (
    MAX_ATTRIBUTES,
    REASON,
    Draft,
    as_number,
    attribute_key,
    label_or_reason,
    named,
    offset_of,
    redacted_label,
    redacted_reason,
    score_of,
    severity_word,
    span_of,
    verdict_word,
)
from llama_mapper.domain.redaction import redact

# Larger maps and lists are not paired up (labels / scores, flags / scores): walked item by item.
_MAX_SCAN = 10_000

if TYPE_CHECKING:
    from llama_mapper.domain.readers.generic import Walker


class ObjectView:
    """One object's entries, sorted by what their keys mean."""

    def __init__(
        self, walker: Walker, obj: Mapping[Any, Any], path: list[str | int], mode: Role | None
    ) -> None:
        self.walker = walker
        self.mode = mode
        self.labels: list[tuple[int, str, str]] = []  # (tier, key, text)
        self.reason: str | None = None
        self.score: float | None = None
        self.severity: tuple[int, bool] | None = None
        self.threshold: float | None = None
        self.flag: bool | None = None
        self.flag_key: str | None = None
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.lengths: list[int] = []
        self.span: Span | None = None
        self.entries: list[tuple[str, Any]] = []  # (category key, bool / number / str value)
        self.children: list[tuple[str, KeyMeaning, Any]] = []
        for raw_key, value in obj.items():
            if not isinstance(raw_key, str | int) or isinstance(raw_key, bool):
                walker.visit([*path, "?"])
                continue
            key = raw_key if isinstance(raw_key, str) else str(raw_key)
            walker.visit([*path, key])
            self.add(key, key_meaning(key), value, [*path, key])
        if self.span is None and self.starts and self.ends and self.starts[0] <= self.ends[0]:
            self.span = Span(self.starts[0], self.ends[0])
        elif self.span is None and self.starts and self.lengths:
            self.span = Span(self.starts[0], self.starts[0] + self.lengths[0])

    def add(self, key: str, meaning: KeyMeaning, value: Any, path: list[str | int]) -> None:
        role = meaning.role
        if isinstance(value, bool):
            if meaning.polarity is not None:
                found = value if meaning.polarity else not value
                self.flag = found if self.flag is None else self.flag or found
                self.flag_key = self.flag_key or (key if meaning.polarity else None)
            elif meaning.nameable:
                self.entries.append((key, value))
        elif isinstance(value, int | float):
            self.add_number(key, meaning, value)
        elif isinstance(value, str):
            self.add_text(key, meaning, value, path)
        elif isinstance(value, Mapping | list | tuple):
            if meaning.opaque:
                return
            if role is Role.SPAN and self.span is None:
                self.span = span_of(value)
                self.walker.visit(path)
                return
            if role is Role.LABEL and meaning.tier < 3 and isinstance(value, Mapping):
                inner = _inner_label(value)
                if inner is not None:
                    self.labels.append((meaning.tier, key, inner))
                    self.walker.visit(path)
                    return
            self.children.append((key, meaning, value))

    def add_number(self, key: str, meaning: KeyMeaning, value: float) -> None:
        role = meaning.role
        if role is Role.SCORE:
            self.score = score_of(value, percent=True) if self.score is None else self.score
        elif role is Role.SEVERITY:
            if isinstance(value, int) and 0 <= value <= 100:
                self.severity = self.severity or (value, value > 0)
            elif self.score is None:
                self.score = score_of(value, percent=False)
        elif role is Role.THRESHOLD:
            self.threshold = score_of(value, percent=True)
        elif role is Role.SPAN_START and (offset := offset_of(value)) is not None:
            self.starts.append(offset)
        elif role is Role.SPAN_END and (offset := offset_of(value)) is not None:
            self.ends.append(offset)
        elif role is Role.SPAN_LENGTH and (offset := offset_of(value)) is not None:
            self.lengths.append(offset)
        elif meaning.nameable and (
            isinstance(value, float) or self.mode in (Role.SCORE, Role.SEVERITY)
        ):
            self.entries.append((key, value))

    def add_text(self, key: str, meaning: KeyMeaning, value: str, path: list[str | int]) -> None:
        role = meaning.role
        nested = self.walker.nested_json(value, path)
        if nested is not None:
            self.children.append((key, meaning, nested))
        elif role is Role.LABEL:
            word = verdict_word(value)
            if meaning.tier < 3 or word not in NOT_VERDICTS:
                self.labels.append((meaning.tier, key, value))
        elif role is Role.REASON:
            self.reason = self.reason or (redacted_reason(value) or None)
        elif role in (Role.SCORE, Role.SEVERITY):
            number = score_of(value, percent=True)
            if number is not None and role is Role.SCORE:
                self.score = self.score if self.score is not None else number
            elif (ordinal := severity_word(value)) is not None:
                self.severity = self.severity or ordinal
        elif role is Role.THRESHOLD:
            self.threshold = score_of(value, percent=True)
        elif role in (Role.SPAN_START, Role.SPAN_END, Role.SPAN_LENGTH):
            if (offset := offset_of(value)) is not None:
                self.add_number(key, meaning, offset)
        elif meaning.polarity is not None and value.strip().lower() in ("true", "false"):
            self.add(key, meaning, value.strip().lower() == "true", path)
        elif role is Role.OTHER and meaning.nameable and redact(value[:256]) != value[:256]:
            # {"EMAIL_ADDRESS": "jane@example.com"}: the key names what the value is.
            self.entries.append((key, True))

    # the findings ---------------------------------------------------------------------------------

    def parallel_lists(self) -> list[Draft]:
        """{"labels": ["toxic", "insult"], "scores": [0.9, 0.1]} (a zero-shot classifier)."""
        labels = [c for c in self.children if c[1].role is Role.LABEL and _all_str(c[2])]
        scores = [c for c in self.children if c[1].role is Role.SCORE and _all_numbers(c[2])]
        if not labels or not scores or len(labels[0][2]) != len(scores[0][2]):
            return []
        self.children = [c for c in self.children if c is not labels[0] and c is not scores[0]]
        for index in range(2 * len(labels[0][2])):
            self.walker.visit([index])
        self.walker.recognized = True
        found = []
        for text, number in zip(labels[0][2], scores[0][2], strict=True):
            score = score_of(number, percent=False)
            if score is not None and score >= self.cutoff():
                found.extend(self.entry_finding(text, score=score))
        return found

    def merged_maps(self) -> list[Draft]:
        """{"categories": {"hate": true}, "category_scores": {"hate": 0.91}}: one finding each."""
        flags = [c for c in self.children if _is_map(c[2], bool)]
        scores = [c for c in self.children if _is_map(c[2], float) and c not in flags]
        for flag_child in flags:
            for score_child in scores:
                common = set(flag_child[2]) & set(score_child[2])
                if len(common) * 2 < len(flag_child[2]):
                    continue
                self.children = [c for c in self.children if c not in (flag_child, score_child)]
                for _ in range(len(flag_child[2]) + len(score_child[2])):
                    self.walker.visit([])
                self.walker.recognized = True
                found = []
                for key, flagged in flag_child[2].items():
                    if flagged is True and isinstance(key, str):
                        score = score_of(score_child[2].get(key), percent=False)
                        found.extend(self.entry_finding(key, score=score))
                return found
        return []

    def cutoff(self) -> float:
        return self.threshold if self.threshold is not None else self.walker.min_score

    def entry_finding(
        self, key: str, *, score: float | None = None, severity: int | None = None
    ) -> list[Draft]:
        found = named(key)
        found.score, found.severity = score, severity
        return [found]

    def context(self) -> dict[str, Any]:
        """What this object says about the findings inside it: its labels and reason."""
        out: dict[str, Any] = {}
        if self.reason:
            out[REASON] = self.reason
        for tier, key, text in sorted(self.labels, key=lambda t: t[0]):
            if tier == 3 and verdict_word(text) in CLEAN_VERDICTS:
                continue  # {"status": "ok", "data": [...]}: about the request, not the findings
            attribute, (label, _) = attribute_key(key), label_or_reason(text)
            if attribute and label and attribute not in out:
                out[attribute] = label
        return dict(list(out.items())[:MAX_ATTRIBUTES])

    def entry_findings(self) -> list[Draft]:
        found: list[Draft] = []
        best: tuple[float, str] | None = None
        for key, value in self.entries:
            if value is True:
                found.extend(self.entry_finding(key))
            elif value is False:
                continue
            elif self.mode is Role.SEVERITY and isinstance(value, int):
                if value > 0:
                    found.extend(self.entry_finding(key, severity=value))
            elif (score := score_of(value, percent=self.mode is Role.SCORE)) is not None:
                if score >= self.cutoff():
                    found.extend(self.entry_finding(key, score=score))
                elif best is None or score > best[0]:
                    best = (score, key)
        if not found and best is not None and self.flag is True:
            # The vendor flagged the object by its own threshold: its top category is why.
            found = self.entry_finding(best[1], score=best[0])
        if len(found) == 1 and found[0].score is None and found[0].severity is None:
            found[0].score = self.score
        return found

    def own_findings(self, name: str | None) -> list[Draft]:
        """The object as one finding (a verdict, an entity), its category map, or nothing."""
        labels = sorted(self.labels, key=lambda t: t[0])
        signals = labels or self.entries or self.reason is not None
        if not signals and self.flag is None and self.score is None and self.severity is None:
            return []
        self.walker.recognized = True
        if self.flag is False:
            return []
        if not labels and self.entries:
            entries = self.entry_findings()
            for finding in entries:
                finding.inherit(self.context())
            if entries or self.flag is not True:
                return entries
        weak = False
        if labels:
            tier, _, text = labels[0]
            if tier == 3 and verdict_word(text) in CLEAN_VERDICTS:
                return []
            found = named(text)
        elif name is not None:
            found = named(name)
        else:
            found = Draft(redacted_label(self.flag_key) if self.flag_key else "")
            weak = True
        if self.flag is not True and not self.passes(named=bool(labels) or name is not None):
            return []
        found.score = self.score
        found.severity = self.severity[0] if self.severity else None
        found.span = self.span
        found.weak = weak
        found.inherit(self.context())
        if labels:  # the label itself is not an attribute of its own finding
            key = attribute_key(labels[0][1])
            if key and found.attributes.get(key) == found.label:
                del found.attributes[key]
        return [found]

    def passes(self, *, named: bool) -> bool:
        """Without a flag: a finding unless its score or severity says the vendor saw nothing."""
        if self.severity is not None and not self.severity[1]:
            return False
        if self.score is not None:
            return self.score >= self.cutoff()
        return named or self.severity is not None or self.reason is not None


def _inner_label(value: Mapping[Any, Any]) -> str | None:
    """{"infoType": {"name": "EMAIL_ADDRESS", "version": "1"}}: a small object of strings that only
    names the label one level down; an object with scores or flags is a finding of its own."""
    if not 0 < len(value) <= 4 or not all(isinstance(v, str) for v in value.values()):
        return None
    texts = [
        (meaning.tier, v)
        for k, v in value.items()
        if isinstance(k, str) and (meaning := key_meaning(k)).role is Role.LABEL
    ]
    return min(texts)[1] if texts else None


def _all_str(value: Any) -> bool:
    return (
        isinstance(value, list)
        and 0 < len(value) <= _MAX_SCAN
        and all(isinstance(v, str) for v in value)
    )


def _all_numbers(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) <= _MAX_SCAN
        and all(as_number(v) is not None for v in value)
    )


def _is_map(value: Any, kind: type) -> bool:
    if not isinstance(value, Mapping) or not value or len(value) > _MAX_SCAN:
        return False
    if kind is bool:
        return all(isinstance(v, bool) for v in value.values())
    return all(isinstance(v, float | int) and not isinstance(v, bool) for v in value.values())
