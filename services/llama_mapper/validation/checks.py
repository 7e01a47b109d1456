"""The validation checks: each a pure function over loaded rows that returns a CheckResult."""

# Row content never leaves a check: results carry counts, measurements and row ids only.

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_mapper.domain.rows import canonical_json, sha256_text, user_text
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.taxonomy import Taxonomy
from llama_mapper.validation.fastschema import FastValidator
from llama_mapper.validation.policy import Policy
from llama_mapper.validation.similarity import near_duplicates, ngram_overlap, reference_ngrams

# Presidio entities that are raw personal data wherever they appear. Names, places and dates
# are left out: label words and remediation prose ("Record the finding ...") trip spaCy's NER.
PII_ENTITIES = (
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "CREDIT_CARD",
    "US_SSN",
    "IBAN_CODE",
    "IP_ADDRESS",
    "CRYPTO",
    "UK_NHS",
)


@dataclass
class CheckResult:
    name: str
    passed: bool
    message: str
    counts: dict[str, int] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    offending_row_ids: list[str] = field(default_factory=list)
    offending_row_count: int = 0
    duration_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "passed": self.passed,
            "message": self.message,
            "counts": dict(sorted(self.counts.items())),
            "measurements": {k: round(v, 6) for k, v in sorted(self.measurements.items())},
            "thresholds": dict(sorted(self.thresholds.items())),
            "offending_row_ids": list(self.offending_row_ids),
            "offending_row_count": self.offending_row_count,
        }


@dataclass(frozen=True)
class Row:
    """A loaded row and where it came from; `ref` names it in reports (its id, else file:line)."""

    data: dict[str, Any]
    file: str
    line: int

    @property
    def ref(self) -> str:
        row_id = self.data.get("id") if isinstance(self.data, dict) else None
        return row_id if isinstance(row_id, str) and row_id else f"{self.file}:{self.line}"

    @property
    def task(self) -> str:
        return self.data.get("task", "") if isinstance(self.data, dict) else ""

    @property
    def label(self) -> str | None:
        if self.task == "mapper":
            return self.data.get("output")
        if self.task == "analyst":
            return self.data.get("label")
        return None


def _result(
    name: str,
    offending: Sequence[str],
    policy: Policy,
    ok: str,
    bad: str,
    **extra: Any,
) -> CheckResult:
    return CheckResult(
        name=name,
        passed=not offending,
        message=ok if not offending else bad,
        offending_row_ids=list(offending[: policy.max_offending_rows]),
        offending_row_count=len(offending),
        **extra,
    )


def check_schema(rows: Sequence[Row], policy: Policy) -> CheckResult:
    """Every row validates against schemas/mapper-example.json or analyst-example.json."""
    validators = {
        "mapper": FastValidator(validator("mapper-example")),
        "analyst": FastValidator(validator("analyst-example")),
    }
    assessment_ok: dict[str, bool] = {}  # analyst outputs repeat: each distinct one checked once
    offending = []
    for row in rows:
        check = validators.get(row.task)
        if check is None or not check.is_valid(row.data):
            offending.append(row.ref)
        elif row.task == "analyst":
            output = row.data["output"]
            if output not in assessment_ok:
                try:
                    assessment_ok[output] = validator("analyst-output").is_valid(json.loads(output))
                except ValueError:
                    assessment_ok[output] = False
            if not assessment_ok[output]:
                offending.append(row.ref)
    return _result(
        "schema",
        offending,
        policy,
        f"all {len(rows)} rows match their schema",
        f"{len(offending)} rows do not match schemas/mapper-example.json or analyst-example.json; "
        "rebuild them with `mapperctl data build`",
        counts={"rows": len(rows), "offending": len(offending)},
    )


