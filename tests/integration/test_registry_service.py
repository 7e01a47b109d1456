"""The registry over a real gRPC channel, on SQLite + local files and on PostgreSQL + moto S3."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import create_engine, text

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain import errors
from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.platform.auth import token_sha256
from llama_mapper.platform.settings.registry import RegistrySettings
from llama_mapper.registry.client import RegistryClient
from llama_mapper.registry.server import create_server
from tests.support.registry import (
    BUCKET,
    LLAMA_BASE,
    LLAMA_SHA,
    PHI3_BASE,
    PHI3_SHA,
    TOKEN,
    evaluated,
    lineage,
    make_adapter,
    moto_s3,
    postgres_database,
)

pytestmark = pytest.mark.integration
# The authenticated principal (the shared token's) and what the client says it acts as.
ACTOR = "operator/tester"


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture(params=["sqlite-local", "postgres-s3"])
def backend(request, tmp_path) -> dict:
    if request.param == "sqlite-local":
        return {
            "database_url": f"sqlite:///{tmp_path}/registry.db",
            "artifact_uri": str(tmp_path / "artifacts"),
        }
    return {
        "database_url": request.getfixturevalue("pg_url"),
        "artifact_uri": f"s3://{BUCKET}/{tmp_path.name}",
        "s3_endpoint_url": request.getfixturevalue("s3_endpoint"),
        "staging_dir": tmp_path / "staging",
    }


@contextmanager
def running(settings: RegistrySettings) -> Iterator[int]:
    server, port = create_server(settings)
    server.start()
    try:
        yield port
    finally:
        server.stop(None).wait()


@pytest.fixture
def settings(backend) -> RegistrySettings:
    return RegistrySettings(token=TOKEN, port=0, **backend)


@pytest.fixture
def registry(settings) -> Iterator[tuple[RegistryClient, int]]:
    with (
        running(settings) as port,
        RegistryClient(f"127.0.0.1:{port}", token=TOKEN, actor="tester") as client,
    ):
        yield client, port


@pytest.fixture
def client(registry) -> RegistryClient:
    return registry[0]


@pytest.fixture
def model() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def staging_dir(settings: RegistrySettings) -> Path:
    return settings.staging_dir or Path(settings.artifact_uri) / ".staging"


def register(client: RegistryClient, model: str, tmp_path: Path, **kwargs) -> pb.ModelVersion:
    directory = make_adapter(tmp_path / uuid.uuid4().hex[:8], **kwargs.pop("adapter", {}))
    return client.register_directory(
        model, directory, lineage=kwargs.pop("lineage", lineage()), **kwargs
    ).version


# -- registration, lineage, idempotency ------------------------------------------------------------


def test_seed_registry_entries_are_expressible(client, tmp_path):
    """The seed's two entries, as they are: name, base, training data, accuracy / f1 / latency_p95."""
    seed = [
        (
            "mapper",
            "llama-3-8b-compliance-v1.0",
            LLAMA_BASE,
            LLAMA_SHA,
            "compliance_mappings_v1.0",
            0.94,
            0.92,
            45.0,
        ),
        (
            "analyst",
            "phi-3-mini-analyst-v1.0",
            PHI3_BASE,
            PHI3_SHA,
            "risk_analysis_v1.0",
            0.89,
            0.87,
            30.0,
        ),
    ]
    suffix = uuid.uuid4().hex[:6]
    for model, name, base, sha, data, accuracy, f1, p95 in seed:
        modules = ["qkv_proj", "o_proj"] if base == PHI3_BASE else None
        version = register(
            client,
            f"{model}-{suffix}",
            tmp_path,
            adapter={"base": base, "target_modules": modules},
            lineage=lineage(base, sha, dataset_name=data),
            display_name=name,
        )
        client.record_metrics(
            version.model,
            version.version,
            {"accuracy": accuracy, "f1_score": f1, "latency_p95_ms": p95},
        )
        got = client.get_version(version.model, version.version)
        assert got.version.display_name == name
        assert got.version.lineage.base_model_id == base
        assert got.version.lineage.dataset_name == data
        assert dict(got.metrics[-1].values) == pytest.approx(
            {"accuracy": accuracy, "f1_score": f1, "latency_p95_ms": p95}
        )


