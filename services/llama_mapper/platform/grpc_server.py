"""What every gRPC service shares: health and reflection, binding, draining on SIGTERM, logging."""

from __future__ import annotations

import logging
import os
import signal
import threading

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON_FORMAT = (
    '{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","message":"%(message)s"}'
)


def add_health_and_reflection(
    server: grpc.Server, service_name: str, health_servicer: health.HealthServicer | None = None
) -> health.HealthServicer:
    """Registers grpc.health.v1 (SERVING for the service and for "") and reflection, so grpcurl
    and Kubernetes gRPC probes work."""
    health_servicer = health_servicer or health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in (service_name, ""):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (
            service_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    return health_servicer


def bind(
    server: grpc.Server, address: str, credentials: grpc.ServerCredentials | None = None
) -> int:
    """Binds `address` (port 0 picks a free one) and returns the port, or raises."""
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"could not bind {address}")
    return port


def run_until_signal(
    server: grpc.Server, health_servicer: health.HealthServicer, grace_s: float
) -> None:
    """Blocks until SIGTERM or SIGINT, then drains: health answers NOT_SERVING first, so load
    balancers stop sending new calls, and calls in flight get `grace_s` to finish."""
    stopped = threading.Event()

    def stop(signum: int, _frame: object) -> None:
        log.info("signal %s: draining for up to %ss", signum, grace_s)
        health_servicer.enter_graceful_shutdown()
        server.stop(grace_s).wait()
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    stopped.wait()


def configure_logging(json_logs: bool | None = None) -> None:
    """Once, in a service's main(): JSON lines in containers (MAPPER_LOG_FORMAT=json), text else."""
    if json_logs is None:
        json_logs = os.environ.get("MAPPER_LOG_FORMAT", "").lower() == "json"
    logging.basicConfig(level=logging.INFO, format=_JSON_FORMAT if json_logs else _TEXT_FORMAT)
