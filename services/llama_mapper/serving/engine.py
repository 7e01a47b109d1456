"""The engine deployment: vLLM AsyncLLM with adapters loaded by registry version."""

# A registry version is downloaded (the client verifies every file's sha256 and publishes the
# directory only when all arrived intact), checked against this engine's base-model hash, then
# added to vLLM. An artifact that fails its checksum is never loaded.

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from ray import serve

from llama_mapper.domain.errors import FailedPrecondition, NotFound, Unavailable
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.inference.vllm_engine import AdapterRef, AsyncVllmEngine
from llama_mapper.inference.vllm_engine.decoding import adapter_digest
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.registry_source import registry_client

log = logging.getLogger(__name__)


def adapter_name(model: str, version: int) -> str:
    return f"{model}-v{version}"


class EngineReplica:
    """The engine's logic; the Serve deployment below is this class with replica options."""

    def __init__(self, settings: dict[str, Any] | ServingSettings) -> None:
        self.settings = (
            settings
            if isinstance(settings, ServingSettings)
            else ServingSettings.model_validate(settings)
        )
        self.engine = AsyncVllmEngine(self.settings.engine)
        self.engine.start()
        self._registry = None
        self._warm = False

    @property
    def registry(self) -> Any:
        if self._registry is None:
            self._registry = registry_client(self.settings)
            if self._registry is None:
                raise FailedPrecondition("no registry configured (MAPPER_SERVING_REGISTRY_ADDRESS)")
        return self._registry

    async def predict(
        self, adapter: str | None, queries: list[MapperQuery]
    ) -> tuple[list[Prediction], dict[str, Any]]:
        predictions = await self.engine.predict(queries, adapter)
        return predictions, self.engine.describe(adapter)

    async def chat(
        self, messages: list[dict[str, str]], adapter: str | None, **kw: Any
    ) -> dict[str, Any]:
        return await self.engine.chat(messages, adapter, **kw)

    async def load_version(self, model: str, version: int) -> dict[str, Any]:
        name = adapter_name(model, version)
        if name in self.engine.adapters:
            return self._info(name)
        record = (await asyncio.to_thread(self.registry.get_version, model, version)).version
        base_sha = self.engine.base.sha256 if self.engine.base else ""
        if record.lineage.base_model_sha256 and record.lineage.base_model_sha256 != base_sha:
            raise FailedPrecondition(
                f"{name} was trained on base {record.lineage.base_model_sha256[:12]}, this engine "
                f"serves {base_sha[:12]}"
            )
        dest = self.settings.adapter_cache_dir / model / f"v{version}-{uuid.uuid4().hex[:8]}"
        try:
            await asyncio.to_thread(self.registry.download, model, version, dest)
            await self.engine.add_adapter(
                AdapterRef(name, dest, version=version, sha256=record.artifact_sha256)
            )
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        await self._warm_adapter(name)
        return self._info(name)

    async def load_local(self, model: str, path: str) -> dict[str, Any]:
        name = f"{model}-local"
        # The same name may come back with other weights: the digest keeps their caches apart.
        digest = await asyncio.to_thread(adapter_digest, Path(path))
        await self.engine.add_adapter(AdapterRef(name, Path(path), sha256=digest))
        await self._warm_adapter(name)
        return self._info(name)

    async def unload(self, name: str) -> None:
        await self.engine.remove_adapter(name)

    async def adapters(self) -> list[dict[str, Any]]:
        return [self._info(name) for name in sorted(self.engine.adapters)]

    def _info(self, name: str) -> dict[str, Any]:
        if name not in self.engine.adapters:
            raise NotFound(f"adapter {name!r} is not loaded")
        ref = self.engine.adapters[name]
        return {"name": name, "version": ref.version, "path": str(ref.path), "sha256": ref.sha256}

    async def _warm_adapter(self, name: str) -> None:
        # The router marks an adapter ready when this returns: its first real request must not pay
        # for the label grammar's compilation (~15 s on CPU the first time).
        if name.startswith(f"{self.settings.analyst_model}-"):
            await self._warm_analyst(name)
            return
        await self.engine.predict([MapperQuery("warm-up", {"label": "EMAIL_ADDRESS"})], name)

    async def _warm_analyst(self, name: str) -> None:
        """The analyst answers chats under its framework's grammar (risk levels, that framework's
        control ids): one one-token chat per framework compiles them before /v1/analyze's
        first request, which would otherwise spend its deadline compiling."""
        from llama_mapper.domain import rubric
        from llama_mapper.inference.analyst import messages, schema

        for framework in rubric.FRAMEWORKS:
            q = rubric.query(framework, {"label": "credentials.api_key"})
            await self.engine.chat(messages(q), name, max_tokens=1, json_schema=schema(q))

    async def warm_up(self) -> float:
        """One request per loaded adapter (and the base): compiles the label grammar before traffic."""
        import time

        started = time.perf_counter()
        query = [MapperQuery("warm-up", {"label": "EMAIL_ADDRESS"})]
        for adapter in [None, *sorted(self.engine.adapters)]:
            await self.engine.predict(query, adapter)
        self._warm = True
        return time.perf_counter() - started

    def check_health(self) -> None:
        if self.engine.engine is None or getattr(self.engine.engine, "errored", False):
            raise Unavailable("the vLLM engine is not running")


# Deployment names: the main engine, and the rollout treatment's own (ServingSettings.isolate_treatment).
MAIN_DEPLOYMENT, TREATMENT_DEPLOYMENT = "MapperEngine", "MapperEngineTreatment"

MapperEngine = serve.deployment(
    EngineReplica,
    name=MAIN_DEPLOYMENT,
    max_ongoing_requests=256,
    health_check_period_s=10,
    health_check_timeout_s=30,
)
