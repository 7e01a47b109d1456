"""The error hierarchy every layer raises: each class carries its gRPC status name and HTTP status."""

# Pure on purpose (no grpc import): the platform layer translates these to the wire, in one place
# for gRPC (platform/rpc) and one for HTTP (platform/http_errors).

from __future__ import annotations

from typing import ClassVar


class MapperError(Exception):
    """Base of every error the product raises on purpose; anything else is a bug (INTERNAL)."""

    code: ClassVar[str] = "INTERNAL"  # a grpc.StatusCode name
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InvalidArgument(MapperError):
    code = "INVALID_ARGUMENT"
    http_status = 422


class PayloadTooLarge(InvalidArgument):
    http_status = 413


class NotFound(MapperError):
    code = "NOT_FOUND"
    http_status = 404


class AlreadyExists(MapperError):
    code = "ALREADY_EXISTS"
    http_status = 409


class FailedPrecondition(MapperError):
    code = "FAILED_PRECONDITION"
    http_status = 412


class Aborted(MapperError):
    """A compare-and-set lost the race: re-read and retry."""

    code = "ABORTED"
    http_status = 409


class Unauthenticated(MapperError):
    """No credentials, or credentials nobody issued."""

    code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(MapperError):
    """A known caller without the right the call needs."""

    code = "PERMISSION_DENIED"
    http_status = 403


class ResourceExhausted(MapperError):
    code = "RESOURCE_EXHAUSTED"
    http_status = 429


class Unavailable(MapperError):
    code = "UNAVAILABLE"
    http_status = 503


class DataLoss(MapperError):
    """Stored bytes no longer match their checksum."""

    code = "DATA_LOSS"
    http_status = 500


ERRORS_BY_CODE: dict[str, type[MapperError]] = {
    cls.code: cls
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
