"""Small mapper / analyst datasets with a manifest and a passing validation report, for training tests.

Mapper rows come from the shipped mapping tables (raw label -> canonical label), in the data
builder's row shape (schemas/mapper-example.json: `input` messages, `output` label). The report is written the way the validation service
writes one: `passed`, `dataset_manifest_digest` and `report_digest` over the canonical JSON, and a
`report_signature` with the key the training gate checks (MAPPER_VALIDATION_SIGNING_KEY, else the
local stack's <var dir>/validation-signing-key, generated once when absent).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from llama_mapper.domain.prompt import mapper_messages
from llama_mapper.domain.report_digest import sign_report
from llama_mapper.platform.stack import local_secret
from llama_mapper.training.validation_gate import (
    MANIFEST_NAME,
    REPORT_NAME,
    canonical_digest,
    report_digest,
)


def mapper_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    from llama_mapper.domain.tables import default_tables

    pairs = sorted(
        (detector, raw, entry.labels[0])
        for detector, table in default_tables().items()
        for raw, entry in table.entries.items()
        if entry.labels
    )
    rng = random.Random(seed)
    rows = []
    for index in range(n):
        detector, raw, label = (
            pairs[index % len(pairs)] if index < len(pairs) else rng.choice(pairs)
        )
        finding: dict[str, Any] = {"label": raw, "score": round(rng.uniform(0.5, 1.0), 3)}
        rows.append(
            {
                "id": f"m{seed}-{index:05d}",
                "task": "mapper",
                "detector": detector,
                "raw_label": raw,
                "input": mapper_messages(detector, finding),
                "output": label,
            }
        )
    rng.shuffle(rows)
    return rows


def analyst_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    levels = ["low", "medium", "high", "critical"]
    rows = []
    for index in range(n):
        level = levels[index % 4]
        rows.append(
            {
                "id": f"a{seed}-{index:05d}",
                "framework": rng.choice(["SOC2", "GDPR", "HIPAA"]),
                "finding": {"label": rng.choice(["pii.email_address", "secrets.api_key"])},
                "assessment": {
                    "risk_level": level,
                    "remediation": ["rotate"],
                    "controls": ["CC6.1"],
                },
            }
        )
    return rows


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_report(directory: Path, *, passed: bool = True) -> dict[str, Any]:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    report = {
        "passed": passed,
        "dataset_manifest_digest": canonical_digest(manifest),
        "checks": [{"name": "schema", "passed": passed}],
    }
    report["report_digest"] = report_digest(report)
    key = local_secret("MAPPER_VALIDATION_SIGNING_KEY").encode("utf-8")
    report["report_signature"] = sign_report(report, key)
    (directory / REPORT_NAME).write_text(json.dumps(report, indent=2))
    return report


def write_dataset(
    directory: Path,
    *,
    adapter: str = "mapper",
    n_train: int = 64,
    n_eval: int = 16,
    seed: int = 0,
    report: bool = True,
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    make = mapper_rows if adapter == "mapper" else analyst_rows
    files = {}
    for split, n, split_seed in (("train", n_train, seed), ("eval", n_eval, seed + 1)):
        path = directory / f"{adapter}-{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in make(n, split_seed)))
        files[path.name] = _sha256(path)
    manifest = {"generator": "tests", "seed": seed, "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    if report:
        write_report(directory)
    return directory
