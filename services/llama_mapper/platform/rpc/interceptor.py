"""The one server interceptor: authenticate, authorize, run, and turn errors into gRPC statuses."""

# Every service's handlers run inside it, so a handler raises domain errors and never builds a
# status itself; anything else is a bug and leaves as INTERNAL without its details (logged here).
# Other services on the same server (health, reflection) pass untouched.

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from llama_mapper.domain.errors import MapperError, PermissionDenied, Unauthenticated
from llama_mapper.platform.auth import (
    LOCAL_DEVELOPMENT,
    READ,
    WRITE,
    Principal,
    TokenTable,
    acting_as,
    authorize,
)
from llama_mapper.platform.rpc.errors import status_of

log = logging.getLogger(__name__)
_INTERNAL = "internal error; see the service log"


@dataclass(frozen=True)
class AccessPolicy:
    """Which right each method needs: `writes` need WRITE, the rest READ. Reads are open to
    anyone unless `reads_need_auth`; `tokens` None means no auth at all (local development)."""

    tokens: TokenTable | None
    writes: frozenset[str]
    reads_need_auth: bool = False

    def right(self, method: str) -> str:
        return WRITE if method in self.writes else READ

    def principal(self, method: str, metadata: dict[str, str]) -> Principal:
        if self.tokens is None:
            return LOCAL_DEVELOPMENT
        right = self.right(method)
        if right == READ and not self.reads_need_auth:
            try:
                return self.tokens.authenticate(metadata.get("authorization"), what=method)
            except MapperError:
                return Principal("anonymous", frozenset({READ}))
        principal = self.tokens.authenticate(metadata.get("authorization"), what=method)
        authorize(principal, right, method)
        return principal


def _aborted(context: grpc.ServicerContext) -> bool:
    """True once the handler itself aborted the call (context.abort raises a plain Exception)."""
    code = getattr(context, "code", None)
    return callable(code) and code() is not None


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, service_name: str, policy: AccessPolicy) -> None:
        self.service_name = service_name
        self.policy = policy

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        service, _, method = handler_call_details.method.lstrip("/").partition("/")
        if handler is None or service != self.service_name:
            return handler
        policy = self.policy

        def refuse(context: grpc.ServicerContext, exc: MapperError) -> None:
            # Metadata only: the method, the peer and the status, never what the caller sent.
            if isinstance(exc, Unauthenticated | PermissionDenied):
                log.warning("refused %s from %s: %s", method, context.peer(), exc.code)
            else:
                log.info("%s refused: %s", method, exc.code)
            context.abort(status_of(exc), exc.message)

        def guarded(behavior: Callable[..., Any], streaming_response: bool) -> Callable[..., Any]:
            if streaming_response:

                def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    try:
                        principal = policy.principal(method, dict(context.invocation_metadata()))
                        with acting_as(principal):
                            yield from behavior(request, context)
                    except MapperError as exc:
                        refuse(context, exc)
                    except Exception:
                        if _aborted(context):
                            raise
                        log.exception("%s failed", method)
                        context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)

                return stream

            def unary(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    principal = policy.principal(method, dict(context.invocation_metadata()))
                    with acting_as(principal):
                        return behavior(request, context)
                except MapperError as exc:
                    refuse(context, exc)
                except Exception:
                    if _aborted(context):
                        raise
                    log.exception("%s failed", method)
                    context.abort(grpc.StatusCode.INTERNAL, _INTERNAL)

            return unary

        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
        )
        for attribute, make, streaming_response in kinds:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                return make(
                    guarded(behavior, streaming_response),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler
