"""Adapter artifacts: safe names, verified staging, and the local-directory and S3 stores."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from llama_mapper.domain.errors import DataLoss, InvalidArgument, NotFound, Unavailable

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
# Written last when an artifact is published: its presence marks a complete artifact. The leading
# dot keeps it out of the names a client may upload.
MANIFEST_NAME = ".manifest.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_ALLOWED_SUFFIXES = (".json", ".md", ".txt")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_DRIVE_RE = re.compile(r"^[A-Za-z]:")


@dataclass(frozen=True)
class FileEntry:
    """One verified artifact file."""

    name: str
    sha256: str
    size_bytes: int


def check_artifact_name(name: str) -> None:
    """Raise InvalidArgument unless `name` is a plain file name an adapter may contain."""
    if not name or "\x00" in name:
        raise InvalidArgument("artifact file name is empty or contains NUL")
    if "\\" in name:
        raise InvalidArgument(f"artifact name {name!r}: backslashes are not allowed")
    if name.startswith("/") or _DRIVE_RE.match(name):
        raise InvalidArgument(f"artifact name {name!r}: absolute paths are not allowed")
    if ".." in name.split("/"):
        raise InvalidArgument(f"artifact name {name!r}: path traversal ('..') is not allowed")
    if "/" in name or name.startswith("."):
        raise InvalidArgument(f"artifact name {name!r}: must be a plain, visible file name")
    lower = name.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise InvalidArgument(f"artifact {name!r}: adapters must be safetensors")
    if name == "adapter_model.safetensors" or lower.startswith("tokenizer"):
        return
    if not lower.endswith(_ALLOWED_SUFFIXES):
        raise InvalidArgument(
            f"artifact {name!r}: only adapter_config.json, adapter_model.safetensors, tokenizer*, "
            "*.json, *.md and *.txt may be uploaded"
        )


def check_sha256(value: str, what: str) -> str:
    if not _SHA256_RE.match(value):
        raise InvalidArgument(f"{what}: expected 64 lower-case hex characters, got {value!r}")
    return value


def manifest_digest(files: list[FileEntry]) -> str:
    """One digest for the whole artifact: sha256 of the canonical, sorted name/sha256/size list."""
    canonical = json.dumps(
        [[f.name, f.sha256, f.size_bytes] for f in sorted(files, key=lambda f: f.name)],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            digest.update(block)
    return digest.hexdigest()


def collect_upload_files(directory: Path) -> list[tuple[str, Path]]:
    """The files of an adapter directory to upload, refusing symlinks and subdirectories."""
    if not directory.is_dir():
        raise InvalidArgument(f"{directory} is not a directory")
    files = []
    for path in sorted(directory.iterdir()):
        if path.is_symlink():
            raise InvalidArgument(f"{path}: symlinks are not uploaded (copy the file instead)")
        if path.is_dir():
            raise InvalidArgument(f"{path}: subdirectories are not part of an adapter")
        check_artifact_name(path.name)
        files.append((path.name, path))
    return files


class StagedUpload:
    """Receives the files of one upload into a private directory, verifying each as it ends."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.files: list[FileEntry] = []
        self._max_bytes = max_bytes
        self._total = 0
        self._current: tuple[str, str, int, BinaryIO, hashlib._Hash] | None = None

    def begin_file(self, name: str, sha256: str, size_bytes: int) -> None:
        self.end_file()
        check_artifact_name(name)
        check_sha256(sha256, f"sha256 of {name}")
        if size_bytes < 0:
            raise InvalidArgument(f"size of {name} must not be negative")
        if any(f.name == name for f in self.files):
            raise InvalidArgument(f"artifact {name!r} was sent twice")
        handle = open(self.directory / name, "xb")  # noqa: SIM115 (closed by end_file/discard)
        self._current = (name, sha256, size_bytes, handle, hashlib.sha256())

    def write(self, data: bytes) -> None:
        if self._current is None:
            raise InvalidArgument("a data chunk arrived before any file header")
        self._total += len(data)
        if self._total > self._max_bytes:
            raise InvalidArgument(f"upload exceeds the limit of {self._max_bytes} bytes")
        _, _, _, handle, digest = self._current
        handle.write(data)
        digest.update(data)

    def end_file(self) -> None:
        if self._current is None:
            return
        name, expected, size, handle, digest = self._current
        self._current = None
        handle.flush()
        os.fsync(handle.fileno())
        actual_size = handle.tell()
        handle.close()
        if actual_size != size:
            raise InvalidArgument(f"{name}: received {actual_size} bytes, header said {size}")
        if digest.hexdigest() != expected:
            raise InvalidArgument(f"{name}: sha256 mismatch (upload corrupted in transit)")
        self.files.append(FileEntry(name, expected, size))

    def path(self, name: str) -> Path:
        return self.directory / name

    def discard(self) -> None:
        if self._current is not None:
            self._current[3].close()
            self._current = None
        shutil.rmtree(self.directory, ignore_errors=True)


