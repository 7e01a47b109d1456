"""Who may call the evaluation service: the bearer-token check and the interceptor that applies it.

StartEvaluation and CheckGate need the token. CheckGate and recording runs write metrics,
temperatures and gate outcomes, which promotion trusts, into the registry with the service's own
registry token. Every run, recorded or not, also takes the one worker that gates wait for (hours
for a model run), reads any eval set path the service can read and writes a report directory.
StreamProgress, GetReport and CompareVersions only read; they are open unless
require_auth_for_reads. The check happens here, before the servicer sees the request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import grpc

from llama_mapper.domain.errors import Unauthenticated

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"StartEvaluation", "CheckGate"})
_SCHEME = "bearer "


def check_bearer(authorization: str | None, token: str, method: str) -> None:
    """Raise Unauthenticated unless `authorization` is `Bearer <token>`.

    A wrong token is UNAUTHENTICATED too, not PERMISSION_DENIED: the service has one token and no
    roles, so a caller without it has no valid credentials rather than too few rights.
    """
    if not authorization or not authorization.lower().startswith(_SCHEME):
        raise Unauthenticated(
            f"{method} needs 'authorization: Bearer <token>' metadata with the evaluation "
            "service's token (MAPPER_EVALUATION_TOKEN, else MAPPER_REGISTRY_TOKEN)"
        )
    presented = authorization[len(_SCHEME) :].strip()
    # Constant-time comparison: the time taken says nothing about how much of the token matched.
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise Unauthenticated(
            f"the bearer token sent with {method} is not valid for this evaluation service"
        )


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses calls of `service_name` that need the token and lack it, with UNAUTHENTICATED.

    `token` None means the server was started with allow_insecure_writes: every call passes.
    Other services on the server (health, reflection) are never checked.
    """

    def __init__(self, service_name: str, *, token: str | None, require_auth_for_reads: bool):
        self.service_name = service_name
        self.token = token
        self.require_auth_for_reads = require_auth_for_reads

    def needs_token(self, method: str) -> bool:
        return method in WRITE_METHODS or self.require_auth_for_reads

    def intercept_service(self, continuation, handler_call_details):
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        handler = continuation(handler_call_details)
        token = self.token
        if handler is None or service != self.service_name or token is None:
            return handler
        if not self.needs_token(method):
            return handler
        metadata = dict(handler_call_details.invocation_metadata or ())
        try:
            check_bearer(metadata.get("authorization"), token, method)
        except Unauthenticated as exc:
            return _refusal(handler, method, exc.message)
        return handler


def _refusal(handler: grpc.RpcMethodHandler, method: str, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as `handler` that answers UNAUTHENTICATED without running it."""

    def refuse(_request: Any, context: grpc.ServicerContext) -> None:
        # Metadata only: the method and the peer, never what the caller sent as a token.
        log.warning("refused %s from %s: %s", method, context.peer(), message)
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kinds: tuple[tuple[str, Callable[..., grpc.RpcMethodHandler]], ...] = (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    )
    for attribute, make in kinds:
        if getattr(handler, attribute) is not None:
            return make(
                refuse,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler
