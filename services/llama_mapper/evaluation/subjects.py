"""What is evaluated: the served path (HybridMapper: rules, the model under a temperature and a
threshold, fallback), the same path without a model (the rules), or the adapter alone."""

# A subject answers findings one by one (`answer`); `assemble` turns the answers for one detector
# output into the canonical result exactly as serving builds it (build_result validates it against
# mapper-output.json), so the schema-valid rate measures the real output path.

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from llama_mapper.domain.errors import MapperError
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.readers.generic import RAW_LABEL_CHARS
from llama_mapper.domain.result import CanonicalFinding, build_result
from llama_mapper.domain.rules import UNKNOWN_CONFIDENCE
from llama_mapper.domain.tables import EXACT_CONFIDENCE
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy
from llama_mapper.evaluation.evalset import MapperCase
from llama_mapper.inference.hybrid import HybridMapper, ModelArm, Plan, first_candidate
from llama_mapper.inference.model import MapperModel, MapperQuery, Prediction

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

RULE, MODEL, FALLBACK = "rule", "model", "fallback"


@dataclass(frozen=True)
class Answer:
    """How one finding was answered. `labels` is empty when the finding fell below its threshold.

    `confidence` is what the result carries (temperature-scaled for model answers). For a
    finding the model was asked about, `model_label` and `raw_confidence` are the model's own
    answer before temperature and threshold: calibration is measured on those.
    """

    labels: tuple[str, ...]
    confidence: float
    method: str
    latency_s: float
    model_answered: bool = False
    logprob: float = 0.0
    raw_confidence: float = 0.0
    model_label: str | None = None
    # Whether model_label is its shortlist's first candidate (inference/hybrid.py first_candidate).
    first_candidate: bool = False

    def model_correct(self, expected: frozenset[str]) -> bool:
        return self.model_label is not None and frozenset({self.model_label}) == expected


class Subject(Protocol):
    name: str

    def answer(
        self, cases: Sequence[MapperCase], progress: Progress | None = None
    ) -> list[Answer]: ...


def _noop(_: int) -> None:
    return None


def _query_key(query: MapperQuery) -> str:
    return "\0".join(
        (
            query.detector,
            json.dumps(query.finding, sort_keys=True, default=str),
            ",".join(query.candidates),
        )
    )


def predict_in_batches(
    model: MapperModel,
    queries: Sequence[MapperQuery],
    batch_size: int,
    progress: Progress | None = None,
) -> list[tuple[Prediction | None, float]]:
    """(prediction, seconds per query) in order; a batch the engine fails on is None, never an
    exception: the caller falls back as serving does."""
    out: list[tuple[Prediction | None, float]] = []
    for start in range(0, len(queries), batch_size):
        batch = list(queries[start : start + batch_size])
        started = time.perf_counter()
        try:
            predictions = model.predict(batch)
            if len(predictions) != len(batch):
                raise MapperError(f"engine answered {len(predictions)} of {len(batch)} queries")
        except Exception as exc:
            log.warning(
                "engine failed on a batch of %d (%s): fallback", len(batch), type(exc).__name__
            )
            per_case = (time.perf_counter() - started) / max(len(batch), 1)
            out.extend((None, per_case) for _ in batch)
        else:
            per_case = (time.perf_counter() - started) / max(len(batch), 1)
            out.extend((p, per_case) for p in predictions)
        (progress or _noop)(len(batch))
    return out


class ModelSubject:
    """The adapter alone: every finding goes to the model; no rules, temperature or threshold."""

    name = "model"

    def __init__(self, model: MapperModel, taxonomy: Taxonomy, batch_size: int = 16) -> None:
        self.model = model
        self.taxonomy = taxonomy
        self.batch_size = batch_size

    def answer(self, cases: Sequence[MapperCase], progress: Progress | None = None) -> list[Answer]:
        queries = [MapperQuery(c.detector, c.finding) for c in cases]
        answers = []
        for prediction, seconds in predict_in_batches(
            self.model, queries, self.batch_size, progress
        ):
            if prediction is None or not prediction.valid:
                answers.append(Answer((UNKNOWN,), UNKNOWN_CONFIDENCE, FALLBACK, seconds))
                continue
            # Kept even when outside the taxonomy: assemble() then counts it as a schema failure,
            # which is what an engine that leaks a label must show up as.
            answers.append(
                Answer(
                    (prediction.label,),
                    prediction.confidence,
                    MODEL,
                    seconds,
                    model_answered=True,
                    logprob=prediction.logprob,
                    raw_confidence=prediction.confidence,
                    model_label=prediction.label,
                )
            )
        return answers


