"""The container health probe against a real gRPC server with the standard health servicer."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llama_mapper.platform.rpc import health_probe as healthcheck

pytestmark = pytest.mark.integration

SERVICE = "llama_mapper.registry.v1.RegistryService"


@pytest.fixture
def server() -> Iterator[tuple[health.HealthServicer, str]]:
    servicer = health.HealthServicer()
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    yield servicer, f"127.0.0.1:{port}"
    grpc_server.stop(grace=None)


def test_serving_server_exits_zero(server: tuple[health.HealthServicer, str]) -> None:
    _, target = server
    assert healthcheck.check(target) == "SERVING"
    assert healthcheck.main([target]) == 0
    assert healthcheck.main([target, "--service", SERVICE]) == 0


def test_not_serving_exits_one(
    server: tuple[health.HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    servicer, target = server
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.main([target, "--service", SERVICE]) == 1
    assert "NOT_SERVING" in capsys.readouterr().err
    # The server as a whole still answers SERVING.
    assert healthcheck.main([target]) == 0


def test_unknown_service_exits_one(
    server: tuple[health.HealthServicer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _, target = server
    assert healthcheck.main([target, "--service", "no.such.Service"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err


def test_graceful_shutdown_status_exits_one(server: tuple[health.HealthServicer, str]) -> None:
    servicer, target = server
    servicer.enter_graceful_shutdown()  # what server.py does on SIGTERM before stopping
    assert healthcheck.main([target]) == 1


def test_unreachable_server_exits_one(capsys: pytest.CaptureFixture[str]) -> None:
    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    grpc_server.stop(grace=None).wait()
    assert healthcheck.main([f"127.0.0.1:{port}", "--timeout", "0.5"]) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_module_entry_point_as_docker_runs_it(server: tuple[health.HealthServicer, str]) -> None:
    _, target = server
    ok = subprocess.run(
        [sys.executable, "-m", "llama_mapper.platform.rpc.health_probe", target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad_args = subprocess.run(
        [sys.executable, "-m", "llama_mapper.platform.rpc.health_probe"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad_args.returncode == 2
