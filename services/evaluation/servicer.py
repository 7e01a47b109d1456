"""EvaluationService over gRPC: proto <-> domain, nothing else. Errors become statuses here."""
# ruff: noqa: N802  (servicer methods carry the RPC names the generated base class defines)

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as pb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.core.errors import InvalidArgument, MapperError
from llama_mapper.evaluation.runner import RunOptions
from llama_mapper.evaluation.service import EvaluationService, RunInfo, RunRequest

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EvaluationService"].full_name
_MODES = {
    pb.EVALUATION_MODE_MODEL: "model",
    pb.EVALUATION_MODE_RULES: "rules",
    pb.EVALUATION_MODE_HYBRID: "hybrid",
}
_MODE_ENUM = {v: k for k, v in _MODES.items()}

F = TypeVar("F", bound=Callable[..., Any])


def _unary(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except MapperError as exc:
            context.abort(exc.grpc_status, exc.message)
        except Exception:
            log.exception("%s failed", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper  # type: ignore[return-value]


def run_message(info: RunInfo) -> pb.EvaluationRun:
    subject = pb.EvaluationSubject(mode=_MODE_ENUM[info.mode])
    if info.model:
        subject.model_version.model = info.model
        if info.version:
            subject.model_version.version = info.version
    run = pb.EvaluationRun(
        run_id=info.run_id,
        state=pb.RunState.Value(f"RUN_STATE_{info.state}"),
        subject=subject,
        report_dir=info.report_dir,
        failure_reason=info.failure_reason,
    )
    run.created_at.FromJsonString(info.created_at)
    return run


def report_message(info: RunInfo, report: Mapping[str, Any]) -> pb.EvaluationReport:
    body = {k: v for k, v in report.items() if k != "run"}
    message = json_format.ParseDict(body, pb.EvaluationReport(), ignore_unknown_fields=True)
    message.run.CopyFrom(run_message(info))
    return message


def comparison_message(
    candidate: RunInfo, baseline: RunInfo, comparison: Mapping[str, Any]
) -> pb.Comparison:
    message = json_format.ParseDict(dict(comparison), pb.Comparison(), ignore_unknown_fields=True)
    message.candidate_run.CopyFrom(run_message(candidate))
    message.baseline_run.CopyFrom(run_message(baseline))
    return message


class EvaluationServicer(pb_grpc.EvaluationServiceServicer):
    def __init__(self, service: EvaluationService, *, stream_interval_s: float = 0.5) -> None:
        self.service = service
        self.stream_interval_s = stream_interval_s

    def _version(self, ref: pb.ModelVersionRef) -> tuple[str, int]:
        if not ref.model:
            raise InvalidArgument("model_version.model is required")
        which = ref.WhichOneof("selector")
        if which is None:
            raise InvalidArgument("name a version or an alias of the model")
        models = self.service._require_models()
        return ref.model, models.resolve(ref.model, ref.version or None, ref.alias or None)

    @_unary
    def StartEvaluation(
        self, request: pb.StartEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.StartEvaluationResponse:
        mode = _MODES.get(request.subject.mode)
        if mode is None:
            raise InvalidArgument("subject.mode must be MODEL, RULES or HYBRID")
        ref = request.subject.model_version
        if mode != "rules" and ref.WhichOneof("selector") is None:
            raise InvalidArgument("subject.model_version needs a version or an alias")
        o = request.options
        options = RunOptions(
            robustness=o.robustness,
            calibrate=o.calibrate,
            hardware_profile=o.hardware_profile or self.service.hardware_profile,
            max_cases=int(o.max_cases),
            seed=int(o.seed),
            show_progress=False,
        )
        if o.max_cases < 0:
            raise InvalidArgument("options.max_cases must be >= 0")
        info = self.service.start(
            RunRequest(
                mode=mode,
                model=ref.model,
                version=ref.version or None,
                alias=ref.alias or None,
                eval_set_uri=request.eval_set_uri,
                expected_eval_set_sha256=request.expected_eval_set_sha256,
                held_out_set_uri=o.held_out_set_uri,
                calibration_set_uri=o.calibration_set_uri,
                record_in_registry=o.record_in_registry,
                analyst_model=o.analyst_version.model,
                analyst_version=o.analyst_version.version or None,
                analyst_alias=o.analyst_version.alias or None,
                analyst_set_uri=o.analyst_set_uri,
                options=options,
            )
        )
        return pb.StartEvaluationResponse(run=run_message(info))

    def StreamProgress(
        self, request: pb.StreamProgressRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamProgressResponse]:
        try:
            self.service.get(request.run_id)  # NOT_FOUND before the stream starts
            for info in self.service.watch(request.run_id, self.stream_interval_s):
                if not context.is_active():
                    return
                message = pb.StreamProgressResponse(
                    run=run_message(info),
                    phase=info.phase,
                    cases_done=info.cases_done,
                    cases_total=info.cases_total,
                    cases_per_second=info.cases_per_second,
                )
                message.elapsed.FromNanoseconds(int(info.elapsed_s * 1e9))
                yield message
        except MapperError as exc:
            context.abort(exc.grpc_status, exc.message)
        except Exception:
            log.exception("StreamProgress failed")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")

    @_unary
    def GetReport(
        self, request: pb.GetReportRequest, context: grpc.ServicerContext
    ) -> pb.GetReportResponse:
        if not request.run_id:
            raise InvalidArgument("run_id is required")
        info, report = self.service.report(request.run_id)
        return pb.GetReportResponse(report=report_message(info, report))

    @_unary
    def CompareVersions(
        self, request: pb.CompareVersionsRequest, context: grpc.ServicerContext
    ) -> pb.CompareVersionsResponse:
        model, candidate = self._version(request.candidate)
        baseline = None
        if request.HasField("baseline"):
            base_model, baseline = self._version(request.baseline)
            if base_model != model:
                raise InvalidArgument("candidate and baseline must be versions of the same model")
        if not 0 <= request.alpha < 1:
            raise InvalidArgument("alpha must lie in [0, 1)")
        cand_run, base_run, comparison = self.service.compare(
            model, candidate, baseline, request.eval_set_sha256, request.alpha
        )
        return pb.CompareVersionsResponse(
            comparison=comparison_message(cand_run, base_run, comparison)
        )

    @_unary
    def CheckGate(
        self, request: pb.CheckGateRequest, context: grpc.ServicerContext
    ) -> pb.CheckGateResponse:
        model, version = self._version(request.candidate)
        if not 0 <= request.alpha < 1:
            raise InvalidArgument("alpha must lie in [0, 1)")
        outcome = self.service.gate(model, version, request.hardware_profile, request.alpha)
        response = pb.CheckGateResponse(
            verdict=pb.GATE_VERDICT_PASSED if outcome["passed"] else pb.GATE_VERDICT_FAILED,
            criteria=[pb.GateCriterion(**c) for c in outcome["criteria"]],
            run=run_message(outcome["run"]),
            hardware_profile=outcome["hardware_profile"],
        )
        if outcome["comparison"] is not None:
            response.comparison.CopyFrom(
                comparison_message(outcome["run"], outcome["baseline_run"], outcome["comparison"])
            )
        response.checked_at.FromJsonString(outcome["checked_at"])
        return response
