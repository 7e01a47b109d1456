"""The evaluation gRPC server: create_server() for tests and embedding, serve()/main() for processes."""

# Run it: `python -m llama_mapper.evaluation.server` (reports under <var dir>/evaluation/runs;
# settings: MAPPER_EVALUATION_*, platform/settings/evaluation.py). Callers of StartEvaluation and
# CheckGate need MAPPER_EVALUATION_TOKEN, else the registry token.

from __future__ import annotations

import logging
import sys
import threading

import grpc
from grpc_health.v1 import health
from pydantic import ValidationError

from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import MapperError
from llama_mapper.evaluation.models import RegistryModels, shutdown_warm_engines
from llama_mapper.evaluation.service import EvaluationService
from llama_mapper.evaluation.servicer import SERVICE_NAME, WRITE_METHODS, EvaluationServicer
from llama_mapper.platform.logs import configure_logging
from llama_mapper.platform.rpc.server import build_server, check_credentials, run_until_signal
from llama_mapper.platform.settings.evaluation import EvaluationSettings

log = logging.getLogger(__name__)


def registry_models(settings: EvaluationSettings, *, keep_engine: bool = False) -> RegistryModels:
    """Registry access, connected lazily: rules-only runs work without a registry."""
    from llama_mapper.registry.client import RegistryClient

    client: list[RegistryClient] = []
    lock = threading.Lock()

    def factory() -> RegistryClient:
        with lock:
            if not client:
                client.append(
                    RegistryClient.from_env(
                        address=settings.registry().address,
                        token=settings.registry_bearer(),
                        actor="evaluation",
                    )
                )
            return client[0]

    return RegistryModels(factory, settings.adapters_dir, settings.engine, keep_engine=keep_engine)


def build_service(
    settings: EvaluationSettings,
    models: RegistryModels | None = None,
    *,
    keep_engine: bool = False,
) -> EvaluationService:
    """`keep_engine`: a long-lived server keeps its vLLM engine between runs (settings.keep_engine)."""
    return EvaluationService(
        settings.reports_dir,
        models if models is not None else registry_models(settings, keep_engine=keep_engine),
        batch_size=settings.batch_size,
        hardware_profile=settings.hardware_profile,
        default_eval_set=settings.default_eval_set,
        default_held_out_set=settings.default_held_out_set,
        default_calibration_set=settings.default_calibration_set,
        robustness_per_perturbation=settings.robustness_per_perturbation,
        max_queued_runs=settings.max_queued_runs,
        threshold=settings.threshold,
    )


def create_server(
    settings: EvaluationSettings,
    *,
    service: EvaluationService | None = None,
    health_servicer: health.HealthServicer | None = None,
) -> tuple[grpc.Server, int]:
    """Wire the service, auth, health and reflection, bind the port; the caller starts and stops
    it. FailedPrecondition without a caller token unless allow_insecure_writes."""
    check_credentials(settings)
    service = service or build_service(settings, keep_engine=settings.keep_engine)
    servicer = EvaluationServicer(service, stream_interval_s=settings.stream_interval_s)
    return build_server(
        settings,
        service_name=SERVICE_NAME,
        register=lambda server: pb_grpc.add_EvaluationServiceServicer_to_server(servicer, server),
        writes=WRITE_METHODS,
        health_servicer=health_servicer,
    )


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
    try:
        run_until_signal(server, health_servicer, settings.grace_s)
    finally:
        shutdown_warm_engines()


def main() -> int:
    configure_logging()
    try:
        serve(EvaluationSettings())
    except (ValidationError, MapperError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
