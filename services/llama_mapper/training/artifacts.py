"""The run's outputs: the final adapter (safetensors only, with a sha256 manifest) and its summary."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from llama_mapper.inference.base_model import file_sha256, manifest_digest

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "training-summary.json"
# vLLM's default max_lora_rank; the registry repeats this check at registration.
SERVING_MAX_RANK = 16


def serving_problems(adapter_config: dict[str, Any], max_rank: int = SERVING_MAX_RANK) -> list[str]:
    """Why vLLM would refuse this adapter (empty when it can serve it)."""
    problems = []
    if int(adapter_config.get("r", 0)) > max_rank:
        problems.append(f"rank {adapter_config['r']} > max_lora_rank {max_rank}")
    if adapter_config.get("modules_to_save"):
        problems.append("modules_to_save is set")
    if adapter_config.get("use_dora"):
        problems.append("DoRA adapters are not served")
    return problems


def export_adapter(checkpoint_dir: Path, out_dir: Path, base_model_id: str) -> dict[str, Any]:
    """Copy the adapter out of a checkpoint into `out_dir` atomically; return its manifest."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        config = json.loads((checkpoint_dir / "adapter_config.json").read_text())
        # The cache path the workers loaded from means nothing elsewhere: record the base's id.
        config["base_model_name_or_path"] = base_model_id
        (tmp / "adapter_config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True) + "\n"
        )
        shutil.copyfile(
            checkpoint_dir / "adapter_model.safetensors", tmp / "adapter_model.safetensors"
        )
        files = {name: file_sha256(tmp / name) for name in ADAPTER_FILES}
        manifest = {
            "files": files,
            "sha256": manifest_digest(files),
            "serving_problems": serving_problems(config),
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o755)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    path = out_dir / SUMMARY_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path