class HybridSubject:
    """The path `/v1/map` runs, decision for decision: HybridMapper.plan_findings (the rules),
    the model for what they leave, HybridMapper.finish with the arm's temperature and the
    mapper's threshold (fallback below it). Without a model it is the rules-only path.

    Model answers are cached by query, so the same findings can be answered again under another
    temperature (after one is fitted) without asking the model twice.
    """

    def __init__(
        self,
        hybrid: HybridMapper,
        model: MapperModel | None = None,
        *,
        arm: ModelArm | None = None,
        batch_size: int = 16,
        cache: dict[str, tuple[Prediction | None, float]] | None = None,
    ) -> None:
        self.hybrid = hybrid
        self.model = model
        self.arm = arm if model is not None else None
        if model is not None and self.arm is None:
            self.arm = ModelArm(adapter=str(model.description.get("adapter", "adapter")))
        self.batch_size = batch_size
        self.name = "hybrid" if model is not None else "rules"
        # query -> (the model's prediction, or None when its batch failed; seconds it took)
        self._cache: dict[str, tuple[Prediction | None, float]] = cache if cache is not None else {}

    @property
    def temperature(self) -> float:
        return self.arm.temperature if self.arm else 1.0

    def with_calibration(
        self, temperature: float, calibrator: Any = None, threshold: float | None = None
    ) -> HybridSubject:
        """The same path under another calibration (and threshold, when one was chosen),
        sharing the model answers already asked."""
        arm = (
            replace(self.arm, temperature=temperature, calibrator=calibrator, threshold=threshold)
            if self.arm
            else None
        )
        return HybridSubject(
            self.hybrid, self.model, arm=arm, batch_size=self.batch_size, cache=self._cache
        )

    def plan(self, case: MapperCase) -> Plan:
        """A native case is read from its output as /v1/map reads it; a prompt case from its
        finding."""
        if case.native is not None:
            return self.hybrid.plan(case.detector, case.native)
        return self.hybrid.plan_findings(case.detector, [case.normalized()])

    def rule_miss(self, case: MapperCase) -> bool:
        """True when the rules leave this finding to the model."""
        return bool(self.plan(case).pending)

    def answer(self, cases: Sequence[MapperCase], progress: Progress | None = None) -> list[Answer]:
        plans, rule_times = [], []
        for case in cases:
            started = time.perf_counter()
            plans.append(self.plan(case))
            rule_times.append(time.perf_counter() - started)
        ruled_only = sum(1 for p in plans if not p.pending or self.model is None)
        (progress or _noop)(ruled_only)
        self._ask([q for p in plans for q in p.queries], progress)
        answers = []
        for plan, rule_s in zip(plans, rule_times, strict=True):
            started = time.perf_counter()
            predictions, seconds = None, 0.0
            if plan.pending and self.model is not None:
                found = [self._cache[_query_key(q)] for q in plan.queries]
                seconds = sum(s for _, s in found)
                predictions = None if any(p is None for p, _ in found) else [p for p, _ in found]
            outcome = self.hybrid.finish(
                plan,
                predictions,  # type: ignore[arg-type]
                arm=self.arm if plan.pending else None,
                description=self.model.description if self.model is not None else None,
            )
            finish_s = time.perf_counter() - started
            answers.append(
                self._answer(plan, predictions, outcome.result, rule_s + finish_s + seconds)
            )
        return answers

    def _ask(self, queries: Sequence[MapperQuery], progress: Progress | None) -> None:
        """Asks the model what the cache does not know yet."""
        if self.model is None:
            return
        unique: dict[str, MapperQuery] = {}
        for query in queries:
            key = _query_key(query)
            if key not in self._cache:
                unique.setdefault(key, query)
        answered = predict_in_batches(self.model, list(unique.values()), self.batch_size, progress)
        for key, pair in zip(unique, answered, strict=True):
            self._cache[key] = pair
        (progress or _noop)(len(queries) - len(unique))  # answered from the cache

    def _answer(
        self,
        plan: Any,
        predictions: Sequence[Prediction] | None,
        result: dict[str, Any],
        latency_s: float,
    ) -> Answer:
        if not plan.ruled and not plan.pending:  # below the table's threshold: no finding
            return Answer((), EXACT_CONFIDENCE, RULE, latency_s)
        findings = result["findings"]
        methods = {f["method"] for f in findings}
        method = MODEL if MODEL in methods else (FALLBACK if FALLBACK in methods else RULE)
        labels = tuple(f["label"] for f in findings)
        prediction = predictions[0] if predictions else None
        valid = prediction is not None and prediction.valid
        return Answer(
            labels,
            float(findings[0]["confidence"]),
            method,
            latency_s,
            model_answered=valid,
            logprob=prediction.logprob if valid else 0.0,  # type: ignore[union-attr]
            raw_confidence=prediction.confidence if valid else 0.0,  # type: ignore[union-attr]
            model_label=prediction.label if valid else None,  # type: ignore[union-attr]
            first_candidate=valid
            and first_candidate(
                plan.candidates[0] if plan.candidates else (),
                prediction.label,  # type: ignore[union-attr]
            ),
        )


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
            source.detector, source.raw_label[:RAW_LABEL_CHARS], source.score, source.severity
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