def test_register_assigns_monotonic_versions_with_full_lineage(client, model, tmp_path):
    full = lineage(
        base_model_revision="5f0b02c75b57c5855da9ae460ce51323ea669d8a",
        training_config_json=json.dumps({"lora": {"r": 8}}),
        dataset_name="compliance_mappings_v1.0",
        dataset_manifest_sha256="1" * 64,
        validation_report_sha256="2" * 64,
        ray_submission_id="raysubmit_abc",
        git_commit="0936f14d11d3e2644cc23a96a0d0ba930df0da72",
    )
    first = register(client, model, tmp_path, lineage=full, idempotency_key="raysubmit_abc")
    second = register(client, model, tmp_path, lineage=full)
    assert (first.version, second.version) == (1, 2)
    assert first.lora_rank == 8 and list(first.target_modules) == [
        "k_proj",
        "o_proj",
        "q_proj",
        "v_proj",
    ]
    assert first.lineage == pb.Lineage(**full)
    assert {f.name for f in first.files} == {
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    assert first.created_by == ACTOR and first.idempotency_key == "raysubmit_abc"
    assert [v.version for v in client.list_versions(model)] == [1, 2]
    summary = next(m for m in client.list_models() if m.name == model)
    assert (summary.latest_version, summary.version_count) == (2, 2)


def test_registration_is_idempotent_on_the_key(client, model, tmp_path):
    directory = make_adapter(tmp_path / "a")
    first = client.register_directory(
        model, directory, lineage=lineage(), idempotency_key="raysubmit_1"
    )
    retry = client.register_directory(
        model, directory, lineage=lineage(), idempotency_key="raysubmit_1"
    )
    assert first.created and not retry.created
    assert retry.version.version == first.version.version == 1
    assert len(client.list_versions(model)) == 1
    other = make_adapter(tmp_path / "b")  # new random weights: different content, same key
    with pytest.raises(errors.AlreadyExists):
        client.register_directory(model, other, lineage=lineage(), idempotency_key="raysubmit_1")


def test_download_round_trip_verifies_every_file(client, model, tmp_path):
    directory = make_adapter(tmp_path / "src")
    version = client.register_directory(model, directory, lineage=lineage()).version
    out = client.download(model, version.version, tmp_path / "out")
    for name in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        assert (out / name).read_bytes() == (directory / name).read_bytes()
    with pytest.raises(errors.NotFound):
        client.download(model, 99, tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def _stored_files(settings: RegistrySettings, version: pb.ModelVersion, s3_endpoint: str | None):
    """(read, write, delete) callables over the stored copy of adapter_model.safetensors."""
    name = "adapter_model.safetensors"
    if settings.artifact_uri.startswith("s3://"):
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
        prefix = settings.artifact_uri.removeprefix(f"s3://{BUCKET}/")
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
        key = next(k for k in keys if k.endswith(name))
        return (
            lambda: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read(),
            lambda data: s3.put_object(Bucket=BUCKET, Key=key, Body=data),
            lambda: s3.delete_object(Bucket=BUCKET, Key=key),
        )
    path = next(Path(settings.artifact_uri).glob(f"{version.model}/*/{name}"))
    return path.read_bytes, path.write_bytes, path.unlink


def test_corrupted_or_missing_artifact_is_reported_never_served(client, settings, model, tmp_path):
    version = register(client, model, tmp_path)
    endpoint = settings.s3_endpoint_url
    read, write, delete = _stored_files(settings, version, endpoint)
    data = bytearray(read())
    data[-1] ^= 0xFF
    write(bytes(data))
    with pytest.raises(errors.DataLoss):
        client.download(model, version.version, tmp_path / "corrupt")
    assert not (tmp_path / "corrupt").exists()
    delete()
    with pytest.raises(errors.NotFound):
        client.download(model, version.version, tmp_path / "missing")


# -- bad input: right status, nothing half-written --------------------------------------------------


def _raw_upload(port: int, model: str, files: list[tuple[str, bytes, str | None]]):
    """Upload through the bare stub, so names the client would refuse reach the server."""
    import hashlib

    def requests():
        meta = pb.VersionMetadata(model=model, lineage=pb.Lineage(**lineage()))
        yield pb.RegisterVersionRequest(metadata=meta)
        for name, data, digest in files:
            sha = digest or hashlib.sha256(data).hexdigest()
            yield pb.RegisterVersionRequest(
                file=pb.FileHeader(name=name, sha256=sha, size_bytes=len(data))
            )
            yield pb.RegisterVersionRequest(chunk=data)

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RegisterVersion(
                requests(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=30
            )
    return info.value


@pytest.mark.parametrize(
    ("name", "digest", "code", "message"),
    [
        ("../evil.json", None, grpc.StatusCode.INVALID_ARGUMENT, "path traversal"),
        ("/etc/passwd.json", None, grpc.StatusCode.INVALID_ARGUMENT, "absolute"),
        ("sub\\x.json", None, grpc.StatusCode.INVALID_ARGUMENT, "backslash"),
        (
            "adapter_model.bin",
            None,
            grpc.StatusCode.INVALID_ARGUMENT,
            "adapters must be safetensors",
        ),
        ("model.pkl", None, grpc.StatusCode.INVALID_ARGUMENT, "adapters must be safetensors"),
        ("run.sh", None, grpc.StatusCode.INVALID_ARGUMENT, "only adapter_config.json"),
        ("notes.txt", "0" * 64, grpc.StatusCode.INVALID_ARGUMENT, "sha256 mismatch"),
    ],
)
def test_unsafe_uploads_are_refused_and_leave_nothing(
    registry, settings, model, tmp_path, name, digest, code, message
):
    client, port = registry
    adapter = make_adapter(tmp_path / "a")
    good = [(p.name, p.read_bytes(), None) for p in sorted(adapter.iterdir())]
    error = _raw_upload(port, model, [*good, (name, b"payload", digest)])
    assert error.code() == code
    assert message in error.details()
    with pytest.raises(errors.NotFound):  # the model was never created: no version is visible
        client.list_versions(model)
    assert not any(staging_dir(settings).iterdir())
    if not settings.artifact_uri.startswith("s3://"):
        assert not (Path(settings.artifact_uri) / model).exists()


def test_symlink_in_adapter_directory_is_refused(client, model, tmp_path):
    directory = make_adapter(tmp_path / "a")
    (tmp_path / "secret.txt").write_text("not for upload")
    (directory / "notes.txt").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(errors.InvalidArgument, match="symlink"):
        client.register_directory(model, directory, lineage=lineage())


@pytest.mark.parametrize(
    ("adapter", "message"),
    [
        ({"rank": 32}, "exceeds the serving limit 16"),
        ({"extra_config": {"modules_to_save": ["lm_head"]}}, "modules_to_save"),
        ({"extra_config": {"use_dora": True}}, "DoRA"),
        ({"target_modules": ["q_proj", "embed_tokens"]}, "not supported"),
        ({"base": "mistralai/Mistral-7B-v0.1"}, "does not match the registered base model"),
    ],
)
def test_adapters_the_engine_cannot_serve_are_refused(
    client, settings, model, tmp_path, adapter, message
):
    with pytest.raises(errors.InvalidArgument, match=message):
        register(client, model, tmp_path, adapter=adapter)
    assert not any(staging_dir(settings).iterdir())


def test_base_model_hash_must_match_the_recorded_one(client, model, tmp_path):
    revision = uuid.uuid4().hex
    register(client, model, tmp_path, lineage=lineage(base_model_revision=revision))
    with pytest.raises(errors.FailedPrecondition, match="sha256"):
        register(
            client, model, tmp_path, lineage=lineage(sha="f" * 64, base_model_revision=revision)
        )


def test_unknown_model_and_version(client, model, tmp_path):
    with pytest.raises(errors.NotFound, match="unknown model"):
        client.get_version(model, 1)
    register(client, model, tmp_path)
    with pytest.raises(errors.NotFound, match="no version 7"):
        client.get_version(model, 7)
    with pytest.raises(errors.InvalidArgument):
        client.get_version("Bad Name!", 1)


# -- aliases, gates, targets, metrics, rollouts, deletion, history ----------------------------------


def test_alias_compare_and_set_and_history(client, model, tmp_path):
    v1, v2 = register(client, model, tmp_path), register(client, model, tmp_path)
    client.set_alias(model, "champion", 1, expected_version=0, reason="first")
    with pytest.raises(errors.Aborted):
        client.set_alias(model, "champion", 2, expected_version=0)
    with pytest.raises(errors.Aborted):
        client.set_alias(model, "champion", 2, expected_version=2)
    moved = client.set_alias(model, "champion", 2, expected_version=1, reason="better")
    assert moved.previous_version == 1 and moved.alias.version == 2
    resolved = client.resolve_alias(model, "champion")
    assert resolved.version == v2.version and list(resolved.aliases) == ["champion"]
    with pytest.raises(errors.NotFound):
        client.resolve_alias(model, "challenger")
    with pytest.raises(errors.NotFound):
        client.set_alias(model, "champion", 9, expected_version=2)
    entries = client.history(model, subject="champion")
    assert [(e.from_value, e.to_value, e.reason, e.actor) for e in entries] == [
        ("", "1", "first", ACTOR),
        ("1", "2", "better", ACTOR),
    ]
    assert all(e.action == pb.HISTORY_ACTION_ALIAS_SET and e.request_id for e in entries)
    assert v1.version == 1


def test_failed_gate_blocks_promotion_unless_forced_with_reason(client, model, tmp_path):
    register(client, model, tmp_path)
    client.record_gate_result(model, 1, "cpu-2core", passed=False, summary="macro-F1 0.81 < 0.90")
    with pytest.raises(errors.FailedPrecondition, match="failed its latest gate"):
        client.set_alias(model, "champion", 1, expected_version=0)
    client.set_alias(model, "challenger", 1, expected_version=0)  # only gated aliases check
    with pytest.raises(errors.InvalidArgument, match="reason"):
        client.set_alias(model, "champion", 1, expected_version=0, force=True)
    client.set_alias(
        model, "champion", 1, expected_version=0, force=True, reason="hotfix, signed off"
    )
    gates = client.get_version(model, 1).gate_results
    assert [g.passed for g in gates] == [False]
    actions = [e.action for e in client.history(model)]
    assert pb.HISTORY_ACTION_GATE_RECORDED in actions


def test_metrics_benchmarks_targets(client, model, tmp_path):
    register(client, model, tmp_path)
    client.record_metrics(model, 1, {"accuracy": 0.9, "ece": 0.08}, eval_set_sha256="3" * 64)
    client.record_metrics(model, 1, {"ece": 0.03}, eval_set_sha256="3" * 64, temperature=1.7)
    client.record_benchmark(
        model, 1, "cpu-2core", {"requests_per_s": 12.5, "p95_latency_ms": 210.0}
    )
    details = client.get_version(model, 1)
    assert details.version.temperature == pytest.approx(1.7)
    assert [m.HasField("temperature") for m in details.metrics] == [False, True]
    assert (
        details.metrics[0].eval_set_sha256 == "3" * 64 and details.metrics[0].recorded_by == ACTOR
    )
    assert details.benchmarks[0].values["requests_per_s"] == 12.5
    with pytest.raises(errors.InvalidArgument):
        client.record_metrics(model, 1, {"accuracy": 0.9}, temperature=-1.0)

    client.set_targets(
        model, "cpu-2core", p95_latency_ms=250, min_accuracy=0.9, min_macro_f1=0.85, max_ece=0.05
    )
    client.set_targets(model, "h100", p95_latency_ms=40, min_accuracy=0.95, reason="gpu profile")
    client.set_targets(
        model, "cpu-2core", p95_latency_ms=300, min_schema_valid_rate=1.0, max_error_rate=0.01
    )
    targets = {t.hardware_profile: t for t in client.get_targets(model)}
    assert set(targets) == {"cpu-2core", "h100"}
    cpu = targets["cpu-2core"]
    assert (
        cpu.p95_latency_ms == 300
        and not cpu.HasField("min_accuracy")
        and cpu.max_error_rate == 0.01
    )
    with pytest.raises(errors.InvalidArgument, match=r"min_accuracy must lie in \[0, 1\]"):
        client.set_targets(model, "cpu-2core", min_accuracy=1.5)
    with pytest.raises(errors.NotFound):
        client.get_targets(model, "tpu")
    history = client.history(model, subject="cpu-2core")
    assert len(history) == 2 and json.loads(history[1].from_value)["min_accuracy"] == 0.9


def test_rollout_compare_and_set_and_salt(client, model, tmp_path):
    for _ in range(3):
        register(client, model, tmp_path)
    evaluated(client, model, 2, 3)
    with pytest.raises(errors.NotFound):
        client.get_rollout(model)
    r1 = client.set_rollout(
        model,
        control_version=1,
        treatment_version=2,
        treatment_weight=0.05,
        stage="canary",
        expected_revision=0,
    )
    with pytest.raises(errors.Aborted):
        client.set_rollout(
            model,
            control_version=1,
            treatment_version=2,
            treatment_weight=0.1,
            stage="canary",
            expected_revision=0,
        )
    r2 = client.set_rollout(
        model,
        control_version=1,
        treatment_version=2,
        treatment_weight=0.1,
        stage="canary",
        expected_revision=1,
    )
    assert r2.revision == 2 and r2.salt == r1.salt  # raising the weight keeps tenants' buckets
    r3 = client.set_rollout(
        model, control_version=1, treatment_version=3, treatment_weight=0.0, stage="shadow",
        shadow=True, shadow_fraction=0.2, expected_revision=2, reason="try v3",
    )  # fmt: skip
    assert r3.salt != r1.salt and r3.stage == pb.ROLLOUT_STAGE_SHADOW
    assert client.get_rollout(model) == r3
    with pytest.raises(errors.InvalidArgument):
        client.set_rollout(
            model,
            control_version=1,
            treatment_version=3,
            treatment_weight=0.5,
            stage="aborted",
            expected_revision=3,
        )
    with pytest.raises(errors.NotFound):
        client.set_rollout(
            model,
            control_version=1,
            treatment_version=8,
            treatment_weight=0.1,
            stage="canary",
            expected_revision=3,
        )
    entries = client.history(model, subject="rollout")
    assert (
        len(entries) == 3
        and entries[0].from_value == ""
        and json.loads(entries[2].to_value)["treatment"] == 3
    )


def test_soft_delete(client, model, tmp_path):
    for _ in range(3):
        register(client, model, tmp_path)
    client.set_alias(model, "champion", 1, expected_version=0)
    with pytest.raises(errors.InvalidArgument, match="reason"):
        client.delete_version(model, 2, reason="")
    with pytest.raises(errors.FailedPrecondition, match="champion"):
        client.delete_version(model, 1, reason="old")
    deleted = client.delete_version(model, 2, reason="trained on the wrong split")
    assert deleted.deleted and deleted.deleted_by == ACTOR
    assert [v.version for v in client.list_versions(model)] == [1, 3]
    assert [v.version for v in client.list_versions(model, include_deleted=True)] == [1, 2, 3]
    with pytest.raises(errors.NotFound, match="deleted"):
        client.get_version(model, 2)
    assert (
        client.get_version(model, 2, include_deleted=True).version.delete_reason
        == "trained on the wrong split"
    )
    with pytest.raises(errors.NotFound):
        client.set_alias(model, "champion", 2, expected_version=1)
    with pytest.raises(errors.NotFound):
        client.download(model, 2, tmp_path / "gone")
    assert register(client, model, tmp_path).version == 4  # numbers are never reused
    last = client.history(model, subject="2")[-1]
    assert (
        last.action == pb.HISTORY_ACTION_VERSION_DELETED
        and last.reason == "trained on the wrong split"
    )


def test_history_is_append_only_in_the_database(client, settings, model, tmp_path):
    register(client, model, tmp_path)
    engine = create_engine(settings.database_url)
    try:
        for statement in ("UPDATE history SET actor = 'mallory'", "DELETE FROM history"):
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        if engine.dialect.name == "postgresql":
            with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
                conn.execute(text("TRUNCATE history"))
    finally:
        engine.dispose()
    assert client.history(model)[0].actor == ACTOR


# -- auth, TLS, health, reflection -------------------------------------------------------------------


def test_auth_on_mutations_and_optional_on_reads(registry, model, tmp_path):
    client, port = registry
    register(client, model, tmp_path)
    anonymous = RegistryClient(f"127.0.0.1:{port}")
    wrong = RegistryClient(f"127.0.0.1:{port}", token="not-the-token-anybody-issued")
    with anonymous, wrong:
        with pytest.raises(errors.Unauthenticated):
            anonymous.set_alias(model, "champion", 1, expected_version=0)
        with pytest.raises(errors.Unauthenticated):  # a token nobody issued: no credentials
            wrong.set_alias(model, "champion", 1, expected_version=0)
        with pytest.raises(errors.Unauthenticated):
            anonymous.register_directory(model, make_adapter(tmp_path / "x"), lineage=lineage())
        assert anonymous.get_version(model, 1).version.version == 1  # reads are open by default
    assert [v.version for v in client.list_versions(model)] == [1]


def test_a_read_only_principal_may_read_but_not_write(backend, model, tmp_path):
    reader_token = "reader-token-" + "r" * 20
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "principals": [
                    {
                        "name": "dashboard",
                        "token_sha256": token_sha256(reader_token),
                        "rights": ["read"],
                    }
                ]
            }
        )
    )
    settings = RegistrySettings(
        token=TOKEN, tokens_file=tokens, require_auth_for_reads=True, port=0, **backend
    )
    with running(settings) as port:
        with RegistryClient(f"127.0.0.1:{port}", token=TOKEN, actor="ci") as client:
            register(client, model, tmp_path)
            assert client.history(model)[0].actor == "operator/ci"
        with RegistryClient(f"127.0.0.1:{port}", token=reader_token) as reader:
            assert reader.get_version(model, 1).version.version == 1
            with pytest.raises(errors.PermissionDenied, match="dashboard"):
                reader.set_alias(model, "champion", 1, expected_version=0)


