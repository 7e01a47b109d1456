"""`mapperctl data build`: mapper and analyst rows from real and synthesized detector output, split
with held-out (detector, label) pairs and a held-out detector, written as JSON Lines + manifest."""

from __future__ import annotations

import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llama_mapper.datasets import analyst
from llama_mapper.datasets.generators import real, shapes, texts, variants, vendors
from llama_mapper.domain import golden
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.manifest import FORMAT, counts, file_entry, write_manifest
from llama_mapper.domain.readers.generic import read_generic
from llama_mapper.domain.rows import (
    ENVELOPE,
    FREE_TEXT,
    GENERATOR_VERSION,
    REAL,
    VENDOR,
    Candidate,
    analyst_row,
    canonical_json,
    mapper_row,
    sha256_text,
    user_text,
)
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.validation.policy import Policy
from llama_mapper.validation.similarity import near_duplicates, ngram_overlap, reference_ngrams

log = logging.getLogger(__name__)

# The held-out split: one whole detector, and (detector, label) pairs whose label the other
# detectors still teach. Evaluation on them measures generalization, not memory.
HELDOUT_DETECTOR = "detoxify"
HELDOUT_PAIRS = frozenset(
    {
        ("presidio", "pii.ip_address"),
        ("detect-secrets", "credentials.private_key"),
        ("aws-comprehend", "pii.passport_number"),
        ("google-dlp", "financial.bank_account"),
        ("azure-content-safety", "self_harm.general"),
        ("openai-moderation", "violence.graphic"),
        ("llama-guard", "illicit.cybercrime"),
        ("bedrock-guardrails", "security.prompt_injection"),
    }
)
EVAL_FRACTION = 0.1
FILES = {
    "mapper-train.jsonl": ("mapper", ("train",)),
    "mapper-eval.jsonl": ("mapper", ("eval",)),
    "mapper-heldout.jsonl": ("mapper", ("heldout_pair", "heldout_detector", "heldout_shape")),
    "mapper-calibration.jsonl": ("mapper", ("calibration",)),
    "analyst-train.jsonl": ("analyst", ("train",)),
    "analyst-eval.jsonl": ("analyst", ("eval",)),
}
# Real detector output and vendor shapes are kept first when a label is over its cap.
_SOURCE_PRIORITY = {REAL: 0, VENDOR: 1}


@dataclass(frozen=True)
class Size:
    pii_texts: int
    secret_texts: int
    vendor_per_label: int
    variants_per_label: int
    envelopes_per_label: int
    free_text_per_label: int
    gibberish: int
    no_findings: int
    analyst_rows: int
    max_per_label: int
    calibration_per_label: int = 0  # model-bound calibration candidates drawn per label
    shapes_per_label: int = 0  # held-out native outputs per label (heldout_shape)


# The share of training rows the rules already answer (exact vendor labels, real detector output):
# the model is asked only about what the rules miss, so most of its steps go there; the rest keeps
# the vendor vocabulary in view for detectors and shapes no table covers.
RULED_SHARE = 0.3
# Above the validation policy's min_examples_per_label (20), whatever the mix.
MIN_ROWS_PER_LABEL = 32


SIZES = {
    "default": Size(1500, 600, 10, 60, 24, 24, 200, 80, 1800, 240, 40, 3),
    "small": Size(80, 40, 2, 30, 8, 8, 40, 30, 250, 60),
    "golden": Size(300, 150, 3, 10, 4, 4, 40, 30, 0, 0),
}


def split_of(candidate: Candidate) -> str:
    if candidate.detector == HELDOUT_DETECTOR:
        return "heldout_detector"
    if (candidate.detector, candidate.label) in HELDOUT_PAIRS:
        return "heldout_pair"
    # A stable hash of the prompt, so a prompt lands in the same split whatever else is built.
    bucket = int(sha256_text(candidate.prompt_key())[:8], 16) / 0xFFFFFFFF
    return "eval" if bucket < EVAL_FRACTION else "train"


