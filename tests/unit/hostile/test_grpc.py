"""Hostile requests to every gRPC service, each served in process on a real localhost port: the
router's Map / MapBatch / MapDocument, the registry (SQLite, local files), validation and
evaluation. Every answer is OK or a caller's-error status, never INTERNAL or UNKNOWN, and neither
the details nor the DEBUG logs carry a traceback or planted content."""

from __future__ import annotations

import asyncio
import json
import math

import grpc
import pytest
from google.protobuf import struct_pb2

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as epb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as epb_grpc
from llama_mapper._proto.mapper.v1 import mapper_pb2 as mpb
from llama_mapper._proto.mapper.v1 import mapper_pb2_grpc as mpb_grpc
from llama_mapper._proto.registry.v1 import registry_pb2 as rpb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as rpb_grpc
from llama_mapper._proto.validation.v1 import validation_pb2 as vpb
from llama_mapper._proto.validation.v1 import validation_pb2_grpc as vpb_grpc
from llama_mapper.domain.schemas import validate
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.router_core import RouterCore
from tests.unit.hostile import values as v
from tests.unit.hostile.tally import PII_TEXT, SECRETS, SERVER_ERRORS, TALLY, log_text
from tests.unit.hostile.test_http import Engine, Source

TOKEN = "hostile-grpc-token-" + "g" * 24
AUTH = (("authorization", f"Bearer {TOKEN}"),)
CALLER_ERRORS = {
    "OK",
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "FAILED_PRECONDITION",
    "OUT_OF_RANGE",
    "RESOURCE_EXHAUSTED",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "ABORTED",
}
# Names: no planted secrets (a name is echoed by design), no lone surrogates (protobuf strings
# are UTF-8: the client cannot even send one; raw bytes below cover invalid UTF-8 on the wire).
NAME_KEYS = [
    "empty",
    "space",
    "long_line",
    "nul",
    "nul_only",
    "rtl_override",
    "zero_width",
    "bom",
    "homoglyph",
    "combining",
    "emoji",
    "newline_end",
    "crlf_end",
    "tab",
    "control",
    "sql",
    "template",
    "html",
    "format_string",
    "traversal",
    "traversal_windows",
    "absolute_path",
    "file_uri",
    "s3_traversal",
    "url",
]
NAMES = {k: v.STRINGS[k][:100_000] for k in NAME_KEYS}
DEEP_JSON = json.dumps(v.deep_value())
JSONS = {
    "deep_arrays": v.deep_arrays(),
    "deep_objects": v.deep_objects(),
    "deep_200_pii": DEEP_JSON,
    "nan": '{"x": NaN}',
    "many_digits": "1" * 5000,
    "lone_surrogate": '{"x": "\\ud800"}',
    "truncated": '{"x": [1,',
    "not_object": "[1, 2, 3]",
    "pii_text": PII_TEXT,
    "huge": json.dumps({"x": "A" * (2 << 20)}),
}
NUMBERS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf, "huge": 1e308, "negative": -1.0}


def check(surface, case, fn, caplog):
    """Calls `fn`, classifies the outcome, records it, asserts it."""
    try:
        response = fn()
        code, details = "OK", ""
        if hasattr(response, "__iter__") and not hasattr(response, "ListFields"):
            response = list(response)
        text = str(response)[:20_000]
    except grpc.RpcError as exc:
        code, details, text = exc.code().name, exc.details() or "", ""
    problems = TALLY.record(
        surface,
        case,
        server_error=code in SERVER_ERRORS,
        texts=[details, text],
        logs=log_text(caplog),
    )
    assert not problems, f"{code} {details[:300]}: {problems}"
    assert code in CALLER_ERRORS, f"{code}: {details[:300]}"
    return code, details


def raw_call(channel, method, payload, *, stream_response=False, stream_request=False):
    """`payload` bytes as the request, whatever they hold: what no generated stub would send."""
    ident = lambda b: b  # noqa: E731
    if stream_request:
        call = channel.stream_unary(method, request_serializer=ident, response_deserializer=ident)
        return lambda: call(iter([payload]), metadata=AUTH, timeout=30)
    if stream_response:
        call = channel.unary_stream(method, request_serializer=ident, response_deserializer=ident)
        return lambda: list(call(payload, metadata=AUTH, timeout=30))
    call = channel.unary_unary(method, request_serializer=ident, response_deserializer=ident)
    return lambda: call(payload, metadata=AUTH, timeout=30)


