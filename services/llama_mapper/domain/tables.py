"""Mapping tables: per detector, raw label -> canonical label(s), with score and severity thresholds."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.domain import catalog
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy

# A rule's prior that its label is right, before any model is involved. An exact table entry is
# written by a person from the vendor's documentation; an alias match is a normalization guess.
EXACT_CONFIDENCE = 0.99
ALIAS_CONFIDENCE = 0.85
# A vendor label written another way (case, separators, camelCase), or reported by a detector whose
# own table lacks it while every table that has it agrees on the labels.
VOCABULARY_CONFIDENCE = 0.8
# A known vendor label or alias misspelled by one letter, read as it (domain/rules.py Vocabulary).
SPELLING_CONFIDENCE = 0.75


@dataclass(frozen=True)
class TableEntry:
    raw_label: str
    labels: tuple[str, ...]
    min_score: float | None = None
    min_severity: int | None = None
    confidence: float = EXACT_CONFIDENCE


@dataclass(frozen=True)
class MappingTable:
    """One detector's table. Thresholds on an entry override the table's defaults."""

    detector: str
    version: str
    entries: dict[str, TableEntry]
    min_score: float | None = None
    min_severity: int | None = None
    case_sensitive: bool = True
    _folded: dict[str, TableEntry] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        folded = {key.casefold(): entry for key, entry in self.entries.items()}
        object.__setattr__(self, "_folded", folded)

    def lookup(self, raw_label: str) -> TableEntry | None:
        if self.case_sensitive:
            return self.entries.get(raw_label)
        return self._folded.get(raw_label.casefold())

    def passes(self, entry: TableEntry | None, score: float | None, severity: int | None) -> bool:
        """Whether a finding clears the threshold that applies to it."""
        min_score = entry.min_score if entry and entry.min_score is not None else self.min_score
        min_sev = (
            entry.min_severity if entry and entry.min_severity is not None else self.min_severity
        )
        if min_score is not None and score is not None and score < min_score:
            return False
        return not (min_sev is not None and severity is not None and severity < min_sev)

    @property
    def version_tag(self) -> str:
        return f"{self.detector}@{self.version}"


def parse_table(doc: dict[str, Any], taxonomy: Taxonomy) -> MappingTable:
    detector = doc.get("detector")
    if not detector:
        raise InvalidArgument("mapping table has no `detector`")
    entries: dict[str, TableEntry] = {}
    for raw, spec in (doc.get("labels") or {}).items():
        spec = {"labels": spec} if isinstance(spec, str | list) else spec
        labels = spec["labels"]
        labels = (labels,) if isinstance(labels, str) else tuple(labels)
        for label in labels:
            if label not in taxonomy:
                raise InvalidArgument(
                    f"mapping table {detector}: {raw!r} maps to {label!r}, "
                    f"which is not in taxonomy v{taxonomy.version}"
                )
        entries[str(raw)] = TableEntry(
            raw_label=str(raw),
            labels=labels,
            min_score=spec.get("min_score"),
            min_severity=spec.get("min_severity"),
            confidence=float(spec.get("confidence", EXACT_CONFIDENCE)),
        )
    return MappingTable(
        detector=str(detector),
        version=str(doc.get("version", "1.0.0")),
        entries=entries,
        min_score=doc.get("min_score"),
        min_severity=doc.get("min_severity"),
        case_sensitive=bool(doc.get("case_sensitive", True)),
    )


def _tables_dir() -> Path:
    return catalog.path("mappings")


@cache
def default_tables() -> dict[str, MappingTable]:
    """Every shipped table, validated against the default taxonomy once per process."""
    taxonomy = default_taxonomy()
    tables = {}
    for path in sorted(_tables_dir().glob("*.yaml")):
        table = parse_table(yaml.safe_load(path.read_text(encoding="utf-8")), taxonomy)
        tables[table.detector] = table
    return tables
