"""Client side of `mapperctl data validate`: talks to a running service, or starts one in-process."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format

from llama_mapper._proto.validation.v1 import validation_pb2 as pb
from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.platform.rpc.channel import call_metadata, open_channel
from llama_mapper.platform.settings.validation import ValidationSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 1.0


def load_config(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


@contextmanager
def channel_to(address: str | None, *readable: str) -> Iterator[tuple[grpc.Channel, str | None]]:
    """A channel to `address` (or MAPPER_VALIDATION_ADDRESS / the local stack's) and the token to
    send, when something answers there; otherwise to a service started in this process on a free
    port, which may read the `readable` datasets / golden set only and signs with the local
    stack's key."""
    settings = ValidationSettings()
    target = address or settings.address
    channel = open_channel(target, ca_file=settings.ca_file)
    try:
        grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT_S)
    except grpc.FutureTimeoutError:
        channel.close()
        log.info("no validation service at %s: starting one in-process", target)
        with in_process_service(*readable) as local:
            yield local
        return
    try:
        yield channel, settings.bearer()
    finally:
        channel.close()


@contextmanager
def in_process_service(*readable: str) -> Iterator[tuple[grpc.Channel, str]]:
    """A validation service in this process on 127.0.0.1, with a token only this process knows, the
    signing key the training gate here checks (generated once under the var dir when unset), and
    the caller's own dataset (its directory or bucket) and golden set as its only readable places."""
    from llama_mapper.platform.stack import local_secret
    from llama_mapper.validation.server import create_server

    token = secrets.token_urlsafe(32)
    roots: list[Path] = []
    buckets: list[str] = []
    for uri in filter(None, readable):
        if uri.startswith("s3://"):
            buckets.append(uri[5:].partition("/")[0])
        elif "://" not in uri:
            path = Path(uri).resolve()
            roots.append(path.parent if path.suffix in {".json", ".jsonl"} else path)
    settings = ValidationSettings(
        host="127.0.0.1",
        port=0,
        token=token,
        tokens_file=None,
        dataset_roots=roots,
        s3_buckets=buckets,
        signing_key=local_secret("MAPPER_VALIDATION_SIGNING_KEY"),
    )
    server, port = create_server(settings)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as local:
            yield local, token
    finally:
        server.stop(None)


def report_dict(report: pb.ValidationReport) -> dict[str, Any]:
    return json_format.MessageToDict(
        report, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def validate_dataset(
    dataset: str,
    config_path: Path,
    *,
    address: str | None = None,
    golden_set_uri: str = "",
    timeout_s: float = 1800.0,
) -> dict[str, Any]:
    """Runs ValidateDataset and returns the report as a dict (proto field names)."""
    config = load_config(config_path)
    uri = dataset if "://" in dataset else str(Path(dataset).resolve())
    request = pb.ValidateDatasetRequest(
        input=pb.ValidationInput(
            dataset_uri=uri,
            training_config_json=json.dumps(config),
            golden_set_uri=golden_set_uri,
        )
    )
    with channel_to(address, uri, golden_set_uri) as (channel, token):
        response = pb_grpc.ValidationServiceStub(channel).ValidateDataset(
            request, metadata=call_metadata(token), timeout=timeout_s
        )
    return report_dict(response.report)
