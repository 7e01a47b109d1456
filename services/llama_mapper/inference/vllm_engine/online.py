"""vLLM's AsyncLLM for the serving deployment: adapters that come and go while requests are in flight."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain.errors import NotFound, Unavailable
from llama_mapper.domain.prompt import mapper_messages
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy
from llama_mapper.inference.base_model import BaseModelInfo, prepare_base_model
from llama_mapper.inference.compat import check_adapter_dir
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.inference.vllm_engine.config import (
    AdapterRef,
    VllmEngineConfig,
    apply_cpu_environment,
    engine_kwargs,
)
from llama_mapper.inference.vllm_engine.decoding import (
    LoraIds,
    invalid_prediction,
    json_output,
    label_token_budget,
    lora_request,
    mapper_sampling_params,
    prediction_from_completion,
    render_prompt,
)

log = logging.getLogger(__name__)


@dataclass
class _Loaded:
    ref: AdapterRef
    lora_id: int
    in_flight: int = 0


class AsyncVllmEngine:
    """vLLM's AsyncLLM with adapters that come and go while requests are in flight.

    Adding or removing an adapter takes that name's lock, so two loads of one name cannot
    interleave (the vLLM lora resolver does the same). A reload gets a fresh LoRA id and swaps the
    name over only after vLLM has loaded it; the old id is removed once its in-flight requests
    finish, so no request is dropped or answered by a half-loaded adapter.
    """

    def __init__(self, config: VllmEngineConfig | None = None, taxonomy: Taxonomy | None = None):
        self.config = config or VllmEngineConfig()
        self.taxonomy = taxonomy or default_taxonomy()
        self.labels = self.taxonomy.names
        self.base: BaseModelInfo | None = None
        self.engine: Any = None
        self.tokenizer: Any = None
        self.max_tokens = 0
        self._ids = LoraIds()
        self._loaded: dict[str, _Loaded] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._drained: Counter[int] = Counter()

    def start(self) -> None:
        """Builds the engine (blocking, ~30-45 s on CPU); AsyncLLM binds to the loop that first uses it."""
        self.base = prepare_base_model(self.config.base_model, self.config.cache_dir)
        environment = apply_cpu_environment(self.config)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        started = time.perf_counter()
        args = AsyncEngineArgs(**engine_kwargs(self.config, self.base.path))
        self.engine = AsyncLLM.from_engine_args(args)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.base.path))
        self.max_tokens = label_token_budget(
            self.tokenizer, self.labels, self.config.label_token_margin
        )
        log.info("AsyncLLM up in %.1fs (%s)", time.perf_counter() - started, environment)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    @property
    def adapters(self) -> dict[str, AdapterRef]:
        return {name: loaded.ref for name, loaded in self._loaded.items()}

    async def add_adapter(self, adapter: AdapterRef) -> None:
        check_adapter_dir(adapter.path, max_rank=self.config.max_lora_rank)
        async with self._lock(adapter.name):
            lora_id = self._ids.new()
            started = time.perf_counter()
            await self.engine.add_lora(lora_request(adapter, lora_id))
            previous = self._loaded.get(adapter.name)
            self._loaded[adapter.name] = _Loaded(adapter, lora_id)
            log.info(
                "adapter %s v%s loaded in %.2fs",
                adapter.name,
                adapter.version,
                time.perf_counter() - started,
            )
            if previous is not None:
                await self._retire(previous)

    async def remove_adapter(self, name: str) -> None:
        async with self._lock(name):
            loaded = self._loaded.pop(name, None)
            if loaded is None:
                raise NotFound(f"adapter {name!r} is not loaded")
            await self._retire(loaded)

    async def _retire(self, loaded: _Loaded) -> None:
        while loaded.in_flight:
            await asyncio.sleep(0.01)
        await self.engine.remove_lora(loaded.lora_id)

    def describe(self, adapter: str | None) -> dict[str, Any]:
        assert self.base is not None
        out: dict[str, Any] = {
            "base_model": self.base.model_id,
            "base_model_sha256": self.base.sha256,
        }
        if adapter is not None and adapter in self._loaded:
            ref = self._loaded[adapter].ref
            out["adapter"] = ref.name
            if ref.version is not None:
                out["adapter_version"] = ref.version
        return out

    async def _generate(self, prompt: str, params: Any, adapter: str | None) -> Any:
        if self.engine is None:
            raise Unavailable("the vLLM engine is not started")
        loaded = None
        if adapter is not None:
            loaded = self._loaded.get(adapter)
            if loaded is None:
                raise NotFound(f"adapter {adapter!r} is not loaded (have {sorted(self._loaded)})")
            loaded.in_flight += 1
        try:
            final = None
            lora = lora_request(loaded.ref, loaded.lora_id) if loaded else None
            async for output in self.engine.generate(
                prompt, params, request_id=uuid.uuid4().hex, lora_request=lora
            ):
                final = output
            return final
        finally:
            if loaded is not None:
                loaded.in_flight -= 1

    async def predict(
        self, queries: Sequence[MapperQuery], adapter: str | None
    ) -> list[Prediction]:
        """Labels the queries concurrently (vLLM batches them); order is kept."""

        async def one(query: MapperQuery) -> Prediction:
            started = time.perf_counter()
            labels = query.candidates or self.labels
            params = mapper_sampling_params(labels, self.max_tokens, self.config.decisive_stop)
            prompt = render_prompt(self.tokenizer, mapper_messages(query.detector, query.finding))
            try:
                output = await self._generate(prompt, params, adapter)
            except (NotFound, Unavailable):
                raise
            except Exception:
                log.exception("vLLM generate failed: other.unknown")
                return invalid_prediction(time.perf_counter() - started)
            completion = output.outputs[0] if output is not None and output.outputs else None
            return prediction_from_completion(
                completion, self.taxonomy, time.perf_counter() - started, labels
            )

        return list(await asyncio.gather(*(one(q) for q in queries)))

    async def chat(
        self,
        messages: Sequence[Mapping[str, str]],
        adapter: str | None,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One chat completion (the analyst and the OpenAI-compatible passthrough)."""
        from vllm import SamplingParams

        params = SamplingParams(
            temperature=temperature,
            max_tokens=max_tokens,
            structured_outputs=json_output(json_schema) if json_schema else None,
        )
        prompt = render_prompt(self.tokenizer, messages)
        output = await self._generate(prompt, params, adapter)
        completion = output.outputs[0]
        return {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "prompt_tokens": len(output.prompt_token_ids or ()),
            "completion_tokens": len(completion.token_ids),
        }

    def shutdown(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None
