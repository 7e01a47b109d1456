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


def test_a_gpu_engine_replica_reserves_a_gpu_and_a_cpu_one_none():
    from llama_mapper.platform.settings.serving import ServingSettings

    assert ServingSettings().engine_actor_options() == {"num_cpus": 1.0}
    gpu = ServingSettings(engine=VllmEngineConfig(device_profile="gpu", dtype="bfloat16"))
    # Ray hides every GPU from an actor that reserves none: vLLM would find no CUDA device.
    assert gpu.engine_actor_options() == {"num_cpus": 1.0, "num_gpus": 1.0}
    assert gpu.engine_actor_options(treatment=True) == {"num_cpus": 1.0, "num_gpus": 1.0}
    shared = gpu.model_copy(update={"engine_num_gpus": 0.5, "treatment_engine_num_gpus": 0.5})
    assert shared.engine_actor_options()["num_gpus"] == 0.5
    assert shared.engine_actor_options(treatment=True)["num_gpus"] == 0.5
    # A treatment overridden onto the CPU profile reserves no GPU.
    mixed = gpu.model_copy(update={"treatment_engine_overrides": {"device_profile": "cpu"}})
    assert mixed.engine_actor_options(treatment=True) == {"num_cpus": 1.0}


def test_a_misspelled_device_profile_is_refused_not_read_as_cpu():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="device_profile"):
        VllmEngineConfig(device_profile="GPU")


def test_the_evaluation_builds_the_engine_serving_builds(monkeypatch):
    from llama_mapper.evaluation import models
    from llama_mapper.platform.settings.serving import served_engine_config

    monkeypatch.setenv("MAPPER_SERVING_ENGINE__DTYPE", "bfloat16")
    monkeypatch.setenv("MAPPER_SERVING_ENGINE__BLOCK_SIZE", "64")
    config = served_engine_config("/models/base")
    assert (config.base_model, config.dtype, config.block_size) == ("/models/base", "bfloat16", 64)
    built = []
    monkeypatch.setattr(
        "llama_mapper.inference.vllm_engine.VllmEngine", lambda config: built.append(config)
    )
    models._vllm_engine(Path("/models/base"), keep=False)
    assert built == [config]


def test_auto_dtype_is_bfloat16_where_the_hardware_multiplies_it_fastest(tmp_path):
    from llama_mapper.inference.vllm_engine.config import cpu_flags, engine_dtype

    auto = VllmEngineConfig(dtype="auto")
    assert engine_dtype(auto, frozenset({"avx512f", "amx_bf16", "amx_tile"})) == "bfloat16"
    assert engine_dtype(auto, frozenset({"avx512f", "avx2"})) == "float32"
    assert engine_dtype(VllmEngineConfig(dtype="auto", device_profile="gpu"), frozenset()) == (
        "bfloat16"
    )
    # Set explicitly, it is what the engine gets, whatever the CPU.
    assert engine_dtype(VllmEngineConfig(), frozenset({"amx_bf16"})) == "float32"
    assert engine_kwargs(VllmEngineConfig(dtype="float16"), Path("/m"))["dtype"] == "float16"
    assert engine_kwargs(auto, Path("/m"))["dtype"] in {"bfloat16", "float32"}  # never 'auto'
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse", "avx512f", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
