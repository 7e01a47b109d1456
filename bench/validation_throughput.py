"""Validation throughput: 100,000 rows through every check (tokenization included), against a
straightforward pandas implementation of the same checks, in the same run.

    .venv/bin/python bench/validation_throughput.py [--rows 100000] [--out /tmp/bench-validation]

Both sides run warm: the tokenizer and Presidio are loaded before either is timed. The pandas
baseline is what one writes first: read_json(lines=True), row-wise apply for schema and
chat-template tokenization, drop_duplicates + per-row MinHash bands with groupby for
duplicates, Presidio on the distinct outputs.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from llama_mapper.datasets.generators import vendors
from llama_mapper.datasets.generators.variants import VariantGenerator
from llama_mapper.domain.golden import load_golden
from llama_mapper.domain.manifest import file_entry, write_manifest
from llama_mapper.domain.rows import canonical_json, mapper_row, user_text
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.validation.checks import PII_ENTITIES
from llama_mapper.validation.policy import Policy
from llama_mapper.validation.similarity import ngram_overlap, ngrams, reference_ngrams, tokens
from llama_mapper.validation.tokens import load_tokenizer
from llama_mapper.validation.validator import Request, Validator

CONFIG = {
    "name": "bench",
    "adapter": "mapper",
    "base_model": {"id": "smollm2-135m-instruct"},
    "taxonomy_version": "1.0.0",
    "dataset": {"path": "bench"},
    "lora": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj"]},
    "training": {"batch_size": 4, "learning_rate": 1e-4, "num_epochs": 1, "max_seq_length": 512},
    # 100k synthesized rows are templated: the thresholds are not the point here, the work is.
    "validation": {"max_imbalance_ratio": 1000},
}


def make_dataset(out: Path, rows_wanted: int) -> int:
    """`rows_wanted` distinct mapper rows (vendor shapes and variants over many seeds)."""
    rules, taxonomy = RulesMapper(), default_taxonomy()
    seen: set[str] = set()
    rows = []
    seed = 0
    while len(rows) < rows_wanted:
        pool = vendors.vendor_candidates(rules, 10, seed)
        gen = VariantGenerator(taxonomy, rules, seed)
        for label in taxonomy.names:
            pool.extend(gen.label_variants(label, 30))
            pool.extend(gen.envelopes(label, 20))
            pool.extend(gen.free_text(label, 10))
        for candidate in pool:
            key = candidate.prompt_key()
            if key not in seen and len(rows) < rows_wanted:
                seen.add(key)
                rows.append(mapper_row(candidate, "train"))
        seed += 1
    out.mkdir(parents=True, exist_ok=True)
    path = out / "mapper-train.jsonl"
    path.write_text("".join(canonical_json(r) + "\n" for r in rows), encoding="utf-8")
    (out / "mapper-eval.jsonl").write_text("", encoding="utf-8")
    write_manifest(
        out,
        {
            "files": {
                "mapper-train.jsonl": file_entry(path, rows),
                "mapper-eval.jsonl": file_entry(out / "mapper-eval.jsonl", []),
            }
        },
    )
    return len(rows)


def pandas_baseline(directory: Path, tokenizer, analyzer, policy: Policy) -> dict[str, float]:
    """The same checks, written the obvious pandas way."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    manifest = json.loads((directory / "manifest.json").read_text())
    frames = []
    for name in manifest["files"]:
        frame = pd.read_json(directory / name, lines=True, dtype=False)
        frame["file"] = name
        frames.append(frame)
    df = pd.concat(frames, ignore_index=True)
    ok = all(
        hashlib.sha256((directory / n).read_bytes()).hexdigest() == e["sha256"]
        for n, e in manifest["files"].items()
    )
    timings["load+manifest"] = time.perf_counter() - started

    t = time.perf_counter()
    schema = validator("mapper-example")
    columns = [c for c in df.columns if c != "file"]
    df["schema_ok"] = df[columns].apply(lambda r: schema.is_valid(r.dropna().to_dict()), axis=1)
    timings["schema"] = time.perf_counter() - t

    t = time.perf_counter()
    taxonomy = default_taxonomy()
    df["label_ok"] = df["output"].isin(taxonomy.names)
    counts = df["output"].value_counts()
    _ = counts.min() >= policy.min_examples_per_label
    timings["labels+distribution"] = time.perf_counter() - t

    def count(messages: list[dict], generation_prompt: bool) -> int:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    t = time.perf_counter()
    df["total_tokens"] = df.apply(
        lambda r: count([*r["input"], {"role": "assistant", "content": r["output"]}], False), axis=1
    )
    df["prompt_tokens"] = df["input"].apply(lambda m: count(m, True))
    df["too_long"] = df["total_tokens"] > policy.max_seq_length
    df["supervised"] = df["total_tokens"].clip(upper=policy.max_seq_length) - df["prompt_tokens"]
    timings["tokenize"] = time.perf_counter() - t

    t = time.perf_counter()
    df["text"] = df.apply(lambda r: user_text(r) + " " + r["output"], axis=1)
    df["exact_dup"] = df["text"].duplicated()
    rng = np.random.default_rng(1)
    a = rng.integers(1, (1 << 31) - 1, 64, dtype=np.uint64)
    b = rng.integers(0, (1 << 31) - 1, 64, dtype=np.uint64)

    def signature(text: str) -> tuple:
        grams = ngrams(tokens(text), 3) or {""}
        h = np.array([zlib.crc32(g.encode()) for g in grams], dtype=np.uint64)
        return tuple(((a[:, None] * h[None, :] + b[:, None]) % ((1 << 31) - 1)).min(axis=1))

    sigs = df["text"].apply(signature)
    near = set()
    for band in range(8):
        keys = sigs.apply(lambda s, band=band: s[band * 8 : (band + 1) * 8])
        for group in df.groupby(keys).groups.values():
            members = list(group)
            for i, j in itertools.pairwise(members):
                sa = ngrams(tokens(df.at[i, "text"]), 3)
                sb = ngrams(tokens(df.at[j, "text"]), 3)
                if len(sa & sb) / max(len(sa | sb), 1) >= policy.near_duplicate_threshold:
                    near.add(j)
    timings["duplicates"] = time.perf_counter() - t

    t = time.perf_counter()
    golden, _ = load_golden()
    reference = reference_ngrams((user_text(r) for r in golden), policy.leakage_ngram_size)
    df["leak"] = df.apply(
        lambda r: ngram_overlap(user_text(r), reference, policy.leakage_ngram_size), axis=1
    )
    timings["leakage"] = time.perf_counter() - t

    t = time.perf_counter()
    distinct = pd.Series(df["output"].unique())
    _ = distinct.apply(
        lambda s: bool(
            analyzer.analyze(
                s, language="en", entities=list(PII_ENTITIES), score_threshold=policy.pii_min_score
            )
        )
    )
    timings["pii"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    del ok
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench-validation"))
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    t = time.perf_counter()
    rows = make_dataset(args.out, args.rows)
    print(f"dataset: {rows} rows in {time.perf_counter() - t:.1f}s at {args.out}")

    from llama_mapper.inference.scanners import presidio_analyzer

    tokenizer = load_tokenizer(CONFIG["base_model"]["id"])
    analyzer = presidio_analyzer()
    validator_ = Validator(max_row_bytes=1 << 20)
    # Warm-up on a tiny input so one-time imports are not charged to either side.
    validator_.scanner(Policy())(["warm up"])

    t = time.perf_counter()
    report = validator_.run(Request(str(args.out), CONFIG, {}))
    ours = time.perf_counter() - t
    print(
        f"llama-mapper validator: {rows} rows in {ours:.1f}s = {rows / ours:,.0f} rows/s "
        f"(verdict {report['verdict']})"
    )
    for name, seconds in report["check_durations_s"].items():
        print(f"  {name:20s} {seconds:7.2f}s")
    if args.skip_baseline:
        return
    timings = pandas_baseline(args.out, tokenizer, analyzer, Policy(max_imbalance_ratio=1000))
    base = timings["total"]
    print(f"pandas baseline:        {rows} rows in {base:.1f}s = {rows / base:,.0f} rows/s")
    for name, seconds in timings.items():
        print(f"  {name:20s} {seconds:7.2f}s")
    print(f"speed-up: {base / ours:.1f}x")


if __name__ == "__main__":
    main()
