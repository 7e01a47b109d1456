"""The registry gRPC server: create_server() for tests and embedding, serve()/main() for processes.

Run it: `python -m llama_mapper.registry.server` (SQLite and local files under var/registry/;
settings from MAPPER_REGISTRY_*, see settings.py).
"""

from __future__ import annotations

import logging
import sys
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health
from pydantic import ValidationError

from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.platform.grpc_server import (
    add_health_and_reflection,
    configure_logging,
    run_until_signal,
)
from llama_mapper.platform.settings.registry import DEFAULT_ROOT, RegistrySettings
from llama_mapper.registry.artifacts import open_artifact_store
from llama_mapper.registry.db import make_engine, migrate
from llama_mapper.registry.registrar import Registrar
from llama_mapper.registry.servicer import SERVICE_NAME, RegistryInterceptor, RegistryServicer
from llama_mapper.registry.store import RegistryStore

log = logging.getLogger(__name__)
# gRPC's default 4 MiB cap applies per message; uploads stream 1 MiB chunks.
_MAX_MESSAGE = 8 * 1024 * 1024


class ConfigError(RuntimeError):
    """The settings cannot start a safe server; the message names the variable to set."""


def create_server(
    settings: RegistrySettings, *, health_servicer: health.HealthServicer | None = None
) -> tuple[grpc.Server, int]:
    """Migrate the database, wire the service, bind the port; the caller starts and stops it."""
    token = settings.token.get_secret_value() if settings.token else None
    if token is None and not settings.allow_insecure_writes:
        raise ConfigError(
            "refusing to start without a write token: set MAPPER_REGISTRY_TOKEN, or "
            "MAPPER_REGISTRY_ALLOW_INSECURE_WRITES=1 for local development"
        )
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    migrate(engine)
    staging_root = settings.staging_dir or (
        DEFAULT_ROOT / "staging"
        if settings.artifact_uri.startswith("s3://")
        else Path(settings.artifact_uri) / ".staging"
    )
    artifacts = open_artifact_store(
        settings.artifact_uri,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        staging_root=staging_root,
    )
    swept = artifacts.sweep_staging(older_than_s=settings.staging_sweep_age_s)
    if swept:
        log.warning("removed %s upload(s) left half-received by an earlier process", swept)
    store = RegistryStore(engine, gated_aliases=settings.gated_aliases)
    registrar = Registrar(
        store,
        artifacts,
        max_lora_rank=settings.max_lora_rank,
        extra_target_modules=settings.extra_target_modules,
        max_upload_bytes=settings.max_upload_bytes,
    )

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="registry"),
        interceptors=[
            RegistryInterceptor(token=token, require_auth_for_reads=settings.require_auth_for_reads)
        ],
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
        ],
    )
    pb_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(store, registrar), server)
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, health_servicer)

    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert_file is not None and settings.tls_key_file is not None:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise ConfigError(f"could not bind {address}")
    return server, port


def serve(settings: RegistrySettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    scheme = "TLS" if settings.tls_cert_file else "plaintext"
    log.info(
        "registry listening on %s:%s (%s, db %s)",
        settings.host,
        port,
        scheme,
        settings.database_url.split("@")[-1],
    )
    run_until_signal(server, health_servicer, settings.grace_seconds)


def main() -> int:
    configure_logging()
    try:
        settings = RegistrySettings()
        serve(settings)
    except (ValidationError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