def _deep_struct_bytes(depth: int) -> bytes:
    """A Struct nested `depth` levels, built as bytes: protobuf refuses to parse past 100."""
    inner = b""
    for _ in range(depth):
        value = b"\x2a" + _len(inner)  # Value.struct_value = 5
        entry = b"\x0a\x01a" + b"\x12" + _len(value)  # map entry: key "a", value
        inner = b"\x0a" + _len(entry)  # Struct.fields = 1
    return inner


def _len(data: bytes) -> bytes:
    n, out = len(data), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out + data


RAW_MESSAGES = {
    "garbage": b"\xff\xff\xff\xff\xff",
    "invalid_utf8_field1": b"\x0a\x04\xff\xfe\xfd\xfc",
    "truncated_length": b"\x0a\x7fab",
    "bad_wire_type": b"\x0f\x00",
    "huge_varint": b"\x10" + b"\xff" * 11,
    "deep_group": b"\x0b" * 5000,
    "field_zero": b"\x00\x01",
    "nul_string": b"\x0a\x03a\x00b",
}

# --- the router's MapperService (grpc.aio, as the Serve ingress replica) ------------------------


@pytest.fixture(scope="module")
def mapper():
    ingress = pytest.importorskip("llama_mapper.serving.ingress")

    class Replica(ingress.MapperRouter.func_or_class):
        def __del__(self):
            pass

    replica = Replica.__new__(Replica)
    replica.settings = ServingSettings(rate_limit_rps=0, rollout_refresh_s=0.01)
    replica.core = RouterCore(replica.settings, Engine(), Source())
    loop = asyncio.new_event_loop()
    # grpc.aio looks the current loop up; earlier tests' asyncio.run leave none set.
    asyncio.set_event_loop(loop)

    async def start():
        server = grpc.aio.server()
        mpb_grpc.add_MapperServiceServicer_to_server(replica, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await replica.core.refresh(force=True)
        await asyncio.sleep(0.05)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return server, channel

    server, channel = loop.run_until_complete(start())
    yield loop, mpb_grpc.MapperServiceStub(channel)
    loop.run_until_complete(channel.close())
    loop.run_until_complete(server.stop(None))
    loop.close()


PRESIDIO = json.dumps([{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.9}])


def _mapper_cases():
    for name, value in NAMES.items():
        yield f"Map:detector={name}", "Map", mpb.MapRequest(detector=value, output_json=PRESIDIO)
        yield (
            f"Map:tenant={name}",
            "Map",
            mpb.MapRequest(detector="presidio", output_json=PRESIDIO, tenant=value),
        )
        yield (
            f"Map:request_id={name}",
            "Map",
            mpb.MapRequest(detector="presidio", output_json=PRESIDIO, request_id=value),
        )
    for name, text in {**JSONS, **{f"raw_{k}": s for k, s in v.STRINGS.items()}}.items():
        if any("\ud800" <= c <= "\udfff" for c in text):
            continue
        for detector in ("presidio", "acme-unknown", "google-dlp"):
            yield (
                f"Map:{detector}:output_json={name}",
                "Map",
                mpb.MapRequest(detector=detector, output_json=text),
            )
    item = mpb.MapBatchItem(detector="presidio", output_json=PRESIDIO)
    for n in (0, 101, 2000):
        yield f"MapBatch:{n}_items", "MapBatch", mpb.MapBatchRequest(items=[item] * n)
    for name, text in JSONS.items():
        yield (
            f"MapBatch:item_output_json={name}",
            "MapBatch",
            mpb.MapBatchRequest(
                items=[item, mpb.MapBatchItem(detector="presidio", output_json=text)]
            ),
        )
    yield (
        "MapBatch:empty_detector",
        "MapBatch",
        mpb.MapBatchRequest(items=[mpb.MapBatchItem(output_json=PRESIDIO)]),
    )
    out = mpb.DocumentOutput(detector="presidio", output_json=PRESIDIO)
    for name, text in {
        "pii": PII_TEXT,
        "huge": "A" * (2 << 20),
        "nul": "a\x00b",
        "rtl": v.STRINGS["rtl_override"],
    }.items():
        yield (
            f"MapDocument:text={name}",
            "MapDocument",
            mpb.MapDocumentRequest(outputs=[out], text=text),
        )
    for name, text in JSONS.items():
        yield (
            f"MapDocument:output_json={name}",
            "MapDocument",
            mpb.MapDocumentRequest(
                outputs=[mpb.DocumentOutput(detector="presidio", output_json=text)]
            ),
        )
    yield "MapDocument:33_outputs", "MapDocument", mpb.MapDocumentRequest(outputs=[out] * 33)
    yield (
        "MapDocument:sha_traversal",
        "MapDocument",
        mpb.MapDocumentRequest(outputs=[out], text_sha256="../" * 20),
    )


@pytest.mark.parametrize(
    ("case", "method", "request_"), [pytest.param(*c, id=c[0]) for c in _mapper_cases()]
)
def test_mapper(mapper, case, method, request_, debug_logs):
    loop, stub = mapper
    asyncio.set_event_loop(loop)
    call = getattr(stub, method)
    code, _ = check(
        "grpc-mapper", case, lambda: loop.run_until_complete(call(request_)), debug_logs
    )
    if code == "OK" and method == "Map":
        reply = loop.run_until_complete(call(request_))
        validate("mapper-output", json.loads(reply.result.result_json))


# --- the registry (sync server with the one interceptor) ----------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from llama_mapper.registry.client import RegistryClient
    from tests.support.registry import lineage, make_adapter, start_registry

    root = tmp_path_factory.mktemp("hostile-registry")
    server, address = start_registry(root / "registry", token=TOKEN)
    client = RegistryClient(address, token=TOKEN)
    client.register_directory("mapper", make_adapter(root / "adapter"), lineage=lineage())
    channel = grpc.insecure_channel(address)
    yield rpb_grpc.RegistryServiceStub(channel), channel
    channel.close()
    client.close()
    server.stop(None)


def _registry_cases():
    for name, value in NAMES.items():
        yield (
            f"GetVersion:model={name}",
            "GetVersion",
            rpb.GetVersionRequest(model=value, version=1),
        )
        yield (
            f"ListVersions:page_token={name}",
            "ListVersions",
            rpb.ListVersionsRequest(model="mapper", page_token=value),
        )
        yield (
            f"ResolveAlias:alias={name}",
            "ResolveAlias",
            rpb.ResolveAliasRequest(model="mapper", alias=value),
        )
        yield (
            f"SetAlias:alias={name}",
            "SetAlias",
            rpb.SetAliasRequest(
                model="mapper", alias=value, version=1, reason="hostile", force=True
            ),
        )
        yield (
            f"SetAlias:model={name}",
            "SetAlias",
            rpb.SetAliasRequest(model=value, alias="staging", version=1),
        )
        yield (
            f"GetHistory:page_token={name}",
            "GetHistory",
            rpb.GetHistoryRequest(model="mapper", page_token=value),
        )
        yield (
            f"SetTargets:profile={name}",
            "SetTargets",
            rpb.SetTargetsRequest(
                model="mapper",
                targets=rpb.PerformanceTargets(hardware_profile=value, min_accuracy=0.5),
            ),
        )
        yield (
            f"RecordGateResult:profile={name}",
            "RecordGateResult",
            rpb.RecordGateResultRequest(
                model="mapper",
                version=1,
                result=rpb.GateResult(hardware_profile=value, passed=False),
            ),
        )
        yield (
            f"DeleteVersion:model={name}",
            "DeleteVersion",
            rpb.DeleteVersionRequest(model=value, version=1, reason="x"),
        )
    for name, number in NUMBERS.items():
        yield (
            f"RecordMetrics:value={name}",
            "RecordMetrics",
            rpb.RecordMetricsRequest(
                model="mapper",
                version=1,
                record=rpb.MetricsRecord(values={"exact_set_accuracy": number}),
            ),
        )
        yield (
            f"RecordMetrics:temperature={name}",
            "RecordMetrics",
            rpb.RecordMetricsRequest(
                model="mapper", version=1, record=rpb.MetricsRecord(temperature=number)
            ),
        )
        yield (
            f"RecordMetrics:threshold={name}",
            "RecordMetrics",
            rpb.RecordMetricsRequest(
                model="mapper", version=1, record=rpb.MetricsRecord(threshold=number)
            ),
        )
        yield (
            f"RecordBenchmark:value={name}",
            "RecordBenchmark",
            rpb.RecordBenchmarkRequest(
                model="mapper",
                version=1,
                record=rpb.BenchmarkRecord(
                    hardware_profile="cpu", values={"p95_latency_ms": number}
                ),
            ),
        )
        yield (
            f"SetTargets:p95={name}",
            "SetTargets",
            rpb.SetTargetsRequest(
                model="mapper",
                targets=rpb.PerformanceTargets(hardware_profile="cpu", p95_latency_ms=number),
            ),
        )
        yield (
            f"SetRollout:weight={name}",
            "SetRollout",
            rpb.SetRolloutRequest(
                model="mapper",
                control_version=1,
                treatment_version=1,
                treatment_weight=number,
                stage=rpb.ROLLOUT_STAGE_CANARY,
                reason="x",
                force=True,
            ),
        )
        yield (
            f"SetRollout:lease={name}",
            "SetRollout",
            rpb.SetRolloutRequest(
                model="mapper",
                control_version=1,
                treatment_version=1,
                treatment_weight=0.1,
                stage=rpb.ROLLOUT_STAGE_CANARY,
                lease_seconds=number,
                reason="x",
                force=True,
            ),
        )
        yield (
            f"RenewRolloutLease:lease={name}",
            "RenewRolloutLease",
            rpb.RenewRolloutLeaseRequest(model="mapper", lease_seconds=number),
        )
    for name, text in JSONS.items():
        yield (
            f"RecordMetrics:calibrator_json={name}",
            "RecordMetrics",
            rpb.RecordMetricsRequest(
                model="mapper",
                version=1,
                record=rpb.MetricsRecord(temperature=1.0, calibrator_json=text),
            ),
        )
        yield (
            f"RecordBenchmark:config_json={name}",
            "RecordBenchmark",
            rpb.RecordBenchmarkRequest(
                model="mapper",
                version=1,
                record=rpb.BenchmarkRecord(hardware_profile="cpu", config_json=text),
            ),
        )
        yield (
            f"RecordGateResult:details_json={name}",
            "RecordGateResult",
            rpb.RecordGateResultRequest(
                model="mapper",
                version=1,
                result=rpb.GateResult(hardware_profile="cpu", passed=True, details_json=text),
            ),
        )
    for name, version in {"zero": 0, "negative": -1, "huge": 2**62, "min": -(2**63)}.items():
        yield (
            f"GetVersion:version={name}",
            "GetVersion",
            rpb.GetVersionRequest(model="mapper", version=version),
        )
        yield (
            f"DownloadArtifact:version={name}",
            "DownloadArtifact",
            rpb.DownloadArtifactRequest(model="mapper", version=version),
        )
    for size in (-1, 0, 2**31 - 1):
        yield (
            f"ListVersions:page_size={size}",
            "ListVersions",
            rpb.ListVersionsRequest(model="mapper", page_size=size),
        )
        yield (
            f"GetHistory:page_size={size}",
            "GetHistory",
            rpb.GetHistoryRequest(model="mapper", page_size=size),
        )
    yield (
        "FinishRollout:bad_outcome",
        "FinishRollout",
        rpb.FinishRolloutRequest(model="mapper", outcome=99),
    )
    yield "SetRollout:bad_stage", "SetRollout", rpb.SetRolloutRequest(model="mapper", stage=77)


def _registrations():
    """RegisterVersion streams: hostile metadata, file names and byte counts."""
    meta = lambda **kw: rpb.RegisterVersionRequest(metadata=rpb.VersionMetadata(**kw))  # noqa: E731
    lineage = {"base_model_id": "meta-llama/Llama-3-8b-instruct", "base_model_sha256": "0" * 64}
    header = lambda name, size=4, sha="0" * 64: rpb.RegisterVersionRequest(  # noqa: E731
        file=rpb.FileHeader(name=name, sha256=sha, size_bytes=size)
    )
    chunk = rpb.RegisterVersionRequest(chunk=b"abcd")
    for name, value in NAMES.items():
        yield f"RegisterVersion:model={name}", [meta(model=value, lineage=rpb.Lineage(**lineage))]
        yield (
            f"RegisterVersion:file={name}",
            [
                meta(model="mapper", lineage=rpb.Lineage(**lineage)),
                header(value),
                chunk,
            ],
        )
    for name, text in JSONS.items():
        yield (
            f"RegisterVersion:training_config_json={name}",
            [
                meta(model="mapper", lineage=rpb.Lineage(**lineage, training_config_json=text)),
                header("adapter_config.json"),
                chunk,
            ],
        )
        yield (
            f"RegisterVersion:adapter_config={name}",
            [
                meta(model="mapper", lineage=rpb.Lineage(**lineage)),
                header("adapter_config.json", len(text.encode()), sha="0" * 64),
                rpb.RegisterVersionRequest(chunk=text.encode()),
            ],
        )
    yield "RegisterVersion:empty_stream", []
    yield "RegisterVersion:chunk_first", [chunk]
    yield "RegisterVersion:two_metadata", [meta(model="mapper"), meta(model="mapper")]
    yield (
        "RegisterVersion:negative_size",
        [meta(model="mapper", lineage=rpb.Lineage(**lineage)), header("a.bin", -5)],
    )
    yield (
        "RegisterVersion:huge_size",
        [meta(model="mapper", lineage=rpb.Lineage(**lineage)), header("a.bin", 2**62)],
    )
    yield (
        "RegisterVersion:more_bytes_than_said",
        [
            meta(model="mapper", lineage=rpb.Lineage(**lineage)),
            header("a.bin", 1),
            chunk,
        ],
    )
    yield (
        "RegisterVersion:sha_not_hex",
        [
            meta(model="mapper", lineage=rpb.Lineage(**lineage)),
            header("a.bin", 4, sha="zz"),
            chunk,
        ],
    )


@pytest.mark.parametrize(
    ("case", "method", "request_"), [pytest.param(*c, id=c[0]) for c in _registry_cases()]
)
def test_registry(registry, case, method, request_, debug_logs):
    stub, _ = registry
    call = getattr(stub, method)
    check("grpc-registry", case, lambda: call(request_, metadata=AUTH, timeout=30), debug_logs)


@pytest.mark.parametrize(
    ("case", "messages"), [pytest.param(*c, id=c[0]) for c in _registrations()]
)
def test_registry_registration(registry, case, messages, debug_logs):
    stub, _ = registry
    check(
        "grpc-registry",
        case,
        lambda: stub.RegisterVersion(iter(messages), metadata=AUTH, timeout=30),
        debug_logs,
    )


BAD_METADATA = {
    "none": (),
    "empty": (("authorization", ""),),
    "bearer_only": (("authorization", "Bearer"),),
    "wrong": (("authorization", "Bearer wrong-token-wrong-token"),),
    "prefix": (("authorization", f"Bearer {TOKEN[:-1]}"),),
    "longer": (("authorization", f"Bearer {TOKEN}x"),),
    "basic": (("authorization", "Basic dXNlcjpwYXNz"),),
    "huge": (("authorization", "Bearer " + "a" * 6000),),
    "aws_key": (("authorization", f"Bearer {v.AWS_KEY}"),),
    "actor_header": (("x-actor", "admin"), ("authorization", "Bearer nope")),
}


@pytest.mark.parametrize("name", list(BAD_METADATA))
def test_registry_writes_refuse_bad_tokens(registry, name, debug_logs):
    stub, _ = registry
    request_ = rpb.SetAliasRequest(model="mapper", alias="x", version=1, reason="r")
    code, _ = check(
        "grpc-registry",
        f"SetAlias:token={name}",
        lambda: stub.SetAlias(request_, metadata=BAD_METADATA[name], timeout=30),
        debug_logs,
    )
    assert code in ("UNAUTHENTICATED", "PERMISSION_DENIED")


REGISTRY = "/llama_mapper.registry.v1.RegistryService/"


@pytest.mark.parametrize("name", list(RAW_MESSAGES))
@pytest.mark.parametrize(
    "method", ["GetVersion", "SetAlias", "RegisterVersion", "DownloadArtifact"]
)
def test_registry_raw_bytes(registry, method, name, debug_logs):
    _, channel = registry
    fn = raw_call(
        channel,
        REGISTRY + method,
        RAW_MESSAGES[name],
        stream_request=method == "RegisterVersion",
        stream_response=method == "DownloadArtifact",
    )
    check("grpc-registry", f"{method}:raw_{name}", fn, debug_logs)


# --- validation -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def validation(tmp_path_factory):
    from llama_mapper.platform.settings.validation import ValidationSettings
    from llama_mapper.validation.server import create_server

    root = tmp_path_factory.mktemp("hostile-validation")
    fields = ValidationSettings.model_fields
    extra = {"token": TOKEN} if "token" in fields else {}
    if "dataset_roots" in fields:
        extra["dataset_roots"] = [str(root)]
    if "signing_key" in fields:
        extra["signing_key"] = "hostile-signing-key-" + "k" * 24
    server, port = create_server(ValidationSettings(port=0, max_row_bytes=1 << 20, **extra))
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield vpb_grpc.ValidationServiceStub(channel), channel, root
    channel.close()
    server.stop(None)


CONFIG = {
    "name": "hostile",
    "adapter": "mapper",
    "base_model": {"id": "smollm2-135m-instruct"},
    "taxonomy_version": "1.0.0",
    "dataset": {"path": "unused"},
    "lora": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "v_proj"]},
    "training": {"batch_size": 4, "learning_rate": 1e-4, "num_epochs": 1, "max_seq_length": 512},
}
HOSTILE_ROWS = {
    "deep": v.deep_arrays(),
    "deep_200": DEEP_JSON,
    "nan": '{"id": "r1", "x": NaN}',
    "surrogate": '{"id": "r1", "messages": "\\ud800"}',
    "digits": "1" * 5000,
    "not_object": "[1, 2]",
    "pii": json.dumps({"id": "r1", "messages": [{"role": "user", "content": PII_TEXT}]}),
    "invalid_utf8": b'{"id": "\xff\xfe"}',
}
HOSTILE_MANIFESTS = {
    "deep": v.deep_objects(),
    "nan": '{"files": NaN}',
    "traversal": json.dumps({"files": {"../../../../etc/passwd": {"sha256": "0" * 64, "rows": 1}}}),
    "absolute": json.dumps({"files": {"/etc/passwd": {"sha256": "0" * 64, "rows": 1}}}),
    "files_list": json.dumps({"files": ["train.jsonl"]}),
    "surrogate_name": '{"files": {"\\ud800": {"sha256": "x"}}}',
}


