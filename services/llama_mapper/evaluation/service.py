"""The evaluation service's logic, without gRPC: runs in a background worker, progress, reports,
comparisons and gates. Runs live on disk (one report directory each, with run.json), so the CLI and
a restarted server see the same history.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.calibrators import calibrator_from_description
from llama_mapper.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    MapperError,
    NotFound,
    ResourceExhausted,
)
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.evaluation import comparison as gates
from llama_mapper.evaluation.evalset import EvalSet, default_eval_set_uri, load_eval_set
from llama_mapper.evaluation.models import LoadedModel, RegistryModels
from llama_mapper.evaluation.report_dir import REPORT_JSON, load_cases, load_report
from llama_mapper.evaluation.run import EvaluationRunner, RunInputs, RunOptions, run_to_directory
from llama_mapper.evaluation.subjects import HybridSubject, ModelSubject, Subject
from llama_mapper.inference.hybrid import DEFAULT_THRESHOLD, HybridMapper, ModelArm, recipe_for

log = logging.getLogger(__name__)
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

MODES = ("rules", "model", "hybrid")
QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
TERMINAL = (SUCCEEDED, FAILED)
RUN_JSON = "run.json"


@dataclass(frozen=True)
class RunRequest:
    mode: str
    model: str = ""
    version: int | None = None
    alias: str | None = None
    eval_set_uri: str = ""
    expected_eval_set_sha256: str = ""
    held_out_set_uri: str = ""
    calibration_set_uri: str = ""
    record_in_registry: bool = False
    analyst_model: str = ""
    analyst_version: int | None = None
    analyst_alias: str | None = None
    analyst_set_uri: str = ""
    options: RunOptions = field(default_factory=RunOptions)


@dataclass
class RunInfo:
    """A run's state; persisted as run.json in its report directory."""

    run_id: str
    state: str
    mode: str
    model: str
    version: int | None
    report_dir: str
    created_at: str
    eval_set_sha256: str = ""
    failure_reason: str = ""
    phase: str = ""
    cases_done: int = 0
    cases_total: int = 0
    cases_per_second: float = 0.0
    elapsed_s: float = 0.0
    finished_at: str = ""
    # The analyst version the run evaluated next to the mapper (its `analyst` report section).
    analyst_model: str = ""
    analyst_version: int | None = None
    # Every phase entered, in order: a watcher that polls between two fast phases still reports
    # each one.
    phases: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def registered_arm(model: str, version: int, info: dict[str, Any]) -> ModelArm:
    """The arm as serving runs the version today: its recorded calibrator (else temperature) and
    threshold (else the mapper's)."""
    description = info.get("registered_calibrator") or ""
    calibrator = (
        calibrator_from_description(jsonio.loads(description, what="calibrator_json"))
        if description
        else None
    )
    return ModelArm(
        adapter=model,
        version=version,
        temperature=float(info.get("registered_temperature", 1.0)),
        calibrator=calibrator,
        threshold=info.get("registered_threshold"),
    )


