"""vLLM's offline `LLM` with LoRA, for batch evaluation: a MapperModel per adapter, and the analyst."""

# vLLM spawns its engine process: the calling script needs `if __name__ == "__main__":`.

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from llama_mapper.domain.errors import NotFound
from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS, mapper_messages
from llama_mapper.domain.rubric import Query
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy
from llama_mapper.inference.analyst import messages as analyst_prompt
from llama_mapper.inference.analyst import schema as analyst_schema
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
        self._ids = LoraIds()
        self._adapters: dict[str, tuple[AdapterRef, int]] = {}
        for adapter in adapters:
            self.add_adapter(adapter)

    def add_adapter(self, adapter: AdapterRef, key: str | None = None) -> None:
        """Loads `adapter` under `key` (its name by default), always with a new LoRA id: files
        rewritten under the same name and path never answer from the old weights' cache."""
        key = key or adapter.name
        check_adapter_dir(adapter.path, max_rank=self.config.max_lora_rank)
        self._adapters[key] = (adapter, self._ids.new())

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
        return lora_request(*self._adapters[adapter])

    def generate_labels(
        self, queries: Sequence[MapperQuery], adapter: str | None
    ) -> list[Prediction]:
        if not queries:
            return []
        lora = self._lora(adapter)
        prompts = [
            render_prompt(self.tokenizer, mapper_messages(q.detector, q.finding)) for q in queries
        ]
        choices = [q.candidates or self.labels for q in queries]
        params = [
            mapper_sampling_params(labels, self.max_tokens, self.config.decisive_stop)
            for labels in choices
        ]
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
                out.outputs[0] if out.outputs else None, self.taxonomy, per_query, labels
            )
            for out, labels in zip(outputs, choices, strict=True)
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
    JSON constrained to the query's framework grammar (rubric.completion_schema), ANALYST_MAX_TOKENS.
    What the metrics then measure is what the adapter says inside that grammar, and whether it
    finishes within the budget."""

    def __init__(self, engine: VllmEngine, adapter: str) -> None:
        self.engine = engine
        self.adapter = adapter
        self.batch_size = engine.config.max_num_seqs

    def analyze(self, queries: Sequence[Query]) -> list[str]:
        # One grammar per framework (its control ids): one generate call per framework present.
        answers: list[str] = [""] * len(queries)
        by_framework: dict[str, list[int]] = {}
        for i, q in enumerate(queries):
            by_framework.setdefault(q.framework, []).append(i)
        for indexes in by_framework.values():
            first = queries[indexes[0]]
            texts = self.engine.generate_json(
                [analyst_prompt(queries[i]) for i in indexes],
                self.adapter,
                analyst_schema(first),
                ANALYST_MAX_TOKENS,
            )
            for i, (text, _) in zip(indexes, texts, strict=True):
                answers[i] = text.strip()
        return answers
