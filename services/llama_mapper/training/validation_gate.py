"""The validation gate: no training step runs on a dataset without a passing report for exactly it."""

# The validation service's report (`verdict`, `dataset_manifest_sha256`, `report_sha256`; the plain
# names `passed`, `dataset_manifest_digest`, `report_digest` are read too) lies in
# `validation-report.json` next to the dataset's `manifest.json`. The
# gate recomputes everything it can instead of trusting the report: the manifest digest the report
# names, the sha256 of every file the manifest lists, and the report's own digest. A digest anyone
# can recompute, so the report's `report_signature` (HMAC-SHA256 with the validation service's
# MAPPER_VALIDATION_SIGNING_KEY) is what proves the service wrote it: missing or wrong, refused.

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import DataLoss, FailedPrecondition, InvalidArgument
from llama_mapper.domain.report_digest import canonical_digest, report_digest, verify_report
from llama_mapper.inference.base_model import file_sha256
from llama_mapper.platform.settings.validation import ValidationSettings

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
REPORT_NAME = "validation-report.json"


def _passed(report: Mapping[str, Any]) -> bool:
    # The validation service's verdict enum, or a plain boolean.
    return report.get("passed") is True or report.get("verdict") == "VERDICT_PASSED"


def _claimed(report: Mapping[str, Any], *names: str) -> Any:
    return next((report[name] for name in names if name in report), None)


def manifest_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """{relative path: sha256} from the manifest's `files` (a mapping or a list of entries)."""
    files = manifest.get("files")
    result: dict[str, str] = {}
    if isinstance(files, Mapping):
        for name, entry in files.items():
            result[name] = entry["sha256"] if isinstance(entry, Mapping) else entry
    elif isinstance(files, list):
        for entry in files:
            result[entry.get("path") or entry["name"]] = entry["sha256"]
    else:
        raise FailedPrecondition("dataset manifest has no `files` with their sha256")
    return result


@dataclass(frozen=True)
class GateResult:
    dataset_dir: Path
    manifest_digest: str
    report_digest: str
    files: dict[str, str]


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FailedPrecondition(f"{what} {path} is not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise FailedPrecondition(f"{what} {path} is not a JSON object")
    return value


def check_signature(report: Mapping[str, Any], key: bytes | None) -> None:
    """FailedPrecondition naming what is wrong unless the validation service signed `report`."""
    if key is None:
        raise FailedPrecondition(
            "no report signing key to check the validation report with: set "
            "MAPPER_VALIDATION_SIGNING_KEY to the validation service's key (the local stack "
            "keeps it in <var dir>/validation-signing-key)"
        )
    if not report.get("report_signature"):
        raise FailedPrecondition(
            f"{REPORT_NAME} has no report_signature: it was not written by the validation "
            "service; run `mapperctl data validate` again"
        )
    if not verify_report(report, key):
        raise FailedPrecondition(
            f"the report_signature of {REPORT_NAME} does not verify with "
            "MAPPER_VALIDATION_SIGNING_KEY: the report was edited, or signed by a validation "
            "service with another key"
        )


def check_dataset(
    dataset_dir: str | Path,
    required_files: Iterable[str] = (),
    *,
    signing_key: bytes | None = None,
) -> GateResult:
    """Raise FailedPrecondition / DataLoss with the reason unless the dataset may be trained on.
    `signing_key` None: the validation service's key from the settings."""
    if "://" in str(dataset_dir):
        raise InvalidArgument(
            f"{dataset_dir}: the training gate reads local datasets; copy the dataset locally first"
        )
    directory = Path(dataset_dir)
    manifest_path, report_path = directory / MANIFEST_NAME, directory / REPORT_NAME
    if not manifest_path.is_file():
        raise FailedPrecondition(
            f"{directory} has no {MANIFEST_NAME}: build it with mapperctl data build"
        )
    if not report_path.is_file():
        raise FailedPrecondition(
            f"{directory} has no {REPORT_NAME}: run `mapperctl data validate {directory} --config ...`"
            " and train only on a dataset that passes"
        )
    manifest = _read_json(manifest_path, "dataset manifest")
    report = _read_json(report_path, "validation report")

    if not _passed(report):
        failed = [
            c.get("name", "?")
            for c in report.get("checks", [])
            if isinstance(c, Mapping) and c.get("passed") is False
        ]
        detail = f" (failed checks: {', '.join(failed)})" if failed else ""
        raise FailedPrecondition(f"the validation report for {directory} did not pass{detail}")
    claimed_report = _claimed(report, "report_digest", "report_sha256")
    actual_report = report_digest(report)
    if claimed_report is not None and claimed_report != actual_report:
        raise FailedPrecondition(
            f"{REPORT_NAME} was edited after validation (report digest mismatch)"
        )
    check_signature(report, signing_key or ValidationSettings().signing_secret())

    digest = canonical_digest(manifest)
    claimed_manifest = _claimed(report, "dataset_manifest_digest", "dataset_manifest_sha256")
    if claimed_manifest != digest:
        raise FailedPrecondition(
            "the validation report is for another dataset: its manifest digest "
            f"{claimed_manifest!r} != this manifest's {digest}; validate again"
        )

    files = manifest_files(manifest)
    for name in required_files:
        if name not in files:
            raise FailedPrecondition(
                f"{name} is not listed in {MANIFEST_NAME}: it was never validated"
            )
    for name, expected in sorted(files.items()):
        path = (directory / name).resolve()
        if directory.resolve() not in path.parents:
            raise FailedPrecondition(f"manifest entry {name!r} points outside the dataset")
        if not path.is_file():
            raise DataLoss(f"dataset file {name} listed in the manifest is missing")
        if file_sha256(path) != expected:
            raise DataLoss(f"dataset file {name} does not match its manifest sha256 (tampered?)")
    log.info("validation gate passed: manifest %s, report %s", digest[:12], actual_report[:12])
    return GateResult(directory, digest, claimed_report or actual_report, files)
