"""The validation service reads datasets only under its roots and buckets, and its refusal says
nothing about what exists outside them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llama_mapper.domain.errors import NotFound, PermissionDenied
from llama_mapper.validation.access import DatasetAccess
from llama_mapper.validation.dataset import load_dataset


def _dataset(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "a.jsonl").write_text('{"id": "1"}\n')
    (directory / "manifest.json").write_text(json.dumps({"files": {"a.jsonl": {"rows": 1}}}))
    return directory


def _refusal(access: DatasetAccess, uri: str) -> str:
    with pytest.raises(PermissionDenied) as refused:
        load_dataset(uri, max_row_bytes=1 << 20, access=access)
    return refused.value.message


def test_a_dataset_under_a_root_is_read(tmp_path):
    dataset = _dataset(tmp_path / "root" / "d")
    access = DatasetAccess.of([tmp_path / "root"], [])
    assert len(load_dataset(str(dataset), max_row_bytes=1 << 20, access=access).rows) == 1
    assert load_dataset(str(dataset / "manifest.json"), max_row_bytes=1 << 20, access=access)
    with pytest.raises(NotFound):  # inside a root, a missing dataset is just missing
        load_dataset(str(tmp_path / "root" / "absent"), max_row_bytes=1 << 20, access=access)


def test_outside_the_roots_is_refused_alike_whether_or_not_it_exists(tmp_path):
    _dataset(tmp_path / "present-1")
    access = DatasetAccess.of([tmp_path / "root"], [])
    existing = _refusal(access, str(tmp_path / "present-1"))
    missing = _refusal(access, str(tmp_path / "missing-1"))
    assert "MAPPER_VALIDATION_DATASET_ROOTS" in existing
    assert existing.replace("present-1", "X") == missing.replace("missing-1", "X")
    assert "exist" not in existing


def test_dot_dot_and_a_prefix_lookalike_do_not_leave_the_root(tmp_path):
    _dataset(tmp_path / "root-evil")
    _dataset(tmp_path / "secret")
    access = DatasetAccess.of([tmp_path / "root"], [])
    (tmp_path / "root").mkdir()
    _refusal(access, str(tmp_path / "root" / ".." / "secret"))
    _refusal(access, str(tmp_path / "root-evil"))


def test_symlinks_out_of_a_root_are_refused(tmp_path):
    secret = _dataset(tmp_path / "secret")
    root = tmp_path / "root"
    root.mkdir()
    (root / "linked").symlink_to(secret, target_is_directory=True)
    access = DatasetAccess.of([root], [])
    _refusal(access, str(root / "linked"))
    # A file inside a dataset that links out is refused when it is opened.
    dataset = _dataset(root / "d")
    (dataset / "a.jsonl").unlink()
    (dataset / "a.jsonl").symlink_to(secret / "a.jsonl")
    _refusal(access, str(dataset))


def test_buckets_outside_the_list_are_refused_before_any_call(tmp_path):
    access = DatasetAccess.of([], ["datasets"])
    message = _refusal(access, "s3://other/prefix")
    assert "MAPPER_VALIDATION_S3_BUCKETS" in message
    _refusal(DatasetAccess.of([], []), "s3://datasets/prefix")
    _refusal(DatasetAccess.of([], ["datasets"]), str(tmp_path))  # no roots: no local dataset
