"""Decoding for the mapper and the analyst (pure): the label choice, JSON grammars, prompts, and one
validating function from a completion to a Prediction."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
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


@lru_cache(maxsize=4096)
def decisive_prefixes(labels: tuple[str, ...]) -> Mapping[str, str]:
    """Stop string -> label: for each label, its shortest prefix that no other label of the set
    starts with and that occurs nowhere else in the set (not inside any label past its first
    character), so that text the label grammar lets the model write contains it only once the
    model has chosen that label. A label that is a prefix of another has none: its end decides.

    Decoding stops there: the rest of a label is forced by the grammar (each further token has
    probability 1 among the labels, up to how the rest is split into tokens), so the label and its
    probability among the labels are known a few engine steps before the end token.
    """
    stops: dict[str, str] = {}
    for label in labels:
        for end in range(1, len(label) + 1):
            prefix = label[:end]
            if any(other != label and other.startswith(prefix) for other in labels):
                continue
            if any(prefix in other[1:] for other in labels):
                continue
            stops[prefix] = label
            break
    return MappingProxyType(stops)


def decided_label(text: str, stop_reason: Any, labels: Sequence[str]) -> str:
    """The label an answer names: `text` itself, or, for an answer cut at one of the decisive
    prefixes of `labels` (stop_reason is that string), the one label it decides. The stop string
    occurs in no label past its start, so an answer cut at it is exactly that string."""
    if isinstance(stop_reason, str) and labels and text == stop_reason:
        return decisive_prefixes(tuple(labels)).get(stop_reason, text)
    return text


def mapper_sampling_params(
    labels: Sequence[str], max_tokens: int, decisive_stop: bool = True
) -> Any:
    """Greedy decoding constrained to `labels`; `decisive_stop` ends it as soon as the text names
    one label alone (decisive_prefixes), fewer engine steps per answer for the same label."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    stops = list(decisive_prefixes(tuple(labels))) if decisive_stop else []
    # logprobs=0 returns the chosen token's logprob only; greedy, so the label is the mode.
    return SamplingParams(
        temperature=0.0,
        max_tokens=max_tokens,
        logprobs=0,
        stop=stops or None,
        include_stop_str_in_output=True,
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


def prediction_from_completion(
    completion: Any, taxonomy: Taxonomy, latency_s: float, labels: Sequence[str] = ()
) -> Prediction:
    """Validates one vLLM CompletionOutput: a whole taxonomy label with logprobs, or other.unknown.

    The confidence is exp(sum of the generated tokens' logprobs). vLLM computes those logprobs
    after the structured-output mask, so they are the probability of this label among labels.
    `labels`: the set the answer was chosen in; a completion stopped at one of its decisive
    prefixes answers the one label that prefix decides.
    """
    text = decided_label(
        (getattr(completion, "text", None) or "").strip(),
        getattr(completion, "stop_reason", None),
        labels,
    )
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
