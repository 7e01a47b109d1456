"""The hybrid mapper as serving runs it: rules first, the model for what rules cannot map, fallback."""

# Mapping is split in three steps so the sync path (CLI, evaluation) and the async path (the Serve
# router) share every decision: `plan` reads the output and lets the rules answer; the caller asks a
# model about `plan.queries` under a deadline (or not at all); `finish` turns the answers into the
# canonical result. A model that is absent, slow, or answers outside the taxonomy never fails the
# request: those findings become other.unknown with needs_review, and `method` says which path
# answered each finding.

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.calibration import apply_temperature
from llama_mapper.domain.calibrators import ALL_LABELS_RECIPE, Calibrator
from llama_mapper.domain.errors import NotFound
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.prompt import finding_payload
from llama_mapper.domain.readers.base import read
from llama_mapper.domain.readers.generic import read_generic
from llama_mapper.domain.result import CanonicalFinding, build_result
from llama_mapper.domain.retrieval import LabelIndex
from llama_mapper.domain.rules import UNKNOWN_CONFIDENCE, RulesMapper
from llama_mapper.domain.tables import EXACT_CONFIDENCE
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN
from llama_mapper.inference.model import MapperModel, MapperQuery, Prediction

log = logging.getLogger(__name__)

# Why a finding did not get a model label: the fallback-rate metric is broken down by these.
UNAVAILABLE, TIMEOUT, INVALID = "unavailable", "timeout", "invalid"
LOW_CONFIDENCE, NO_MODEL = "low_confidence", "no_model"
# Below this calibrated confidence a model label is not trusted (serving's and evaluation's default).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ModelArm:
    """The adapter that answers for one router arm, with its version's calibration: the fitted
    temperature, or the calibrator its evaluation chose, and the threshold for its precision."""

    adapter: str
    version: int | None = None
    temperature: float = 1.0
    arm: str | None = None  # "control" / "treatment" when a rollout is active
    calibrator: Calibrator | None = None  # wins over `temperature` when set
    threshold: float | None = None  # wins over the mapper's threshold when set

    def calibrate(self, confidence: float, label: str, agrees: bool | None = None) -> float:
        """`agrees`: whether `label` is its shortlist's first candidate (first_candidate); a
        calibrator of (confidence, label) alone, as written before agreements, still works."""
        if self.calibrator is not None:
            if _takes_agreement(self.calibrator):
                return self.calibrator(confidence, label, agrees)
            return self.calibrator(confidence, label)  # type: ignore[call-arg]
        return apply_temperature(confidence, self.temperature)


@lru_cache(maxsize=256)
def _takes_agreement(calibrator: Callable[..., float]) -> bool:
    try:
        inspect.signature(calibrator).bind(0.5, None, None)
    except (TypeError, ValueError):
        return False
    return True


def first_candidate(shortlist: Sequence[str], label: str | None) -> bool:
    """Whether the model chose the label the finding's words point to most (the lexical index's
    first candidate); False among all labels. Calibration tells these answers apart
    (domain/calibrators.py AgreementBinning), so evaluation and serving ask the same question."""
    return bool(shortlist) and label == shortlist[0]


@dataclass
class Plan:
    """A detector output after the rules: what they answered, and what is left for the model."""

    detector: str
    request_id: str
    ruled: list[tuple[int, CanonicalFinding]]
    pending: list[tuple[int, NormalizedFinding]]
    mapping_table_version: str | None
    # Per pending finding, the labels the model chooses among (() : all of them).
    candidates: list[tuple[str, ...]] = field(default_factory=list)

    @property
    def queries(self) -> list[MapperQuery]:
        choices = self.candidates or [()] * len(self.pending)
        return [
            MapperQuery(self.detector, finding_payload(f), c)
            for (_, f), c in zip(self.pending, choices, strict=True)
        ]


@dataclass
class Outcome:
    """The canonical result, the findings it was built from (for a document's merge), and what
    happened on the way, for metrics."""

    result: dict[str, Any]
    findings: list[CanonicalFinding] = field(default_factory=list)
    model_queries: int = 0
    model_answered: int = 0
    schema_valid: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)


