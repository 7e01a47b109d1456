"""The evaluation gRPC server: create_server() for tests and embedding, serve()/main() for processes.

Run it: `python -m llama_mapper.evaluation.server` (reports under var/evaluation/runs; settings from
MAPPER_EVALUATION_*, see settings.py; the registry from MAPPER_REGISTRY_ADDRESS / _TOKEN). Callers
of StartEvaluation and CheckGate need MAPPER_EVALUATION_TOKEN, else the registry token (auth.py).
"""

from __future__ import annotations

import logging
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health
from pydantic import ValidationError

from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.evaluation.auth import AuthInterceptor
from llama_mapper.evaluation.models import RegistryModels
from llama_mapper.evaluation.service import EvaluationService
from llama_mapper.evaluation.servicer import SERVICE_NAME, EvaluationServicer
from llama_mapper.platform.grpc_server import (
    add_health_and_reflection,
    bind,
    configure_logging,
    run_until_signal,
)
from llama_mapper.platform.settings.evaluation import EvaluationSettings

log = logging.getLogger(__name__)
GRACE_SECONDS = 10


class ConfigError(RuntimeError):
    """The settings cannot start a safe server; the message names the variable to set."""


def registry_models(settings: EvaluationSettings) -> RegistryModels:
    """Registry access, connected lazily: rules-only runs work without a registry."""
    from llama_mapper.registry.client import RegistryClient

    client: list[RegistryClient] = []
    lock = threading.Lock()

    def factory() -> RegistryClient:
        with lock:
            if not client:
                client.append(
                    RegistryClient.from_env(
                        address=settings.registry_address,
                        token=settings.registry_bearer(),
                        actor="evaluation",
                    )
                )
            return client[0]

    return RegistryModels(factory, settings.adapters_dir, settings.engine)


def build_service(
    settings: EvaluationSettings, models: RegistryModels | None = None
) -> EvaluationService:
    return EvaluationService(
        settings.reports_dir,
        models if models is not None else registry_models(settings),
        batch_size=settings.batch_size,
        hardware_profile=settings.hardware_profile,
        default_eval_set=settings.default_eval_set,
        default_held_out_set=settings.default_held_out_set,
        default_calibration_set=settings.default_calibration_set,
        robustness_per_perturbation=settings.robustness_per_perturbation,
        max_queued_runs=settings.max_queued_runs,
    )


def create_server(
    settings: EvaluationSettings,
    *,
    service: EvaluationService | None = None,
    health_servicer: health.HealthServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Wire the service, auth, health and reflection, bind the port; the caller starts and stops
    it. ConfigError without a caller token unless allow_insecure_writes."""
    token = settings.caller_token()
    if token is None and not settings.allow_insecure_writes:
        raise ConfigError(
            "refusing to start without a caller token: set MAPPER_EVALUATION_TOKEN (or "
            "MAPPER_REGISTRY_TOKEN, which it falls back to), or "
            "MAPPER_EVALUATION_ALLOW_INSECURE_WRITES=1 for local development"
        )
    service = service or build_service(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="evaluation-rpc"),
        interceptors=[
            AuthInterceptor(
                SERVICE_NAME, token=token, require_auth_for_reads=settings.require_auth_for_reads
            )
        ],
    )
    pb_grpc.add_EvaluationServiceServicer_to_server(
        EvaluationServicer(service, stream_interval_s=settings.stream_interval_s), server
    )
    health_servicer = add_health_and_reflection(server, SERVICE_NAME, health_servicer)
    port = bind(server, f"{settings.host}:{settings.port}")
    return server, port


def serve(settings: EvaluationSettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    log.info(
        "evaluation listening on %s:%s, reports in %s%s",
        settings.host,
        port,
        settings.reports_dir,
        "" if settings.caller_token() else " (no token: every call accepted)",
    )
    run_until_signal(server, health_servicer, GRACE_SECONDS)


def main() -> int:
    configure_logging()
    try:
        serve(EvaluationSettings())
    except (ValidationError, ConfigError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
