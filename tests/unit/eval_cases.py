"""A small eval set built from the shipped mapping tables, for evaluation tests (no data builder needed)."""

from __future__ import annotations

import random
from pathlib import Path

from llama_mapper.core.tables import default_tables
from llama_mapper.evaluation.evalset import write_eval_set


def _typo(text: str, rng: random.Random) -> str:
    i = rng.randrange(1, max(2, len(text) - 1))
    return text[:i] + text[i + 1 :] + "q"


def table_rows(per_detector: int = 6, seed: int = 0) -> list[dict]:
    """Exact table entries (rules map them), misspelt ones (held out: the model's job), gibberish."""
    rng = random.Random(seed)
    rows = []
    for name, table in sorted(default_tables().items()):
        keys = sorted(table.entries)[:per_detector]
        for key in keys:
            labels = list(table.entries[key].labels)
            rows.append(
                {
                    "id": f"{name}:{key}",
                    "detector": name,
                    "finding": {"label": key, "score": 0.97},
                    "labels": labels,
                    "split": "test",
                }
            )
        for key in keys[:2]:
            rows.append(
                {
                    "id": f"{name}:{key}:typo",
                    "detector": name,
                    "finding": {"label": _typo(key, rng), "score": 0.97},
                    "labels": list(table.entries[key].labels),
                    "split": "held_out_pairs",
                }
            )
        rows.append(
            {
                "id": f"{name}:gibberish",
                "detector": name,
                "finding": {"label": "zxqv-" + name[:3]},
                "labels": ["other.unknown"],
                "split": "test",
            }
        )
    return rows


def build_eval_set(directory: Path, **kwargs) -> Path:
    return write_eval_set(directory, table_rows(**kwargs))
