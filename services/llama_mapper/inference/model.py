"""The model side of mapping: one protocol that every engine (vLLM, transformers) implements."""

# Evaluation and serving depend on this protocol, never on an engine, so
# routing and metric logic are tested against a small engine and the heavy one is swapped in.

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class MapperQuery:
    """One finding to label: the detector's name and the finding payload from prompt.finding_payload."""

    detector: str
    finding: Mapping[str, Any]
    # The labels the answer is constrained to (domain/retrieval.py), other.unknown among them;
    # empty: the whole label set.
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """The model's label for one query.

    `label` is always inside the taxonomy (constrained decoding, then validation; an engine that
    cannot produce a valid label returns other.unknown with `valid=False`). `confidence` is
    exp(sum of the label tokens' log-probabilities), before any temperature is applied.
    """

    label: str
    confidence: float
    logprob: float
    latency_s: float
    valid: bool = True


class MapperModel(Protocol):
    """An engine with one adapter selected: labels a batch of findings, in order."""

    @property
    def description(self) -> Mapping[str, Any]:
        """Provenance: base model id and sha256, adapter name and version."""
        ...

    def predict(self, queries: Sequence[MapperQuery]) -> list[Prediction]: ...