def generate_candidates(
    seed: int, size: Size, *, golden: list[dict[str, Any]] | None, progress: bool = True
) -> dict[str, list[Candidate]]:
    """Every source's candidates, deduplicated by prompt and split; with `golden`, train and eval
    candidates that overlap it as the leakage check measures are dropped."""
    taxonomy = default_taxonomy()
    rules = RulesMapper()
    pool = real.real_candidates(
        texts.pii_texts(size.pii_texts, seed),
        texts.secret_texts(size.secret_texts, seed),
        rules,
        progress=progress,
    )
    pool.extend(vendors.vendor_candidates(rules, size.vendor_per_label, seed))
    gen = variants.VariantGenerator(taxonomy, rules, seed)
    for label in tqdm(taxonomy.names, desc="variants", unit="label", disable=not progress):
        pool.extend(gen.label_variants(label, size.variants_per_label))
        pool.extend(gen.envelopes(label, size.envelopes_per_label))
        pool.extend(gen.free_text(label, size.free_text_per_label))
    pool.extend(gen.gibberish(size.gibberish))
    pool.extend(gen.no_findings(size.no_findings))

    policy = Policy()
    reference = (
        reference_ngrams((user_text(r) for r in golden), policy.leakage_ngram_size)
        if golden
        else set()
    )
    seen: set[str] = set()
    by_split: dict[str, list[Candidate]] = defaultdict(list)
    leaked = 0
    for candidate in pool:
        key = candidate.prompt_key()
        if key in seen:
            continue
        seen.add(key)
        split = split_of(candidate)
        if reference and split in ("train", "eval"):
            text = user_text(mapper_row(candidate, split))
            if (
                ngram_overlap(text, reference, policy.leakage_ngram_size)
                >= policy.max_leakage_overlap
            ):
                leaked += 1
                continue
        by_split[split].append(candidate)
    log.info("candidates: %d distinct prompts, %d dropped as golden overlap", len(seen), leaked)
    calibration = calibration_candidates(
        seed,
        size,
        rules,
        seen=seen,
        reference=reference,
        leakage_n=policy.leakage_ngram_size,
        max_overlap=policy.max_leakage_overlap,
    )
    if calibration:
        by_split["calibration"] = calibration
    return dict(by_split)


def model_bound(candidate: Candidate, rules: RulesMapper) -> bool:
    """Whether serving would ask the model about this finding (the rules leave it)."""
    match = rules.match(candidate.finding)
    return match is not None and not match.matched


