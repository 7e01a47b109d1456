"""`mapperctl eval run|compare|gate` as a client of the evaluation service over a real channel
(server on port 0): the same output as in-process, errors mapped back, an unreachable address."""

from __future__ import annotations

import argparse
import json
import socket
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.cli import evaluation as cli
from llama_mapper.cli.main import main as mapperctl_main
from llama_mapper.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from llama_mapper.evaluation.report_dir import load_report
from llama_mapper.evaluation.server import build_service, create_server
from llama_mapper.evaluation.servicer import SERVICE_NAME, WRITE_METHODS, EvaluationServicer
from llama_mapper.platform import stack
from llama_mapper.platform.rpc.interceptor import AccessPolicy, ServiceInterceptor
from llama_mapper.platform.settings.evaluation import EvaluationSettings
from tests.support.eval_cases import FakeRegistry, build_eval_set

pytestmark = pytest.mark.integration

TOKEN = "eval-cli-token-" + "x" * 16


@pytest.fixture(autouse=True)
def _no_ambient_service(monkeypatch):
    """Tests name their service; the developer's environment and local stack stay out of it.
    mapperctl sends the test service's token unless a test says otherwise."""
    monkeypatch.delenv("MAPPER_EVALUATION_ADDRESS", raising=False)
    for name in ("MAPPER_REGISTRY_TOKEN", "MAPPER_EVALUATION_REGISTRY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAPPER_EVALUATION_TOKEN", TOKEN)


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    eval_dir = build_eval_set(root / "set", per_detector=2)
    settings = EvaluationSettings(
        port=0,
        reports_dir=root / "runs",
        stream_interval_s=0.05,
        robustness_per_perturbation=5,
        default_eval_set=str(eval_dir),
        token=TOKEN,
    )
    registry = FakeRegistry()
    evaluation = build_service(settings, registry)
    server, port = create_server(settings, service=evaluation)
    server.start()
    yield f"127.0.0.1:{port}", evaluation, registry, root
    server.stop(0)
    evaluation.close()


