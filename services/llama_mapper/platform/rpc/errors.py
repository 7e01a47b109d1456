"""MapperError <-> gRPC status, in both directions: the one translation every server and client uses."""

from __future__ import annotations

import grpc

from llama_mapper.domain.errors import ERRORS_BY_CODE, MapperError, Unavailable


def status_of(error: MapperError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


def from_rpc_error(exc: grpc.RpcError) -> MapperError:
    """A client's view of a failed call: the error class the server raised, with its message."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Unavailable(details or "deadline exceeded")
    return ERRORS_BY_CODE.get(code.name, MapperError)(details or code.name)
