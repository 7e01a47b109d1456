"""The validation gRPC server: create_server() for tests and embedding, serve()/main() for processes.

Run it: `python -m llama_mapper.validation.server` (settings from MAPPER_VALIDATION_*).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.validation.servicer import SERVICE_NAME, ValidationServicer
from llama_mapper.validation.settings import ValidationSettings
from llama_mapper.validation.validator import Validator

log = logging.getLogger(__name__)


def create_server(
    settings: ValidationSettings,
    *,
    validator: Validator | None = None,
    health_servicer: health.HealthServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Wires the service, health and reflection and binds the port; the caller starts and stops it."""
    validator = validator or Validator(
        max_row_bytes=settings.max_row_bytes, s3_endpoint_url=settings.s3_endpoint_url
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="validation"
        )
    )
    pb_grpc.add_ValidationServiceServicer_to_server(ValidationServicer(validator), server)
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (SERVICE_NAME, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return server, port


def serve(settings: ValidationSettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    log.info("validation service listening on %s:%s", settings.host, port)
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining for up to %.0fs", signum, settings.grace_s)
        # Health says NOT_SERVING first, so load balancers stop sending new validations.
        health_servicer.enter_graceful_shutdown()
        server.stop(settings.grace_s).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()


def main() -> None:
    settings = ValidationSettings()
    if settings.log_json:
        logging.basicConfig(
            level=logging.INFO,
            format='{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}',
        )
    else:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    serve(settings)


if __name__ == "__main__":
    main()
