"""Bench payloads from the golden evaluation set, written once to JSON Lines for the locustfile."""

# Golden rows hold each finding as the model sees it (label, score, vendor metadata), not the
# detector's native output the API takes. Each finding is put back into its detector's documented
# shape (the data builder's vendor shapes; Presidio's and detect-secrets' own), or, for detectors
# without a reader, into the generic list / free-text envelope the hybrid mapper reads. Cases whose
# raw label cannot live in the native shape (a paraphrased label inside Llama Guard's `unsafe\nS1`
# grammar) are left out and counted. The locustfile only reads the file: the golden set, the
# readers and the taxonomy never load inside the gevent-patched Locust process.

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import MapperError
from llama_mapper.domain.golden import load_golden
from llama_mapper.domain.readers.base import known_detectors, read
from llama_mapper.evaluation.evalset import MapperCase, mapper_case

PAYLOAD_SEED = 20261125


@dataclass
class PayloadSet:
    """What went into the payload file, for the report."""

    path: Path
    golden_sha256: str
    map_count: int = 0
    analyze_count: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    by_detector: Counter[str] = field(default_factory=Counter)


def _presidio(rng: random.Random, raws: list[str], score: float) -> list[dict[str, Any]]:
    out = []
    for raw in raws:
        start = rng.randint(0, 400)
        out.append(
            {"entity_type": raw, "start": start, "end": start + rng.randint(4, 30), "score": score}
        )
    return out


def _detect_secrets(rng: random.Random, raws: list[str]) -> dict[str, Any]:
    secrets = [
        {
            "type": raw,
            "filename": "app/settings.py",
            "hashed_secret": hashlib.sha1(f"{raw}{rng.random()}".encode()).hexdigest(),  # noqa: S324 - detect-secrets' own digest
            "is_verified": False,
            "line_number": rng.randint(1, 200),
        }
        for raw in raws
    ]
    return {"version": "1.5.0", "results": {"app/settings.py": secrets} if secrets else {}}


def native_output(case: MapperCase, rng: random.Random) -> Any:
    """The detector output that reads back to this case's finding (raises on a shape mismatch)."""
    from llama_mapper.datasets.generators.vendors import SHAPES

    raw = str(case.finding.get("label", ""))
    raws = [raw] if raw else []
    score = case.finding.get("score")
    score = float(score) if isinstance(score, int | float) else 0.85
    if case.detector in SHAPES:
        output = SHAPES[case.detector](rng, raws)
    elif case.detector == "presidio":
        output = _presidio(rng, raws, score)
    elif case.detector == "detect-secrets":
        output = _detect_secrets(rng, raws)
    elif case.source == "free_text":
        return raw
    else:
        return [dict(case.finding)] if raws else []
    report = read(case.detector, output)  # a reader's refusal is the caller's signal to skip
    if raws and raw not in {f.raw_label for f in report.findings}:
        raise MapperError(f"{case.detector} shape does not carry {raw!r}")
    return output


def analyze_body(case: MapperCase, framework: str, rng: random.Random) -> dict[str, Any] | None:
    """An /v1/analyze body: a framework, the canonical finding the mapper returns for the case
    and a context (schemas/analyst-context.json) drawn as the analyst's training data draws it,
    so the load exercises the rubric's modifiers and the adapter's prompts as served."""
    from llama_mapper.datasets.analyst import analyst_finding, sample_context
    from llama_mapper.domain import rubric
    from llama_mapper.domain.taxonomy import default_taxonomy

    taxonomy = default_taxonomy()
    label = sorted(case.labels)[0]
    if label not in taxonomy.labels:
        return None
    raw = str(case.finding.get("label", ""))
    finding = analyst_finding(label, taxonomy, case.detector, raw, rng.uniform(0.3, 0.99))
    context = sample_context(rng, label)
    try:
        rubric.query(framework, finding, context, taxonomy=taxonomy)  # as the router reads it
    except MapperError:
        return None  # a body the router would refuse says nothing about its latency
    return {"framework": framework, "finding": finding, "context": context}


def write_payloads(path: Path, *, golden: Path | None = None) -> PayloadSet:
    """One JSON object per line: {"kind": "map", "detector", "output"} or {"kind": "analyze", ...}."""
    from llama_mapper.domain.rubric import FRAMEWORKS

    rows, digest = load_golden(golden)
    rng = random.Random(PAYLOAD_SEED)  # noqa: S311 - reproducible load, not cryptography
    frameworks = sorted(FRAMEWORKS)  # the frameworks /v1/analyze takes
    readers = set(known_detectors())
    result = PayloadSet(path=path, golden_sha256=digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for index, row in enumerate(rows):
            case = mapper_case(row)
            try:
                output = native_output(case, rng)
            except MapperError:
                result.skipped[case.detector] += 1
                continue
            record = {"kind": "map", "detector": case.detector, "output": output}
            fh.write(json.dumps(record, separators=(",", ":")) + "\n")
            result.map_count += 1
            result.by_detector[case.detector if case.detector in readers else "(generic)"] += 1
            body = analyze_body(case, frameworks[index % len(frameworks)], rng)
            if body is not None:
                fh.write(json.dumps({"kind": "analyze", **body}, separators=(",", ":")) + "\n")
                result.analyze_count += 1
    return result
