"""The evaluation service over a real channel (port 0): start, stream, report, compare, gate, errors."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from eval_cases import FakeRegistry, build_eval_set
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as pb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.evaluation.server import build_service, create_server
from llama_mapper.evaluation.servicer import report_parts
from llama_mapper.evaluation.settings import EvaluationSettings


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
    )
    registry = FakeRegistry()
    service = build_service(settings, registry)
    server, port = create_server(settings, service=service)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.EvaluationServiceStub(channel), channel, registry, eval_dir
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
        )
    )
    events = list(
        stub.StreamProgress(pb.StreamProgressRequest(run_id=response.run.run_id), timeout=120)
    )
    return response.run, events


def test_health(stack):
    _, channel, _, _ = stack
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(
        health_pb2.HealthCheckRequest(service="llama_mapper.evaluation.v1.EvaluationService")
    )
    assert status.status == health_pb2.HealthCheckResponse.SERVING


def test_rules_run_streams_progress_and_reports(stack):
    stub, _, _, _ = stack
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
    stub, _, registry, _ = stack
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
        )
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
        )
    )
    assert champion_gate.verdict == pb.GATE_VERDICT_PASSED, [
        c.message for c in champion_gate.criteria
    ]
    assert not champion_gate.HasField("comparison")


def test_errors_on_the_wire(stack):
    stub, _, _, eval_dir = stack
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
            method(request)
        assert info.value.code() == code, (request, info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        list(stub.StreamProgress(pb.StreamProgressRequest(run_id="nope")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