def sweep_staging(staging_root: Path, older_than_s: float) -> int:
    """Delete uploads a crashed process left half-received; returns how many.

    Only old ones: another server sharing the directory may be receiving an upload right now.
    """
    cutoff = time.time() - older_than_s
    stale = [p for p in staging_root.iterdir() if p.is_dir() and p.stat().st_mtime <= cutoff]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


class ArtifactStore(Protocol):
    """Where verified artifacts are published and read back from."""

    def stage(self, *, max_bytes: int) -> StagedUpload: ...
    def publish(self, staged: StagedUpload, model: str) -> str: ...
    def open(self, key: str, name: str) -> BinaryIO: ...
    def remove(self, key: str) -> None: ...
    def sweep_staging(self, *, older_than_s: float) -> int: ...


def _manifest_bytes(files: list[FileEntry]) -> bytes:
    return json.dumps(
        {"files": [vars(f) for f in files], "artifact_sha256": manifest_digest(files)}, indent=1
    ).encode()


class LocalArtifactStore:
    """Artifacts under a directory: `<root>/<model>/<upload id>/`, staged in `<root>/.staging/`.

    Staging lives on the same filesystem, so publishing is one atomic rename of the directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.staging_root = root / ".staging"
        self.staging_root.mkdir(parents=True, exist_ok=True)

    def stage(self, *, max_bytes: int) -> StagedUpload:
        return StagedUpload(Path(tempfile.mkdtemp(dir=self.staging_root)), max_bytes=max_bytes)

    def publish(self, staged: StagedUpload, model: str) -> str:
        key = f"{model}/{uuid.uuid4().hex}"
        (staged.directory / MANIFEST_NAME).write_bytes(_manifest_bytes(staged.files))
        dest = self.root / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        staged.directory.rename(dest)
        return key

    def open(self, key: str, name: str) -> BinaryIO:
        try:
            return open(self.root / key / name, "rb")
        except FileNotFoundError:
            raise NotFound(f"artifact file {name} of {key} is missing from the store") from None

    def remove(self, key: str) -> None:
        shutil.rmtree(self.root / key, ignore_errors=True)

    def sweep_staging(self, *, older_than_s: float) -> int:
        return sweep_staging(self.staging_root, older_than_s)


class S3ArtifactStore:
    """Artifacts in S3 at `s3://bucket/prefix/<model>/<upload id>/`.

    Uploads are received and verified on local disk first; then each file is put, and the
    manifest last, before the version row is committed, so no version ever names a partial set.
    """

    def __init__(
        self, uri: str, *, endpoint_url: str | None, region: str, staging_root: Path
    ) -> None:
        import boto3  # deferred: the local-directory default needs no AWS SDK at import time

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise InvalidArgument(f"artifact URI {uri!r} names no bucket")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)
        self.staging_root = staging_root
        self.staging_root.mkdir(parents=True, exist_ok=True)

    def _key(self, key: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, key, name) if p)

    def stage(self, *, max_bytes: int) -> StagedUpload:
        return StagedUpload(Path(tempfile.mkdtemp(dir=self.staging_root)), max_bytes=max_bytes)

    def publish(self, staged: StagedUpload, model: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{model}/{uuid.uuid4().hex}"
        try:
            for entry in staged.files:
                self.client.upload_file(
                    str(staged.path(entry.name)), self.bucket, self._key(key, entry.name)
                )
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key, MANIFEST_NAME),
                Body=_manifest_bytes(staged.files),
            )
        except (BotoCoreError, ClientError) as exc:
            self.remove(key)
            raise Unavailable(f"object store refused the upload: {exc}") from None
        return key

    def open(self, key: str, name: str) -> BinaryIO:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key, name))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise NotFound(f"artifact file {name} of {key} is missing from the store") from None
            raise Unavailable(f"object store error: {exc}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"object store unreachable: {exc}") from None
        return body

    def remove(self, key: str) -> None:
        prefix = self._key(key, "")
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    def sweep_staging(self, *, older_than_s: float) -> int:
        return sweep_staging(self.staging_root, older_than_s)


def open_artifact_store(
    uri: str, *, endpoint_url: str | None, region: str, staging_root: Path
) -> ArtifactStore:
    if uri.startswith("s3://"):
        return S3ArtifactStore(
            uri, endpoint_url=endpoint_url, region=region, staging_root=staging_root
        )
    return LocalArtifactStore(Path(uri))


def read_verified(store: ArtifactStore, key: str, entry: FileEntry) -> BinaryIO:
    """The file's bytes in a spooled copy whose sha256 was checked; DataLoss if it no longer matches.

    Verifying before the first byte goes out means a corrupted artifact is reported, never served.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=32 * 1024 * 1024)  # noqa: SIM115 (returned)
    digest = hashlib.sha256()
    with store.open(key, entry.name) as source:
        while block := source.read(CHUNK_SIZE):
            digest.update(block)
            spool.write(block)
    if digest.hexdigest() != entry.sha256 or spool.tell() != entry.size_bytes:
        spool.close()
        raise DataLoss(f"artifact file {entry.name} of {key} does not match its recorded sha256")
    spool.seek(0)
    return spool


def iter_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK_SIZE):
            yield block