def check_labels(rows: Sequence[Row], taxonomy: Taxonomy, policy: Policy) -> CheckResult:
    """Every label a row carries (output, labels, analyst label) is in the config's taxonomy."""
    offending = []
    unknown: set[str] = set()
    for row in rows:
        labels = [row.label]
        if row.task == "mapper" and isinstance(row.data.get("labels"), list):
            labels.extend(row.data["labels"])
        bad = [label for label in labels if not isinstance(label, str) or label not in taxonomy]
        if bad:
            offending.append(row.ref)
            unknown.update(str(label) for label in bad)
    return _result(
        "labels",
        offending,
        policy,
        f"every label is in taxonomy v{taxonomy.version}",
        f"{len(offending)} rows carry {len(unknown)} labels that taxonomy v{taxonomy.version} "
        "does not define; fix the labels or migrate them to this version",
        counts={"rows": len(rows), "offending": len(offending), "unknown_labels": len(unknown)},
    )


def check_label_distribution(
    train_rows: Sequence[Row], taxonomy: Taxonomy, policy: Policy
) -> CheckResult:
    """In the training file: every taxonomy label has at least min_examples_per_label rows, and
    the most / least frequent ratio is at most max_imbalance_ratio."""
    counts = Counter(row.label for row in train_rows if row.label in taxonomy)
    per_label = {label: counts.get(label, 0) for label in taxonomy.names}
    too_few = sorted(label for label, n in per_label.items() if n < policy.min_examples_per_label)
    least = min(per_label.values()) if per_label else 0
    most = max(per_label.values()) if per_label else 0
    ratio = most / least if least else float("inf")
    passed = not too_few and ratio <= policy.max_imbalance_ratio
    if passed:
        message = f"every label has >= {policy.min_examples_per_label} rows; imbalance {ratio:.1f}"
    elif too_few:
        message = (
            f"{len(too_few)} labels have fewer than {policy.min_examples_per_label} training rows "
            f"(e.g. {', '.join(too_few[:3])}); add examples or lower min_examples_per_label"
        )
    else:
        message = (
            f"imbalance ratio {ratio:.1f} exceeds {policy.max_imbalance_ratio}; cap the frequent "
            "labels or add examples of the rare ones"
        )
    return CheckResult(
        name="label_distribution",
        passed=passed,
        message=message,
        counts={"rows": len(train_rows), **{f"label:{k}": v for k, v in per_label.items()}},
        measurements={
            "imbalance_ratio": ratio if least else -1.0,
            "min_count": least,
            "max_count": most,
        },
        thresholds={
            "min_examples_per_label": policy.min_examples_per_label,
            "max_imbalance_ratio": policy.max_imbalance_ratio,
        },
        offending_row_count=0,
    )


def check_sequence_length(
    rows: Sequence[Row], lengths: Sequence[int], policy: Policy
) -> CheckResult:
    """Prompt + completion, chat template applied, fits max_seq_length."""
    offending = [row.ref for row, n in zip(rows, lengths, strict=True) if n > policy.max_seq_length]
    longest = max(lengths, default=0)
    return _result(
        "sequence_length",
        offending,
        policy,
        f"every row fits {policy.max_seq_length} tokens (longest {longest})",
        f"{len(offending)} rows exceed max_seq_length {policy.max_seq_length} (longest {longest}); "
        "shorten them or raise training.max_seq_length",
        counts={"rows": len(rows), "offending": len(offending)},
        measurements={
            "max_seq_length_seen": longest,
            "mean_seq_length": sum(lengths) / len(lengths) if lengths else 0.0,
        },
        thresholds={"max_seq_length": policy.max_seq_length},
    )


