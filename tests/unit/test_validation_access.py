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


def test_token_falls_back_to_the_registrys_and_the_key_to_the_stacks_file(tmp_path, monkeypatch):
    from llama_mapper.platform.settings.validation import SIGNING_KEY_FILE, ValidationSettings
    from llama_mapper.platform.stack import LOCAL_SECRETS, local_secret

    for name in ("MAPPER_VALIDATION_TOKEN", "MAPPER_VALIDATION_SIGNING_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAPPER_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("MAPPER_REGISTRY_TOKEN", "registry-token-0123456789")
    assert ValidationSettings().bearer() == "registry-token-0123456789"
    monkeypatch.setenv("MAPPER_VALIDATION_TOKEN", "validation-token-0123456789")
    assert ValidationSettings().bearer() == "validation-token-0123456789"
    assert ValidationSettings().signing_secret() is None
    # The local stack generates the key next to the registry token, readable by its owner only.
    assert LOCAL_SECRETS["MAPPER_VALIDATION_SIGNING_KEY"] == SIGNING_KEY_FILE
    key = local_secret("MAPPER_VALIDATION_SIGNING_KEY")
    path = tmp_path / "var" / SIGNING_KEY_FILE
    assert path.stat().st_mode & 0o777 == 0o600
    assert ValidationSettings().signing_secret() == key.encode()


def test_the_server_refuses_to_start_without_a_token_or_a_signing_key(tmp_path, monkeypatch):
    from llama_mapper.domain.errors import FailedPrecondition
    from llama_mapper.platform.settings.validation import ValidationSettings
    from llama_mapper.validation.server import create_server

    for name in (
        "MAPPER_VALIDATION_TOKEN",
        "MAPPER_REGISTRY_TOKEN",
        "MAPPER_VALIDATION_SIGNING_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MAPPER_VAR_DIR", str(tmp_path / "var"))
    with pytest.raises(FailedPrecondition, match="MAPPER_VALIDATION_TOKEN"):
        create_server(ValidationSettings(port=0, allow_insecure_writes=True))
    with pytest.raises(FailedPrecondition, match="MAPPER_VALIDATION_SIGNING_KEY"):
        create_server(ValidationSettings(port=0, token="validation-token-0123456789"))


def test_a_nul_in_a_path_is_invalid_argument_not_a_crash(tmp_path):
    from llama_mapper.domain.errors import InvalidArgument

    access = DatasetAccess.of([tmp_path], [])
    for given in (access, None):
        with pytest.raises(InvalidArgument, match="NUL"):
            load_dataset(f"{tmp_path}/a\x00b", max_row_bytes=1 << 20, access=given)
    with pytest.raises(InvalidArgument, match="golden set path"):
        access.check_path("/x\x00", what="golden set")


def test_a_path_too_long_is_invalid_argument_not_a_crash(tmp_path):
    from llama_mapper.domain.errors import InvalidArgument

    access = DatasetAccess.of([tmp_path], [])
    with pytest.raises(InvalidArgument, match="cannot be read"):
        load_dataset(str(tmp_path / ("x" * 5000)), max_row_bytes=1 << 20, access=access)


def test_a_manifest_entry_that_is_not_an_object_is_invalid_argument(tmp_path):
    from llama_mapper.domain.errors import InvalidArgument

    dataset = _dataset(tmp_path / "d")
    (dataset / "manifest.json").write_text(json.dumps({"files": {"a.jsonl": "0" * 64}}))
    with pytest.raises(InvalidArgument, match=r"files\['a.jsonl'\] is not an object"):
        load_dataset(str(dataset), max_row_bytes=1 << 20)
