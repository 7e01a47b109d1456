"""Runs every check on a dataset and assembles the report; no gRPC here (the servicer wraps it)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument
from llama_mapper.domain.golden import load_golden
from llama_mapper.domain.rows import canonical_json, sha256_text, user_text
from llama_mapper.domain.schemas import validate
from llama_mapper.domain.taxonomy import default_taxonomy
from llama_mapper.validation import checks
from llama_mapper.validation.access import DatasetAccess
from llama_mapper.validation.checks import CheckResult
from llama_mapper.validation.dataset import LoadedDataset, load_dataset
from llama_mapper.validation.pii import PresidioScanner
from llama_mapper.validation.policy import Policy, effective_policy
from llama_mapper.validation.tokens import TokenCounter, load_tokenizer

log = logging.getLogger(__name__)

CHECK_NAMES = (
    "manifest",
    "schema",
    "labels",
    "label_distribution",
    "sequence_length",
    "supervised_tokens",
    "duplicates",
    "leakage",
    "pii",
)
# Fields left out of the report digest: they change from run to run for the same input.
TIMING_FIELDS = ("started_at", "finished_at", "duration_s", "rows_per_second", "report_sha256")

# (event, payload): ("progress", {...}) or ("check", CheckResult)
Listener = Callable[[str, Any], None]


def validator_version() -> str:
    try:
        return version("llama-mapper")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Request:
    dataset_uri: str
    config: dict[str, Any]
    overrides: dict[str, Any]
    golden_set_uri: str = ""
    expected_manifest_sha256: str = ""


def report_digest(report: dict[str, Any]) -> str:
    stable = {k: v for k, v in report.items() if k not in TIMING_FIELDS}
    return sha256_text(canonical_json(stable))


class Validator:
    """Holds what is expensive to build once: the PII scanner and the tokenizers."""

    def __init__(
        self,
        *,
        max_row_bytes: int,
        s3_endpoint_url: str | None = None,
        scanner: checks.Scanner | None = None,
        access: DatasetAccess | None = None,
    ) -> None:
        """`access` None reads whatever this process may (embedded use); the server always
        passes the roots and buckets its settings allow."""
        self.max_row_bytes = max_row_bytes
        self.s3_endpoint_url = s3_endpoint_url
        self._scanner = scanner
        self.access = access

    def scanner(self, policy: Policy) -> checks.Scanner:
        return self._scanner or PresidioScanner(policy.pii_min_score)

    def run(self, request: Request, listener: Listener | None = None) -> dict[str, Any]:
        started = time.time()
        notify = listener or (lambda _event, _payload: None)
        try:
            validate("training-config", request.config)
        except InvalidArgument as exc:
            raise InvalidArgument(f"training config: {exc.message}") from None
        taxonomy = default_taxonomy()
        wanted = request.config["taxonomy_version"]
        if wanted != taxonomy.version:
            raise FailedPrecondition(
                f"the training config names taxonomy v{wanted}, but this service has "
                f"v{taxonomy.version}; set taxonomy_version to {taxonomy.version} or deploy the "
                f"validator release that ships v{wanted}"
            )
        policy = effective_policy(request.config, request.overrides)

        def progress(phase: str, done: int, total: int = 0, checks_done: int = 0) -> None:
            notify(
                "progress",
                {
                    "phase": phase,
                    "rows_done": done,
                    "rows_total": total,
                    "checks_done": checks_done,
                    "checks_total": len(CHECK_NAMES),
                    "elapsed_s": time.time() - started,
                },
            )

        dataset = load_dataset(
            request.dataset_uri,
            max_row_bytes=self.max_row_bytes,
            endpoint_url=self.s3_endpoint_url,
            progress=progress,
            access=self.access,
        )
        golden_rows, golden_sha = load_golden(
            _local_golden(request.golden_set_uri, self.access) if request.golden_set_uri else None
        )
        total = len(dataset.rows)
        progress("load", total, total)

        results: list[CheckResult] = []

        def record(result: CheckResult, began: float) -> None:
            result.duration_s = time.time() - began
            results.append(result)
            notify("check", result)
            progress(result.name, total, total, len(results))

        dataset_cfg = request.config["dataset"]
        train_names = (
            dataset_cfg.get("train_file", "mapper-train.jsonl"),
            dataset_cfg.get("eval_file", "mapper-eval.jsonl"),
        )
        train_rows = dataset.rows_of(train_names[0])
        training_rows = dataset.rows_of(*train_names)

        began = time.time()
        record(
            checks.check_manifest(
                dataset.manifest,
                dataset.file_digests,
                dataset.file_rows,
                dataset.manifest_sha256,
                request.expected_manifest_sha256,
                policy,
            ),
            began,
        )
        began = time.time()
        record(checks.check_schema(dataset.rows, policy), began)
        began = time.time()
        record(checks.check_labels(dataset.rows, taxonomy, policy), began)
        began = time.time()
        record(checks.check_label_distribution(train_rows, taxonomy, policy), began)

        began = time.time()
        progress("tokenize", 0, total, len(results))
        prompt_lengths, lengths = self._lengths(request.config, dataset)
        tokenize_s = time.time() - began
        record(checks.check_sequence_length(dataset.rows, lengths, policy), began)
        results[-1].duration_s = tokenize_s
        began = time.time()
        record(checks.check_supervised_tokens(dataset.rows, prompt_lengths, lengths, policy), began)
        began = time.time()
        record(checks.check_duplicates(dataset.rows, policy), began)
        began = time.time()
        record(
            checks.check_leakage(training_rows, (user_text(r) for r in golden_rows), policy), began
        )
        began = time.time()
        record(checks.check_pii(dataset.rows, self.scanner(policy), policy), began)

        finished = time.time()
        report: dict[str, Any] = {
            "verdict": "VERDICT_PASSED" if all(r.passed for r in results) else "VERDICT_FAILED",
            "checks": [r.as_dict() for r in results],
            "dataset_uri": request.dataset_uri,
            "dataset_manifest_sha256": dataset.manifest_sha256,
            "training_config_sha256": sha256_text(canonical_json(request.config)),
            "golden_set_sha256": golden_sha,
            "taxonomy_version": taxonomy.version,
            "effective_policy": policy.as_dict(),
            "row_count": total,
            "validator_version": validator_version(),
            "started_at": started,
            "finished_at": finished,
            "duration_s": finished - started,
            "rows_per_second": total / (finished - started) if finished > started else 0.0,
            "check_durations_s": {r.name: r.duration_s for r in results},
        }
        report["report_sha256"] = report_digest(
            {k: v for k, v in report.items() if k != "check_durations_s"}
        )
        log.info(
            "validated %s: %s, %d rows in %.1fs",
            request.dataset_uri,
            report["verdict"],
            total,
            finished - started,
        )
        return report

    def _lengths(
        self, config: dict[str, Any], dataset: LoadedDataset
    ) -> tuple[list[int], list[int]]:
        counter = TokenCounter(load_tokenizer(config["base_model"]["id"]))
        conversations = []
        for row in dataset.rows:
            messages = row.data.get("input") if isinstance(row.data, dict) else None
            output = row.data.get("output") if isinstance(row.data, dict) else None
            if (
                isinstance(messages, list)
                and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
                and isinstance(output, str)
            ):
                conversations.append((messages, output))
            else:
                # A row the schema check already fails: an empty conversation keeps indexes aligned.
                conversations.append(
                    ([{"role": "system", "content": "-"}, {"role": "user", "content": "-"}], "")
                )
        lengths = counter.lengths(conversations)
        return lengths.prompt, lengths.total


def _local_golden(uri: str, access: DatasetAccess | None) -> Any:
    from pathlib import Path

    if "://" in uri:
        raise InvalidArgument(f"golden_set_uri {uri!r}: only local paths are supported")
    if access is not None:
        return access.check_path(uri, what="golden set")
    return Path(uri)
