"""Building the frozen golden set (`python -m llama_mapper.datasets.golden --freeze`), once per version."""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from llama_mapper.domain.golden import GOLDEN_VERSION, golden_paths, rows_sha256
from llama_mapper.domain.rows import REAL, canonical_json, mapper_row

GOLDEN_SEED = 20261125
MIN_CASES = 500
# Seen (detector, label) pairs contribute this many cases per label; held-out material up to
# HELDOUT_CASES in all.
PER_LABEL = 6
HELDOUT_CASES = 160


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