def check_supervised_tokens(
    rows: Sequence[Row], prompt_lengths: Sequence[int], lengths: Sequence[int], policy: Policy
) -> CheckResult:
    """At least min_supervised_tokens completion tokens remain after truncation to max_seq_length."""
    offending = []
    fewest = None
    for row, prompt, total in zip(rows, prompt_lengths, lengths, strict=True):
        supervised = min(total, policy.max_seq_length) - prompt
        fewest = supervised if fewest is None else min(fewest, supervised)
        if supervised < policy.min_supervised_tokens:
            offending.append(row.ref)
    return _result(
        "supervised_tokens",
        offending,
        policy,
        f"every row keeps >= {policy.min_supervised_tokens} completion tokens",
        f"{len(offending)} rows keep fewer than {policy.min_supervised_tokens} completion tokens "
        "after truncation: their loss would be empty; shorten the prompt or fix the output",
        counts={"rows": len(rows), "offending": len(offending)},
        measurements={"min_supervised_tokens_seen": float(fewest or 0)},
        thresholds={
            "min_supervised_tokens": policy.min_supervised_tokens,
            "max_seq_length": policy.max_seq_length,
        },
    )


def row_text(row: Row) -> str:
    """What duplicates are measured on: the user turn and the completion."""
    try:
        return user_text(row.data) + " " + str(row.data.get("output", ""))
    except (AttributeError, KeyError, TypeError):
        return canonical_json(row.data)


def check_duplicates(rows: Sequence[Row], policy: Policy) -> CheckResult:
    """Exact duplicates (same prompt and completion) and near duplicates (shingle Jaccard at or
    above near_duplicate_threshold, found with MinHash LSH) stay under max_duplicate_fraction."""
    texts = [row_text(row) for row in rows]
    first: dict[str, int] = {}
    exact: list[int] = []
    for i, text in enumerate(texts):
        key = sha256_text(text)
        if key in first:
            exact.append(i)
        else:
            first[key] = i
    near = near_duplicates(texts, policy.near_duplicate_threshold, skip=exact)
    duplicated = sorted({*exact, *near})
    fraction = len(duplicated) / len(rows) if rows else 0.0
    passed = fraction <= policy.max_duplicate_fraction
    refs = [rows[i].ref for i in duplicated]
    return CheckResult(
        name="duplicates",
        passed=passed,
        message=(
            f"{len(exact)} exact and {len(near)} near duplicates ({fraction:.2%}), within "
            f"{policy.max_duplicate_fraction:.2%}"
            if passed
            else f"{len(exact)} exact and {len(near)} near duplicates make {fraction:.2%} of rows, "
            f"over {policy.max_duplicate_fraction:.2%}; deduplicate the dataset"
        ),
        counts={"rows": len(rows), "exact": len(exact), "near": len(near)},
        measurements={"duplicate_fraction": fraction},
        thresholds={
            "near_duplicate_threshold": policy.near_duplicate_threshold,
            "max_duplicate_fraction": policy.max_duplicate_fraction,
        },
        offending_row_ids=refs[: policy.max_offending_rows] if not passed else [],
        offending_row_count=len(refs) if not passed else 0,
    )


def check_leakage(
    train_rows: Sequence[Row], golden_texts: Iterable[str], policy: Policy
) -> CheckResult:
    """Training and eval rows whose word n-grams overlap the golden set by max_leakage_overlap
    or more leak it; more than max_leakage_fraction of such rows fails."""
    n = policy.leakage_ngram_size
    reference = reference_ngrams(golden_texts, n)
    offending = []
    for row in train_rows:
        try:
            text = user_text(row.data)
        except (AttributeError, KeyError, TypeError):
            continue
        if ngram_overlap(text, reference, n) >= policy.max_leakage_overlap:
            offending.append(row.ref)
    fraction = len(offending) / len(train_rows) if train_rows else 0.0
    passed = fraction <= policy.max_leakage_fraction
    return CheckResult(
        name="leakage",
        passed=passed,
        message=(
            f"{len(offending)} of {len(train_rows)} training rows overlap the golden set"
            if passed
            else f"{len(offending)} training rows overlap the golden set ({n}-gram overlap >= "
            f"{policy.max_leakage_overlap}); remove them: the golden set must stay unseen"
        ),
        counts={
            "rows": len(train_rows),
            "offending": len(offending),
            "golden_ngrams": len(reference),
        },
        measurements={"leaking_fraction": fraction},
        thresholds={
            "leakage_ngram_size": n,
            "max_leakage_overlap": policy.max_leakage_overlap,
            "max_leakage_fraction": policy.max_leakage_fraction,
        },
        offending_row_ids=offending[: policy.max_offending_rows],
        offending_row_count=len(offending),
    )


