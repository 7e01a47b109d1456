"""EvaluationService over gRPC: proto <-> domain, nothing else (auth and errors: platform/rpc)."""

# Every conversion lives here, both directions: the servicer turns requests into domain calls and
# results into messages; EvaluationClient (client.py) uses the reverse functions on the same shapes.
# ruff: noqa: N802  (servicer methods carry the RPC names the generated base class defines)

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as pb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.evaluation.run import RunOptions
from llama_mapper.evaluation.service import EvaluationService, RunInfo, RunRequest

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EvaluationService"].full_name
# Calls that need the token. CheckGate and recorded runs write metrics, temperatures and gate
# outcomes into the registry (which promotion trusts) with the service's own registry token, and
# every run takes the one worker that gates wait for; StreamProgress, GetReport and
# CompareVersions only read.
WRITE_METHODS = frozenset({"StartEvaluation", "CheckGate"})
_MODES = {
    pb.EVALUATION_MODE_MODEL: "model",
    pb.EVALUATION_MODE_RULES: "rules",
    pb.EVALUATION_MODE_HYBRID: "hybrid",
}
_MODE_ENUM = {v: k for k, v in _MODES.items()}

# -- proto <-> domain ------------------------------------------------------------------------------

_WELL_KNOWN_AS_STRING = ("google.protobuf.Timestamp", "google.protobuf.Duration")


def message_dict(message: Message) -> dict[str, Any]:
    """A message as the service's JSON files hold it: proto field names, numbers as numbers (int64
    too, unlike json_format), NaN kept as a float, unset messages and optional scalars left out."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        if field.has_presence and not message.HasField(field.name):
            continue
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _plain(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_plain(field, v) for v in value]
        else:
            out[field.name] = _plain(field, value)
    return out


def _plain(field: FieldDescriptor, value: Any) -> Any:
    if field.message_type is not None:
        if field.message_type.full_name in _WELL_KNOWN_AS_STRING:
            return value.ToJsonString()
        return message_dict(value)
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    return value


def version_ref(model: str, version: int | None, alias: str | None) -> pb.ModelVersionRef:
    ref = pb.ModelVersionRef(model=model)
    if version is not None:
        ref.version = version
    elif alias:
        ref.alias = alias
    return ref


def start_request_message(request: RunRequest) -> pb.StartEvaluationRequest:
    """The client's side of `run_request`."""
    o = request.options
    message = pb.StartEvaluationRequest(
        subject=pb.EvaluationSubject(mode=_MODE_ENUM[request.mode]),
        eval_set_uri=request.eval_set_uri,
        expected_eval_set_sha256=request.expected_eval_set_sha256,
        options=pb.EvaluationOptions(
            held_out_set_uri=request.held_out_set_uri,
            robustness=o.robustness,
            calibrate=o.calibrate,
            calibration_set_uri=request.calibration_set_uri,
            hardware_profile=o.hardware_profile,
            max_cases=o.max_cases,
            seed=o.seed,
            record_in_registry=request.record_in_registry,
            analyst_set_uri=request.analyst_set_uri,
        ),
    )
    if request.mode != "rules":
        message.subject.model_version.CopyFrom(
            version_ref(request.model, request.version, request.alias)
        )
    if request.analyst_model:
        message.options.analyst_version.CopyFrom(
            version_ref(request.analyst_model, request.analyst_version, request.analyst_alias)
        )
    return message


def run_request(request: pb.StartEvaluationRequest, hardware_profile: str) -> RunRequest:
    """A StartEvaluationRequest as the service's RunRequest; `hardware_profile` is the default."""
    mode = _MODES.get(request.subject.mode)
    if mode is None:
        raise InvalidArgument("subject.mode must be MODEL, RULES or HYBRID")
    ref = request.subject.model_version
    if mode != "rules" and ref.WhichOneof("selector") is None:
        raise InvalidArgument("subject.model_version needs a version or an alias")
    o = request.options
    if o.max_cases < 0:
        raise InvalidArgument("options.max_cases must be >= 0")
    return RunRequest(
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
        options=RunOptions(
            robustness=o.robustness,
            calibrate=o.calibrate,
            hardware_profile=o.hardware_profile or hardware_profile,
            max_cases=int(o.max_cases),
            seed=int(o.seed),
            show_progress=False,
        ),
    )


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
        eval_set_sha256=info.eval_set_sha256,
    )
    run.created_at.FromJsonString(info.created_at)
    return run


def run_info(run: pb.EvaluationRun) -> RunInfo:
    """The reverse of `run_message` (progress fields at zero)."""
    ref = run.subject.model_version
    return RunInfo(
        run_id=run.run_id,
        state=pb.RunState.Name(run.state).removeprefix("RUN_STATE_"),
        mode=_MODES.get(run.subject.mode, ""),
        model=ref.model,
        version=ref.version or None,
        report_dir=run.report_dir,
        created_at=run.created_at.ToJsonString() if run.HasField("created_at") else "",
        eval_set_sha256=run.eval_set_sha256,
        failure_reason=run.failure_reason,
    )


