"""EngineClient over an external OpenAI-compatible server (`vllm serve`, TGI's Messages API)."""

# The router can point at a server started from a `mapperctl export` bundle instead of the in-cluster
# engine deployment. The same contract holds: the answer is constrained to the labels where the
# server supports it (vLLM `structured_outputs.choice`), the confidence is exp(sum of the returned
# token logprobs), and anything outside the taxonomy becomes other.unknown with valid=False.

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx

from llama_mapper.domain.errors import FailedPrecondition
from llama_mapper.domain.prompt import mapper_messages
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy
from llama_mapper.inference.model import MapperQuery, Prediction
from llama_mapper.inference.vllm_engine import grammar_schema, invalid_prediction
from llama_mapper.inference.vllm_engine.decoding import decided_label, decisive_prefixes


def prediction_from_chat(
    body: dict[str, Any], taxonomy: Taxonomy, latency_s: float, labels: Sequence[str] = ()
) -> Prediction:
    """Validates one OpenAI chat completion as a label answer (fail closed); `labels`: the choice
    it was asked with (an answer cut at a decisive prefix names the label it decides)."""
    try:
        choice = body["choices"][0]
        text = decided_label(
            (choice["message"]["content"] or "").strip(), choice.get("stop_reason"), labels
        )
        tokens = choice["logprobs"]["content"]
        logprob = float(sum(t["logprob"] for t in tokens))
    except (KeyError, IndexError, TypeError, ValueError):
        return invalid_prediction(latency_s)
    if (
        choice.get("finish_reason") not in ("stop", "eos_token")
        or text not in taxonomy
        or not math.isfinite(logprob)
    ):
        return invalid_prediction(latency_s)
    return Prediction(text, min(1.0, math.exp(logprob)), logprob, latency_s)


class OpenAIEngine:
    """`flavor="vllm"` sends `structured_outputs.choice` over the query's candidates (all labels
    without any) with its decisive prefixes as `stop`, as the in-cluster engine decodes;
    `"tgi"` relies on validation alone."""

    def __init__(
        self,
        base_url: str,
        *,
        flavor: str = "vllm",
        api_key: str | None = None,
        max_tokens: int = 32,
        taxonomy: Taxonomy | None = None,
        timeout_s: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self.flavor = flavor
        self.max_tokens = max_tokens
        self.taxonomy = taxonomy or default_taxonomy()

    async def _complete(
        self, adapter: str | None, messages: list[dict[str, str]], **extra: Any
    ) -> dict[str, Any]:
        body = {"model": adapter or "default", "messages": messages, "temperature": 0.0, **extra}
        response = await self.http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()

    async def predict(
        self, adapter: str, queries: list[MapperQuery]
    ) -> tuple[list[Prediction], dict[str, Any]]:
        async def one(query: MapperQuery) -> Prediction:
            labels = tuple(query.candidates or self.taxonomy.names)
            extra: dict[str, Any] = {"max_tokens": self.max_tokens, "logprobs": True}
            if self.flavor == "vllm":
                extra["structured_outputs"] = {"choice": list(labels)}
                extra["stop"] = list(decisive_prefixes(labels))
                extra["include_stop_str_in_output"] = True
            started = time.perf_counter()
            body = await self._complete(
                adapter, mapper_messages(query.detector, query.finding), **extra
            )
            asked = labels if self.flavor == "vllm" else ()
            return prediction_from_chat(body, self.taxonomy, time.perf_counter() - started, asked)

        predictions = list(await asyncio.gather(*(one(q) for q in queries)))
        return predictions, {"base_model": f"external:{self.http.base_url}", "adapter": adapter}

    async def chat(
        self, messages: list[dict[str, str]], adapter: str | None, **kw: Any
    ) -> dict[str, Any]:
        extra = {"max_tokens": kw.get("max_tokens", 256), "temperature": kw.get("temperature", 0.0)}
        if kw.get("json_schema") and self.flavor == "vllm":
            # Compact JSON, as in-process (vllm_engine.json_output).
            extra["structured_outputs"] = {
                "json": grammar_schema(kw["json_schema"]),
                "disable_any_whitespace": True,
            }
        body = await self._complete(adapter, messages, **extra)
        usage = body.get("usage", {})
        return {
            "text": body["choices"][0]["message"]["content"],
            "finish_reason": body["choices"][0].get("finish_reason"),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
        }

    async def adapters(self) -> list[dict[str, Any]]:
        response = await self.http.get("/v1/models")
        response.raise_for_status()
        return [{"name": m["id"]} for m in response.json().get("data", [])]

    async def _served(self, name: str) -> dict[str, Any]:
        if name not in {a["name"] for a in await self.adapters()}:
            raise FailedPrecondition(
                f"the external server does not serve {name!r}: start it from `mapperctl export`"
            )
        return {"name": name}

    async def load_version(self, model: str, version: int) -> dict[str, Any]:
        return await self._served(f"{model}-v{version}")

    async def load_local(self, model: str, path: str) -> dict[str, Any]:
        return await self._served(model)
