"""Normalized findings: what every detector reader produces, whatever the vendor's shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True)
class NormalizedFinding:
    """One raw finding as a detector reported it, minus the detected content itself.

    `score` is the vendor's confidence or probability in [0, 1] when it reports one; `severity` is
    an ordinal the vendor reports instead (Azure 0-7, DLP likelihood 0-5, Bedrock NONE..HIGH as 0-3).
    `attributes` carries vendor metadata that a mapping table may key on (e.g. Bedrock policy type),
    never the matched text.
    """

    detector: str
    raw_label: str
    score: float | None = None
    severity: int | None = None
    span: Span | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def source(self) -> dict[str, Any]:
        """The `source` object of a canonical finding (schemas/mapper-output.json)."""
        out: dict[str, Any] = {"detector": self.detector, "raw_label": self.raw_label}
        if self.score is not None:
            out["score"] = round(float(self.score), 6)
        if self.severity is not None:
            out["severity"] = self.severity
        if self.span is not None:
            out["span"] = {"start": self.span.start, "end": self.span.end}
        return out


@dataclass(frozen=True)
class DetectorReport:
    """A whole detector output: its findings, or an explicit statement that it found nothing."""

    detector: str
    findings: tuple[NormalizedFinding, ...]
    explicit_no_finding: bool = False
