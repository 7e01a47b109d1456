"""The HTTP API (FastAPI): request/response models and thin routes over RouterCore."""

# Errors are translated in one place (`_error_response`): MapperError subclasses carry their HTTP
# status, request validation becomes 422 with the JSON path, bodies over the limit 413, a tenant
# over its rate 429 with Retry-After, a missing or wrong token 401.

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, JsonValue, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llama_mapper.domain import jsonio
from llama_mapper.domain.crosswalks import add_crosswalks, default_crosswalks
from llama_mapper.domain.document import MAX_OUTPUTS
from llama_mapper.domain.errors import (
    InvalidArgument,
    MapperError,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    Unauthenticated,
)
from llama_mapper.platform.http_errors import error_body, http_status
from llama_mapper.serving.ratelimit import retry_after_header
from llama_mapper.serving.router_core import Mapped, RouterCore

log = logging.getLogger(__name__)

TENANT_HEADER = "x-tenant-id"
REQUEST_ID_HEADER = "x-request-id"
# Everything else needs the token when serving has one (compose and Kubernetes always do).
_OPEN_PATHS = frozenset({"/healthz", "/metrics"})
# Metric labels come from this fixed set, never from the path a client sent.
ENDPOINTS = {
    "/v1/map": "map",
    "/v1/map/batch": "batch",
    "/v1/map/document": "document",
    "/v1/analyze": "analyze",
    "/v1/feedback": "feedback",
    "/v1/models": "models",
    "/v1/chat/completions": "chat",
    "/v1/rollout/stats": "stats",
}


def endpoint_label(path: str) -> str:
    return ENDPOINTS.get(path, "other")


class MapRequest(BaseModel):
    """The envelope of schemas/detector-output.json."""

    detector: str = Field(min_length=1, max_length=128, description="Detector name, e.g. presidio.")
    output: JsonValue = Field(description="The detector's native output, as its API returned it.")
    request_id: str | None = Field(
        None, min_length=1, max_length=128, description="Echoed in provenance."
    )
    tenant: str | None = Field(
        None, max_length=128, description="Tenant id; the X-Tenant-Id header wins."
    )


class MapResponse(BaseModel):
    result: dict[str, Any] = Field(
        description="Canonical result, valid against schemas/mapper-output.json."
    )
    router_arm: str | None = Field(
        None, description="A/B arm that answered; null without a rollout."
    )
    adapter_version: int = Field(0, description="Registry version of the arm's adapter (0: none).")


class BatchItem(BaseModel):
    detector: str = Field(min_length=1, max_length=128)
    output: JsonValue
    request_id: str | None = Field(None, min_length=1, max_length=128)


class MapBatchRequest(BaseModel):
    items: list[BatchItem] = Field(min_length=1, max_length=100, description="1 to 100 outputs.")
    tenant: str | None = Field(None, max_length=128)


class MapBatchResponse(BaseModel):
    results: list[MapResponse]


class DocumentOutput(BaseModel):
    detector: str = Field(min_length=1, max_length=128, description="Detector name, e.g. presidio.")
    output: JsonValue = Field(description="The detector's native output for the document's text.")


class MapDocumentRequest(BaseModel):
    """Several detectors' outputs for one text; the text itself is optional."""

    outputs: list[DocumentOutput] = Field(
        min_length=1, max_length=MAX_OUTPUTS, description=f"1 to {MAX_OUTPUTS} detector outputs."
    )
    text: str | None = Field(
        None,
        description="The text the detectors looked at, used only to convert byte and line "
        "positions to characters; never returned, stored or logged.",
    )
    text_sha256: str | None = Field(
        None,
        pattern="^[0-9a-f]{64}$",
        description="The caller's sha256 of the text's UTF-8 bytes: echoed in provenance, "
        "checked against `text` when both are given.",
    )
    request_id: str | None = Field(
        None, min_length=1, max_length=128, description="Echoed in provenance."
    )
    tenant: str | None = Field(
        None, max_length=128, description="Tenant id; the X-Tenant-Id header wins."
    )


class MapDocumentResponse(BaseModel):
    result: dict[str, Any] = Field(
        description="Document result, valid against schemas/document-output.json."
    )
    router_arm: str | None = Field(
        None, description="A/B arm that answered; null without a rollout."
    )
    adapter_version: int = Field(0, description="Registry version of the arm's adapter (0: none).")


