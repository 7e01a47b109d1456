"""Decoding for the mapper and the analyst (pure): the label choice, JSON grammars, prompts, and one
validating function from a completion to a Prediction."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_mapper.domain.taxonomy import UNKNOWN, Taxonomy
from llama_mapper.inference.model import Prediction
from llama_mapper.inference.vllm_engine.config import AdapterRef

log = logging.getLogger(__name__)


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


class LoraIds:
    """vLLM keys adapters by an int: a fresh id per (re)load, so a reload never aliases the old one."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def new(self) -> int:
        return next(self._next)


def cache_identity(adapter: AdapterRef) -> str:
    """The name vLLM knows a loaded adapter by. vLLM keys prefix-cache blocks on the LoRA name and
    path, not its int id (vLLM issue #42125): an adapter reloaded under the same name and path with
    other weights would answer from the old weights' cached blocks. The content digest in the name
    gives every distinct set of weights its own cache namespace."""
    return f"{adapter.name}@{adapter.sha256[:16]}" if adapter.sha256 else adapter.name


def adapter_digest(path: Path) -> str:
    """sha256 over the adapter's config and weights, for adapters that come without one."""
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        digest.update(name.encode() + b"\0")
        with open(path / name, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def lora_request(adapter: AdapterRef, lora_id: int) -> Any:
    from vllm.lora.request import LoRARequest

    return LoRARequest(cache_identity(adapter), lora_id, str(adapter.path))
