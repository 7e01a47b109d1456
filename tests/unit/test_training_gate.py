"""The validation gate refuses a dataset unless a passing report covers exactly its bytes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from llama_mapper.domain.errors import DataLoss, FailedPrecondition
from llama_mapper.domain.report_digest import sign_report
from llama_mapper.training import validation_gate
from llama_mapper.training.validation_gate import (
    MANIFEST_NAME,
    REPORT_NAME,
    canonical_digest,
    report_digest,
)

KEY = b"test-signing-key-0123456789abcdef"


def check_dataset(directory: Path, required=(), *, signing_key: bytes = KEY):
    return validation_gate.check_dataset(directory, required, signing_key=signing_key)


def _write(directory: Path, report: dict, key: bytes | None = KEY) -> None:
    if key is not None:
        report["report_signature"] = sign_report(report, key)
    (directory / REPORT_NAME).write_text(json.dumps(report))


def _dataset(directory: Path, *, passed: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "id": "1",
            "detector": "presidio",
            "finding": {"label": "PERSON"},
            "label": "pii.person_name",
        }
    ]
    train = directory / "mapper-train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = {"files": {train.name: hashlib.sha256(train.read_bytes()).hexdigest()}, "seed": 1}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    report = {"passed": passed, "dataset_manifest_digest": canonical_digest(manifest),
              "checks": [{"name": "labels_closed", "passed": passed}]}  # fmt: skip
    report["report_digest"] = report_digest(report)
    _write(directory, report)
    return directory


def test_passing_report_for_this_dataset_opens_the_gate(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    result = check_dataset(directory, ["mapper-train.jsonl"])
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert (
        result.manifest_digest
        == hashlib.sha256(
            json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    assert (
        result.report_digest == json.loads((directory / REPORT_NAME).read_text())["report_digest"]
    )


def test_missing_report_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    (directory / REPORT_NAME).unlink()
    with pytest.raises(FailedPrecondition, match=r"no validation-report\.json"):
        check_dataset(directory)


def test_missing_manifest_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    (directory / MANIFEST_NAME).unlink()
    with pytest.raises(FailedPrecondition, match=r"no manifest\.json"):
        check_dataset(directory)


def test_failed_report_is_refused_naming_the_check(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d", passed=False)
    with pytest.raises(FailedPrecondition, match=r"did not pass.*labels_closed"):
        check_dataset(directory)


def test_report_for_another_manifest_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["seed"] = 2  # a rebuilt dataset: the old report no longer covers it
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(FailedPrecondition, match="report is for another dataset"):
        check_dataset(directory)


def test_edited_report_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d", passed=False)
    report = json.loads((directory / REPORT_NAME).read_text())
    report["passed"] = True  # flipped by hand, digest left as it was
    (directory / REPORT_NAME).write_text(json.dumps(report))
    with pytest.raises(FailedPrecondition, match="edited after validation"):
        check_dataset(directory)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    with open(directory / "mapper-train.jsonl", "a") as fh:
        fh.write(
            '{"id": "2", "detector": "x", "finding": {"label": "Y"}, "label": "pii.email_address"}\n'
        )
    with pytest.raises(DataLoss, match="does not match its manifest sha256"):
        check_dataset(directory)


def test_deleted_file_and_unlisted_training_file_are_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    with pytest.raises(FailedPrecondition, match=r"mapper-eval\.jsonl is not listed"):
        check_dataset(directory, ["mapper-train.jsonl", "mapper-eval.jsonl"])
    (directory / "mapper-train.jsonl").unlink()
    with pytest.raises(DataLoss, match="missing"):
        check_dataset(directory)


def test_manifest_entry_escaping_the_dataset_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    manifest = {"files": {"../outside.jsonl": "0" * 64}}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))
    report = {"passed": True, "dataset_manifest_digest": canonical_digest(manifest)}
    _write(directory, report)
    with pytest.raises(FailedPrecondition, match="outside the dataset"):
        check_dataset(directory)


def test_validation_service_report_fields_are_understood(tmp_path: Path) -> None:
    """The service writes verdict / dataset_manifest_sha256 / report_sha256 (timings undigested)."""
    directory = _dataset(tmp_path / "d")
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    report = {"verdict": "VERDICT_PASSED", "dataset_manifest_sha256": canonical_digest(manifest),
              "checks": [{"name": "schema", "passed": True}], "started_at": 1.0, "duration_s": 2.0}  # fmt: skip
    report["report_sha256"] = report_digest(report)
    report["check_durations_s"] = {"schema": 0.1}
    _write(directory, report)
    assert check_dataset(directory).report_digest == report["report_sha256"]
    report["verdict"] = "VERDICT_FAILED"
    (directory / REPORT_NAME).write_text(json.dumps(report))
    with pytest.raises(FailedPrecondition, match="did not pass"):
        check_dataset(directory)


def _service_report(directory: Path, **fields) -> dict:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    report = {"verdict": "VERDICT_PASSED", "dataset_manifest_sha256": canonical_digest(manifest),
              "training_config_sha256": "c" * 64, "effective_policy": {"max_seq_length": "512"},
              "checks": [{"name": "pii", "passed": True}], **fields}  # fmt: skip
    report["report_sha256"] = report_digest(report)
    return report


def test_unsigned_report_is_refused_naming_the_signature(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    _write(directory, _service_report(directory), key=None)
    with pytest.raises(FailedPrecondition, match="has no report_signature"):
        check_dataset(directory)


def test_report_signed_with_another_key_is_refused(tmp_path: Path) -> None:
    directory = _dataset(tmp_path / "d")
    _write(directory, _service_report(directory), key=b"another-key-entirely-0123456789")
    with pytest.raises(
        FailedPrecondition, match="does not verify with MAPPER_VALIDATION_SIGNING_KEY"
    ):
        check_dataset(directory)


@pytest.mark.parametrize(
    "edit",
    [
        {"training_config_sha256": "d" * 64},
        {"effective_policy": {"max_seq_length": "100000"}},
        {"verdict": "VERDICT_PASSED", "checks": []},
    ],
    ids=["config-hash", "policy", "checks"],
)
def test_a_signed_field_edited_with_the_digest_recomputed_is_refused(tmp_path, edit) -> None:
    """The digest is public; only the key makes a report: recomputing it after an edit is refused."""
    directory = _dataset(tmp_path / "d")
    report = _service_report(directory)
    _write(directory, report)
    assert check_dataset(directory).report_digest == report["report_sha256"]
    report.update(edit)
    report["report_sha256"] = report_digest(report)
    (directory / REPORT_NAME).write_text(json.dumps(report))
    with pytest.raises(FailedPrecondition, match="does not verify"):
        check_dataset(directory)


def test_no_signing_key_is_refused_naming_the_variable(tmp_path: Path, monkeypatch) -> None:
    directory = _dataset(tmp_path / "d")
    monkeypatch.delenv("MAPPER_VALIDATION_SIGNING_KEY", raising=False)
    monkeypatch.setenv("MAPPER_VAR_DIR", str(tmp_path / "var"))
    with pytest.raises(FailedPrecondition, match="set MAPPER_VALIDATION_SIGNING_KEY"):
        validation_gate.check_dataset(directory)
    monkeypatch.setenv("MAPPER_VALIDATION_SIGNING_KEY", KEY.decode())
    assert validation_gate.check_dataset(directory).manifest_digest
