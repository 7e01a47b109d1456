"""The data builder and the validation service end to end: a real build, the gRPC server on port 0
over a real channel, bad input answered with the right status, s3:// through moto, and the
acceptance corruptions each failing the check that names them."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llama_mapper._proto.validation.v1 import validation_pb2 as pb
from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.cli import datasets as cli
from llama_mapper.datasets.builder import build
from llama_mapper.domain.golden import load_golden
from llama_mapper.domain.manifest import file_sha256, manifest_digest
from llama_mapper.platform.settings.validation import ValidationSettings
from llama_mapper.validation.server import create_server

pytestmark = pytest.mark.integration

CONFIG = {
    "name": "validation-test",
    "adapter": "mapper",
    "base_model": {"id": "smollm2-135m-instruct"},
    "taxonomy_version": "1.0.0",
    "dataset": {"path": "unused"},
    "lora": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]},
    "training": {"batch_size": 4, "learning_rate": 1e-4, "num_epochs": 1, "max_seq_length": 512},
}
MAX_ROW_BYTES = 64 * 1024
TOKEN = "validation-test-token-0123456789"
SIGNING_KEY = "validation-test-signing-key-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "small"
    build(out, seed=7, size="small", progress=False)
    return out


@pytest.fixture(scope="session")
def server_port(tmp_path_factory) -> Iterator[int]:
    """The service as deployed: a token, a signing key, and the test's temp dirs as its only root
    (mapperctl and the training gate here read the same token and key from the environment)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MAPPER_VALIDATION_TOKEN", TOKEN)
        env.setenv("MAPPER_VALIDATION_SIGNING_KEY", SIGNING_KEY)
        settings = ValidationSettings(
            port=0,
            max_row_bytes=MAX_ROW_BYTES,
            dataset_roots=[tmp_path_factory.getbasetemp()],
            s3_buckets=["datasets"],
        )
        server, port = create_server(settings)
        server.start()
        try:
            yield port
        finally:
            server.stop(None)


@pytest.fixture(scope="session")
def channel(server_port) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{server_port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def stub(channel) -> pb_grpc.ValidationServiceStub:
    return pb_grpc.ValidationServiceStub(channel)


@pytest.fixture
def copy(built, tmp_path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(built, target)
    return target


def _validate(stub, uri, config=None, **policy) -> pb.ValidationReport:
    request = pb.ValidateDatasetRequest(
        input=pb.ValidationInput(
            dataset_uri=str(uri),
            training_config_json=json.dumps(config or CONFIG),
            policy_overrides=pb.ValidationPolicy(**policy),
        )
    )
    return stub.ValidateDataset(request, metadata=AUTH, timeout=300).report


def _failed(report: pb.ValidationReport) -> set[str]:
    return {c.name for c in report.checks if not c.passed}


def _rewrite(directory: Path, name: str, rows: list[dict]) -> None:
    """Replaces a file and re-seals the manifest, so only the intended check can fail."""
    path = directory / name
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name].update(sha256=file_sha256(path), rows=len(rows))
    (directory / "manifest.json").write_text(json.dumps(manifest, sort_keys=True, indent=2))


def _rows(directory: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (directory / name).read_text().splitlines()]


# -- the builder --------------------------------------------------------------------------------


def test_build_is_deterministic_and_counts_match(built, tmp_path):
    manifest = json.loads((built / "manifest.json").read_text())
    again = build(tmp_path / "again", seed=7, size="small", progress=False)
    assert manifest_digest(again) == manifest_digest(manifest)
    for name, entry in manifest["files"].items():
        assert file_sha256(built / name) == entry["sha256"]
    counts = manifest["counts"]["mapper"]
    assert len(counts["by_label"]) == 67
    assert {"real", "vendor", "variant", "envelope", "free_text", "gibberish", "no_finding"} <= set(
        counts["by_source"]
    )
    assert {"presidio", "detect-secrets", "detoxify"} <= set(counts["by_detector"])
    heldout = _rows(built, "mapper-heldout.jsonl")
    assert {r["split"] for r in heldout} == {"heldout_pair", "heldout_detector"}
    train_pairs = {(r["detector"], r["output"]) for r in _rows(built, "mapper-train.jsonl")}
    assert not {(r["detector"], r["output"]) for r in heldout} & train_pairs


# -- the service --------------------------------------------------------------------------------


def test_built_data_passes(stub, built):
    report = _validate(stub, built)
    assert report.verdict == pb.VERDICT_PASSED, [(c.name, c.message) for c in report.checks]
    assert [c.name for c in report.checks] == [
        "manifest",
        "schema",
        "labels",
        "label_distribution",
        "sequence_length",
        "supervised_tokens",
        "duplicates",
        "leakage",
        "pii",
    ]
    manifest = json.loads((built / "manifest.json").read_text())
    assert report.dataset_manifest_sha256 == manifest_digest(manifest)
    assert report.golden_set_sha256 == load_golden()[1]
    assert report.effective_policy.max_seq_length == 512
    # Same dataset, config and policy: same digest, whatever the timings.
    assert _validate(stub, built).report_sha256 == report.report_sha256


def test_stream_reports_progress_checks_and_ends_with_the_report(stub, built):
    request = pb.ValidateDatasetStreamRequest(
        input=pb.ValidationInput(dataset_uri=str(built), training_config_json=json.dumps(CONFIG))
    )
    events = list(stub.ValidateDatasetStream(request, metadata=AUTH, timeout=300))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "report" and kinds.count("check_finished") == 9 and "progress" in kinds
    assert events[-1].report.verdict == pb.VERDICT_PASSED


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service="llama_mapper.validation.v1.ValidationService")
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "llama_mapper.validation.v1.ValidationService" in names


