"""The vLLM engine's arguments (pure: no engine is started)."""

from pathlib import Path

from llama_mapper.inference.vllm_engine.config import (
    CPU_BLOCK_SIZE,
    VllmEngineConfig,
    engine_kwargs,
    kv_block_size,
)


def test_the_cpu_engine_caches_the_shared_prompt_in_blocks_shorter_than_it():
    # vLLM's CPU default (128 tokens) is longer than a mapper prompt's shared part: no block
    # would ever be full, so nothing would be served from the prefix cache.
    kwargs = engine_kwargs(VllmEngineConfig(), Path("/m"))
    assert kwargs["block_size"] == CPU_BLOCK_SIZE == 32 and kwargs["enable_prefix_caching"]
    assert kv_block_size(VllmEngineConfig(block_size=64)) == 64


def test_the_gpu_engine_keeps_vllms_block_size_unless_told():
    assert "block_size" not in engine_kwargs(VllmEngineConfig(device_profile="gpu"), Path("/m"))
    gpu = VllmEngineConfig(device_profile="gpu", block_size=16)
    assert engine_kwargs(gpu, Path("/m"))["block_size"] == 16
