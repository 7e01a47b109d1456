"""The evaluation service over a real channel (port 0): start, stream, report, compare, gate, errors,
and who may call which RPC (the bearer token)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as pb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.evaluation.server import build_service, create_server
from llama_mapper.evaluation.servicer import report_parts
from llama_mapper.platform.settings.evaluation import EvaluationSettings
from tests.support.eval_cases import FakeRegistry, build_eval_set

pytestmark = pytest.mark.integration

TOKEN = "eval-caller-token-" + "z" * 16
# StartEvaluation and CheckGate carry it; reads (StreamProgress, GetReport, CompareVersions) below
# go without it on purpose: they are open unless require_auth_for_reads.
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsvc")
    eval_dir = build_eval_set(root / "set")
    settings = EvaluationSettings(
        port=0,
        reports_dir=root / "runs",
        stream_interval_s=0.05,
        robustness_per_perturbation=10,
        default_eval_set=str(eval_dir),
        token=TOKEN,
    )
    registry = FakeRegistry()
    service = build_service(settings, registry)
    server, port = create_server(settings, service=service)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.EvaluationServiceStub(channel), channel, registry, eval_dir, service
    channel.close()
    server.stop(0)
    service.close()


def _run(stub, mode, version=None, record=False, **options):
    subject = pb.EvaluationSubject(mode=mode)
    if version:
        subject.model_version.model = "mapper"
        subject.model_version.version = version
    response = stub.StartEvaluation(
        pb.StartEvaluationRequest(
            subject=subject,
            options=pb.EvaluationOptions(
                robustness=True, calibrate=True, record_in_registry=record, **options
            ),
        ),
        metadata=AUTH,
    )
    events = list(
        stub.StreamProgress(pb.StreamProgressRequest(run_id=response.run.run_id), timeout=120)
    )
    return response.run, events


def test_health(stack):
    _, channel, _, _, _ = stack
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(
        health_pb2.HealthCheckRequest(service="llama_mapper.evaluation.v1.EvaluationService")
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_rules_run_streams_progress_and_reports(stack):
    stub, _, _, _, _ = stack
    run, events = _run(stub, pb.EVALUATION_MODE_RULES)
    assert run.state in (pb.RUN_STATE_QUEUED, pb.RUN_STATE_RUNNING)
    assert events[-1].run.state == pb.RUN_STATE_SUCCEEDED
    assert {"golden"} <= {e.phase for e in events}
    response = stub.GetReport(pb.GetReportRequest(run_id=run.run_id))
    report = response.report
    assert report.quality.exact_set_accuracy == 1.0
    assert run.eval_set_sha256 == report.eval_set_sha256 == report.run.eval_set_sha256
    # report_json is the run's report.json, field for field (and more: subject, truncation).
    on_disk = json.loads((Path(report.run.report_dir) / "report.json").read_text())
    assert json.loads(response.report_json) == on_disk
    # From a service too old to send report_json, the client reads the typed report: the same
    # figures under the same names, int64 counts as numbers.
    response.ClearField("report_json")
    info, fallback = report_parts(response)
    assert info.run_id == run.run_id and info.state == "SUCCEEDED"
    for key in ("quality", "held_out", "latency", "robustness", "eval_set_sha256"):
        assert fallback[key] == on_disk[key], key
    assert report.quality.schema_valid_rate == 1.0
    assert report.held_out[0].name == "held_out_pairs"
    assert len(report.robustness.perturbations) == 8
    assert report.latency.hardware_profile == "cpu-2core"
    assert not report.recorded_in_registry
    # Joining a finished run sends the final message alone.
    again = list(stub.StreamProgress(pb.StreamProgressRequest(run_id=run.run_id)))
    assert len(again) == 1 and again[0].run.state == pb.RUN_STATE_SUCCEEDED


def test_model_runs_compare_and_gate(stack):
    stub, _, registry, _, _ = stack
    good, events = _run(stub, pb.EVALUATION_MODE_MODEL, version=1, record=True)
    assert events[-1].run.state == pb.RUN_STATE_SUCCEEDED, events[-1].run.failure_reason
    report = stub.GetReport(pb.GetReportRequest(run_id=good.run_id)).report
    assert report.recorded_in_registry and report.calibration.HasField("temperature")
    model, version, values, kw = registry.metrics[-1]
    assert (model, version) == ("mapper", 1) and values[
        "exact_set_accuracy"
    ] == report.quality.exact_set_accuracy
    assert (
        kw["eval_set_sha256"] == report.eval_set_sha256
        and kw["temperature"] == report.calibration.temperature
    )

    _, events = _run(stub, pb.EVALUATION_MODE_MODEL, version=2)
    assert events[-1].run.state == pb.RUN_STATE_SUCCEEDED
    comparison = stub.CompareVersions(
        pb.CompareVersionsRequest(candidate=pb.ModelVersionRef(model="mapper", version=2))
    ).comparison
    assert comparison.baseline_run.subject.model_version.version == 1
    assert comparison.mcnemar.baseline_only_correct > comparison.mcnemar.candidate_only_correct
    assert comparison.significant_regression
    assert comparison.paired_case_count == sum(
        getattr(comparison.mcnemar, f)
        for f in ("both_correct", "candidate_only_correct", "baseline_only_correct", "both_wrong")
    )
    deltas = {d.metric: d for d in comparison.deltas}
    assert deltas["exact_set_accuracy"].delta < 0

    gate = stub.CheckGate(
        pb.CheckGateRequest(
            candidate=pb.ModelVersionRef(model="mapper", version=2), hardware_profile="cpu-2core"
        ),
        metadata=AUTH,
    )
    assert gate.verdict == pb.GATE_VERDICT_FAILED
    by_name = {c.name: c for c in gate.criteria}
    assert not by_name["no_significant_regression"].passed
    assert by_name["min_schema_valid_rate"].passed
    assert (
        registry.gates[-1][:3] == ("mapper", 2, "cpu-2core") and not registry.gates[-1][3]["passed"]
    )

    champion_gate = stub.CheckGate(
        pb.CheckGateRequest(
            candidate=pb.ModelVersionRef(model="mapper", alias="champion"),
            hardware_profile="cpu-2core",
        ),
        metadata=AUTH,
    )
    assert champion_gate.verdict == pb.GATE_VERDICT_PASSED, [
        c.message for c in champion_gate.criteria
    ]
    assert not champion_gate.HasField("comparison")


def test_errors_on_the_wire(stack):
    stub, _, _, eval_dir, _ = stack
    cases = [
        (stub.GetReport, pb.GetReportRequest(run_id="nope"), grpc.StatusCode.NOT_FOUND),
        (stub.GetReport, pb.GetReportRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (stub.StartEvaluation, pb.StartEvaluationRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        (
            stub.StartEvaluation,
            pb.StartEvaluationRequest(
                subject=pb.EvaluationSubject(
                    mode=pb.EVALUATION_MODE_MODEL,
                    model_version=pb.ModelVersionRef(model="mapper", version=9),
                )
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            stub.StartEvaluation,
            pb.StartEvaluationRequest(
                subject=pb.EvaluationSubject(mode=pb.EVALUATION_MODE_RULES),
                expected_eval_set_sha256="0" * 64,
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            stub.StartEvaluation,
            pb.StartEvaluationRequest(
                subject=pb.EvaluationSubject(mode=pb.EVALUATION_MODE_RULES),
                eval_set_uri=str(eval_dir / "missing"),
            ),
            grpc.StatusCode.NOT_FOUND,
        ),
        (
            stub.CheckGate,
            pb.CheckGateRequest(
                candidate=pb.ModelVersionRef(model="mapper", version=1), hardware_profile="h100"
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
        (
            stub.CompareVersions,
            pb.CompareVersionsRequest(candidate=pb.ModelVersionRef(model="mapper")),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ]
    for method, request, code in cases:
        with pytest.raises(grpc.RpcError) as info:
            method(request, metadata=AUTH)
        assert info.value.code() == code, (request, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamProgress(pb.StreamProgressRequest(run_id="nope")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# -- who may call which RPC ------------------------------------------------------------------------


@pytest.fixture
def no_ambient_tokens(monkeypatch):
    """Settings built from the environment must not pick up the developer's tokens."""
    for name in (
        "MAPPER_EVALUATION_TOKEN",
        "MAPPER_EVALUATION_REGISTRY_TOKEN",
        "MAPPER_EVALUATION_ALLOW_INSECURE_WRITES",
        "MAPPER_EVALUATION_REQUIRE_AUTH_FOR_READS",
        "MAPPER_REGISTRY_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@contextlib.contextmanager
def _small_server(tmp_path: Path, **fields):
    settings = EvaluationSettings(port=0, reports_dir=tmp_path / "runs", **fields)
    service = build_service(settings, FakeRegistry())
    server, port = create_server(settings, service=service)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield pb_grpc.EvaluationServiceStub(channel), channel
    finally:
        channel.close()
        server.stop(0)
        service.close()


def _code(call, request, metadata=()):
    with pytest.raises(grpc.RpcError) as info:
        response = call(request, metadata=metadata)
        if not isinstance(response, Message):
            list(response)  # a stream's status arrives as it is read
    return info.value.code(), info.value.details()


_GATE_V1 = pb.CheckGateRequest(
    candidate=pb.ModelVersionRef(model="mapper", version=1), hardware_profile="cpu-2core"
)
_GATE_V9 = pb.CheckGateRequest(candidate=pb.ModelVersionRef(model="mapper", version=9))
_RECORDING_RUN = pb.StartEvaluationRequest(
    subject=pb.EvaluationSubject(
        mode=pb.EVALUATION_MODE_MODEL, model_version=pb.ModelVersionRef(model="mapper", version=1)
    ),
    options=pb.EvaluationOptions(record_in_registry=True),
)
_RULES_RUN = pb.StartEvaluationRequest(subject=pb.EvaluationSubject(mode=pb.EVALUATION_MODE_RULES))


def test_writes_without_the_token_are_unauthenticated_and_change_nothing(stack, caplog):
    stub, _, registry, _, service = stack
    before = (len(service.runs()), len(registry.metrics), len(registry.gates))
    refusals = [
        ((), "needs 'authorization: Bearer <token>'"),
        ((("authorization", "Bearer wrong-secret-value"),), "is not valid here"),
        ((("authorization", TOKEN),), "needs 'authorization: Bearer <token>'"),  # no scheme
        ((("authorization", f"Basic {TOKEN}"),), "needs 'authorization: Bearer <token>'"),
    ]
    # A rules run records nothing, yet needs the token too: it takes the one evaluation worker.
    for call, request in (
        (stub.StartEvaluation, _RECORDING_RUN),
        (stub.StartEvaluation, _RULES_RUN),
        (stub.CheckGate, _GATE_V1),
    ):
        for metadata, message in refusals:
            code, details = _code(call, request, metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (request, metadata, details)
            assert message in details and TOKEN not in details
    # Refused before the servicer: no run queued, nothing written to the registry.
    assert (len(service.runs()), len(registry.metrics), len(registry.gates)) == before
    # Refusals are logged with the method and never with what was sent as a token.
    assert "refused CheckGate" in caplog.text and "wrong-secret-value" not in caplog.text
    # The right token (the scheme in any case) passes: the servicer answers.
    for scheme in ("Bearer", "bearer"):
        code, details = _code(stub.CheckGate, _GATE_V9, (("authorization", f"{scheme} {TOKEN}"),))
        assert code == grpc.StatusCode.NOT_FOUND, details


def test_reads_need_no_token_by_default(stack):
    stub, _, _, _, _ = stack
    # The servicer answers each (not UNAUTHENTICATED); the rules and model tests above read real
    # runs, reports and comparisons without the token the same way.
    assert _code(stub.GetReport, pb.GetReportRequest(run_id="nope"))[0] == grpc.StatusCode.NOT_FOUND
    assert (
        _code(stub.StreamProgress, pb.StreamProgressRequest(run_id="nope"))[0]
        == grpc.StatusCode.NOT_FOUND
    )
    compare = pb.CompareVersionsRequest(candidate=pb.ModelVersionRef(model="mapper", version=9))
    assert _code(stub.CompareVersions, compare)[0] == grpc.StatusCode.NOT_FOUND


def test_reads_need_the_token_when_required(tmp_path, no_ambient_tokens):
    with _small_server(tmp_path, token=TOKEN, require_auth_for_reads=True) as (stub, channel):
        reads = [
            (stub.GetReport, pb.GetReportRequest(run_id="nope")),
            (stub.StreamProgress, pb.StreamProgressRequest(run_id="nope")),
            (
                stub.CompareVersions,
                pb.CompareVersionsRequest(candidate=pb.ModelVersionRef(model="mapper", version=9)),
            ),
        ]
        for call, request in reads:
            code, details = _code(call, request)
            assert code == grpc.StatusCode.UNAUTHENTICATED, details
            assert _code(call, request, AUTH)[0] == grpc.StatusCode.NOT_FOUND
        # Health and reflection stay open: probes carry no token.
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_the_registry_token_is_the_default_caller_token(tmp_path, no_ambient_tokens):
    with _small_server(tmp_path, registry_token="registry-secret-token") as (stub, _):
        assert _code(stub.CheckGate, _GATE_V9)[0] == grpc.StatusCode.UNAUTHENTICATED
        bearer = (("authorization", "Bearer registry-secret-token"),)
        assert _code(stub.CheckGate, _GATE_V9, bearer)[0] == grpc.StatusCode.NOT_FOUND


def test_caller_token_precedence(no_ambient_tokens):
    def caller_token(**fields):
        return EvaluationSettings(**fields).caller_token()

    assert caller_token() is None
    no_ambient_tokens.setenv("MAPPER_REGISTRY_TOKEN", "from-env")  # what `make up` hands services
    assert caller_token() == "from-env"
    assert caller_token(token="") == "from-env"  # empty is unset: never matches `Bearer `
    assert caller_token(registry_token="registry") == "registry"
    assert caller_token(token="evaluation", registry_token="registry") == "evaluation"
    no_ambient_tokens.setenv("MAPPER_EVALUATION_TOKEN", "evaluation-env")
    assert caller_token() == "evaluation-env"
    assert EvaluationSettings().registry_bearer() == "from-env"  # the registry keeps its own


def test_without_any_token_the_server_starts_only_when_insecure_writes_are_allowed(
    tmp_path, no_ambient_tokens
):
    with pytest.raises(FailedPrecondition, match="MAPPER_EVALUATION_TOKEN"):
        create_server(EvaluationSettings(port=0, reports_dir=tmp_path / "runs"))
    with _small_server(tmp_path, allow_insecure_writes=True) as (stub, _):
        assert _code(stub.CheckGate, _GATE_V9)[0] == grpc.StatusCode.NOT_FOUND
        assert (
            _code(stub.StartEvaluation, pb.StartEvaluationRequest())[0]
            == grpc.StatusCode.INVALID_ARGUMENT
        )
