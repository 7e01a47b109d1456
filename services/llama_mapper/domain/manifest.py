"""The dataset manifest: sha256 of every file, counts per label / detector / source / split, the
generator version and seed. Its digest (sha256 of its canonical JSON) is the dataset's address."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

from llama_mapper.domain.rows import canonical_json, sha256_text

MANIFEST_NAME = "manifest.json"
FORMAT = "llama-mapper-dataset/1"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict[str, Any]) -> str:
    return sha256_text(canonical_json(manifest))


def file_entry(path: Path, rows: list[dict[str, Any]]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "sha256": file_sha256(path),
        "bytes": path.stat().st_size,
        "rows": len(rows),
        "task": rows[0]["task"] if rows else None,
        "splits": dict(sorted(Counter(r["split"] for r in rows).items())),
    }
    return entry


def counts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    mapper = [r for r in rows if r["task"] == "mapper"]
    analyst = [r for r in rows if r["task"] == "analyst"]

    def tally(items: list[dict[str, Any]], key: str) -> dict[str, int]:
        return dict(sorted(Counter(r[key] for r in items).items()))

    return {
        "mapper": {
            "rows": len(mapper),
            "by_label": tally(mapper, "output"),
            "by_detector": tally(mapper, "detector"),
            "by_source": tally(mapper, "source"),
            "by_split": tally(mapper, "split"),
        },
        "analyst": {
            "rows": len(analyst),
            "by_label": tally(analyst, "label"),
            "by_framework": tally(analyst, "framework"),
            "by_split": tally(analyst, "split"),
        },
    }


def write_manifest(directory: Path, manifest: dict[str, Any]) -> str:
    """Writes manifest.json (sorted keys, indented for people) and returns its digest."""
    text = json.dumps(manifest, ensure_ascii=False, sort_keys=True, indent=2) + "\n"
    (directory / MANIFEST_NAME).write_text(text, encoding="utf-8")
    return manifest_digest(manifest)