def test_every_call_needs_the_token(stub, built):
    request = pb.ValidateDatasetRequest(
        input=pb.ValidationInput(dataset_uri=str(built), training_config_json=json.dumps(CONFIG))
    )
    stream = pb.ValidateDatasetStreamRequest(input=request.input)
    for metadata in ((), (("authorization", "Bearer not-the-token-at-all-000"),)):
        with pytest.raises(grpc.RpcError) as error:
            stub.ValidateDataset(request, metadata=metadata, timeout=30)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            list(stub.ValidateDatasetStream(stream, metadata=metadata, timeout=30))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_outside_the_roots_is_permission_denied_alike_whether_or_not_it_exists(stub, built):
    refusals = []
    for uri in ("/etc", "/etc/definitely-not-here", str(built) + "/../../../../etc"):
        with pytest.raises(grpc.RpcError) as error:
            _validate(stub, uri)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        refusals.append(error.value.details().replace(uri, "<uri>"))
    assert len(set(refusals)) == 1 and "MAPPER_VALIDATION_DATASET_ROOTS" in refusals[0]
    request = pb.ValidateDatasetRequest(
        input=pb.ValidationInput(
            dataset_uri=str(built),
            training_config_json=json.dumps(CONFIG),
            golden_set_uri="/etc/hostname",
        )
    )
    with pytest.raises(grpc.RpcError) as error:
        stub.ValidateDataset(request, metadata=AUTH, timeout=60)
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as error:
        _validate(stub, "s3://someone-elses-bucket/data")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_the_report_is_signed_over_manifest_config_and_policy(stub, built):
    from llama_mapper.domain.report_digest import verify_report
    from llama_mapper.validation.client import report_dict

    report = report_dict(_validate(stub, built))
    assert len(report["report_signature"]) == 64
    assert verify_report(report, SIGNING_KEY.encode())
    assert not verify_report(report, b"another-key-0123456789abcdef")
    report["effective_policy"]["max_seq_length"] = "100000"
    assert not verify_report(report, SIGNING_KEY.encode())