def _nothing_to_read(finding: NormalizedFinding) -> bool:
    return not finding.raw_label.strip() and not any(
        isinstance(value, str) and value.strip() for value in finding.attributes.values()
    )


# --- the mapper ----------------------------------------------------------------------------------

# The recipes a calibration can be fitted under (HybridMapper.recipe; the model alone and a
# calibrator recorded without one: domain/calibrators.py ALL_LABELS_RECIPE, NO_RECIPE).
SHORTLIST_RECIPE = "shortlist/1"
# A lexical answer: the finding's words name one label alone, explaining at least
# LEXICAL_COVERAGE of their IDF mass (HybridMapper.lexical_coverage). At 0.6 such single
# candidates were right on 513 of 517 calibration cases (99.2 %), 80/80 golden, 86/86 eval and
# 52/52 held-out rule misses (95.3 % at 0.5 on the held-out vocabularies, docs/BENCHMARKS.md);
# the confidence stays below them for words no split has seen.
LEXICAL_COVERAGE = 0.6
LEXICAL_CONFIDENCE = 0.95


def recipe_for(
    *,
    retrieval: bool = True,
    offer_unknown: bool = True,
    lexical_coverage: float | None = LEXICAL_COVERAGE,
) -> str:
    """The recipe (HybridMapper.recipe) of a mapper built with these options; with the defaults,
    the one serving's router and the evaluation's hybrid ask the model under, which is what the
    gate requires a version's calibration to have been fitted under."""
    if not retrieval:
        return ALL_LABELS_RECIPE
    recipe = SHORTLIST_RECIPE + ("" if offer_unknown else "-no-unknown")
    if lexical_coverage is not None:
        recipe += f"+lexical@{lexical_coverage:g}"
    return recipe


