"""The validation gRPC server: create_server() for tests and embedding, serve()/main() for processes."""

# Run it: `python -m llama_mapper.validation.server` (settings: MAPPER_VALIDATION_*,
# platform/settings/validation.py). Every call needs the bearer token (MAPPER_VALIDATION_TOKEN,
# else MAPPER_REGISTRY_TOKEN), datasets are read only under MAPPER_VALIDATION_DATASET_ROOTS and
# from MAPPER_VALIDATION_S3_BUCKETS, and reports are signed with MAPPER_VALIDATION_SIGNING_KEY.

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health
from pydantic import ValidationError

from llama_mapper._proto.validation.v1 import validation_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import FailedPrecondition, MapperError
from llama_mapper.platform.logs import configure_logging
from llama_mapper.platform.rpc.server import build_server, run_until_signal
from llama_mapper.platform.settings.validation import ValidationSettings
from llama_mapper.validation.access import DatasetAccess
from llama_mapper.validation.servicer import SERVICE_NAME, ValidationServicer
from llama_mapper.validation.validator import Validator

log = logging.getLogger(__name__)


def create_server(
    settings: ValidationSettings,
    *,
    validator: Validator | None = None,
    health_servicer: health.HealthServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Wires the service, health and reflection and binds the port; the caller starts and stops it.
    FailedPrecondition, naming the variable, without a token or a signing key."""
    if settings.token_table() is None:
        raise FailedPrecondition(
            "refusing to start without a token: every validation call needs one; set "
            "MAPPER_VALIDATION_TOKEN (or MAPPER_VALIDATION_TOKENS_FILE), or MAPPER_REGISTRY_TOKEN"
        )
    signing_key = settings.signing_secret()
    if signing_key is None:
        raise FailedPrecondition(
            "refusing to start without a report signing key: set MAPPER_VALIDATION_SIGNING_KEY "
            "(the training gate verifies reports with the same key)"
        )
    validator = validator or Validator(
        max_row_bytes=settings.max_row_bytes,
        s3_endpoint_url=settings.s3_endpoint_url,
        access=DatasetAccess.of(settings.dataset_roots, settings.s3_buckets),
    )
    servicer = ValidationServicer(validator, signing_key)
    return build_server(
        # Reads are the service's only calls, and each one reads files: none is anonymous.
        settings.model_copy(update={"require_auth_for_reads": True}),
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


def main() -> int:
    configure_logging()
    logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
    try:
        serve(ValidationSettings())
    except (ValidationError, MapperError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
