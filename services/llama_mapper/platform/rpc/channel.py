"""Client channels to our gRPC services: TLS when a CA is given, the bearer token, one translation."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from llama_mapper.platform.rpc.errors import from_rpc_error

T = TypeVar("T")
DEFAULT_MAX_MESSAGE = 8 * 1024 * 1024


def open_channel(
    address: str,
    *,
    tls: bool = False,
    ca_file: Path | None = None,
    root_certificates: bytes | None = None,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE,
) -> grpc.Channel:
    """TLS when `tls`, a CA file or root certificates are given (system roots without either)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if ca_file is not None:
        root_certificates = Path(ca_file).read_bytes()
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        return grpc.secure_channel(address, credentials, options=options)
    return grpc.insecure_channel(address, options=options)


def call_metadata(
    token: str | None, extra: Sequence[tuple[str, str]] = ()
) -> list[tuple[str, str]]:
    """A fresh request id, the bearer token when there is one, and `extra`."""
    metadata = [("x-request-id", uuid.uuid4().hex), *extra]
    if token:
        metadata.append(("authorization", f"Bearer {token}"))
    return metadata


def unary(
    method: Callable[..., T],
    request: Any,
    *,
    token: str | None,
    timeout_s: float,
    extra: Sequence[tuple[str, str]] = (),
) -> T:
    """One unary call; a failed one raises the MapperError class the server raised."""
    try:
        return method(request, metadata=call_metadata(token, extra), timeout=timeout_s)
    except grpc.RpcError as exc:
        raise from_rpc_error(exc) from None
