"""The validation gRPC server: create_server() for tests and embedding, serve()/main() for processes.

Run it: `python -m llama_mapper.validation.server` (settings from MAPPER_VALIDATION_*).
"""

from __future__ import annotations

import logging
from concurrent import futures

import grpc
from grpc_health.v1 import health

from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.platform.grpc_server import (
    add_health_and_reflection,
    bind,
    configure_logging,
    run_until_signal,
)
from llama_mapper.platform.settings.validation import ValidationSettings
from llama_mapper.validation.servicer import SERVICE_NAME, ValidationServicer
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
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, health_servicer)
    port = bind(server, f"{settings.host}:{settings.port}")
    return server, port


def serve(settings: ValidationSettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    log.info("validation service listening on %s:%s", settings.host, port)
    run_until_signal(server, health_servicer, settings.grace_s)


def main() -> None:
    settings = ValidationSettings()
    configure_logging(settings.log_json or None)
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    serve(settings)


if __name__ == "__main__":
    main()
