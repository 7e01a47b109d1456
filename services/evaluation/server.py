"""The evaluation gRPC server: create_server() for tests and embedding, serve()/main() for processes.

Run it: `python -m llama_mapper.evaluation.server` (reports under var/evaluation/runs; settings from
MAPPER_EVALUATION_*, see settings.py; the registry from MAPPER_REGISTRY_ADDRESS / _TOKEN).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pydantic import ValidationError

from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.evaluation.models import RegistryModels
from llama_mapper.evaluation.service import EvaluationService
from llama_mapper.evaluation.servicer import SERVICE_NAME, EvaluationServicer
from llama_mapper.evaluation.settings import EvaluationSettings

log = logging.getLogger(__name__)
GRACE_SECONDS = 10


def registry_models(settings: EvaluationSettings) -> RegistryModels:
    """Registry access, connected lazily: rules-only runs work without a registry."""
    from llama_mapper.registry.client import RegistryClient

    client: list[RegistryClient] = []
    lock = threading.Lock()

    def factory() -> RegistryClient:
        with lock:
            if not client:
                token = (
                    settings.registry_token.get_secret_value() if settings.registry_token else None
                )
                client.append(
                    RegistryClient.from_env(
                        address=settings.registry_address, token=token, actor="evaluation"
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
    """Wire the service, health and reflection, bind the port; the caller starts and stops it."""
    service = service or build_service(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="evaluation-rpc")
    )
    pb_grpc.add_EvaluationServiceServicer_to_server(
        EvaluationServicer(service, stream_interval_s=settings.stream_interval_s), server
    )
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


def serve(settings: EvaluationSettings) -> None:
    health_servicer = health.HealthServicer()
    server, port = create_server(settings, health_servicer=health_servicer)
    server.start()
    log.info(
        "evaluation listening on %s:%s, reports in %s", settings.host, port, settings.reports_dir
    )
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining for up to %ss", signum, GRACE_SECONDS)
        health_servicer.enter_graceful_shutdown()
        server.stop(GRACE_SECONDS).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()


def main() -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        serve(EvaluationSettings())
    except ValidationError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
