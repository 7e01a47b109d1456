"""Training configs: YAML validated against schemas/training-config.json, then the schema's defaults filled in."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.schemas import load_schema, validate
from llama_mapper.platform.settings.common import common

SCHEMA = "training-config"
# Relative paths in a config are tried against the working directory first, then against this
# directory: `ray job submit --working-dir .` runs the entry point in a copy of the repository that
# lacks git-ignored data/, so `mapperctl train submit` passes the caller's checkout here.


def _fill_defaults(schema: dict[str, Any], instance: dict[str, Any]) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance:
            if "default" in sub:
                instance[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and key not in schema.get("required", []):
                instance[key] = {}
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(sub, instance[key])


def resolve_path(value: str) -> str:
    """Absolute path for a local path (s3:// URIs pass through)."""
    if "://" in value:
        return value
    if "\x00" in value:  # os.path raises ValueError on it: the caller's error, not a crash
        raise InvalidArgument("a path must not contain NUL characters")
    try:
        path = Path(os.path.expandvars(value)).expanduser()
    except RuntimeError:  # `~nobody/...`: a user this machine does not have
        raise InvalidArgument(f"path {value[:200]!r}: no such user's home directory") from None
    if path.is_absolute():
        return str(path)
    candidates = [Path.cwd() / path]
    project_dir = common().project_dir
    if project_dir is not None:
        candidates.append(project_dir / path)
    for candidate in candidates:
        if candidate.exists():
            return str(candidate.resolve())
    return str(candidates[-1].resolve())


def load_config(source: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    """Parse, validate (InvalidArgument naming the JSON path) and complete a training config."""
    if isinstance(source, dict):
        config = copy.deepcopy(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidArgument(f"training config {path} does not exist")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InvalidArgument(f"training config {path} is not valid YAML: {exc}") from exc
    validate(SCHEMA, config)
    _fill_defaults(load_schema(SCHEMA), config)
    config["dataset"]["path"] = resolve_path(config["dataset"]["path"])
    storage = config["storage"]
    storage["path"] = resolve_path(storage.get("path") or str(common().cache_dir / "runs"))
    storage.setdefault("registry", "")
    base = config["base_model"]
    if base["id"].startswith((".", "~", "/")) or "$" in base["id"]:
        base["id"] = resolve_path(base["id"])
    return config
