"""The registry gRPC server: create_server() for tests and embedding, serve()/main() for processes."""

# Run it: `python -m llama_mapper.registry.server` (SQLite and local files under <var dir>/registry;
# settings: MAPPER_REGISTRY_*, platform/settings/registry.py).

from __future__ import annotations

import logging
import sys
import threading

import grpc
from grpc_health.v1 import health
from pydantic import ValidationError

from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import MapperError
from llama_mapper.platform.logs import configure_logging
from llama_mapper.platform.rpc.server import build_server, check_credentials, run_until_signal
from llama_mapper.platform.settings.registry import RegistrySettings
from llama_mapper.registry.artifacts import open_artifact_store
from llama_mapper.registry.db import make_engine, migrate
from llama_mapper.registry.registrar import Registrar
from llama_mapper.registry.servicer import MUTATING_METHODS, SERVICE_NAME, RegistryServicer
from llama_mapper.registry.store import RegistryStore

log = logging.getLogger(__name__)


def sweep_leases(store: RegistryStore, every_s: float, stop: threading.Event) -> threading.Thread:
    """Aborts rollouts whose controller stopped renewing its lease, every `every_s` seconds, in
    a daemon thread until `stop` is set (several registry replicas may sweep: the row lock and
    the revision make each expiry happen once)."""

    def loop() -> None:
        while not stop.wait(every_s):
            try:
                for rollout in store.expire_leases():
                    log.warning(
                        "rollout of %s v%s aborted: its lease ended",
                        rollout.model,
                        rollout.spec.treatment_version,
                    )
            except Exception:  # the database may be down for a moment; sweep again later
                log.exception("lease sweep failed")

    thread = threading.Thread(target=loop, name="registry-lease-sweep", daemon=True)
    thread.start()
    return thread


def create_server(
    settings: RegistrySettings,
    *,
    health_servicer: health.HealthServicer | None = None,
    stop: threading.Event | None = None,
) -> tuple[grpc.Server, int]:
    """Migrate the database, wire the service, bind the port; the caller starts and stops it.
    With `stop`, the lease sweep runs until it is set (serve() passes one; tests may)."""
    check_credentials(settings)  # before the database is touched
    engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
    migrate(engine)
    artifacts = open_artifact_store(
        settings.artifact_uri,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        staging_root=settings.staging_root(),
    )
    swept = artifacts.sweep_staging(older_than_s=settings.staging_sweep_age_s)
    if swept:
        log.warning("removed %s upload(s) left half-received by an earlier process", swept)
    store = RegistryStore(
        engine,
        gated_aliases=settings.gated_aliases,
        default_hardware_profile=settings.default_hardware_profile,
        promotion_gated_models=settings.promotion_gated_models,
    )
    registrar = Registrar(
        store,
        artifacts,
        max_lora_rank=settings.max_lora_rank,
        extra_target_modules=settings.extra_target_modules,
        max_upload_bytes=settings.max_upload_bytes,
    )
    servicer = RegistryServicer(store, registrar)
    if stop is not None and settings.lease_sweep_s > 0:
        sweep_leases(store, settings.lease_sweep_s, stop)
    return build_server(
        settings,
        service_name=SERVICE_NAME,
        register=lambda server: pb_grpc.add_RegistryServiceServicer_to_server(servicer, server),
        writes=MUTATING_METHODS,
        health_servicer=health_servicer,
    )


def serve(settings: RegistrySettings) -> None:
    health_servicer = health.HealthServicer()
    stop = threading.Event()
    server, port = create_server(settings, health_servicer=health_servicer, stop=stop)
    server.start()
    log.info(
        "registry listening on %s:%s (%s, db %s)",
        settings.host,
        port,
        "TLS" if settings.tls else "plaintext",
        settings.database_url.split("@")[-1],
    )
    try:
        run_until_signal(server, health_servicer, settings.grace_s)
    finally:
        stop.set()


def main() -> int:
    configure_logging()
    try:
        serve(RegistrySettings())
    except (ValidationError, MapperError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
