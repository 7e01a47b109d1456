"""The router deployment: the HTTP ingress (FastAPI) and the gRPC MapperService, over RouterCore."""

from __future__ import annotations

import json
import logging
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from llama_mapper._proto.mapper.v1 import mapper_pb2 as pb
from llama_mapper.domain import jsonio
from llama_mapper.domain.document import MAX_OUTPUTS
from llama_mapper.domain.errors import (
    InvalidArgument,
    MapperError,
    PayloadTooLarge,
    ResourceExhausted,
)
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.platform.rpc.errors import status_of
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving import grpc_ingress  # noqa: F401 (pickle alias of the pb2 module)
from llama_mapper.serving.api import build_app
from llama_mapper.serving.ratelimit import retry_after_header
from llama_mapper.serving.registry_source import RegistrySource, registry_client
from llama_mapper.serving.router_core import Mapped, RouterCore

log = logging.getLogger(__name__)

# One RouterCore per replica process: the FastAPI routes reach it through `_core`. Serve pickles
# the deployment class by value (its methods get a copy of this module's globals), so the replica
# installs its core through `_install`, a module function that cloudpickle keeps by reference.
_CORE: list[RouterCore] = []


def _install(core: RouterCore) -> RouterCore:
    _CORE[:] = [core]
    return core


def _core() -> RouterCore:
    if not _CORE:
        raise RuntimeError("router replica not initialised")
    return _CORE[0]


