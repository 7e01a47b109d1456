"""Container health probe: asks a gRPC server's grpc.health.v1 service whether it is SERVING."""

# Usage: ``python -m llama_mapper.platform.rpc.health_probe HOST:PORT [--service NAME] [--timeout S] [--tls]``.
# Exit status 0 when the server answers SERVING, 1 for anything else (NOT_SERVING, UNKNOWN, an
# unknown service name, unreachable, timed out), 2 for bad arguments: what Docker's HEALTHCHECK and
# Kubernetes exec probes expect. Kubernetes can also probe natively (``grpc:`` probes); this module is
# for Docker and Compose, which have no gRPC probe.

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ServingStatus = health_pb2.HealthCheckResponse.ServingStatus


class ProbeFailed(Exception):
    """The server could not be asked, or answered with an error status."""


def check(
    target: str,
    service: str = "",
    *,
    timeout: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None,
) -> str:
    """The serving status name (``SERVING``, ``NOT_SERVING``, ...) that `target` reports for `service`.

    The empty service name asks about the server as a whole. Raises ProbeFailed when the RPC fails.
    """
    channel = (
        grpc.secure_channel(target, credentials)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            # NOT_FOUND: the server does not know this service name; others: unreachable or slow.
            raise ProbeFailed(f"{exc.code().name}: {exc.details()}") from None
    return ServingStatus.Name(response.status)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m llama_mapper.platform.rpc.health_probe",
        description="Exit 0 when a gRPC server's health service answers SERVING, else 1.",
    )
    parser.add_argument("target", help="HOST:PORT of the gRPC server, e.g. 127.0.0.1:50052")
    parser.add_argument(
        "--service", default="", help="service name to ask about (default: the whole server)"
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument(
        "--ca-file", type=Path, help="PEM roots to verify the server with (implies --tls)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    credentials = None
    if args.tls or args.ca_file:
        roots = args.ca_file.read_bytes() if args.ca_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots)
    try:
        status = check(args.target, args.service, timeout=args.timeout, credentials=credentials)
    except ProbeFailed as exc:
        print(f"unhealthy: {args.target}: {exc}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"unhealthy: {args.target} reports {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