class HybridMapper:
    """Rules first, the model for the rest, fallback when the model cannot help.

    `threshold` is applied to the temperature-scaled confidence: below it the model's label is not
    trusted and the finding becomes other.unknown with needs_review. With `retrieval` on, the model
    chooses each finding's label among the candidates the label index retrieves for it
    (domain/retrieval.py), the whole label set when the index has no candidates; a finding whose
    words name one candidate alone (coverage >= `lexical_coverage`) is answered by it as a rule.
    """

    def __init__(
        self,
        rules: RulesMapper | None = None,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        deadline_s: float = 2.0,
        generic_min_score: float = 0.5,
        retrieval: bool = True,
        offer_unknown: bool = True,
        lexical_coverage: float | None = LEXICAL_COVERAGE,
    ) -> None:
        self.rules = rules or RulesMapper()
        self.taxonomy = self.rules.taxonomy
        self.index = (
            LabelIndex(self.taxonomy, self.rules.tables, offer_unknown=offer_unknown)
            if retrieval
            else None
        )
        # A rule miss whose words name one label alone, explaining at least this share of
        # them, is answered by that label (method rule, LEXICAL_CONFIDENCE) without the model.
        self.lexical_coverage = lexical_coverage if self.index is not None else None
        self.threshold = threshold
        self.deadline_s = deadline_s
        self.generic_min_score = generic_min_score
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hybrid-model")

    @property
    def recipe(self) -> str:
        """How this mapper asks the model, which is what a calibration is fitted to: the
        confidence of a label chosen among a shortlist is not the confidence of the same label
        chosen among all 67, so a calibrator and threshold fitted under one recipe are not
        applied under another (serving/adapters.py). Recorded with the calibrator by the
        evaluation; change the version here when the candidate set or the prompt changes."""
        return recipe_for(
            retrieval=self.index is not None,
            offer_unknown=self.index is not None and self.index.offer_unknown,
            lexical_coverage=self.lexical_coverage,
        )

    # step 1
    def plan(self, detector: str, output: Any, *, request_id: str | None = None) -> Plan:
        """Reads the output and applies the rules. Malformed output of a known detector raises
        InvalidArgument; an unknown detector goes through the generic envelope."""
        # Bounded whatever the entry point parsed it with: no reader or schema check below
        # recurses into a hostile depth.
        jsonio.check(output, what="$.output")
        try:
            findings: Sequence[NormalizedFinding] = read(detector, output).findings
        except NotFound:
            # An unrecognized shape is still a finding nobody could map: the model gets its key
            # outline (never its values), and the result an empty raw label.
            findings = read_generic(detector, output, min_score=self.generic_min_score)
        return self.plan_findings(detector, findings, request_id=request_id)

    def plan_findings(
        self,
        detector: str,
        findings: Sequence[NormalizedFinding],
        *,
        request_id: str | None = None,
    ) -> Plan:
        """The rules over findings already read: what they answer, and what is left for the model."""
        request_id = request_id or str(uuid.uuid4())
        table = self.rules.tables.get(detector)
        plan = Plan(detector, request_id, [], [], table.version_tag if table else None)
        for index, raw in enumerate(findings):
            match = self.rules.match(raw)
            if match is None:
                continue
            if match.matched:
                plan.ruled.extend(
                    (index, CanonicalFinding(label, match.confidence, "rule", raw))
                    for label in match.labels
                )
            elif _nothing_to_read(raw):
                # An empty label and no text: no model can know more than "unknown".
                plan.ruled.append(
                    (
                        index,
                        CanonicalFinding(
                            UNKNOWN, UNKNOWN_CONFIDENCE, "fallback", raw, needs_review=True
                        ),
                    )
                )
            elif self.index is None:
                plan.pending.append((index, raw))
                plan.candidates.append(())
            else:
                retrieval = self.index.retrieve(raw)
                if (
                    self.lexical_coverage is not None
                    and len(retrieval.candidates) == 1
                    and retrieval.coverage >= self.lexical_coverage
                ):
                    (label,) = retrieval.candidates
                    plan.ruled.append(
                        (index, CanonicalFinding(label, LEXICAL_CONFIDENCE, "rule", raw))
                    )
                    continue
                plan.pending.append((index, raw))
                plan.candidates.append(self.index.shortlist(retrieval))
        return plan

    # step 3
    def finish(
        self,
        plan: Plan,
        predictions: Sequence[Prediction] | None,
        *,
        arm: ModelArm | None = None,
        description: Mapping[str, Any] | None = None,
        failure: str = UNAVAILABLE,
        router_arm: str | None = None,
    ) -> Outcome:
        """The canonical result. `predictions` is None when the model was not asked or failed
        (`failure` says why); otherwise one prediction per pending finding, in order."""
        outcome = Outcome(result={}, model_queries=len(plan.pending) if arm else 0)
        answered: list[tuple[int, CanonicalFinding]] = list(plan.ruled)
        if predictions is not None and len(predictions) != len(plan.pending):
            log.warning(
                "model answered %d of %d findings: fallback", len(predictions), len(plan.pending)
            )
            predictions, failure = None, INVALID
        temperature = arm.temperature if arm else 1.0
        threshold = (
            arm.threshold if arm is not None and arm.threshold is not None else self.threshold
        )
        for position, (index, raw) in enumerate(plan.pending):
            prediction = predictions[position] if predictions is not None else None
            reason = failure if prediction is None else None
            if prediction is not None:
                outcome.schema_valid += prediction.valid
                if not prediction.valid or prediction.label not in self.taxonomy:
                    reason = INVALID
                else:
                    shortlist = plan.candidates[position] if position < len(plan.candidates) else ()
                    confidence = (
                        arm.calibrate(
                            prediction.confidence,
                            prediction.label,
                            first_candidate(shortlist, prediction.label),
                        )
                        if arm is not None
                        else prediction.confidence
                    )
                    if prediction.label == UNKNOWN or confidence < threshold:
                        reason = LOW_CONFIDENCE
                    else:
                        outcome.model_answered += 1
                        answered.append(
                            (index, CanonicalFinding(prediction.label, confidence, "model", raw))
                        )
            if reason is not None:
                outcome.fallbacks[reason if arm is not None else NO_MODEL] += 1
                answered.append(
                    (
                        index,
                        CanonicalFinding(
                            UNKNOWN, UNKNOWN_CONFIDENCE, "fallback", raw, needs_review=True
                        ),
                    )
                )
        answered.sort(key=lambda pair: pair[0])
        findings = [finding for _, finding in answered]
        if not findings:
            findings = [
                CanonicalFinding(
                    NO_FINDING, EXACT_CONFIDENCE, "rule", NormalizedFinding(plan.detector, "")
                )
            ]
        model = None
        if outcome.model_answered and arm is not None:
            model = {
                k: v
                for k, v in (description or {}).items()
                if k in ("base_model", "base_model_sha256")
            }
            model["adapter"] = arm.adapter
            if arm.version is not None:
                model["adapter_version"] = arm.version
            model["temperature"] = temperature
            if arm.arm:
                model["arm"] = arm.arm
        result = build_result(
            findings,
            taxonomy=self.taxonomy,
            request_id=plan.request_id,
            mapping_table_version=plan.mapping_table_version,
            model=model,
        )
        if router_arm:
            result["provenance"]["router_arm"] = router_arm
        outcome.result = result
        outcome.findings = findings
        return outcome

    # the whole thing, sync
    def map(
        self,
        detector: str,
        output: Any,
        *,
        model: MapperModel | None = None,
        arm: ModelArm | None = None,
        request_id: str | None = None,
        deadline_s: float | None = None,
        router_arm: str | None = None,
    ) -> Outcome:
        plan = self.plan(detector, output, request_id=request_id)
        if not plan.pending or model is None:
            return self.finish(plan, None, arm=arm if model else None, router_arm=router_arm)
        future = self._executor.submit(model.predict, plan.queries)
        try:
            predictions = future.result(timeout=deadline_s or self.deadline_s)
        except FutureTimeout:
            log.warning(
                "model missed the %.2fs deadline (request %s): fallback",
                deadline_s or self.deadline_s,
                plan.request_id,
            )
            return self.finish(plan, None, arm=arm, failure=TIMEOUT, router_arm=router_arm)
        except Exception as exc:
            log.warning(
                "model failed (%s, request %s): fallback", type(exc).__name__, plan.request_id
            )
            return self.finish(plan, None, arm=arm, failure=UNAVAILABLE, router_arm=router_arm)
        return self.finish(
            plan, predictions, arm=arm, description=model.description, router_arm=router_arm
        )

    # the whole thing, async (the Serve router)
    async def amap(
        self,
        detector: str,
        output: Any,
        *,
        predict: Callable[
            [list[MapperQuery]], Awaitable[tuple[list[Prediction], Mapping[str, Any]]]
        ]
        | None,
        arm: ModelArm | None = None,
        request_id: str | None = None,
        deadline_s: float | None = None,
        router_arm: str | None = None,
    ) -> Outcome:
        """As `map`, with `predict` an async call returning (predictions, engine description)."""
        plan = self.plan(detector, output, request_id=request_id)
        if not plan.pending or predict is None:
            return self.finish(plan, None, arm=arm if predict else None, router_arm=router_arm)
        try:
            predictions, description = await asyncio.wait_for(
                predict(plan.queries), timeout=deadline_s or self.deadline_s
            )
        except TimeoutError:
            log.warning("model missed the deadline (request %s): fallback", plan.request_id)
            return self.finish(plan, None, arm=arm, failure=TIMEOUT, router_arm=router_arm)
        except Exception as exc:
            log.warning(
                "model failed (%s, request %s): fallback", type(exc).__name__, plan.request_id
            )
            return self.finish(plan, None, arm=arm, failure=UNAVAILABLE, router_arm=router_arm)
        return self.finish(
            plan, predictions, arm=arm, description=description, router_arm=router_arm
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
