"""The mapper model on vLLM: multi-LoRA, decoding constrained to the label set, logprob confidence."""

# Two faces over one configuration: `VllmEngine` (the offline `LLM`, for batch evaluation) and
# `AsyncVllmEngine` (vLLM's `AsyncLLM`, for the serving deployment). Both render the prompt with
# `prompt.mapper_messages`, constrain decoding to the taxonomy's labels with structured outputs
# `choice`, and turn what comes back into a `Prediction` through one validating function, so a label
# outside the taxonomy, a truncated answer or a structured-output failure becomes `other.unknown`
# with `valid=False` and never leaves the engine as a label.

from llama_mapper.inference.vllm_engine.config import (
    AdapterRef,
    VllmEngineConfig,
    apply_cpu_environment,
    cpu_environment,
    engine_kwargs,
)
from llama_mapper.inference.vllm_engine.decoding import (
    grammar_schema,
    invalid_prediction,
    json_output,
    mapper_sampling_params,
    prediction_from_completion,
)
from llama_mapper.inference.vllm_engine.offline import VllmAnalystModel, VllmEngine, VllmMapperModel
from llama_mapper.inference.vllm_engine.online import AsyncVllmEngine

__all__ = [
    "AdapterRef",
    "AsyncVllmEngine",
    "VllmAnalystModel",
    "VllmEngine",
    "VllmEngineConfig",
    "VllmMapperModel",
    "apply_cpu_environment",
    "cpu_environment",
    "engine_kwargs",
    "grammar_schema",
    "invalid_prediction",
    "json_output",
    "mapper_sampling_params",
    "prediction_from_completion",
]
