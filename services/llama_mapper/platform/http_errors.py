"""MapperError -> HTTP answer: the one translation every HTTP surface (router, baseline) uses."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.errors import MapperError


def error_body(error: MapperError, *, path: str | None = None) -> dict[str, Any]:
    """`{"error": {"code", "status", "message", "path"?, ...details}}`; code names the class."""
    body: dict[str, Any] = {
        "code": type(error).__name__,
        "status": error.code,
        "message": error.message,
        **error.details,
    }
    if path is not None:
        body["path"] = path
    return {"error": body}


def http_status(error: MapperError) -> int:
    return error.http_status
