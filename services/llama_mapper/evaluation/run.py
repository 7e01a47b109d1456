"""One evaluation run: quality, held-out slices, latency, calibration, robustness and analyst metrics."""

# Pure orchestration over a Subject (rules, model or hybrid) and a frozen EvalSet; no gRPC here. The
# report is a dict whose keys follow the EvaluationReport proto message, so the servicer parses it
# into the message and report.json is readable without the service.

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llama_mapper.domain import calibration as cal
from llama_mapper.domain import calibrators, metrics
from llama_mapper.domain import precision as review
from llama_mapper.domain.taxonomy import NO_FINDING, Taxonomy, default_taxonomy
from llama_mapper.evaluation.analyst import AnalystModel, evaluate_analyst
from llama_mapper.evaluation.evalset import EvalSet, MapperCase, is_held_out
from llama_mapper.evaluation.robustness import build_suite
from llama_mapper.evaluation.subjects import FALLBACK, Answer, ModelSubject, Subject, assemble
from llama_mapper.inference.hybrid import ALL_LABELS_RECIPE
from llama_mapper.inference.model import MapperModel

log = logging.getLogger(__name__)


def _recipe(subject: Subject) -> str:
    """How `subject` asks the model (HybridMapper.recipe); the model alone: among all labels."""
    hybrid = getattr(subject, "hybrid", None)
    return hybrid.recipe if hybrid is not None else ALL_LABELS_RECIPE


# (phase, cases done, cases total, cases per second)
ProgressFn = Callable[[str, int, int, float], None]


