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

from llama_mapper.domain.errors import (
    InvalidArgument,
    MapperError,
    PermissionDenied,
    Unauthenticated,
)
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


class _Undecodable:
    """What bytes that are not the method's message deserialize to: grpc would answer INTERNAL
    ("Exception deserializing request!") for them, so the handler's guard refuses them instead."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # DecodeError, invalid UTF-8, nesting past protobuf's limit
            return _UNDECODABLE

    return parse


def _decoded(request: Any, method: str, streaming_request: bool) -> Any:
    """The request, or InvalidArgument when (any message of) it did not decode."""
    message = f"{method}: the request is not a valid protobuf message of this method"
    if not streaming_request:
        if request is _UNDECODABLE:
            raise InvalidArgument(message)
        return request

    def messages() -> Iterator[Any]:
        for item in request:
            if item is _UNDECODABLE:
                raise InvalidArgument(message)
            yield item

    return messages()


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

        def guarded(
            behavior: Callable[..., Any], streaming_response: bool, streaming_request: bool
        ) -> Callable[..., Any]:
            if streaming_response:

                def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    try:
                        principal = policy.principal(method, dict(context.invocation_metadata()))
                        request = _decoded(request, method, streaming_request)
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
                    request = _decoded(request, method, streaming_request)
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
            ("unary_unary", grpc.unary_unary_rpc_method_handler, False, False),
            ("unary_stream", grpc.unary_stream_rpc_method_handler, True, False),
            ("stream_unary", grpc.stream_unary_rpc_method_handler, False, True),
            ("stream_stream", grpc.stream_stream_rpc_method_handler, True, True),
        )
        for attribute, make, streaming_response, streaming_request in kinds:
            behavior = getattr(handler, attribute)
            if behavior is not None:
                return make(
                    guarded(behavior, streaming_response, streaming_request),
                    request_deserializer=_lenient(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler
