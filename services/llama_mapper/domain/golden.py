"""The frozen golden evaluation set: versioned, checked against its committed digest on every load.

It is built once (`python -m llama_mapper.domain.golden --freeze`) from its own seed and never
regenerated for a release: the dataset builder drops every training row that overlaps it.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from llama_mapper.domain import catalog
from llama_mapper.domain.errors import DataLoss, NotFound
from llama_mapper.domain.rows import REAL, canonical_json, mapper_row, sha256_text

GOLDEN_VERSION = "1.0.0"
GOLDEN_SEED = 20261125
MIN_CASES = 500
# Seen (detector, label) pairs contribute this many cases per label; held-out material up to
# HELDOUT_CASES in all.
PER_LABEL = 6
HELDOUT_CASES = 160


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
    if not path.is_file():
        raise NotFound(f"golden set {path} does not exist")
    text = path.read_text(encoding="utf-8")
    digest = rows_sha256(text)
    if bundled:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta["sha256"] != digest:
            raise DataLoss(
                f"golden set {path.name} does not match its committed digest: "
                "restore it from git; it is frozen"
            )
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows, digest


def select_golden(candidates_by_split: dict[str, list[Any]], seed: int) -> list[dict[str, Any]]:
    """Held-out material first (never-seen pairs and the held-out detector), then a stratified
    sample of seen labels from synthesized sources only: real detectors' outputs repeat too much
    to spare any for a frozen set."""
    rng = random.Random(seed)  # noqa: S311 - seeded data generation, not cryptography
    by_pair: dict[tuple[str, str], list[tuple[str, Any]]] = defaultdict(list)
    for split in ("heldout_pair", "heldout_detector"):
        for c in candidates_by_split.get(split, []):
            by_pair[(c.detector, c.label)].append((split, c))
    # Round-robin over (detector, label) pairs, so no single pair fills the held-out share.
    queues = [by_pair[pair] for pair in sorted(by_pair)]
    for queue in queues:
        rng.shuffle(queue)
    chosen: list[tuple[str, Any]] = []
    while len(chosen) < HELDOUT_CASES and any(queues):
        for queue in queues:
            if queue and len(chosen) < HELDOUT_CASES:
                chosen.append(queue.pop())
    by_label: dict[str, list[Any]] = defaultdict(list)
    for c in candidates_by_split.get("train", []):
        if c.source != REAL:
            by_label[c.label].append(c)
    for label in sorted(by_label):
        pool = by_label[label]
        rng.shuffle(pool)
        chosen.extend(("golden", c) for c in pool[:PER_LABEL])
    rows = [mapper_row(c, "golden") | {"heldout": split != "golden"} for split, c in chosen]
    rows.sort(key=lambda r: r["id"])
    return rows


def freeze(version: str = GOLDEN_VERSION) -> Path:
    from llama_mapper.datasets.builder import SIZES, generate_candidates

    candidates = generate_candidates(GOLDEN_SEED, SIZES["golden"], golden=None, progress=True)
    rows = select_golden(candidates, GOLDEN_SEED)
    if len(rows) < MIN_CASES:
        raise RuntimeError(f"golden set has {len(rows)} cases, fewer than {MIN_CASES}")
    data_path, meta_path = golden_paths(version)
    data_path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(canonical_json(row) + "\n" for row in rows)
    data_path.write_text(text, encoding="utf-8")
    meta = {
        "version": version,
        "seed": GOLDEN_SEED,
        "rows": len(rows),
        "sha256": rows_sha256(text),
        "file": data_path.name,
    }
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return data_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--freeze", action="store_true", help="(re)build the golden set; a new version only"
    )
    args = parser.parse_args()
    if args.freeze:
        print(freeze())


if __name__ == "__main__":
    main()