class AnalyzeRequest(BaseModel):
    framework: Literal["SOC2", "ISO27001", "HIPAA", "GDPR", "PCI_DSS"]
    finding: dict[str, JsonValue] = Field(
        description="A canonical finding (label, confidence, ...), as a mapper result holds it."
    )
    context: dict[str, JsonValue] | None = Field(
        None,
        description="What moves the risk level (schemas/analyst-context.json): volume, location, "
        "environment, data_subject_region, co_labels.",
    )


class FeedbackRequest(BaseModel):
    request_id: str = Field(min_length=1, max_length=128)
    labels: list[str] | None = Field(None, description="The correct canonical labels.")
    verdict: Literal["correct", "incorrect"] | None = Field(None, description="Or a plain verdict.")

    @model_validator(mode="after")
    def _one_of(self) -> FeedbackRequest:
        if (self.labels is None) == (self.verdict is None):
            raise ValueError("give exactly one of labels or verdict")
        return self


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatCompletionRequest(BaseModel):
    model: str = Field(description="An adapter (`mapper`, `mapper-v3`) or the base model id.")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int = Field(64, ge=1, le=1024)
    temperature: float = Field(0.0, ge=0, le=2)
    stream: bool = Field(
        False, description="Server-sent events as the OpenAI API streams: chunks, then [DONE]."
    )
    stream_options: dict[str, bool] | None = Field(
        None, description='{"include_usage": true}: a last chunk with the token counts.'
    )


def chat_stream_events(
    answer: dict[str, Any],
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool = False,
) -> list[str]:
    """A finished completion as OpenAI's `chat.completion.chunk` server-sent events: the role,
    the content, the finish reason, optionally the usage, then `data: [DONE]`."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created}
    base["model"] = model

    def event(choices: list[dict[str, Any]], **extra: Any) -> str:
        return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

    events = [
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]),
        event([{"index": 0, "delta": {"content": answer["text"]}, "finish_reason": None}]),
        event([{"index": 0, "delta": {}, "finish_reason": answer["finish_reason"]}]),
    ]
    if include_usage:
        usage = {
            "prompt_tokens": answer["prompt_tokens"],
            "completion_tokens": answer["completion_tokens"],
            "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"],
        }
        events.append(event([], usage=usage))
    return [*events, "data: [DONE]\n\n"]


def json_path(loc: tuple[Any, ...]) -> str:
    path = "$"
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _error_response(
    exc: MapperError, headers: dict[str, str] | None = None, *, path: str | None = None
) -> JSONResponse:
    return JSONResponse(error_body(exc, path=path), status_code=http_status(exc), headers=headers)


def _mapped(m: Mapped, schemes: list[str] | None = None) -> MapResponse:
    result = add_crosswalks(m.result, schemes) if schemes else m.result
    return MapResponse(result=result, router_arm=m.arm, adapter_version=m.version)


def crosswalk_schemes(values: list[str] | None) -> list[str]:
    """`?crosswalk=a&crosswalk=b` or `?crosswalk=a,b`: the schemes, each once, checked before any
    work; an unknown one is the caller's error (422), naming the known ones."""
    crosswalks = default_crosswalks()
    names = [name.strip() for value in values or () for name in value.split(",") if name.strip()]
    try:
        return [crosswalks.scheme(name).scheme for name in dict.fromkeys(names)]
    except NotFound as exc:
        raise InvalidArgument(f"query parameter crosswalk: {exc.message}") from None


CrosswalkQuery = Annotated[
    list[str] | None,
    Query(
        description="Add the labels' ids in these schemes as `crosswalks` (repeat it, or "
        "separate the names with commas): ailuminate, llama-guard, owasp-llm-top10, "
        "openguardrails."
    ),
]