@pytest.mark.parametrize(
    ("damage", "code", "needle"),
    [
        ("missing", grpc.StatusCode.NOT_FOUND, "does not exist"),
        ("truncated", grpc.StatusCode.INVALID_ARGUMENT, "mapper-train.jsonl:3"),
        ("huge_row", grpc.StatusCode.INVALID_ARGUMENT, "MAX_ROW_BYTES"),
        ("taxonomy", grpc.StatusCode.FAILED_PRECONDITION, "taxonomy v9.0.0"),
        ("bad_config", grpc.StatusCode.INVALID_ARGUMENT, "$.lora"),
    ],
)
def test_bad_input_is_refused_and_the_service_keeps_serving(
    stub, built, copy, damage, code, needle
):
    uri, config = copy, CONFIG
    if damage == "missing":
        uri = copy / "nowhere"
    elif damage == "truncated":
        lines = (copy / "mapper-train.jsonl").read_text().splitlines(keepends=True)
        lines[2] = lines[2][: len(lines[2]) // 2] + "\n"
        (copy / "mapper-train.jsonl").write_text("".join(lines))
    elif damage == "huge_row":
        with open(copy / "mapper-train.jsonl", "a") as handle:
            handle.write('{"id": "m-huge", "pad": "' + "x" * (4 * MAX_ROW_BYTES) + '"}\n')
    elif damage == "taxonomy":
        config = {**CONFIG, "taxonomy_version": "9.0.0"}
    elif damage == "bad_config":
        config = {**CONFIG, "lora": {"r": 0, "lora_alpha": 32, "target_modules": ["q_proj"]}}
    with pytest.raises(grpc.RpcError) as error:
        _validate(stub, uri, config)
    assert error.value.code() == code
    assert needle in error.value.details()
    assert _validate(stub, built).verdict == pb.VERDICT_PASSED


# -- s3:// --------------------------------------------------------------------------------------


@pytest.fixture
def moto_endpoint(monkeypatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_s3_with_and_without_credentials(stub, built, moto_endpoint, monkeypatch):
    import boto3

    with pytest.raises(grpc.RpcError) as error:
        _validate(stub, "s3://datasets/small")
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "AWS_ACCESS_KEY_ID" in error.value.details()

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="datasets")
    for path in built.iterdir():
        s3.upload_file(str(path), "datasets", f"small/{path.name}")
    report = _validate(stub, "s3://datasets/small")
    assert report.verdict == pb.VERDICT_PASSED
    assert report.dataset_manifest_sha256 == _validate(stub, built).dataset_manifest_sha256
    with pytest.raises(grpc.RpcError) as error:
        _validate(stub, "s3://datasets/absent")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


# -- acceptance: each corruption fails the check that names it ------------------------------------


def _unknown_label(d: Path) -> None:
    rows = _rows(d, "mapper-train.jsonl")
    rows[0]["output"] = rows[0]["labels"][0] = "pii.shoe_size"
    _rewrite(d, "mapper-train.jsonl", rows)


def _over_long(d: Path) -> None:
    rows = _rows(d, "mapper-train.jsonl")
    rows[1]["input"][1]["content"] += " padding" * 600
    _rewrite(d, "mapper-train.jsonl", rows)


def _duplicated_block(d: Path) -> None:
    rows = _rows(d, "mapper-train.jsonl")
    _rewrite(d, "mapper-train.jsonl", rows + rows[:200])


def _golden_copied(d: Path) -> None:
    golden, _ = load_golden()
    case = {**golden[0], "split": "train"}
    case.pop("heldout")
    _rewrite(d, "mapper-train.jsonl", [*_rows(d, "mapper-train.jsonl"), case])


def _email_in_output(d: Path) -> None:
    rows = _rows(d, "analyst-train.jsonl")
    assessment = json.loads(rows[0]["output"])
    assessment["remediation"][0] = "Email the data owner at dana.whitfield@example.com now."
    rows[0]["output"] = json.dumps(assessment, sort_keys=True, separators=(",", ":"))
    _rewrite(d, "analyst-train.jsonl", rows)


def _email_and_ssn_in_prompt(d: Path) -> None:
    rows = _rows(d, "mapper-train.jsonl")
    user = next(m for m in rows[0]["input"] if m["role"] == "user")
    user["content"] += " Reach Dana Whitfield at dana.whitfield@example.com, SSN 078-05-1120."
    _rewrite(d, "mapper-train.jsonl", rows)


def _tampered(d: Path) -> None:
    with open(d / "mapper-eval.jsonl", "a") as handle:
        handle.write((d / "mapper-eval.jsonl").read_text().splitlines()[0] + "\n")


@pytest.mark.parametrize(
    ("corrupt", "check"),
    [
        (_unknown_label, "labels"),
        (_over_long, "sequence_length"),
        (_duplicated_block, "duplicates"),
        (_golden_copied, "leakage"),
        (_email_in_output, "pii"),
        (_email_and_ssn_in_prompt, "pii"),
        (_tampered, "manifest"),
    ],
    ids=[
        "unknown-label",
        "over-long-row",
        "duplicated-block",
        "golden-copied",
        "email",
        "email-ssn-in-prompt",
        "tampered",
    ],
)
def test_corruption_fails_naming_the_check(stub, copy, corrupt, check):
    corrupt(copy)
    report = _validate(stub, copy)
    assert report.verdict == pb.VERDICT_FAILED
    assert check in _failed(report)
    failed = next(c for c in report.checks if c.name == check)
    assert failed.offending_row_count >= 1 and failed.offending_row_ids


def test_cli_validate_through_the_service(server_port, built, copy, tmp_path, capsys):
    port = server_port
    config = tmp_path / "mapper.json"
    config.write_text(json.dumps(CONFIG))
    args = [
        "data",
        "validate",
        str(built),
        "--config",
        str(config),
        "--address",
        f"127.0.0.1:{port}",
    ]
    assert cli.main(args) == 0
    assert "verdict VERDICT_PASSED" in capsys.readouterr().out
    _unknown_label(copy)
    assert cli.main([*args[:2], str(copy), *args[3:]]) == 1
    assert "FAIL  labels" in capsys.readouterr().out


def test_cli_report_is_what_the_training_gate_accepts(server_port, copy, tmp_path, capsys):
    from llama_mapper.domain.errors import FailedPrecondition
    from llama_mapper.training.validation_gate import REPORT_NAME, check_dataset

    config = tmp_path / "mapper.json"
    config.write_text(json.dumps(CONFIG))
    args = ["data", "validate", str(copy), "--config", str(config)]
    assert cli.main([*args, "--address", f"127.0.0.1:{server_port}"]) == 0
    report = json.loads((copy / REPORT_NAME).read_text())
    gate = check_dataset(copy, ["mapper-train.jsonl"])
    assert gate.report_digest == report["report_sha256"]
    # A report edited by hand no longer matches its digest.
    report["checks"][0]["message"] = "edited"
    (copy / REPORT_NAME).write_text(json.dumps(report))
    with pytest.raises(FailedPrecondition, match="edited after validation"):
        check_dataset(copy, ["mapper-train.jsonl"])
    # Only the service's key makes a report the gate accepts.
    assert cli.main([*args, "--address", f"127.0.0.1:{server_port}"]) == 0
    with pytest.raises(
        FailedPrecondition, match="does not verify with MAPPER_VALIDATION_SIGNING_KEY"
    ):
        check_dataset(copy, ["mapper-train.jsonl"], signing_key=b"not-the-service-key-0123456789")
    # A failed validation leaves a failed report, which the gate refuses naming the check.
    _unknown_label(copy)
    assert cli.main([*args, "--address", f"127.0.0.1:{server_port}"]) == 1
    with pytest.raises(FailedPrecondition, match=r"did not pass.*labels"):
        check_dataset(copy, ["mapper-train.jsonl"])


def test_cli_without_a_service_validates_in_process_and_the_gate_accepts_it(copy, tmp_path):
    """No service at --address: one in this process, on its own token, signing with the key the
    gate here checks (MAPPER_VALIDATION_SIGNING_KEY, set by the server fixture's environment)."""
    from llama_mapper.training.validation_gate import check_dataset

    config = tmp_path / "mapper.json"
    config.write_text(json.dumps(CONFIG))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MAPPER_VALIDATION_SIGNING_KEY", SIGNING_KEY)
        args = ["data", "validate", str(copy), "--config", str(config), "--address", "127.0.0.1:1"]
        assert cli.main(args) == 0
        assert check_dataset(copy, ["mapper-train.jsonl"]).report_digest