def test_reads_can_require_the_token(backend, model, tmp_path):
    settings = RegistrySettings(token=TOKEN, port=0, require_auth_for_reads=True, **backend)
    with running(settings) as port, RegistryClient(f"127.0.0.1:{port}") as anonymous:
        with pytest.raises(errors.Unauthenticated):
            anonymous.list_models()
        with RegistryClient(f"127.0.0.1:{port}", token=TOKEN) as client:
            assert isinstance(client.list_models(), list)


def test_server_refuses_to_start_without_a_token_unless_insecure_writes(tmp_path):
    base = {
        "database_url": f"sqlite:///{tmp_path}/r.db",
        "artifact_uri": str(tmp_path / "a"),
        "port": 0,
    }
    with pytest.raises(FailedPrecondition, match="MAPPER_REGISTRY_TOKEN"):
        create_server(RegistrySettings(**base))
    with (
        running(RegistrySettings(allow_insecure_writes=True, **base)) as port,
        RegistryClient(f"127.0.0.1:{port}") as client,
    ):
        version = register(client, "dev", tmp_path)
        assert version.version == 1


def test_tls(tmp_path):
    pytest.importorskip("cryptography")
    cert, key = _self_signed(tmp_path)
    settings = RegistrySettings(
        token=TOKEN,
        port=0,
        database_url=f"sqlite:///{tmp_path}/r.db",
        artifact_uri=str(tmp_path / "a"),
        tls_cert_file=cert,
        tls_key_file=key,
    )
    with running(settings) as port:
        with RegistryClient(
            f"localhost:{port}", token=TOKEN, root_certificates=cert.read_bytes()
        ) as client:
            assert register(client, "tls", tmp_path).version == 1
        with (
            RegistryClient(f"localhost:{port}", timeout_s=5) as plaintext,
            pytest.raises(errors.Unavailable),
        ):
            plaintext.list_models()


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_health_and_reflection(registry):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, port = registry
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = health.Check(
            health_pb2.HealthCheckRequest(service="llama_mapper.registry.v1.RegistryService")
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        response = next(stub.ServerReflectionInfo(iter([request])))
        names = {s.name for s in response.list_services_response.service}
        assert "llama_mapper.registry.v1.RegistryService" in names


def test_resolve_reflects_temperature_and_aliases_after_changes(client, model, tmp_path):
    register(client, model, tmp_path)
    client.set_alias(model, "champion", 1, expected_version=0)
    first = client.resolve_alias(model, "champion")  # fills the server's cache
    assert not first.HasField("temperature") and list(first.aliases) == ["champion"]
    client.record_metrics(model, 1, {"ece": 0.02}, temperature=1.3)
    client.set_alias(model, "challenger", 1, expected_version=0)
    again = client.resolve_alias(model, "champion")
    assert again.temperature == pytest.approx(1.3) and list(again.aliases) == [
        "challenger",
        "champion",
    ]


def test_a_recorded_calibrator_and_threshold_serve_with_the_version_and_enter_the_history(
    client, model, tmp_path
):
    register(client, model, tmp_path)
    description = json.dumps({"kind": "temperature", "temperature": 1.7})
    client.record_metrics(
        model,
        1,
        {"exact_set_accuracy": 0.9},
        temperature=1.7,
        calibrator_json=description,
        threshold=0.62,
    )
    version = client.get_version(model, 1).version
    assert version.calibrator_json == description and version.threshold == pytest.approx(0.62)
    actions = [e.action for e in client.history(model, subject="1")]
    assert actions.count(pb.HISTORY_ACTION_TEMPERATURE_SET) == 2  # temperature, then calibrator
    with pytest.raises(errors.InvalidArgument):
        client.record_metrics(model, 1, {"a": 1.0}, calibrator_json='{"kind": "nonsense"}')
    with pytest.raises(errors.InvalidArgument):
        client.record_metrics(model, 1, {"a": 1.0}, threshold=1.5)