def _dataset(root, name, manifest=None, row=None):
    directory = root / name
    directory.mkdir(exist_ok=True)
    line = row if isinstance(row, bytes) else (row or "{}").encode()
    (directory / "train.jsonl").write_bytes(line + b"\n")
    files = {"train.jsonl": {"sha256": "0" * 64, "rows": 1}}
    text = manifest if manifest is not None else json.dumps({"name": name, "files": files})
    (directory / "manifest.json").write_text(text)
    return str(directory)


def _validation_cases(root):
    config = json.dumps(CONFIG)
    for name, value in NAMES.items():
        yield (
            f"ValidateDataset:dataset_uri={name}",
            vpb.ValidationInput(dataset_uri=value, training_config_json=config),
        )
        if not value:  # the bundled golden set: the ordinary path, and a slow one
            continue
        yield (
            f"ValidateDataset:golden_set_uri={name}",
            vpb.ValidationInput(
                dataset_uri=_dataset(root, "plain"),
                training_config_json=config,
                golden_set_uri=value,
            ),
        )
    for name, text in JSONS.items():
        yield (
            f"ValidateDataset:training_config_json={name}",
            vpb.ValidationInput(dataset_uri=_dataset(root, "plain"), training_config_json=text),
        )
    for name, row in HOSTILE_ROWS.items():
        yield (
            f"ValidateDataset:row={name}",
            vpb.ValidationInput(
                dataset_uri=_dataset(root, f"row-{name}", row=row), training_config_json=config
            ),
        )
    for name, manifest in HOSTILE_MANIFESTS.items():
        yield (
            f"ValidateDataset:manifest={name}",
            vpb.ValidationInput(
                dataset_uri=_dataset(root, f"manifest-{name}", manifest=manifest),
                training_config_json=config,
            ),
        )
    for name, number in NUMBERS.items():
        yield (
            f"ValidateDataset:policy_nan={name}",
            vpb.ValidationInput(
                dataset_uri=_dataset(root, "plain"),
                training_config_json=config,
                policy_overrides=vpb.ValidationPolicy(
                    max_imbalance_ratio=number, pii_min_score=number
                ),
            ),
        )
    yield (
        "ValidateDataset:policy_negative_ints",
        vpb.ValidationInput(
            dataset_uri=_dataset(root, "plain"),
            training_config_json=config,
            policy_overrides=vpb.ValidationPolicy(max_seq_length=-1, leakage_ngram_size=-(2**62)),
        ),
    )
    deep = struct_pb2.Struct()
    deep.update({"a": v.deep_value(40)})
    yield (
        "ValidateDataset:struct_deep_40",
        vpb.ValidationInput(dataset_uri=_dataset(root, "plain"), training_config_struct=deep),
    )
    yield "ValidateDataset:no_config", vpb.ValidationInput(dataset_uri=_dataset(root, "plain"))