class Guard:
    """Size first, then auth, then the tenant's rate: cheap refusals before any work.

    A plain ASGI middleware rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    runs the rest of the app in a task behind memory streams, which cost about as much CPU per
    request as the rules and the result together (bench/router_inprocess.py)."""

    def __init__(self, app: ASGIApp, core: Callable[[], RouterCore]) -> None:
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings, limiter = self.core().settings, self.core().limiter
        max_body_bytes = settings.max_body_bytes
        request = Request(scope)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            too_large = PayloadTooLarge(f"request body over {max_body_bytes} bytes")
            await _error_response(too_large)(scope, receive, send)
            return
        if request.method == "POST":
            body = bytearray()
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # nobody to answer
                body += message.get("body", b"")
                if len(body) > max_body_bytes:
                    too_large = PayloadTooLarge(f"request body over {max_body_bytes} bytes")
                    await _error_response(too_large)(scope, receive, send)
                    return
                if not message.get("more_body", False):
                    break
            receive = _replay(bytes(body), receive)
        path = request.url.path
        tokens = self.core().tokens
        principal = None
        if tokens is not None and path not in _OPEN_PATHS:
            try:
                principal = tokens.authenticate(
                    request.headers.get("authorization"), what=endpoint_label(path)
                )
            except Unauthenticated as exc:
                refusal = _error_response(exc, {"WWW-Authenticate": "Bearer"})
                await refusal(scope, receive, send)
                return
        # Who is calling, as far as limits and feedback go: the principal, else (no auth
        # configured) the client's address. Never a header the client chooses.
        caller = principal.name if principal else (request.client.host if request.client else "-")
        scope.setdefault("state", {})["caller"] = caller
        if path.startswith("/v1/"):
            wait = limiter.acquire(caller)
            if wait > 0:
                self.core().record_error(endpoint_label(path), "rate_limited")
                refusal = _error_response(
                    ResourceExhausted("over the rate limit"),
                    {"Retry-After": retry_after_header(wait)},
                )
                await refusal(scope, receive, send)
                return
        if request.method == "POST" and body.strip():
            # The bounded reader before FastAPI's json.loads: a body nested 5,000 deep, NaN, a
            # lone surrogate or 5,000 digits is a 422 naming where, not a 400 or a crash later.
            try:
                jsonio.loads(body, limits=jsonio.JsonLimits(max_bytes=max_body_bytes))
            except MapperError as exc:
                self.core().record_error(endpoint_label(path), type(exc).__name__)
                await _error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that hands the app the body the guard already read, then listens on."""
    pending: Message | None = {"type": "http.request", "body": body, "more_body": False}

    async def replay() -> Message:
        nonlocal pending
        if pending is None:
            return await receive()
        message, pending = pending, None
        return message

    return replay


def build_app(core: Callable[[], RouterCore]) -> FastAPI:
    """The FastAPI app; `core` returns this replica's RouterCore (set up by the deployment), whose
    settings and rate limiter the guard reads, so the app can be built before settings arrive."""
    app = FastAPI(
        title="llama-mapper",
        version="1",
        description="Maps AI-safety and data-protection detector output to one canonical "
        "compliance taxonomy (rules first, LoRA model for the rest, A/B rollouts).",
    )

    app.add_middleware(Guard, core=core)

    @app.exception_handler(MapperError)
    async def mapper_error(request: Request, exc: MapperError) -> JSONResponse:
        core().record_error(endpoint_label(request.url.path), type(exc).__name__)
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        path = json_path(tuple(first.get("loc", ())))
        core().record_error(endpoint_label(request.url.path), "InvalidArgument")
        return _error_response(InvalidArgument(f"{path}: {first.get('msg')}"), path=path)

    def tenant_of(request: Request, body_tenant: str | None) -> str | None:
        """The routing tenant (sticky arms): the header, else the body's field."""
        return request.headers.get(TENANT_HEADER) or body_tenant

    def scope_of(request: Request, body_tenant: str | None) -> str:
        """Whose request it was, for feedback: the caller (principal) and the tenant it named."""
        caller = getattr(request.state, "caller", "-")
        return f"{caller}/{tenant_of(request, body_tenant) or ''}"

    def charge(request: Request, what: str, count: int) -> None:
        """N outputs cost N requests of the caller's rate (the guard charged the first)."""
        wait = core().limiter.acquire(getattr(request.state, "caller", "-"), count - 1)
        if wait > 0:
            raise ResourceExhausted(
                f"a {what} of {count} is over the rate limit",
                details={"retry_after_s": retry_after_header(wait)},
            )

    @app.post("/v1/map", response_model=MapResponse, summary="Map one detector output")
    async def map_one(
        body: MapRequest, request: Request, crosswalk: CrosswalkQuery = None
    ) -> MapResponse:
        schemes = crosswalk_schemes(crosswalk)
        request_id = body.request_id or request.headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4())
        mapped = await core().map_one(
            body.detector,
            body.output,
            request_id=request_id,
            tenant=tenant_of(request, body.tenant),
            scope=scope_of(request, body.tenant),
        )
        return _mapped(mapped, schemes)

    @app.post("/v1/map/batch", response_model=MapBatchResponse, summary="Map up to 100 outputs")
    async def map_batch(
        body: MapBatchRequest, request: Request, crosswalk: CrosswalkQuery = None
    ) -> MapBatchResponse:
        schemes = crosswalk_schemes(crosswalk)
        items = [item.model_dump() for item in body.items]
        charge(request, "batch", len(items))
        mapped = await core().map_batch(
            items, tenant_of(request, body.tenant), scope=scope_of(request, body.tenant)
        )
        return MapBatchResponse(results=[_mapped(m, schemes) for m in mapped])

    @app.post(
        "/v1/map/document",
        response_model=MapDocumentResponse,
        summary="Map several detectors' outputs for one text into one result",
    )
    async def map_document(
        body: MapDocumentRequest, request: Request, crosswalk: CrosswalkQuery = None
    ) -> MapDocumentResponse:
        schemes = crosswalk_schemes(crosswalk)
        charge(request, "document", len(body.outputs))
        request_id = body.request_id or request.headers.get(REQUEST_ID_HEADER) or str(uuid.uuid4())
        mapped = await core().map_document(
            [item.model_dump() for item in body.outputs],
            text=body.text,
            text_sha256=body.text_sha256,
            request_id=request_id,
            tenant=tenant_of(request, body.tenant),
            scope=scope_of(request, body.tenant),
        )
        result = (
            add_crosswalks(mapped.result, schemes, schema="document-output")
            if schemes
            else mapped.result
        )
        return MapDocumentResponse(
            result=result, router_arm=mapped.arm, adapter_version=mapped.version
        )

    @app.post("/v1/analyze", summary="Risk assessment of a canonical finding (hybrid analyst)")
    async def analyze(body: AnalyzeRequest) -> dict[str, Any]:
        return await core().analyze(body.framework, body.finding, body.context)

    @app.post("/v1/feedback", summary="Report the correct labels (or a verdict) for a request")
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, Any]:
        return core().feedback(
            body.request_id,
            labels=body.labels,
            verdict=body.verdict,
            tenant=scope_of(request, None),
        )

    @app.get("/v1/models", summary="Base model and adapters (OpenAI list format)")
    async def models() -> dict[str, Any]:
        await core().refresh()
        return {"object": "list", "data": core().models()}

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat completion; model = adapter")
    async def chat(body: ChatCompletionRequest) -> Any:
        answer = await core().chat(
            body.model,
            [m.model_dump() for m in body.messages],
            max_tokens=body.max_tokens,
            temperature=body.temperature,
        )
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            # The engine answers a completion whole (a mapper label is a few tokens), so errors
            # are still a status code, never a broken stream; the events are the OpenAI format.
            events = chat_stream_events(
                answer,
                completion_id=completion_id,
                created=created,
                model=body.model,
                include_usage=bool((body.stream_options or {}).get("include_usage")),
            )
            return StreamingResponse(
                iter(events),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer["text"]},
                    "finish_reason": answer["finish_reason"],
                }
            ],
            "usage": {
                "prompt_tokens": answer["prompt_tokens"],
                "completion_tokens": answer["completion_tokens"],
                "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"],
            },
        }

    @app.get("/v1/rollout/stats", summary="Per-arm statistics of the current rollout step")
    async def rollout_stats() -> dict[str, Any]:
        await core().refresh()
        return core().rollout_stats()

    @app.get("/healthz", summary="Liveness and what is loaded")
    async def healthz() -> dict[str, Any]:
        return core().health()

    @app.get("/metrics", summary="Prometheus metrics of this router replica")
    async def metrics() -> Response:
        return Response(core().metrics.exposition(), media_type="text/plain; version=0.0.4")

    return app