def free_text(row: Row) -> list[str]:
    """The output, and every string of the finding the prompt carries that reads as prose."""
    texts = [str(row.data.get("output", ""))]
    try:
        body = json.loads(user_text(row.data).split(":", 1)[1].rsplit(" Analyze", 1)[0])
    except (ValueError, IndexError, AttributeError, KeyError, TypeError):
        return texts
    finding = body.get("finding") if isinstance(body, dict) else None
    if isinstance(finding, dict):
        texts.extend(
            v for k, v in finding.items() if k != "label" and isinstance(v, str) and " " in v
        )
    return texts


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def row_texts(row: Row) -> list[str]:
    """Every text a row carries: each message of the prompt (system and user turns), the output,
    every other string field, and the prose values of the finding inside the prompt."""
    texts = dict.fromkeys(t for t in _strings(row.data) if t.strip())
    texts.update(dict.fromkeys(t for t in free_text(row) if t))
    return list(texts)


Scanner = Callable[[list[str]], list[bool]]


def check_pii(rows: Sequence[Row], scan: Scanner, policy: Policy) -> CheckResult:
    """No text of a row — prompt, output or any other field — carries raw personal data
    (Presidio, at or above pii_min_score). Each distinct text is scanned once."""
    if not policy.pii_scan:
        return CheckResult("pii", True, "PII scan disabled by policy (pii_scan: false)")
    per_row = [row_texts(row) for row in rows]
    distinct = sorted({t for texts in per_row for t in texts if t})
    flagged = {t for t, hit in zip(distinct, scan(distinct), strict=True) if hit}
    offending = [row.ref for row, texts in zip(rows, per_row, strict=True) if flagged & set(texts)]
    return _result(
        "pii",
        offending,
        policy,
        f"no personal data in {len(distinct)} distinct prompt, output and field texts",
        f"{len(offending)} rows carry personal data in their prompt, output or fields; remove "
        "it (findings are metadata and targets are labels: personal data there was planted or "
        "leaked)",
        counts={"rows": len(rows), "offending": len(offending), "distinct_texts": len(distinct)},
        thresholds={"pii_min_score": policy.pii_min_score},
    )


def check_manifest(
    manifest: dict[str, Any],
    file_digests: dict[str, str],
    file_rows: dict[str, int],
    manifest_sha: str,
    expected_sha: str,
    policy: Policy,
) -> CheckResult:
    """Every file's sha256 and row count match the manifest; the manifest matches the pinned
    digest when the caller gave one."""
    offending = []
    for name, entry in sorted((manifest.get("files") or {}).items()):
        if file_digests.get(name) != entry.get("sha256") or file_rows.get(name) != entry.get(
            "rows"
        ):
            offending.append(name)
    pinned_ok = not expected_sha or expected_sha == manifest_sha
    passed = not offending and pinned_ok
    if passed:
        message = f"{len(file_digests)} files match manifest {manifest_sha[:16]}"
    elif offending:
        message = (
            f"{len(offending)} files differ from their manifest sha256 or row count "
            f"({', '.join(offending[:3])}): the data changed after it was built; rebuild it"
        )
    else:
        message = "the manifest is not the one the caller pinned (expected_manifest_sha256)"
    return CheckResult(
        name="manifest",
        passed=passed,
        message=message,
        counts={"files": len(file_digests), "offending": len(offending)},
        offending_row_ids=offending[: policy.max_offending_rows],
        offending_row_count=len(offending),
    )
