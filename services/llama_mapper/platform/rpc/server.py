"""What every gRPC server shares: the interceptor, TLS, health and reflection, draining on SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.platform.rpc.interceptor import AccessPolicy, ServiceInterceptor
from llama_mapper.platform.settings.common import GrpcServiceSettings

log = logging.getLogger(__name__)


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


def server_credentials(settings: GrpcServiceSettings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
    )


def check_credentials(settings: GrpcServiceSettings) -> None:
    """FailedPrecondition, naming the variables to set, for a server with neither a token nor
    allow_insecure_writes: nobody would be able to write, or everybody could."""
    if settings.token_table() is None and not settings.allow_insecure_writes:
        prefix = settings.model_config.get("env_prefix", "")
        raise FailedPrecondition(
            f"refusing to start without a token: set {prefix}TOKEN (or {prefix}TOKENS_FILE), "
            f"or {prefix}ALLOW_INSECURE_WRITES=1 for local development"
        )


def build_server(
    settings: GrpcServiceSettings,
    *,
    service_name: str,
    register: Callable[[grpc.Server], None],
    writes: frozenset[str],
    principal: str = "operator",
    health_servicer: health.HealthServicer | None = None,
    require_token: bool = True,
) -> tuple[grpc.Server, int]:
    """A bound, not yet started server: the interceptor with the service's access policy, TLS when
    configured, health and reflection. FailedPrecondition, naming the variable to set, when
    `require_token` and neither a token nor allow_insecure_writes is set."""
    tokens = settings.token_table(principal)
    if require_token:
        check_credentials(settings)
    policy = AccessPolicy(tokens, writes, settings.require_auth_for_reads)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix=service_name.rsplit(".", 1)[-1]
        ),
        interceptors=[ServiceInterceptor(service_name, policy)],
        options=[
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ],
    )
    register(server)
    add_health_and_reflection(server, service_name, health_servicer)
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise FailedPrecondition(f"could not bind {address}")
    return server, port


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
