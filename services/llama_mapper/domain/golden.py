"""The frozen golden evaluation set: versioned, checked against its committed digest on every load."""

# Built once by `python -m llama_mapper.datasets.golden --freeze` and never regenerated for a
# release: the dataset builder drops every training row that overlaps it.

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llama_mapper.domain import catalog, jsonio
from llama_mapper.domain.errors import DataLoss, InvalidArgument, NotFound
from llama_mapper.domain.rows import sha256_text

GOLDEN_VERSION = "1.0.0"


def golden_dir() -> Path:
    return catalog.path("golden")


def golden_paths(version: str = GOLDEN_VERSION) -> tuple[Path, Path]:
    directory = golden_dir()
    return directory / f"golden-v{version}.jsonl", directory / f"golden-v{version}.json"


def rows_sha256(text: str) -> str:
    return sha256_text(text)


def load_golden(path: Path | None = None) -> tuple[list[dict[str, Any]], str]:
    """Rows and sha256 of a golden set. The bundled one must match its committed digest."""
    bundled = path is None
    data_path, meta_path = golden_paths()
    path = path or data_path
    try:
        if not path.is_file():
            raise NotFound(f"golden set {path} does not exist")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:  # a name too long, bytes that are not UTF-8
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise InvalidArgument(f"golden set {str(path)[:200]!r} cannot be read ({reason})") from None
    digest = rows_sha256(text)
    if bundled:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["sha256"] != digest:
            raise DataLoss(
                f"golden set {path.name} does not match its committed digest: "
                "restore it from git; it is frozen"
            )
    rows = [
        jsonio.loads(line, what=f"golden set line {number}")
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]
    if not all(isinstance(row, dict) for row in rows):
        raise InvalidArgument("golden set: every line must be a JSON object")
    return rows, digest