class HandleEngine:
    """EngineClient over the engine deployment's handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self.handle = handle

    async def predict(
        self, adapter: str, queries: list[MapperQuery]
    ) -> tuple[list[Prediction], dict[str, Any]]:
        return await self.handle.predict.remote(adapter, queries)

    async def chat(
        self, messages: list[dict[str, str]], adapter: str | None, **kw: Any
    ) -> dict[str, Any]:
        return await self.handle.chat.remote(messages, adapter, **kw)

    async def load_version(self, model: str, version: int) -> dict[str, Any]:
        return await self.handle.load_version.remote(model, version)

    async def load_local(self, model: str, path: str) -> dict[str, Any]:
        return await self.handle.load_local.remote(model, path)

    async def adapters(self) -> list[dict[str, Any]]:
        return await self.handle.adapters.remote()


app = build_app(_core)


@serve.deployment(name="MapperRouter", max_ongoing_requests=512)
@serve.ingress(app)
class MapperRouter:
    """HTTP via FastAPI; gRPC methods `Map` / `MapBatch` / `MapDocument` / `Analyze` via Serve's
    gRPC ingress."""

    def __init__(
        self,
        engine: DeploymentHandle | None,
        settings: dict[str, Any],
        treatment_engine: DeploymentHandle | None = None,
    ) -> None:
        self.settings = ServingSettings.model_validate(settings)
        client = registry_client(self.settings)
        source = RegistrySource(client) if client is not None else None
        client_engine: Any = HandleEngine(engine) if engine is not None else None
        if self.settings.external_engine_url:
            from llama_mapper.serving.openai_engine import OpenAIEngine

            client_engine = OpenAIEngine(
                self.settings.external_engine_url, flavor=self.settings.external_engine_flavor
            )
        self.core = _install(
            RouterCore(
                self.settings,
                client_engine,
                source,
                treatment_engine=HandleEngine(treatment_engine) if treatment_engine else None,
            )
        )

    # --- gRPC (llama_mapper.mapper.v1.MapperService) ---------------------------------------------

    async def Map(self, request: pb.MapRequest, grpc_context: Any = None) -> pb.MapResponse:  # noqa: N802
        try:
            self._check_size(request)
            _check_fields(request.detector, request.tenant, request.request_id)
            caller = self._admit(grpc_context)
            output = _parse(request.output_json, "$.output_json")
            mapped = await self.core.map_one(
                request.detector,
                output,
                request_id=request.request_id or None,
                tenant=request.tenant or None,
                scope=f"{caller}/{request.tenant}",
            )
            return pb.MapResponse(result=_result(mapped, self.settings.model))
        except MapperError as exc:
            _abort(grpc_context, exc)
            return pb.MapResponse()

    async def MapBatch(  # noqa: N802 - Serve calls the gRPC method by name
        self, request: pb.MapBatchRequest, grpc_context: Any = None
    ) -> pb.MapBatchResponse:
        try:
            self._check_size(request)
            _check_fields("-", request.tenant, "")
            caller = self._admit(grpc_context, cost=max(1, len(request.items)))
            if not 1 <= len(request.items) <= self.settings.max_batch_items:
                raise InvalidArgument(
                    f"$.items: 1 to {self.settings.max_batch_items} items, got {len(request.items)}"
                )
            items = [
                {
                    "detector": item.detector,
                    "output": _parse(item.output_json, f"$.items[{i}].output_json"),
                    "request_id": item.request_id or None,
                }
                for i, item in enumerate(request.items)
            ]
            for i, item in enumerate(request.items):
                _check_fields(item.detector, "", item.request_id, where=f"$.items[{i}]")
            mapped = await self.core.map_batch(
                items, request.tenant or None, scope=f"{caller}/{request.tenant}"
            )
            return pb.MapBatchResponse(results=[_result(m, self.settings.model) for m in mapped])
        except MapperError as exc:
            _abort(grpc_context, exc)
            return pb.MapBatchResponse()

    async def MapDocument(  # noqa: N802 - Serve calls the gRPC method by name
        self, request: pb.MapDocumentRequest, grpc_context: Any = None
    ) -> pb.MapDocumentResponse:
        try:
            self._check_size(request)
            _check_fields("-", request.tenant, request.request_id)
            caller = self._admit(grpc_context, cost=max(1, len(request.outputs)))
            if not 1 <= len(request.outputs) <= MAX_OUTPUTS:
                raise InvalidArgument(
                    f"$.outputs: 1 to {MAX_OUTPUTS} outputs, got {len(request.outputs)}"
                )
            for i, item in enumerate(request.outputs):
                _check_fields(item.detector, "", "", where=f"$.outputs[{i}]")
            outputs = [
                {
                    "detector": item.detector,
                    "output": _parse(item.output_json, f"$.outputs[{i}].output_json"),
                }
                for i, item in enumerate(request.outputs)
            ]
            mapped = await self.core.map_document(
                outputs,
                text=request.text if request.HasField("text") else None,
                text_sha256=request.text_sha256 or None,
                request_id=request.request_id or None,
                tenant=request.tenant or None,
                scope=f"{caller}/{request.tenant}",
            )
            return pb.MapDocumentResponse(
                request_id=mapped.result["provenance"]["request_id"],
                result_json=json.dumps(mapped.result, sort_keys=True),
                router_arm=mapped.arm or "",
                adapter=self.settings.model if mapped.version else "",
                adapter_version=mapped.version,
            )
        except MapperError as exc:
            _abort(grpc_context, exc)
            return pb.MapDocumentResponse()

    async def Analyze(  # noqa: N802 - Serve calls the gRPC method by name
        self, request: pb.AnalyzeRequest, grpc_context: Any = None
    ) -> pb.AnalyzeResponse:
        try:
            self._check_size(request)
            _check_fields("-", request.tenant, "")
            self._admit(grpc_context)
            finding = _parse(request.finding_json, "$.finding_json")
            context = (
                _parse(request.context_json, "$.context_json") if request.context_json else None
            )
            answer = await self.core.analyze(request.framework, finding, context)
            provenance = answer["provenance"]
            return pb.AnalyzeResponse(
                assessment_json=json.dumps(answer["assessment"], sort_keys=True),
                adapter=provenance["adapter"] or "",
                adapter_version=provenance["adapter_version"] or 0,
            )
        except MapperError as exc:
            _abort(grpc_context, exc)
            return pb.AnalyzeResponse()

    def _check_size(self, request: Any) -> None:
        """The HTTP body limit for gRPC too (Serve's own proxy accepts up to 2 GiB); a batch may
        hold that much per item, a document that much in all, as its HTTP body."""
        limit = self.settings.max_body_bytes * (
            self.settings.max_batch_items if hasattr(request, "items") else 1
        )
        if request.ByteSize() > limit:
            raise PayloadTooLarge(f"request of {request.ByteSize()} bytes, over {limit}")

    def _admit(self, grpc_context: Any, cost: int = 1) -> str:
        """The caller (authenticated principal, else its peer) after the token and the rate."""
        caller = "-"
        if grpc_context is not None:
            if self.core.tokens is not None:
                metadata = dict(grpc_context.invocation_metadata())
                caller = self.core.tokens.authenticate(
                    metadata.get("authorization"), what="Map"
                ).name
            else:
                caller = str(grpc_context.peer()).rsplit(":", 1)[0]
        wait = self.core.limiter.acquire(caller, cost)
        if wait > 0:
            if grpc_context is not None:
                grpc_context.set_trailing_metadata([("retry-after", retry_after_header(wait))])
            raise ResourceExhausted("over the rate limit")
        return caller


_MAX_ID = 128


def _check_fields(detector: str, tenant: str, request_id: str, *, where: str = "$") -> None:
    """The same bounds the HTTP request models put on these fields."""
    if not detector:
        raise InvalidArgument(f"{where}.detector is required")
    for name, value in (("detector", detector), ("tenant", tenant), ("request_id", request_id)):
        if len(value) > _MAX_ID:
            raise InvalidArgument(f"{where}.{name}: at most {_MAX_ID} characters")


def _parse(text: str, path: str) -> Any:
    return jsonio.loads(text, what=path)


def _result(mapped: Mapped, model: str) -> pb.MapResult:
    return pb.MapResult(
        request_id=mapped.result["provenance"]["request_id"],
        result_json=json.dumps(mapped.result, sort_keys=True),
        router_arm=mapped.arm or "",
        adapter=model if mapped.version else "",
        adapter_version=mapped.version,
    )


def _abort(grpc_context: Any, exc: MapperError) -> None:
    if grpc_context is None:
        raise exc
    grpc_context.set_code(status_of(exc))
    grpc_context.set_details(exc.message)
