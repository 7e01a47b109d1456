"""What is evaluated: the rules mapper, a mapper model, or the hybrid of both as serving runs it.

A subject answers findings one by one (`answer`); `assemble` turns the answers for one detector
output into the canonical result exactly as serving builds it (build_result validates it against
mapper-output.json), so the schema-valid rate measures the real output path.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from llama_mapper.domain.errors import MapperError
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.result import CanonicalFinding, build_result
from llama_mapper.domain.rules import UNKNOWN_CONFIDENCE, RulesMapper
from llama_mapper.domain.tables import EXACT_CONFIDENCE
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy
from llama_mapper.evaluation.evalset import MapperCase
from llama_mapper.inference.model import MapperModel, MapperQuery, Prediction

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

RULE, MODEL, FALLBACK = "rule", "model", "fallback"


@dataclass(frozen=True)
class Answer:
    """How one finding was answered. `labels` is empty when the finding fell below its threshold."""

    labels: tuple[str, ...]
    confidence: float
    method: str
    latency_s: float
    model_answered: bool = False
    logprob: float = 0.0


class Subject(Protocol):
    name: str

    def answer(
        self, cases: Sequence[MapperCase], progress: Progress | None = None
    ) -> list[Answer]: ...


def _noop(_: int) -> None:
    return None


class RulesSubject:
    name = "rules"

    def __init__(self, rules: RulesMapper | None = None) -> None:
        self.rules = rules or RulesMapper()

    def answer_one(self, case: MapperCase) -> Answer:
        started = time.perf_counter()
        match = self.rules.match(case.normalized())
        elapsed = time.perf_counter() - started
        if match is None:
            return Answer((), EXACT_CONFIDENCE, RULE, elapsed)
        return Answer(match.labels, match.confidence, RULE if match.matched else FALLBACK, elapsed)

    def answer(self, cases: Sequence[MapperCase], progress: Progress | None = None) -> list[Answer]:
        out = []
        for case in cases:
            out.append(self.answer_one(case))
            (progress or _noop)(1)
        return out


def _from_prediction(prediction: Prediction, taxonomy: Taxonomy) -> Answer:
    if prediction.valid:
        # Kept even when outside the taxonomy: assemble() then counts it as a schema failure, which
        # is what an engine that leaks a label must show up as.
        return Answer(
            (prediction.label,),
            prediction.confidence,
            MODEL,
            prediction.latency_s,
            model_answered=True,
            logprob=prediction.logprob,
        )
    return Answer((UNKNOWN,), UNKNOWN_CONFIDENCE, FALLBACK, prediction.latency_s)


def predict_in_batches(
    model: MapperModel,
    cases: Sequence[MapperCase],
    taxonomy: Taxonomy,
    batch_size: int,
    progress: Progress | None = None,
) -> list[Answer]:
    """The model's answers in order; a batch the engine fails on falls back, never fails open."""
    answers: list[Answer] = []
    for start in range(0, len(cases), batch_size):
        batch = cases[start : start + batch_size]
        queries = [MapperQuery(c.detector, c.finding) for c in batch]
        started = time.perf_counter()
        try:
            predictions = model.predict(queries)
            if len(predictions) != len(queries):
                raise MapperError(f"engine answered {len(predictions)} of {len(queries)} queries")
        except Exception as exc:
            log.warning(
                "engine failed on a batch of %d (%s): fallback", len(batch), type(exc).__name__
            )
            per_case = (time.perf_counter() - started) / max(len(batch), 1)
            answers.extend(
                Answer((UNKNOWN,), UNKNOWN_CONFIDENCE, FALLBACK, per_case) for _ in batch
            )
        else:
            answers.extend(_from_prediction(p, taxonomy) for p in predictions)
        (progress or _noop)(len(batch))
    return answers


class ModelSubject:
    name = "model"

    def __init__(self, model: MapperModel, taxonomy: Taxonomy, batch_size: int = 16) -> None:
        self.model = model
        self.taxonomy = taxonomy
        self.batch_size = batch_size

    def answer(self, cases: Sequence[MapperCase], progress: Progress | None = None) -> list[Answer]:
        return predict_in_batches(self.model, cases, self.taxonomy, self.batch_size, progress)


class HybridSubject:
    """Rules first; the model answers only the findings the rules map to other.unknown."""

    name = "hybrid"

    def __init__(
        self, rules: RulesMapper, model: MapperModel, taxonomy: Taxonomy, batch_size: int = 16
    ) -> None:
        self.rules = RulesSubject(rules)
        self.model = model
        self.taxonomy = taxonomy
        self.batch_size = batch_size

    def answer(self, cases: Sequence[MapperCase], progress: Progress | None = None) -> list[Answer]:
        answers = [self.rules.answer_one(c) for c in cases]
        pending = [
            i for i, a in enumerate(answers) if a.labels == (UNKNOWN,) and a.method == FALLBACK
        ]
        (progress or _noop)(len(cases) - len(pending))
        model_answers = predict_in_batches(
            self.model, [cases[i] for i in pending], self.taxonomy, self.batch_size, progress
        )
        for i, model_answer in zip(pending, model_answers, strict=True):
            rule_time = answers[i].latency_s
            answers[i] = Answer(
                model_answer.labels,
                model_answer.confidence,
                model_answer.method,
                rule_time + model_answer.latency_s,
                model_answer.model_answered,
                model_answer.logprob,
            )
        return answers


@dataclass(frozen=True)
class Output:
    """One detector output's canonical result, as far as evaluation needs it."""

    labels: frozenset[str]
    schema_valid: bool
    out_of_taxonomy: int
    result: dict[str, Any] | None


def assemble(
    findings: Sequence[tuple[MapperCase, Answer]],
    taxonomy: Taxonomy,
    model: dict[str, Any] | None = None,
) -> Output:
    """Builds the canonical result for findings of one output, as serving does, and checks it."""
    items: list[CanonicalFinding] = []
    labels: set[str] = set()
    out_of_taxonomy = 0
    for case, answer in findings:
        source = case.normalized()
        source = NormalizedFinding(
            source.detector, source.raw_label[:200], source.score, source.severity
        )
        for label in answer.labels:
            labels.add(label)
            out_of_taxonomy += label not in taxonomy
            needs_review = label == UNKNOWN
            items.append(
                CanonicalFinding(label, answer.confidence, answer.method, source, needs_review)
            )  # type: ignore[arg-type]
    if not items:
        labels = {NO_FINDING}
        detector = findings[0][0].detector if findings else "unknown"
        items.append(
            CanonicalFinding(NO_FINDING, EXACT_CONFIDENCE, RULE, NormalizedFinding(detector, ""))
        )
    try:
        result = build_result(
            items,
            taxonomy=taxonomy,
            request_id=str(uuid.uuid4()),
            mapping_table_version=None,
            model=model,
        )
    except Exception:
        # An invalid output is exactly what the schema-valid rate counts; the label set is kept so
        # the out-of-taxonomy count can name it.
        return Output(frozenset(labels), False, out_of_taxonomy, None)
    valid = out_of_taxonomy == 0 and all(label in taxonomy for label in result["taxonomy"])
    return Output(frozenset(result["taxonomy"]), valid, out_of_taxonomy, result)
