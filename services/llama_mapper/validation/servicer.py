# ruff: noqa: N802  (servicer methods carry the RPC names the generated base class defines)
"""ValidationService over gRPC: proto <-> domain only (auth and errors: platform/rpc)."""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from llama_mapper._proto.validation.v1 import validation_pb2 as pb
from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.report_digest import report_digest, sign_report
from llama_mapper.validation.checks import CheckResult
from llama_mapper.validation.client import report_dict
from llama_mapper.validation.validator import Request, Validator

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ValidationService"].full_name
_POLICY_FIELDS = [f.name for f in pb.ValidationPolicy.DESCRIPTOR.fields]


def to_request(message: pb.ValidationInput) -> Request:
    which = message.WhichOneof("training_config")
    if which == "training_config_json":
        config = jsonio.loads(message.training_config_json, what="training_config_json")
    elif which == "training_config_struct":
        config = json_format.MessageToDict(message.training_config_struct)
        config = _integral(config)
    else:
        raise InvalidArgument("training_config is required (training_config_json or _struct)")
    if not isinstance(config, dict):
        raise InvalidArgument("the training config must be a JSON object")
    overrides = {
        name: getattr(message.policy_overrides, name)
        for name in _POLICY_FIELDS
        if message.policy_overrides.HasField(name)
    }
    return Request(
        dataset_uri=message.dataset_uri,
        config=config,
        overrides=overrides,
        golden_set_uri=message.golden_set_uri,
        expected_manifest_sha256=message.expected_manifest_sha256,
    )


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: 512.0 becomes 512 so the config schema's integers validate."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(seconds * 1e9))
    return duration


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def check_message(check: dict[str, Any], duration_s: float) -> pb.CheckResult:
    return pb.CheckResult(
        name=check["name"],
        passed=check["passed"],
        message=check["message"],
        counts=check["counts"],
        measurements={k: float(v) for k, v in check["measurements"].items()},
        thresholds={k: float(v) for k, v in check["thresholds"].items()},
        offending_row_ids=check["offending_row_ids"],
        offending_row_count=check["offending_row_count"],
        duration=_duration(duration_s),
    )


def report_message(report: dict[str, Any], signing_key: bytes) -> pb.ValidationReport:
    durations = report.get("check_durations_s", {})
    message = pb.ValidationReport(
        verdict=pb.Verdict.Value(report["verdict"]),
        checks=[check_message(c, durations.get(c["name"], 0.0)) for c in report["checks"]],
        dataset_uri=report["dataset_uri"],
        dataset_manifest_sha256=report["dataset_manifest_sha256"],
        training_config_sha256=report["training_config_sha256"],
        golden_set_sha256=report["golden_set_sha256"],
        taxonomy_version=report["taxonomy_version"],
        effective_policy=pb.ValidationPolicy(**report["effective_policy"]),
        row_count=report["row_count"],
        validator_version=report["validator_version"],
        started_at=_timestamp(report["started_at"]),
        finished_at=_timestamp(report["finished_at"]),
        duration=_duration(report["duration_s"]),
        rows_per_second=report["rows_per_second"],
    )
    # The digest is over the report as clients see it (JSON, proto field names), so whoever keeps
    # that JSON — the training gate reads validation-report.json — can recompute it.
    message.report_sha256 = report_digest(report_dict(message))
    message.report_signature = sign_report(report_dict(message), signing_key)
    return message


class ValidationServicer(pb_grpc.ValidationServiceServicer):
    def __init__(self, validator: Validator, signing_key: bytes) -> None:
        self.validator = validator
        self.signing_key = signing_key

    def ValidateDataset(self, request, context):
        domain = to_request(request.input)
        log.info("validate %s (request %s)", domain.dataset_uri, _request_id(context))
        return pb.ValidateDatasetResponse(
            report=report_message(self.validator.run(domain), self.signing_key)
        )

    def ValidateDatasetStream(self, request, context) -> Iterator[pb.ValidateDatasetStreamResponse]:
        domain = to_request(request.input)
        log.info("validate (stream) %s (request %s)", domain.dataset_uri, _request_id(context))
        events: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            try:
                events.put(
                    ("report", self.validator.run(domain, lambda kind, p: events.put((kind, p))))
                )
            except Exception as exc:  # handed to the RPC thread, which translates it
                events.put(("error", exc))

        threading.Thread(target=work, name="validate-stream", daemon=True).start()
        while True:
            kind, payload = events.get()
            if kind == "progress":
                yield pb.ValidateDatasetStreamResponse(
                    progress=pb.ValidationProgress(
                        phase=payload["phase"],
                        rows_done=payload["rows_done"],
                        rows_total=payload["rows_total"],
                        checks_done=payload["checks_done"],
                        checks_total=payload["checks_total"],
                        elapsed=_duration(payload["elapsed_s"]),
                    )
                )
            elif kind == "check":
                result: CheckResult = payload
                yield pb.ValidateDatasetStreamResponse(
                    check_finished=check_message(result.as_dict(), result.duration_s)
                )
            elif kind == "report":
                yield pb.ValidateDatasetStreamResponse(
                    report=report_message(payload, self.signing_key)
                )
                return
            else:
                raise payload


def _request_id(context: grpc.ServicerContext) -> str:
    metadata = dict(context.invocation_metadata() or ())
    return metadata.get("x-request-id") or uuid.uuid4().hex[:12]