def calibration_candidates(
    seed: int,
    size: Size,
    rules: RulesMapper,
    *,
    seen: set[str],
    reference: set[tuple[str, ...]],
    leakage_n: int,
    max_overlap: float,
) -> list[Candidate]:
    """Model-bound cases for fitting the calibration: drawn from their own seed, each prompt
    distinct from every training, eval and held-out prompt, none overlapping the golden set."""
    if size.calibration_per_label <= 0:
        return []
    taxonomy = rules.taxonomy
    gen = variants.VariantGenerator(taxonomy, rules, seed + 7919)
    per = size.calibration_per_label
    pool: list[Candidate] = []
    for label in taxonomy.names:
        pool.extend(gen.label_variants(label, per))
        pool.extend(gen.envelopes(label, per // 2))
        pool.extend(gen.free_text(label, per // 2))
    pool.extend(gen.gibberish(per * 3))
    pool.extend(gen.no_findings(per * 2))
    out = []
    for candidate in pool:
        key = candidate.prompt_key()
        if (
            key in seen
            or candidate.detector == HELDOUT_DETECTOR
            or not model_bound(candidate, rules)
        ):
            continue
        if (candidate.detector, candidate.label) in HELDOUT_PAIRS:
            continue
        text = user_text(mapper_row(candidate, "calibration"))
        if reference and ngram_overlap(text, reference, leakage_n) >= max_overlap:
            continue
        seen.add(key)
        out.append(candidate)
    return out


def _training_mix(
    candidates: list[Candidate], spec: Size, rules: RulesMapper, rng: random.Random
) -> list[Candidate]:
    """Every model-bound candidate (per-label cap), and rule-answered ones up to RULED_SHARE."""
    bound: list[Candidate] = []
    ruled: list[Candidate] = []
    for c in candidates:
        (bound if model_bound(c, rules) else ruled).append(c)
    bound = _cap(bound, spec.max_per_label, rng)
    ruled = _cap(ruled, spec.max_per_label, rng)
    room = int(len(bound) * RULED_SHARE / (1 - RULED_SHARE))
    if len(ruled) <= room:
        return bound + ruled
    # Real detector output and vendor shapes first, as the cap keeps them; every label topped up
    # to MIN_ROWS_PER_LABEL first, so a label the rules mostly answer is still taught.
    rng.shuffle(ruled)
    ruled.sort(key=lambda c: _SOURCE_PRIORITY.get(c.source, 2))
    have = Counter(c.label for c in bound)
    kept, rest = [], []
    for c in ruled:
        if have[c.label] < MIN_ROWS_PER_LABEL:
            have[c.label] += 1
            kept.append(c)
        else:
            rest.append(c)
    return bound + kept + rest[: max(room - len(kept), 0)]


def heldout_shape_rows(seed: int, size: Size, rules: RulesMapper) -> list[dict[str, Any]]:
    """Native outputs of detectors and envelopes training never saw (generators/shapes.py), each
    with the prompt serving builds from what the generic reader finds in it."""
    if size.shapes_per_label <= 0:
        return []
    rows: dict[str, dict[str, Any]] = {}
    for detector, output, label, shape in shapes.native_cases(
        rules.taxonomy, rules, seed, size.shapes_per_label
    ):
        (finding,) = read_generic(detector, output)
        source = FREE_TEXT if shape.startswith("free_text") else ENVELOPE
        row = mapper_row(Candidate.of(finding, (label,), source), "heldout_shape")
        row["native"] = output
        rows.setdefault(row["id"], row)
    return sorted(rows.values(), key=lambda r: r["id"])


def _cap(candidates: list[Candidate], max_per_label: int, rng: random.Random) -> list[Candidate]:
    by_label: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_label[c.label].append(c)
    kept = []
    for label in sorted(by_label):
        pool = by_label[label]
        rng.shuffle(pool)
        pool.sort(key=lambda c: _SOURCE_PRIORITY.get(c.source, 2))
        kept.extend(pool[:max_per_label])
    return kept


def _drop_near_duplicates(rows: list[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    texts_ = [user_text(r) + " " + r["output"] for r in rows]
    dupes = near_duplicates(texts_, policy.near_duplicate_threshold)
    return [r for i, r in enumerate(rows) if i not in dupes]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(canonical_json(row) + "\n")


def build(
    out: Path, *, seed: int = 0, size: str = "default", progress: bool = True
) -> dict[str, Any]:
    """Builds the dataset into `out` and returns its manifest."""
    started = time.monotonic()
    spec = SIZES[size]
    golden_rows, golden_sha = golden.load_golden()
    by_split = generate_candidates(seed, spec, golden=golden_rows, progress=progress)
    rng = random.Random(f"{seed}:build")  # noqa: S311 - seeded data generation, not cryptography
    policy = Policy()

    rules = RulesMapper()
    mapper_rows: dict[str, list[dict[str, Any]]] = {}
    for split, candidates in sorted(by_split.items()):
        if split == "train":
            candidates = _training_mix(candidates, spec, rules, rng)
        elif split == "eval":
            candidates = _cap(candidates, max(spec.max_per_label // 4, 8), rng)
        rows = sorted((mapper_row(c, split) for c in candidates), key=lambda r: r["id"])
        mapper_rows[split] = _drop_near_duplicates(rows, policy)

    shape_rows = heldout_shape_rows(seed, spec, rules)
    if shape_rows:
        mapper_rows["heldout_shape"] = shape_rows

    sources = [(r["output"], r["detector"], r["raw_label"]) for r in mapper_rows.get("train", [])]
    analyst_rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    seen_ids: set[str] = set()
    for example in analyst.analyst_examples(
        sources, default_taxonomy(), default_frameworks(), spec.analyst_rows, seed
    ):
        # The split is the example's held-out combination, never the row's hash: no eval
        # combination (label x framework x context) is ever trained on.
        row = analyst_row(
            example.framework, example.finding, example.assessment, example.split, example.context
        )
        if row["id"] in seen_ids:
            continue
        seen_ids.add(row["id"])
        analyst_rows[row["split"]].append(row)
    for split in analyst_rows:
        analyst_rows[split] = _drop_near_duplicates(
            sorted(analyst_rows[split], key=lambda r: r["id"]), policy
        )

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    every_row: list[dict[str, Any]] = []
    for name, (task, splits) in FILES.items():
        source = mapper_rows if task == "mapper" else analyst_rows
        rows = [row for split in splits for row in source.get(split, [])]
        schema = "mapper-example" if task == "mapper" else "analyst-example"
        for row in rows:
            validate(schema, row)
        _write_jsonl(out / name, rows)
        files[name] = file_entry(out / name, rows)
        every_row.extend(rows)

    train_counts = Counter(r["output"] for r in mapper_rows.get("train", []))
    manifest = {
        "format": FORMAT,
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "taxonomy_version": default_taxonomy().version,
        "files": files,
        "counts": counts(every_row),
        "train_label_counts": dict(sorted(train_counts.items())),
        "golden": {
            "version": golden.GOLDEN_VERSION,
            "sha256": golden_sha,
            "rows": len(golden_rows),
        },
        "heldout": {
            "detector": HELDOUT_DETECTOR,
            "pairs": sorted([list(p) for p in HELDOUT_PAIRS]),
        },
    }
    digest = write_manifest(out, manifest)
    log.info(
        "built %d mapper and %d analyst rows in %.1fs; manifest %s",
        manifest["counts"]["mapper"]["rows"],
        manifest["counts"]["analyst"]["rows"],
        time.monotonic() - started,
        digest,
    )
    return manifest
