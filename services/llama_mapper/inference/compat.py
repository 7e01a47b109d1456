"""Serving compatibility of an adapter, decided once: what vLLM's multi-LoRA engine will load."""

# The registry applies it at registration, the engines before loading, `mapperctl export` before
# bundling; an incompatible adapter is INVALID_ARGUMENT everywhere.

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument

LLAMA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Phi-3 fuses the projections; vLLM loads LoRA on the fused names.
PHI3_TARGET_MODULES = ("qkv_proj", "o_proj", "gate_up_proj", "down_proj")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# A safetensors header is JSON; a bigger one is not an adapter we would serve.
_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class AdapterInfo:
    """What the registry keeps from a compatible adapter_config.json."""

    rank: int
    target_modules: tuple[str, ...]
    base_model_name_or_path: str


def supported_target_modules(base_model_id: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Modules the serving engine can attach LoRA to for this base model's family."""
    family = PHI3_TARGET_MODULES if "phi-3" in base_model_id.lower() else LLAMA_TARGET_MODULES
    return frozenset(family) | frozenset(extra)


def same_base(adapter_base: str, base_model_id: str) -> bool:
    """The adapter names our base: the same id, or a local copy whose directory has its name.

    Training loads the base from a local cache directory, so adapter_config.json often records
    `/cache/models/SmolLM2-135M-Instruct` for the base `HuggingFaceTB/SmolLM2-135M-Instruct`; the
    sha256 in the lineage is what pins the weights, this only catches an adapter of another base.
    """
    if not adapter_base:
        return True
    if adapter_base == base_model_id:
        return True
    return (
        Path(adapter_base.rstrip("/")).name.lower()
        == base_model_id.rstrip("/").split("/")[-1].lower()
    )


def check_adapter_config(
    raw: bytes,
    *,
    base_model_id: str | None,
    max_rank: int,
    extra_target_modules: Iterable[str] = (),
) -> AdapterInfo:
    """Raise InvalidArgument unless the serving engine can load an adapter with this config.
    `base_model_id` None (an engine that loads a directory) skips the base-name check."""
    config = jsonio.loads(raw, limits=jsonio.JsonLimits(max_bytes=1 << 20), what=ADAPTER_CONFIG)
    if not isinstance(config, dict):
        raise InvalidArgument(f"{ADAPTER_CONFIG} must be a JSON object")

    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise InvalidArgument(f"{ADAPTER_CONFIG}: peft_type {peft_type!r} is not LORA")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise InvalidArgument(f"{ADAPTER_CONFIG}: r must be a positive integer, got {rank!r}")
    if rank > max_rank:
        raise InvalidArgument(
            f"{ADAPTER_CONFIG}: LoRA rank {rank} exceeds the serving limit {max_rank}"
        )
    if config.get("use_dora"):
        raise InvalidArgument(f"{ADAPTER_CONFIG}: DoRA adapters (use_dora) cannot be served")
    if config.get("modules_to_save"):
        raise InvalidArgument(
            f"{ADAPTER_CONFIG}: modules_to_save {config['modules_to_save']!r} cannot be served"
        )

    modules = config.get("target_modules")
    if isinstance(modules, str):
        # PEFT reads a string as a regular expression; the engine needs explicit module names.
        raise InvalidArgument(
            f"{ADAPTER_CONFIG}: target_modules must be a list of module names, not the pattern {modules!r}"
        )
    if not isinstance(modules, list) or not modules or not all(isinstance(m, str) for m in modules):
        raise InvalidArgument(f"{ADAPTER_CONFIG}: target_modules must be a non-empty list of names")
    supported = supported_target_modules(base_model_id or "", extra_target_modules)
    unsupported = sorted({m for m in modules if m.rsplit(".", 1)[-1] not in supported})
    if unsupported:
        raise InvalidArgument(
            f"{ADAPTER_CONFIG}: target modules {unsupported} are not supported for {base_model_id} "
            f"(supported: {sorted(supported)})"
        )

    adapter_base = config.get("base_model_name_or_path") or ""
    if not isinstance(adapter_base, str):
        raise InvalidArgument(f"{ADAPTER_CONFIG}: base_model_name_or_path must be a string")
    if base_model_id is not None and not same_base(adapter_base, base_model_id):
        raise InvalidArgument(
            f"{ADAPTER_CONFIG}: base_model_name_or_path {adapter_base!r} does not match the "
            f"registered base model {base_model_id!r}"
        )
    return AdapterInfo(
        rank=rank, target_modules=tuple(sorted(modules)), base_model_name_or_path=adapter_base
    )


def check_safetensors_header(path: Path) -> int:
    """Raise InvalidArgument unless the file starts with a safetensors header; return its tensor count."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise InvalidArgument(f"{ADAPTER_WEIGHTS} is too short to be safetensors")
        (length,) = struct.unpack("<Q", prefix)
        if length == 0 or length > _MAX_SAFETENSORS_HEADER:
            raise InvalidArgument(f"{ADAPTER_WEIGHTS} has no valid safetensors header")
        header = f.read(length)
    try:
        meta = jsonio.loads(header, limits=jsonio.JsonLimits(max_bytes=_MAX_SAFETENSORS_HEADER))
    except InvalidArgument:
        raise InvalidArgument(f"{ADAPTER_WEIGHTS} has no valid safetensors header") from None
    if not isinstance(meta, dict):
        raise InvalidArgument(f"{ADAPTER_WEIGHTS} has no valid safetensors header")
    tensors = [k for k in meta if k != "__metadata__"]
    if not tensors:
        raise InvalidArgument(f"{ADAPTER_WEIGHTS} holds no tensors")
    return len(tensors)


def check_adapter_dir(
    path: Path,
    *,
    max_rank: int,
    base_model_id: str | None = None,
    extra_target_modules: Iterable[str] = (),
) -> AdapterInfo:
    """The whole directory: both files present, a servable config, a real safetensors file."""
    config_file, weights = path / ADAPTER_CONFIG, path / ADAPTER_WEIGHTS
    if not config_file.is_file() or not weights.is_file():
        raise InvalidArgument(
            f"{path} is not a LoRA adapter (needs {ADAPTER_CONFIG} + {ADAPTER_WEIGHTS})"
        )
    info = check_adapter_config(
        config_file.read_bytes(),
        base_model_id=base_model_id,
        max_rank=max_rank,
        extra_target_modules=extra_target_modules,
    )
    check_safetensors_header(weights)
    return info
