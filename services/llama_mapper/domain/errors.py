"""Error hierarchy shared by every service: each class carries its gRPC and HTTP status."""

from __future__ import annotations

from typing import ClassVar

import grpc


class MapperError(Exception):
    """Base of every error the product raises on purpose; translated to the wire in one place."""

    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidArgument(MapperError):
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT
    http_status = 422


class PayloadTooLarge(InvalidArgument):
    http_status = 413


class NotFound(MapperError):
    grpc_status = grpc.StatusCode.NOT_FOUND
    http_status = 404


class AlreadyExists(MapperError):
    grpc_status = grpc.StatusCode.ALREADY_EXISTS
    http_status = 409


class FailedPrecondition(MapperError):
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION
    http_status = 412


class Aborted(MapperError):
    """A compare-and-set lost the race: re-read and retry."""

    grpc_status = grpc.StatusCode.ABORTED
    http_status = 409


class Unauthenticated(MapperError):
    grpc_status = grpc.StatusCode.UNAUTHENTICATED
    http_status = 401


class PermissionDenied(MapperError):
    grpc_status = grpc.StatusCode.PERMISSION_DENIED
    http_status = 403


class ResourceExhausted(MapperError):
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED
    http_status = 429


class Unavailable(MapperError):
    grpc_status = grpc.StatusCode.UNAVAILABLE
    http_status = 503


class DataLoss(MapperError):
    """Stored bytes no longer match their checksum."""

    grpc_status = grpc.StatusCode.DATA_LOSS
    http_status = 500


_BY_STATUS: dict[grpc.StatusCode, type[MapperError]] = {
    cls.grpc_status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DataLoss,
    )
}
_BY_STATUS[grpc.StatusCode.DEADLINE_EXCEEDED] = Unavailable


def from_rpc_error(exc: grpc.RpcError) -> MapperError:
    """A client's view of a failed call: the error class the server raised, with its message."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    error = _BY_STATUS.get(code, MapperError)(details or code.name)
    error.grpc_code = code  # type: ignore[attr-defined]
    return error