VALIDATION_CASES = (
    2 * len(NAMES) - 1 + len(JSONS) + len(HOSTILE_ROWS) + len(HOSTILE_MANIFESTS) + len(NUMBERS) + 3
)


@pytest.fixture(scope="module")
def validation_cases(validation):
    cases = list(_validation_cases(validation[2]))
    assert len(cases) == VALIDATION_CASES
    for _, message in cases:
        message.policy_overrides.pii_scan = False  # Presidio's start-up is not what is tested here
    return cases


@pytest.mark.parametrize("index", range(VALIDATION_CASES))
def test_validation(validation, validation_cases, index, debug_logs):
    stub, _, _ = validation
    case, message = validation_cases[index]
    request_ = vpb.ValidateDatasetRequest(input=message)
    check(
        "grpc-validation",
        case,
        lambda: stub.ValidateDataset(request_, metadata=AUTH, timeout=60),
        debug_logs,
    )
    stream = vpb.ValidateDatasetStreamRequest(input=message)
    check(
        "grpc-validation",
        case + ":stream",
        lambda: list(stub.ValidateDatasetStream(stream, metadata=AUTH, timeout=60)),
        debug_logs,
    )


VALIDATION = "/llama_mapper.validation.v1.ValidationService/"
RAW_VALIDATION = {
    **RAW_MESSAGES,
    "deep_struct_150": b"\x0a" + _len(b"\x1a" + _len(_deep_struct_bytes(150))),
}


