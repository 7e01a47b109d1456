"""The validation gRPC server: create_server() for tests and embedding, serve()/main() for processes."""

# Run it: `python -m llama_mapper.validation.server` (settings: MAPPER_VALIDATION_*,
# platform/settings/validation.py).

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health

from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.platform.logs import configure_logging
from llama_mapper.platform.rpc.server import build_server, run_until_signal
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
    servicer = ValidationServicer(validator)
    return build_server(
        settings,
        service_name=SERVICE_NAME,
        register=lambda server: pb_grpc.add_ValidationServiceServicer_to_server(servicer, server),
        writes=frozenset(),
        health_servicer=health_servicer,
        require_token=False,
    )


def serve(settings: ValidationSettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    log.info("validation service listening on %s:%s", settings.host, port)
    run_until_signal(server, health_servicer, settings.grace_s)


def main() -> None:
    settings = ValidationSettings()
    configure_logging()
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    serve(settings)


if __name__ == "__main__":
    main()