def _mapperctl(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_run_rules_only_prints_the_report_and_its_directory(service, capsys, monkeypatch):
    address, _, _, root = service
    monkeypatch.chdir(root)  # a relative --eval-set reaches the service as an absolute path
    argv = ["eval", "run", "--rules-only", "--address", address, "--no-robustness"]
    code, out, err = _mapperctl([*argv, "--eval-set", "set", "--json"], capsys)
    assert code == 0
    printed = json.loads(out)
    report_dir = Path(printed.pop("report_dir"))
    assert report_dir.parent == root / "runs"
    # The very document the in-process path prints: report.json as written, plus report_dir.
    assert printed == load_report(report_dir)
    assert printed["quality"]["exact_set_accuracy"] == 1.0
    assert printed["eval_set_uri"] == str(root / "set")
    assert printed["recorded_in_registry"] is False
    assert {"summary.md", "cases.jsonl", "reliability.png"} <= {
        p.name for p in report_dir.iterdir()
    }
    assert f"through the evaluation service at {address}" in err
    assert "  golden: " in err and "succeeded" in err

    code, out, _ = _mapperctl(argv, capsys)
    assert code == 0
    summary, _, where = out.rpartition("report: ")
    assert summary.strip() == (Path(where.split(" (")[0]) / "summary.md").read_text().strip()
    assert f"written by the evaluation service at {address}" in where


def test_compare_and_gate_through_the_service(service, capsys):
    address, evaluation, registry, _ = service
    for version in ("1", "2"):
        code, out, _ = _mapperctl(
            [
                *("eval", "run", "--model", "mapper", "--version", version),
                *("--address", address, "--no-robustness", "--json"),
            ],
            capsys,
        )
        assert code == 0
        assert json.loads(out)["recorded_in_registry"] is True
    assert [m[:2] for m in registry.metrics[-2:]] == [("mapper", 1), ("mapper", 2)]

    code, out, _ = _mapperctl(["eval", "compare", "2", "--address", address, "--json"], capsys)
    assert code == 0
    comparison = json.loads(out)
    cand, base, direct = evaluation.compare("mapper", 2, None)
    assert comparison == {"candidate_run": cand.run_id, "baseline_run": base.run_id, **direct}
    assert comparison["significant_regression"] and comparison["paired_case_count"] > 0

    code, out, _ = _mapperctl(
        ["eval", "compare", "2", "--baseline", "1", "--address", address], capsys
    )
    assert code == 0
    assert "mapper v2" in out and "vs v1" in out and "significant regression" in out

    code, out, _ = _mapperctl(["eval", "gate", "2", "--address", address], capsys)
    assert code == 1
    assert "no_significant_regression" in out and "FAIL" in out and "gate FAILED" in out
    assert registry.gates[-1][:3] == ("mapper", 2, "cpu-2core")
    assert not registry.gates[-1][3]["passed"]

    code, out, _ = _mapperctl(["eval", "gate", "1", "--address", address, "--json"], capsys)
    assert code == 0
    outcome = json.loads(out)
    assert outcome["passed"] and outcome["comparison"] is None  # version 1 is the champion
    assert outcome["hardware_profile"] == "cpu-2core"
    assert {c["name"] for c in outcome["criteria"]} == {
        "min_accuracy",
        "min_schema_valid_rate",
        "max_ece",
        "max_p95_ms",
    }


def test_service_errors_come_back_as_the_cli_errors(service, capsys):
    address, _, _, _ = service
    with pytest.raises(NotFound, match="no version 9"):
        _mapperctl(["eval", "gate", "9", "--address", address], capsys)
    with pytest.raises(FailedPrecondition, match="no targets for h100"):
        _mapperctl(["eval", "gate", "1", "--profile", "h100", "--address", address], capsys)
    with pytest.raises(FailedPrecondition, match="not the expected"):
        _mapperctl(
            [
                *("eval", "run", "--rules-only", "--address", address),
                *("--expected-sha256", "0" * 64),
            ],
            capsys,
        )
    with pytest.raises(InvalidArgument, match="--reports-dir configure an in-process run"):
        _mapperctl(
            ["eval", "--reports-dir", "x", "run", "--rules-only", "--address", address], capsys
        )


def test_an_unreachable_address_fails_fast_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no var/registry-token here for mapperctl to pick up
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # mapperctl sets it; restored afterwards
    address = f"127.0.0.1:{_free_port()}"
    assert mapperctl_main(["eval", "run", "--rules-only", "--address", address]) == 2
    assert f"UNAVAILABLE: no evaluation service answers at {address}" in capsys.readouterr().err
    # $MAPPER_EVALUATION_ADDRESS names a service as explicitly as --address does.
    monkeypatch.setenv("MAPPER_EVALUATION_ADDRESS", address)
    assert mapperctl_main(["eval", "gate", "1"]) == 2
    assert f"no evaluation service answers at {address}" in capsys.readouterr().err


def test_without_an_address_the_local_stack_is_used_when_it_answers(service, capsys, monkeypatch):
    address, _, _, _ = service
    port = int(address.rsplit(":", 1)[1])
    monkeypatch.setenv("MAPPER_EVALUATION_PORT", str(port))  # the local stack's port
    code, _, err = _mapperctl(["eval", "gate", "1", "--json"], capsys)
    assert code == 0 and f"through the evaluation service at {address}" in err


def test_without_a_service_the_run_is_in_process(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MAPPER_EVALUATION_PORT", str(_free_port()))  # nothing answers there
    monkeypatch.setenv("MAPPER_EVALUATION_REPORTS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv(
        "MAPPER_EVALUATION_DEFAULT_EVAL_SET", str(build_eval_set(tmp_path / "set", per_detector=2))
    )
    code, out, err = _mapperctl(
        ["eval", "run", "--rules-only", "--no-robustness", "--json"], capsys
    )
    assert code == 0 and "evaluating in-process" in err
    printed = json.loads(out)
    assert Path(printed.pop("report_dir")).parent == tmp_path / "runs"
    assert printed["quality"]["exact_set_accuracy"] == 1.0


class _MetadataRecorder(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    def intercept_service(self, continuation, handler_call_details):
        self.seen.append(dict(handler_call_details.invocation_metadata))
        return continuation(handler_call_details)


@pytest.mark.parametrize(
    ("env", "sent"),
    [
        ({"MAPPER_REGISTRY_TOKEN": "registry-s3cret-token"}, "registry-s3cret-token"),
        (
            {
                "MAPPER_REGISTRY_TOKEN": "registry-s3cret-token",
                "MAPPER_EVALUATION_TOKEN": "evaluation-s3cret-token",
            },
            "evaluation-s3cret-token",
        ),
    ],
)
def test_the_caller_token_travels_as_bearer_metadata(env, sent, capsys, monkeypatch, tmp_path):
    """MAPPER_EVALUATION_TOKEN, else the registry token: what a service started from the same
    environment (`make up`) checks."""
    recorder = _MetadataRecorder()
    policy = AccessPolicy(None, WRITE_METHODS)  # no auth: only the metadata is checked here
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=2),
        interceptors=[recorder, ServiceInterceptor(SERVICE_NAME, policy)],
    )
    evaluation = build_service(EvaluationSettings(reports_dir=tmp_path), FakeRegistry())
    pb_grpc.add_EvaluationServiceServicer_to_server(EvaluationServicer(evaluation), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.delenv("MAPPER_EVALUATION_TOKEN")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        with pytest.raises(NotFound):
            _mapperctl(["eval", "gate", "9", "--address", f"127.0.0.1:{port}"], capsys)
    finally:
        server.stop(0)
        evaluation.close()
    (call,) = recorder.seen
    assert call["authorization"] == f"Bearer {sent}" and call["x-request-id"]


def test_without_the_token_runs_and_gates_are_refused(service, capsys, monkeypatch):
    address, _, registry, _ = service
    gates = len(registry.gates)
    monkeypatch.delenv("MAPPER_EVALUATION_TOKEN")
    with pytest.raises(Unauthenticated, match="CheckGate needs 'authorization: Bearer <token>'"):
        _mapperctl(["eval", "gate", "1", "--address", address], capsys)
    monkeypatch.setenv("MAPPER_EVALUATION_TOKEN", "not-the-token-anybody-issued")
    with pytest.raises(Unauthenticated, match="is not valid here"):
        _mapperctl(["eval", "run", "--rules-only", "--address", address], capsys)
    assert len(registry.gates) == gates


def test_the_local_stack_token_reaches_the_service(tmp_path, capsys, monkeypatch):
    """As `make up` runs it: the services get MAPPER_REGISTRY_TOKEN (var/registry-token) and no
    evaluation token; mapperctl takes the same file through use_local_token()."""
    monkeypatch.delenv("MAPPER_EVALUATION_TOKEN")
    monkeypatch.setenv("MAPPER_VAR_DIR", str(tmp_path / "var"))
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "registry-token").write_text("stack-token-" + "s" * 20 + "\n")
    monkeypatch.setenv("MAPPER_REGISTRY_TOKEN", stack.registry_token())  # what up() passes on
    settings = EvaluationSettings(port=0, reports_dir=tmp_path / "runs")
    evaluation = build_service(settings, FakeRegistry())
    server, port = create_server(settings, service=evaluation)
    server.start()
    try:
        monkeypatch.delenv("MAPPER_REGISTRY_TOKEN")  # a fresh shell: mapperctl reads the file
        stack.use_local_token()
        with pytest.raises(NotFound, match="no version 9"):  # past the token check
            _mapperctl(["eval", "gate", "9", "--address", f"127.0.0.1:{port}"], capsys)
    finally:
        server.stop(0)
        evaluation.close()