@pytest.mark.parametrize("name", list(RAW_VALIDATION))
def test_validation_raw_bytes(validation, name, debug_logs):
    _, channel, _ = validation
    fn = raw_call(channel, VALIDATION + "ValidateDataset", RAW_VALIDATION[name])
    check("grpc-validation", f"ValidateDataset:raw_{name}", fn, debug_logs)


# --- evaluation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    from llama_mapper.evaluation.server import build_service, create_server
    from llama_mapper.platform.settings.evaluation import EvaluationSettings
    from tests.support.eval_cases import FakeRegistry, build_eval_set

    root = tmp_path_factory.mktemp("hostile-evaluation")
    settings = EvaluationSettings(
        port=0,
        reports_dir=root / "runs",
        stream_interval_s=0.05,
        robustness_per_perturbation=2,
        default_eval_set=str(build_eval_set(root / "set")),
        token=TOKEN,
    )
    service = build_service(settings, FakeRegistry())
    server, port = create_server(settings, service=service)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield epb_grpc.EvaluationServiceStub(channel), channel, root
    channel.close()
    server.stop(0)
    service.close()


def _eval_set(root, name, line):
    directory = root / f"set-{name}"
    directory.mkdir(exist_ok=True)
    (directory / "cases.jsonl").write_bytes(line if isinstance(line, bytes) else line.encode())
    return str(directory)