@dataclass(frozen=True)
class ModelCalibration:
    """What a run chose for serving to apply to the model's confidence."""

    temperature: float
    description: dict[str, Any]
    apply: Any  # calibrators.Calibrator
    threshold: float | None


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one run; every field has the default the CLI and the service use."""

    robustness: bool = True
    calibrate: bool = True
    hardware_profile: str = "cpu-2core"
    max_cases: int = 0
    seed: int = 0
    batch_size: int = 16
    robustness_per_perturbation: int = 50
    n_bins: int = cal.DEFAULT_BINS
    show_progress: bool = True
    # Precision the review threshold is set for: answers above it are right this often.
    target_precision: float = 0.9


@dataclass
class RunInputs:
    """What a run evaluates and on what. `calibration_model` is the bare model (no rules) whose
    temperature is fitted; None for rules-only runs."""

    subject: Subject
    eval_set: EvalSet
    held_out_set: EvalSet | None = None
    calibration_set: EvalSet | None = None
    calibration_model: MapperModel | None = None
    analyst_model: AnalystModel | None = None
    analyst_set: EvalSet | None = None
    model_info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseRecord:
    """Per-case outcome; written to cases.jsonl and used for paired comparisons."""

    id: str
    detector: str
    split: str
    expected: frozenset[str]
    predicted: frozenset[str]
    correct: bool
    method: str
    confidence: float
    latency_s: float
    schema_valid: bool
    model_answered: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "detector": self.detector,
            "split": self.split,
            "expected": sorted(self.expected),
            "predicted": sorted(self.predicted),
            "correct": self.correct,
            "method": self.method,
            "confidence": self.confidence,
            "latency_s": self.latency_s,
            "schema_valid": self.schema_valid,
            "model_answered": self.model_answered,
        }


@dataclass
class RunResult:
    report: dict[str, Any]
    records: list[CaseRecord]


class _Phase:
    """tqdm bar plus the progress callback of the service, for one phase."""

    def __init__(self, name: str, total: int, progress: ProgressFn | None, show: bool) -> None:
        self.name, self.total, self.done = name, total, 0
        self.progress = progress
        self.started = time.perf_counter()
        self.bar = tqdm(total=total, desc=name, unit="case", disable=not show, leave=False)
        self._emit()

    def _emit(self) -> None:
        if self.progress:
            elapsed = time.perf_counter() - self.started
            self.progress(
                self.name, self.done, self.total, self.done / elapsed if elapsed > 0 else 0.0
            )

    def __call__(self, n: int) -> None:
        self.done += n
        self.bar.update(n)
        self._emit()

    def close(self) -> float:
        self.bar.close()
        return time.perf_counter() - self.started


# Fewer rule misses than this in a calibration split: fit on the whole split instead.
MIN_MODEL_SHARE_CASES = 50


def _model_share(subject: Subject, cases: list[MapperCase]) -> list[MapperCase]:
    """The calibration cases the model answers as the subject runs it.

    In the hybrid the model only sees what the rules cannot map (variants, envelopes, free text),
    and the temperature is applied to exactly those answers; fitting it on the whole split, most
    of which the rules answer and the model finds easy, sharpens the confidence of answers that
    are mostly hard. The model alone sees everything, so it is fitted on everything.
    """
    rule_miss = getattr(subject, "rule_miss", None)
    if rule_miss is None or getattr(subject, "model", None) is None or not cases:
        return cases
    misses = [case for case in cases if rule_miss(case)]
    if len(misses) < MIN_MODEL_SHARE_CASES:
        log.info(
            "only %d rule misses among %d calibration cases: fitting on all",
            len(misses),
            len(cases),
        )
        return cases
    return misses


def _records(
    cases: Sequence[MapperCase], answers: Sequence[Answer], taxonomy: Taxonomy
) -> list[CaseRecord]:
    out = []
    for case, answer in zip(cases, answers, strict=True):
        output = assemble([(case, answer)], taxonomy)
        out.append(
            CaseRecord(
                id=case.id,
                detector=case.detector,
                split=case.split,
                expected=case.labels,
                predicted=output.labels,
                correct=output.labels == case.labels,
                method=answer.method,
                confidence=float(answer.confidence),
                latency_s=answer.latency_s,
                schema_valid=output.schema_valid,
                model_answered=answer.model_answered,
            )
        )
    return out


def quality(records: Sequence[CaseRecord], taxonomy: Taxonomy) -> dict[str, Any]:
    """QualityMetrics as a dict (proto field names)."""
    expected = [r.expected for r in records]
    predicted = [r.predicted for r in records]
    seen = set().union(*expected, *predicted) if records else set()
    order = [n for n in taxonomy.names if n in seen] + sorted(seen - set(taxonomy.names))
    scores = metrics.per_label_scores(expected, predicted, order)
    return {
        "case_count": len(records),
        "exact_set_accuracy": metrics.exact_set_accuracy(expected, predicted),
        "macro_f1": sum(s.f1 for s in scores) / len(scores) if scores else 0.0,
        "per_label": [
            {
                "label": s.label,
                "precision": s.precision,
                "recall": s.recall,
                "f1": s.f1,
                "support": s.support,
            }
            for s in scores
        ],
        "confusion": [
            {"expected_label": e, "predicted_label": p, "count": n}
            for (e, p), n in metrics.confusion_counts(expected, predicted).items()
        ],
        "schema_valid_rate": metrics.rate(r.schema_valid for r in records),
        "fallback_rate": metrics.rate(r.method == FALLBACK for r in records),
    }


def _split(pairs: Sequence[tuple[float, bool]]) -> tuple[list[float], list[bool]]:
    return [conf for conf, _ in pairs], [correct for _, correct in pairs]


def _bins(bins: Sequence[cal.ReliabilityBin]) -> list[dict[str, Any]]:
    return [
        {
            "lower": b.lower,
            "upper": b.upper,
            "mean_confidence": b.mean_confidence,
            "accuracy": b.accuracy,
            "count": b.count,
        }
        for b in bins
    ]


class EvaluationRunner:
    def __init__(
        self, taxonomy: Taxonomy | None = None, progress: ProgressFn | None = None
    ) -> None:
        self.taxonomy = taxonomy or default_taxonomy()
        self.progress = progress

    def _answer(
        self, subject: Subject, phase: str, cases: Sequence[MapperCase], options: RunOptions
    ) -> tuple[list[Answer], float]:
        bar = _Phase(phase, len(cases), self.progress, options.show_progress)
        try:
            answers = subject.answer(cases, bar)
        finally:
            wall = bar.close()
        return answers, wall

    def run(self, inputs: RunInputs, options: RunOptions | None = None) -> RunResult:
        options = options or RunOptions()
        started_at = datetime.now(UTC)
        eval_set = inputs.eval_set.truncated(options.max_cases)
        cases = list(eval_set.measured)
        log.info(
            "evaluating %s on %d cases (eval set %s)",
            inputs.subject.name,
            len(cases),
            eval_set.sha256[:12],
        )

        subject = inputs.subject
        answers, wall = self._answer(subject, "golden", cases, options)
        calibration, chosen = self._calibration(inputs, eval_set, options, cases, answers)
        if chosen is not None and hasattr(subject, "with_calibration"):
            # As serving will answer once this run records its calibration: the same model
            # answers (cached), calibrated, and held against the threshold chosen here.
            subject = subject.with_calibration(chosen.temperature, chosen.apply, chosen.threshold)
            answers = subject.answer(cases)
        records = _records(cases, answers, self.taxonomy)
        latency = metrics.latency_percentiles([r.latency_s for r in records])
        report: dict[str, Any] = {
            "eval_set_uri": eval_set.uri,
            "eval_set_sha256": eval_set.sha256,
            "taxonomy_version": self.taxonomy.version,
            "quality": quality(records, self.taxonomy),
            "latency": {
                "p50_ms": latency.p50_ms,
                "p95_ms": latency.p95_ms,
                "p99_ms": latency.p99_ms,
                "cases_per_second": len(cases) / wall if wall > 0 else 0.0,
                "hardware_profile": options.hardware_profile,
            },
            "held_out": self._held_out(subject, inputs, eval_set, options, records),
            "started_at": started_at.isoformat().replace("+00:00", "Z"),
            "subject": inputs.subject.name,
            "model": inputs.model_info,
            "truncated": options.max_cases > 0 and options.max_cases < len(inputs.eval_set.mapper),
        }
        report["calibration"] = calibration
        if options.robustness:
            report["robustness"] = self._robustness(subject, cases, answers, records, options)
        analyst_cases = (inputs.analyst_set or eval_set).analyst
        if inputs.analyst_model is not None and analyst_cases:
            if options.max_cases > 0:
                analyst_cases = analyst_cases[: options.max_cases]
            report["analyst"] = evaluate_analyst(
                inputs.analyst_model, analyst_cases, options.batch_size
            )
        report["finished_at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        return RunResult(report, records)

    def _held_out(
        self,
        subject: Subject,
        inputs: RunInputs,
        eval_set: EvalSet,
        options: RunOptions,
        records: list[CaseRecord],
    ) -> list[dict[str, Any]]:
        slices = dict(eval_set.held_out())
        if inputs.held_out_set is not None:
            extra = inputs.held_out_set.truncated(options.max_cases)
            for name, members in extra.held_out().items():
                slices[name] = slices.get(name, ()) + members
            rest = extra.measured
            if rest:
                slices["held_out"] = slices.get("held_out", ()) + rest
        out = []
        for name, members in sorted(slices.items()):
            answers, _ = self._answer(subject, name, members, options)
            slice_records = _records(members, answers, self.taxonomy)
            records.extend(slice_records)
            out.append({"name": name, "metrics": quality(slice_records, self.taxonomy)})
        # Golden cases drawn from held-out material are measured with the rest and also reported
        # alone: generalization on the frozen set itself.
        golden_held = {c.id for c in eval_set.measured if c.heldout}
        if golden_held:
            members = [r for r in records if r.id in golden_held and not is_held_out(r.split)]
            out.append({"name": "golden_heldout", "metrics": quality(members, self.taxonomy)})
        return out

    def _calibration(
        self,
        inputs: RunInputs,
        eval_set: EvalSet,
        options: RunOptions,
        cases: Sequence[MapperCase],
        answers: Sequence[Answer],
    ) -> tuple[dict[str, Any], ModelCalibration | None]:
        """ECE and Brier before and after the calibration chosen here, on the model's own answers
        (its label and confidence before any calibration and threshold), and what was chosen: the
        calibrator (temperature, per-category temperatures or histogram bins, whichever is best
        on held-out calibration cases), the global temperature, and the threshold above which
        answers are right at the target precision."""
        main = [(c, a) for c, a in zip(cases, answers, strict=True) if not is_held_out(c.split)]
        # (raw confidence, right, the label answered, whether it was the first candidate)
        model_bound = [
            (a.raw_confidence, a.model_correct(c.labels), a.model_label, a.first_candidate)
            for c, a in main
            if a.model_answered
        ]
        if inputs.calibration_model is None and not model_bound:
            # Rules only: how well the rules' fixed confidences match their accuracy.
            model_bound = [
                (a.confidence, frozenset(a.labels or (NO_FINDING,)) == c.labels, None, False)
                for c, a in main
            ]
        conf, ok = [m[0] for m in model_bound], [m[1] for m in model_bound]
        out: dict[str, Any] = {
            "ece_before": cal.expected_calibration_error(conf, ok, options.n_bins),
            "brier_before": cal.brier_score(conf, ok) if conf else 0.0,
            "bins_before": _bins(cal.reliability_bins(conf, ok, options.n_bins)),
            "scored_case_count": len(model_bound),
        }
        if not options.calibrate or inputs.calibration_model is None or not model_bound:
            return out, None
        source = inputs.calibration_set or eval_set
        fit_cases = _model_share(
            inputs.subject,
            list(source.calibration or (source.measured if inputs.calibration_set else ())),
        )
        measure = model_bound
        if fit_cases:
            # Fitted on the answers as the subject asks for them: the hybrid asks about rule
            # misses among their retrieved candidates, so its confidences are the ones serving
            # calibrates; the model alone is asked about everything among every label.
            subject: Subject = (
                inputs.subject
                if getattr(inputs.subject, "rule_miss", None) is not None
                and getattr(inputs.subject, "model", None) is not None
                else ModelSubject(inputs.calibration_model, self.taxonomy, options.batch_size)
            )
            recipe = _recipe(subject)
            fit_answers, _ = self._answer(subject, "calibration", fit_cases, options)
            fit = [
                (a.raw_confidence, a.model_correct(c.labels), a.model_label, a.first_candidate)
                for c, a in zip(fit_cases, fit_answers, strict=True)
                if a.model_answered
            ]
        else:
            # No calibration split shipped: fit on a seeded half of the model's golden answers,
            # measure on the other half, so the ECE after is never measured where it was fitted.
            recipe = _recipe(inputs.subject)
            shuffled = list(model_bound)
            random.Random(options.seed).shuffle(shuffled)  # noqa: S311 - reproducible split
            half = len(shuffled) // 2
            fit, measure = shuffled[:half], shuffled[half:]
            conf, ok = [m[0] for m in measure], [m[1] for m in measure]
            out["ece_before"] = cal.expected_calibration_error(conf, ok, options.n_bins)
            out["brier_before"] = cal.brier_score(conf, ok) if conf else 0.0
            out["bins_before"] = _bins(cal.reliability_bins(conf, ok, options.n_bins))
        if not fit:
            return out, None
        fit_conf, fit_ok = [m[0] for m in fit], [m[1] for m in fit]
        fit_labels, fit_first = [m[2] for m in fit], [m[3] for m in fit]
        temperature = cal.fit_temperature(fit_conf, fit_ok)
        choice = calibrators.choose_calibrator(
            fit_conf,
            fit_ok,
            fit_labels,
            seed=options.seed,
            n_bins=options.n_bins,
            agreements=fit_first,
        )
        calibrated_fit = [choice.apply(c, label, first) for c, _, label, first in fit]
        threshold = review.threshold_for_precision(calibrated_fit, fit_ok, options.target_precision)
        after = [choice.apply(c, label, first) for c, _, label, first in measure]
        measure_ok = [m[1] for m in measure]
        # The recipe the confidences were produced under travels with the calibrator: serving
        # applies it only to confidences produced the same way.
        description = {**choice.description, "recipe": recipe}
        out.update(
            temperature=temperature,
            calibrator=description,
            calibrator_candidates=choice.as_dict()["candidates"],
            target_precision=options.target_precision,
            threshold=threshold,
            calibration_case_count=len(fit),
            ece_after=cal.expected_calibration_error(after, measure_ok, options.n_bins),
            # What a perfectly calibrated model with these confidences would show on as few
            # answers: an ECE inside it is noise, not miscalibration.
            ece_after_noise_floor=dict(
                zip(
                    ("median", "p95"),
                    cal.ece_noise_floor(after, options.n_bins, seed=options.seed),
                    strict=True,
                ),
                answers=len(after),
            ),
            brier_after=cal.brier_score(after, measure_ok) if after else 0.0,
            bins_after=_bins(cal.reliability_bins(after, measure_ok, options.n_bins)),
        )
        return out, ModelCalibration(temperature, description, choice.apply, threshold)

    def _robustness(
        self,
        subject: Subject,
        cases: Sequence[MapperCase],
        answers: Sequence[Answer],
        records: Sequence[CaseRecord],
        options: RunOptions,
    ) -> dict[str, Any]:
        clean_answer = {c.id: a for c, a in zip(cases, answers, strict=True)}
        suite = build_suite(
            cases, seed=options.seed, per_perturbation=options.robustness_per_perturbation
        )
        perturbations = []
        for name, outputs in suite.items():
            flat = [f for o in outputs for f in o.findings]
            got, _ = self._answer(subject, f"robustness:{name}", flat, options)
            cursor, correct, clean_correct, valid, leaked = 0, [], [], [], 0
            for item in outputs:
                pairs = list(
                    zip(item.findings, got[cursor : cursor + len(item.findings)], strict=True)
                )
                cursor += len(item.findings)
                output = assemble(pairs, self.taxonomy)
                correct.append(output.labels == item.expected)
                valid.append(output.schema_valid)
                leaked += any(label not in self.taxonomy for label in output.labels)
                if item.clean:
                    clean = assemble([(c, clean_answer[c.id]) for c in item.clean], self.taxonomy)
                    clean_correct.append(clean.labels == item.expected)
            accuracy = metrics.rate(correct)
            perturbations.append(
                {
                    "name": name,
                    "case_count": len(outputs),
                    "exact_set_accuracy": accuracy,
                    "accuracy_delta": accuracy - metrics.rate(clean_correct)
                    if clean_correct
                    else 0.0,
                    "schema_valid_rate": metrics.rate(valid),
                    "out_of_taxonomy_count": leaked,
                }
            )
        main = [r for r in records if not is_held_out(r.split)]
        expected = [r.expected for r in main]
        predicted = [r.predicted for r in main]
        by_category = metrics.per_category_spread(expected, predicted)
        by_detector = metrics.f1_spread(expected, predicted, [r.detector for r in main])
        return {
            "perturbations": perturbations,
            "per_category_f1": by_category.per_group,
            "per_detector_f1": by_detector.per_group,
            "category_f1_spread": by_category.spread,
            "detector_f1_spread": by_detector.spread,
        }


def run_to_directory(
    runner: EvaluationRunner, inputs: RunInputs, options: RunOptions, report_dir: Path
) -> RunResult:
    """Runs and writes the report directory (report.json, cases.jsonl, summary.md, plots)."""
    from llama_mapper.evaluation.report_dir import write_report

    result = runner.run(inputs, options)
    write_report(report_dir, result.report, result.records)
    return result