def progress_message(info: RunInfo) -> pb.StreamProgressResponse:
    message = pb.StreamProgressResponse(
        run=run_message(info),
        phase=info.phase,
        cases_done=info.cases_done,
        cases_total=info.cases_total,
        cases_per_second=info.cases_per_second,
    )
    message.elapsed.FromNanoseconds(int(info.elapsed_s * 1e9))
    return message


def progress_info(message: pb.StreamProgressResponse) -> RunInfo:
    return replace(
        run_info(message.run),
        phase=message.phase,
        cases_done=message.cases_done,
        cases_total=message.cases_total,
        cases_per_second=message.cases_per_second,
        elapsed_s=message.elapsed.ToNanoseconds() / 1e9,
    )


def report_message(info: RunInfo, report: Mapping[str, Any]) -> pb.EvaluationReport:
    body = {k: v for k, v in report.items() if k != "run"}
    message = json_format.ParseDict(body, pb.EvaluationReport(), ignore_unknown_fields=True)
    message.run.CopyFrom(run_message(info))
    return message


def report_response(info: RunInfo, report: Mapping[str, Any]) -> pb.GetReportResponse:
    return pb.GetReportResponse(
        report=report_message(info, report), report_json=json.dumps(report, sort_keys=True)
    )


def report_parts(response: pb.GetReportResponse) -> tuple[RunInfo, dict[str, Any]]:
    """The run and its report.json; from a service too old to send report_json, the fields of the
    report message (the same names, without what only report.json holds)."""
    report = (
        json.loads(response.report_json) if response.report_json else message_dict(response.report)
    )
    return run_info(response.report.run), report


def comparison_message(
    candidate: RunInfo, baseline: RunInfo, comparison: Mapping[str, Any]
) -> pb.Comparison:
    message = json_format.ParseDict(dict(comparison), pb.Comparison(), ignore_unknown_fields=True)
    message.candidate_run.CopyFrom(run_message(candidate))
    message.baseline_run.CopyFrom(run_message(baseline))
    return message


def comparison_parts(message: pb.Comparison) -> tuple[RunInfo, RunInfo, dict[str, Any]]:
    """The reverse of `comparison_message`: (candidate run, baseline run, comparison)."""
    comparison = message_dict(message)
    del comparison["candidate_run"], comparison["baseline_run"]
    return run_info(message.candidate_run), run_info(message.baseline_run), comparison


def gate_response(outcome: Mapping[str, Any]) -> pb.CheckGateResponse:
    """EvaluationService.gate's outcome as a CheckGateResponse."""
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


def gate_outcome(response: pb.CheckGateResponse) -> dict[str, Any]:
    """The reverse of `gate_response`: the dict EvaluationService.gate returns."""
    baseline_run, comparison = None, None
    if response.HasField("comparison"):
        _, baseline_run, comparison = comparison_parts(response.comparison)
    return {
        "passed": response.verdict == pb.GATE_VERDICT_PASSED,
        "criteria": [message_dict(c) for c in response.criteria],
        "run": run_info(response.run),
        "baseline_run": baseline_run,
        "comparison": comparison,
        "hardware_profile": response.hardware_profile,
        "checked_at": response.checked_at.ToJsonString(),
    }


# -- the servicer ----------------------------------------------------------------------------------


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

    def StartEvaluation(
        self, request: pb.StartEvaluationRequest, context: grpc.ServicerContext
    ) -> pb.StartEvaluationResponse:
        info = self.service.start(run_request(request, self.service.hardware_profile))
        return pb.StartEvaluationResponse(run=run_message(info))

    def StreamProgress(
        self, request: pb.StreamProgressRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.StreamProgressResponse]:
        self.service.get(request.run_id)  # NOT_FOUND before the stream starts
        for info in self.service.watch(request.run_id, self.stream_interval_s):
            if not context.is_active():
                return
            yield progress_message(info)

    def GetReport(
        self, request: pb.GetReportRequest, context: grpc.ServicerContext
    ) -> pb.GetReportResponse:
        if not request.run_id:
            raise InvalidArgument("run_id is required")
        info, report = self.service.report(request.run_id)
        return report_response(info, report)

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

    def CheckGate(
        self, request: pb.CheckGateRequest, context: grpc.ServicerContext
    ) -> pb.CheckGateResponse:
        model, version = self._version(request.candidate)
        if not 0 <= request.alpha < 1:
            raise InvalidArgument("alpha must lie in [0, 1)")
        outcome = self.service.gate(model, version, request.hardware_profile, request.alpha)
        return gate_response(outcome)