def _evaluation_cases(root):
    rules = epb.EvaluationSubject(mode=epb.EVALUATION_MODE_RULES)
    for name, value in NAMES.items():
        yield (
            f"StartEvaluation:eval_set_uri={name}",
            "StartEvaluation",
            epb.StartEvaluationRequest(
                subject=rules, eval_set_uri=value, options=epb.EvaluationOptions(max_cases=1)
            ),
        )
        yield (
            f"StreamProgress:run_id={name}",
            "StreamProgress",
            epb.StreamProgressRequest(run_id=value),
        )
        yield f"GetReport:run_id={name}", "GetReport", epb.GetReportRequest(run_id=value)
        ref = epb.ModelVersionRef(model=value, alias="champion")
        yield (
            f"CheckGate:model={name}",
            "CheckGate",
            epb.CheckGateRequest(candidate=ref, hardware_profile="cpu"),
        )
        yield (
            f"CompareVersions:model={name}",
            "CompareVersions",
            epb.CompareVersionsRequest(candidate=ref, baseline=ref),
        )
        yield (
            f"StartEvaluation:model={name}",
            "StartEvaluation",
            epb.StartEvaluationRequest(
                subject=epb.EvaluationSubject(mode=epb.EVALUATION_MODE_MODEL, model_version=ref),
                options=epb.EvaluationOptions(max_cases=1),
            ),
        )
    for name, line in {**HOSTILE_ROWS, "empty": ""}.items():
        yield (
            f"StartEvaluation:set_line={name}",
            "StartEvaluation",
            epb.StartEvaluationRequest(subject=rules, eval_set_uri=_eval_set(root, name, line)),
        )
    for name, number in NUMBERS.items():
        yield (
            f"CheckGate:alpha={name}",
            "CheckGate",
            epb.CheckGateRequest(
                candidate=epb.ModelVersionRef(model="mapper", version=1), alpha=number
            ),
        )
    for count in (-1, 2**62):
        yield (
            f"StartEvaluation:max_cases={count}",
            "StartEvaluation",
            epb.StartEvaluationRequest(
                subject=rules, options=epb.EvaluationOptions(max_cases=count)
            ),
        )
    yield (
        "StartEvaluation:bad_mode",
        "StartEvaluation",
        epb.StartEvaluationRequest(subject=epb.EvaluationSubject(mode=42)),
    )