class EvaluationService:
    """One worker thread runs evaluations in order (an engine per run; the CPU is shared)."""

    def __init__(
        self,
        reports_dir: Path,
        models: RegistryModels | None = None,
        *,
        batch_size: int = 32,
        hardware_profile: str = "cpu-2core",
        default_eval_set: str | None = None,
        default_held_out_set: str | None = None,
        default_calibration_set: str | None = None,
        robustness_per_perturbation: int = 50,
        max_queued_runs: int = 8,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        self.reports_dir = Path(reports_dir)
        self.threshold = threshold
        self.reports_dir.mkdir(parents=True, exist_ok=True)
        self.models = models
        self.batch_size = batch_size
        self.hardware_profile = hardware_profile
        self.default_eval_set = default_eval_set
        self.default_held_out_set = default_held_out_set
        self.default_calibration_set = default_calibration_set
        self.robustness_per_perturbation = robustness_per_perturbation
        self.max_queued_runs = max_queued_runs
        self.taxonomy = default_taxonomy()
        self._runs: dict[str, RunInfo] = {}
        self._changed = threading.Condition()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- runs ---------------------------------------------------------------------------------

    def _require_models(self) -> RegistryModels:
        if self.models is None:
            raise FailedPrecondition(
                "no registry is configured: model runs, compare and gate need one"
            )
        return self.models

    def start(self, request: RunRequest) -> RunInfo:
        """Validates, resolves the alias, checks the eval set digest, queues the run."""
        if request.mode not in MODES:
            raise InvalidArgument(f"mode must be one of {MODES}, got {request.mode!r}")
        version = None
        if request.mode != "rules":
            if not request.model:
                raise InvalidArgument(
                    "subject.model_version.model is required for model and hybrid runs"
                )
            version = self._require_models().resolve(request.model, request.version, request.alias)
        if request.analyst_model:
            analyst_version = self._require_models().resolve(
                request.analyst_model, request.analyst_version, request.analyst_alias
            )
            request = replace(request, analyst_version=analyst_version, analyst_alias=None)
        uri = request.eval_set_uri or self.default_eval_set or default_eval_set_uri()
        eval_set = load_eval_set(uri)
        if request.expected_eval_set_sha256 and request.expected_eval_set_sha256 != eval_set.sha256:
            raise FailedPrecondition(
                f"eval set {uri} has sha256 {eval_set.sha256[:12]}, "
                f"not the expected {request.expected_eval_set_sha256[:12]}"
            )
        if not eval_set.measured:
            raise InvalidArgument(f"eval set {uri} holds no mapper cases to measure")
        with self._changed:
            pending = sum(1 for r in self._runs.values() if r.state not in TERMINAL)
            if pending >= self.max_queued_runs:
                raise ResourceExhausted(f"{pending} runs are queued or running; retry later")
            run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
            info = RunInfo(
                run_id=run_id,
                state=QUEUED,
                mode=request.mode,
                model=request.model if request.mode != "rules" else "",
                version=version,
                report_dir=str((self.reports_dir / run_id).resolve()),
                created_at=_now(),
                eval_set_sha256=eval_set.sha256,
                analyst_model=request.analyst_model,
                analyst_version=request.analyst_version if request.analyst_model else None,
            )
            self._runs[run_id] = info
            self._persist(info)
        resolved = replace(request, version=version, alias=None)
        if not request.options.hardware_profile:
            resolved = replace(
                resolved, options=replace(request.options, hardware_profile=self.hardware_profile)
            )
        self._executor.submit(self._execute, run_id, resolved, eval_set)
        return replace(info)

    def _persist(self, info: RunInfo) -> None:
        directory = Path(info.report_dir)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / (RUN_JSON + ".tmp")
        tmp.write_text(json.dumps(info.as_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(directory / RUN_JSON)

    def _update(self, run_id: str, **changes: Any) -> None:
        with self._changed:
            info = self._runs[run_id]
            for key, value in changes.items():
                setattr(info, key, value)
            if changes.get("phase") and (not info.phases or info.phases[-1] != info.phase):
                info.phases = [*info.phases, info.phase]
            if "state" in changes:
                self._persist(info)
            self._changed.notify_all()

    def _subject(self, request: RunRequest) -> tuple[Subject, LoadedModel | None]:
        """The rules and the hybrid are serving's own HybridMapper (threshold, temperature,
        fallback); the model alone is the adapter without them."""
        hybrid = HybridMapper(RulesMapper(self.taxonomy), threshold=self.threshold)
        if request.mode == "rules":
            return HybridSubject(hybrid), None
        assert request.version is not None
        loaded = self._require_models().load(request.model, request.version)
        if request.mode == "model":
            return ModelSubject(loaded.model, self.taxonomy, self.batch_size), loaded
        arm = registered_arm(request.model, request.version, loaded.info)
        return HybridSubject(hybrid, loaded.model, arm=arm, batch_size=self.batch_size), loaded

    def _execute(self, run_id: str, request: RunRequest, eval_set: EvalSet) -> None:
        started = time.monotonic()

        def progress(phase: str, done: int, total: int, rate: float) -> None:
            self._update(
                run_id,
                phase=phase,
                cases_done=done,
                cases_total=total,
                cases_per_second=rate,
                elapsed_s=time.monotonic() - started,
            )

        loaded: LoadedModel | None = None
        self._update(run_id, state=RUNNING, phase="loading")
        try:
            subject, loaded = self._subject(request)
            held = request.held_out_set_uri or self.default_held_out_set
            calib = request.calibration_set_uri or self.default_calibration_set
            inputs = RunInputs(
                subject=subject,
                eval_set=eval_set,
                held_out_set=load_eval_set(held) if held else None,
                calibration_set=load_eval_set(calib) if calib else None,
                calibration_model=loaded.model if loaded else None,
                model_info=dict(loaded.info) if loaded else {},
            )
            if request.analyst_model and request.analyst_version:
                inputs.analyst_model = self._require_models().load_analyst(
                    request.analyst_model, request.analyst_version, host=loaded
                )
                if request.analyst_set_uri:
                    inputs.analyst_set = load_eval_set(request.analyst_set_uri)
            options = replace(
                request.options,
                batch_size=self.batch_size,
                robustness_per_perturbation=self.robustness_per_perturbation,
                show_progress=request.options.show_progress,
            )
            report_dir = Path(self._runs[run_id].report_dir)
            result = run_to_directory(
                EvaluationRunner(self.taxonomy, progress), inputs, options, report_dir
            )
            report = result.report
            recorded = False
            if (
                request.record_in_registry
                and request.mode != "rules"
                and not report.get("truncated")
            ):
                assert request.version is not None
                calibration = report.get("calibration") or {}
                self._require_models().record_metrics(
                    request.model,
                    request.version,
                    gates.registry_metrics(report),
                    eval_set_sha256=eval_set.sha256,
                    temperature=calibration.get("temperature"),
                    report_uri=str(report_dir),
                    calibrator_json=json.dumps(calibration["calibrator"], sort_keys=True)
                    if calibration.get("calibrator")
                    else "",
                    threshold=calibration.get("threshold"),
                )
                recorded = True
            if request.record_in_registry and request.analyst_version and report.get("analyst"):
                # The analyst's figures on its own version, as the mapper's are on the mapper's.
                self._require_models().record_metrics(
                    request.analyst_model,
                    request.analyst_version,
                    gates.analyst_registry_metrics(report),
                    eval_set_sha256=(inputs.analyst_set or eval_set).sha256,
                    temperature=None,
                    report_uri=str(report_dir),
                )
            report["recorded_in_registry"] = recorded
            report["run"] = {
                k: v
                for k, v in self._runs[run_id].as_json().items()
                if k in ("run_id", "mode", "model", "version")
            }
            (report_dir / REPORT_JSON).write_text(
                json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8"
            )
            self._update(
                run_id,
                state=SUCCEEDED,
                phase="done",
                finished_at=_now(),
                elapsed_s=time.monotonic() - started,
            )
        except Exception as exc:
            reason = exc.message if isinstance(exc, MapperError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, MapperError):
                log.exception("run %s failed", run_id)
            self._update(
                run_id,
                state=FAILED,
                failure_reason=reason,
                finished_at=_now(),
                elapsed_s=time.monotonic() - started,
            )
        finally:
            if loaded is not None:
                loaded.close()

    def get(self, run_id: str) -> RunInfo:
        with self._changed:
            if run_id in self._runs:
                return replace(self._runs[run_id])
        # Run ids are the service's own (a timestamp and hex): anything else names no directory,
        # and is refused before it reaches the filesystem (no traversal, no over-long names).
        if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
            raise NotFound(f"no evaluation run {run_id[:200]!r}")
        path = self.reports_dir / run_id / RUN_JSON
        if not path.is_file():
            raise NotFound(f"no evaluation run {run_id!r}")
        return RunInfo(**json.loads(path.read_text(encoding="utf-8")))

    def watch(
        self, run_id: str, interval_s: float = 0.5, timeout_s: float | None = None
    ) -> Iterator[RunInfo]:
        """Snapshots until the run ends, at most one per `interval_s` (a rules run moves thousands
        of cases a second); the last one is terminal. A finished run yields once."""
        deadline = time.monotonic() + timeout_s if timeout_s else None
        last: tuple | None = None
        phases_seen: int | None = None
        while True:
            info = self.get(run_id)
            if phases_seen is None:  # a finished run is reported once, a live one from its start
                phases_seen = len(info.phases) if info.state in TERMINAL else 0
            # Phases that began and ended between two polls are reported, each once.
            for phase in info.phases[phases_seen:-1]:
                yield replace(info, phase=phase, state=RUNNING)
            phases_seen = max(phases_seen, len(info.phases))
            key = (info.state, info.phase, info.cases_done)
            if key != last or info.state in TERMINAL:
                yield info
                last = key
            if info.state in TERMINAL:
                return
            if deadline and time.monotonic() > deadline:
                return
            # Sleep the interval out, but wake at once when the run ends.
            until = time.monotonic() + interval_s
            with self._changed:
                while (left := until - time.monotonic()) > 0 and self._state(
                    run_id
                ) not in TERMINAL:
                    self._changed.wait(left)

    def _state(self, run_id: str) -> str:
        info = self._runs.get(run_id)
        return info.state if info else SUCCEEDED

    def report(self, run_id: str) -> tuple[RunInfo, dict[str, Any]]:
        info = self.get(run_id)
        if info.state != SUCCEEDED:
            raise FailedPrecondition(f"run {run_id} is {info.state}, not SUCCEEDED")
        return info, load_report(Path(info.report_dir))

    # -- history, compare, gate -----------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        found = []
        for path in sorted(self.reports_dir.glob(f"*/{RUN_JSON}")):
            try:
                found.append(self.get(path.parent.name))
            except (NotFound, json.JSONDecodeError, TypeError):
                continue
        return found

    def latest_run(
        self, model: str, version: int, eval_set_sha256: str = "", *, analyst: bool = False
    ) -> RunInfo:
        """The latest succeeded, untruncated model or hybrid run of a version (on one eval set);
        `analyst`: the latest succeeded run that evaluated `model` v`version` as its analyst."""

        def evaluated(r: RunInfo) -> bool:
            if analyst:
                if (r.analyst_model, r.analyst_version) != (model, version):
                    return False
            elif (r.model, r.version) != (model, version):
                return False
            report = load_report(Path(r.report_dir))
            return not report.get("truncated") and (not analyst or bool(report.get("analyst")))

        candidates = [
            r
            for r in self.runs()
            if r.state == SUCCEEDED
            and (not eval_set_sha256 or r.eval_set_sha256 == eval_set_sha256)
            and evaluated(r)
        ]
        if not candidates:
            on = f" on eval set {eval_set_sha256[:12]}" if eval_set_sha256 else ""
            command = f"mapperctl eval run --analyst-version {version}" if analyst else ""
            raise NotFound(
                f"no succeeded evaluation run of {model} v{version}{on}: run "
                f"`{command or 'mapperctl eval run'}` first"
            )
        return max(candidates, key=lambda r: (r.finished_at, r.run_id))

    def compare(
        self,
        model: str,
        candidate: int,
        baseline: int | None,
        eval_set_sha256: str = "",
        alpha: float = 0.0,
    ) -> tuple[RunInfo, RunInfo, dict[str, Any]]:
        if baseline is None:
            baseline = self._require_models().champion(model)
            if baseline is None:
                raise NotFound(f"{model} has no champion to compare with: name a baseline version")
        cand_run = self.latest_run(model, candidate, eval_set_sha256)
        base_run = self.latest_run(model, baseline, eval_set_sha256 or cand_run.eval_set_sha256)
        comparison = gates.compare(
            load_report(Path(cand_run.report_dir)),
            load_cases(Path(cand_run.report_dir)),
            load_report(Path(base_run.report_dir)),
            load_cases(Path(base_run.report_dir)),
            alpha,
        )
        return cand_run, base_run, comparison

    def _gated_run(self, model: str, version: int) -> tuple[RunInfo, bool]:
        """The latest run that evaluated the version, as the mapper or as the analyst (True)."""
        found, missing = [], None
        for as_analyst in (False, True):
            try:
                found.append((self.latest_run(model, version, analyst=as_analyst), as_analyst))
            except NotFound as exc:
                missing = missing or exc
        if not found:
            assert missing is not None
            raise missing
        return max(found, key=lambda pair: (pair[0].finished_at, pair[0].run_id))

    def gate(
        self, model: str, version: int, hardware_profile: str = "", alpha: float = 0.0
    ) -> dict[str, Any]:
        """The version's latest run judged against its targets for the profile, recorded in the
        registry. A version evaluated as the analyst (`eval run --analyst-version`) is judged on
        the run's analyst section (ANALYST_TARGETS), without a paired comparison: analyst runs
        keep no per-case results to pair."""
        models = self._require_models()
        profile = hardware_profile or self.hardware_profile
        targets = models.targets(model, profile)
        run, as_analyst = self._gated_run(model, version)
        report = load_report(Path(run.report_dir))
        champion = models.champion(model)
        comparison = None
        baseline_run = None
        if not as_analyst and champion is not None and champion != version:
            try:
                _, baseline_run, comparison = self.compare(
                    model, version, champion, run.eval_set_sha256, alpha
                )
            except NotFound:
                log.warning(
                    "champion %s v%s has no run on eval set %s: gate without comparison",
                    model,
                    champion,
                    run.eval_set_sha256[:12],
                )
        table = gates.ANALYST_TARGETS if as_analyst else gates.TARGETS
        # Serving's router asks the model under the default recipe (serving/router_core.py): a
        # mapper calibrated another way would take traffic uncalibrated.
        criteria = gates.check_gate(
            report, targets, comparison, table, serving_recipe=None if as_analyst else recipe_for()
        )
        if as_analyst and not criteria:
            # A gate with nothing to judge would pass on absence.
            raise FailedPrecondition(
                f"the targets of {model} on {profile!r} set none of "
                f"{', '.join(sorted({t[1] for t in table}))}"
            )
        passed = all(c.passed for c in criteria)
        outcome = {
            "passed": passed,
            "criteria": [c.as_json() for c in criteria],
            "run": run,
            "baseline_run": baseline_run,
            "comparison": comparison,
            "hardware_profile": profile,
            "checked_at": _now(),
        }
        failed = [c.name for c in criteria if not c.passed]
        summary = "passed" if passed else "failed: " + ", ".join(failed)
        models.record_gate(
            model,
            version,
            profile,
            passed=passed,
            summary=summary,
            details_json=json.dumps(
                {"criteria": outcome["criteria"], "comparison": comparison, "run_id": run.run_id}
            ),
            report_uri=run.report_dir,
        )
        return outcome