EVALUATION_CASES = 6 * len(NAMES) + len(HOSTILE_ROWS) + 1 + len(NUMBERS) + 3


@pytest.fixture(scope="module")
def evaluation_cases(evaluation):
    cases = list(_evaluation_cases(evaluation[2]))
    assert len(cases) == EVALUATION_CASES
    return cases


@pytest.mark.parametrize("index", range(EVALUATION_CASES))
def test_evaluation(evaluation, evaluation_cases, index, debug_logs):
    stub, _, _ = evaluation
    case, method, request_ = evaluation_cases[index]
    call = getattr(stub, method)
    check("grpc-evaluation", case, lambda: call(request_, metadata=AUTH, timeout=30), debug_logs)


def test_evaluation_runs_of_hostile_sets_fail_with_a_reason(evaluation, debug_logs):
    """A run accepted on a hostile set ends FAILED with a plain reason, not a traceback."""
    stub, _, root = evaluation
    rules = epb.EvaluationSubject(mode=epb.EVALUATION_MODE_RULES)
    for name, line in HOSTILE_ROWS.items():
        request_ = epb.StartEvaluationRequest(
            subject=rules, eval_set_uri=_eval_set(root, name, line)
        )
        try:
            run = stub.StartEvaluation(request_, metadata=AUTH, timeout=30).run
        except grpc.RpcError as exc:
            assert exc.code().name in CALLER_ERRORS
            continue
        events = list(stub.StreamProgress(epb.StreamProgressRequest(run_id=run.run_id), timeout=60))
        final = events[-1].run
        TALLY.record(
            "grpc-evaluation",
            f"run:{name}",
            server_error=False,
            texts=[final.failure_reason],
            logs=log_text(debug_logs),
        )
        assert final.state in (epb.RUN_STATE_FAILED, epb.RUN_STATE_SUCCEEDED)
        assert "Traceback" not in final.failure_reason
        assert not any(secret in final.failure_reason for secret in SECRETS)


EVALUATION = "/llama_mapper.evaluation.v1.EvaluationService/"


@pytest.mark.parametrize("name", list(RAW_MESSAGES))
@pytest.mark.parametrize("method", ["StartEvaluation", "GetReport", "StreamProgress"])
def test_evaluation_raw_bytes(evaluation, method, name, debug_logs):
    _, channel, _ = evaluation
    fn = raw_call(
        channel, EVALUATION + method, RAW_MESSAGES[name], stream_response=method == "StreamProgress"
    )
    check("grpc-evaluation", f"{method}:raw_{name}", fn, debug_logs)


def test_oversize_message_is_resource_exhausted(registry, debug_logs):
    """Past the server's receive limit (grpc's 4 MiB default): refused before any handler."""
    _, channel = registry
    payload = b"\x0a" + _len(b"m" * (5 << 20))
    code, _ = check(
        "grpc-registry",
        "GetVersion:5MiB",
        raw_call(channel, REGISTRY + "GetVersion", payload),
        debug_logs,
    )
    assert code == "RESOURCE_EXHAUSTED"
