"""Loading a dataset for validation: manifest + JSON Lines files from a local directory or S3."""

# Files are streamed line by line with a bounded readline, so a 2 GB row is refused after reading
# max_row_bytes of it, and each file's sha256 is computed on the same pass.

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)
from llama_mapper.domain.manifest import MANIFEST_NAME, manifest_digest
from llama_mapper.validation.access import DatasetAccess
from llama_mapper.validation.checks import Row

S3_CREDENTIAL_HINT = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / an instance role) in the "
    "validation service's environment, and AWS_ENDPOINT_URL for a non-AWS object store"
)


class Store(Protocol):
    def open(self, name: str) -> IO[bytes]: ...


@dataclass(frozen=True)
class LocalStore:
    root: Path
    access: DatasetAccess | None = None

    def open(self, name: str) -> IO[bytes]:
        path = self.root / name
        if self.access is not None:
            # Checked before existence, on the resolved path: a symlink cannot lead out.
            path = self.access.check_path(path)
        try:
            if not path.is_file():
                raise NotFound(f"{path} does not exist")
            return open(path, "rb")
        except OSError as exc:  # a name too long, a directory we may not list, ...
            raise InvalidArgument(f"{path} cannot be read: {exc.strerror}") from None


class _StreamingRaw(io.RawIOBase):
    """A botocore StreamingBody as a raw stream, so BufferedReader.readline(limit) works on it."""

    def __init__(self, body: Any) -> None:
        self.body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.body.close()
        super().close()


@dataclass
class S3Store:
    bucket: str
    prefix: str
    endpoint_url: str | None = None
    _client: Any = field(default=None, repr=False)

    def client(self) -> Any:
        if self._client is None:
            import boto3

            session = boto3.session.Session()
            if session.get_credentials() is None:
                raise FailedPrecondition(
                    f"no AWS credentials for s3://{self.bucket}: {S3_CREDENTIAL_HINT}"
                )
            self._client = session.client(
                "s3", endpoint_url=self.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
            )
        return self._client

    def open(self, name: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        key = f"{self.prefix}/{name}" if self.prefix else name
        try:
            body = self.client().get_object(Bucket=self.bucket, Key=key)["Body"]
        except NoCredentialsError:
            raise FailedPrecondition(
                f"no AWS credentials for s3://{self.bucket}: {S3_CREDENTIAL_HINT}"
            ) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchBucket", "404"):
                raise NotFound(f"s3://{self.bucket}/{key} does not exist") from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise FailedPrecondition(
                    f"access to s3://{self.bucket}/{key} was refused ({code}): {S3_CREDENTIAL_HINT}"
                ) from None
            raise Unavailable(f"s3://{self.bucket}/{key}: {code or exc}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"object store unreachable for s3://{self.bucket}: {exc}") from None
        return io.BufferedReader(_StreamingRaw(body), buffer_size=1 << 16)


def open_store(
    uri: str, endpoint_url: str | None = None, access: DatasetAccess | None = None
) -> tuple[Store, str | None]:
    """A store for a dataset reference, and the manifest's file name when the URI named it;
    PermissionDenied for a place `access` does not allow (None: whatever this process may read)."""
    if not uri:
        raise InvalidArgument("dataset_uri is empty: give a directory or s3://bucket/prefix")
    if "\x00" in uri:
        raise InvalidArgument("dataset_uri contains a NUL character")
    if uri.startswith("s3://"):
        bucket, _, prefix = uri[5:].partition("/")
        if not bucket:
            raise InvalidArgument(f"{uri!r} names no bucket: use s3://bucket/prefix")
        if access is not None:
            access.check_bucket(bucket)
        prefix = prefix.strip("/")
        if prefix.endswith(".json"):
            prefix, _, name = prefix.rpartition("/")
            return S3Store(bucket, prefix, endpoint_url), name
        return S3Store(bucket, prefix, endpoint_url), None
    if "://" in uri:
        raise InvalidArgument(f"unsupported dataset URI scheme in {uri!r}: use a path or s3://")
    path = Path(uri)
    if access is not None:
        access.check_path(path)
    if path.suffix == ".json":
        return LocalStore(path.parent, access), path.name
    return LocalStore(path, access), None


@dataclass
class LoadedDataset:
    manifest: dict[str, Any]
    manifest_sha256: str
    rows: list[Row]
    file_digests: dict[str, str]
    file_rows: dict[str, int]

    def rows_of(self, *names: str) -> list[Row]:
        wanted = set(names)
        return [row for row in self.rows if row.file in wanted]


_MANIFEST_LIMITS = jsonio.JsonLimits(max_bytes=64 << 20, max_string=1 << 20)


def read_manifest(store: Store, name: str | None) -> tuple[dict[str, Any], str]:
    name = name or MANIFEST_NAME
    with store.open(name) as handle:
        raw = handle.read(64 << 20)
    manifest = jsonio.loads(raw, limits=_MANIFEST_LIMITS, what=name)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise InvalidArgument(
            f"{name} has no `files` object: rebuild it with `mapperctl data build`"
        )
    for entry_name, entry in manifest["files"].items():
        if not isinstance(entry, dict):
            raise InvalidArgument(
                f"{name}: files[{entry_name!r}] is not an object with sha256 and rows: rebuild it "
                "with `mapperctl data build`"
            )
    return manifest, manifest_digest(manifest)


def iter_rows(handle: IO[bytes], name: str, max_row_bytes: int, digest: Any) -> Iterator[Row]:
    """Rows of one JSON Lines file; refuses a row over max_row_bytes without reading it whole."""
    line_no = 0
    while True:
        line = handle.readline(max_row_bytes + 1)
        if not line:
            return
        line_no += 1
        digest.update(line)
        if len(line) > max_row_bytes and not line.endswith(b"\n"):
            raise PayloadTooLarge(
                f"{name}:{line_no}: row is larger than the {max_row_bytes}-byte limit "
                "(MAPPER_VALIDATION_MAX_ROW_BYTES); split or drop it"
            )
        if not line.strip():
            continue
        limits = jsonio.JsonLimits(max_bytes=max_row_bytes + 2, max_string=max_row_bytes)
        data = jsonio.loads(line, limits=limits, what=f"{name}:{line_no}")
        if not isinstance(data, dict):  # every check reads a row as an object
            raise InvalidArgument(f"{name}:{line_no}: a row must be a JSON object")
        yield Row(data, name, line_no)


def load_dataset(
    uri: str,
    *,
    max_row_bytes: int,
    endpoint_url: str | None = None,
    progress: Any = None,
    access: DatasetAccess | None = None,
) -> LoadedDataset:
    store, manifest_name = open_store(uri, endpoint_url, access)
    manifest, manifest_sha = read_manifest(store, manifest_name)
    rows: list[Row] = []
    digests: dict[str, str] = {}
    counts: dict[str, int] = {}
    for name in sorted(manifest["files"]):
        if "/" in name or name.startswith("."):
            raise InvalidArgument(f"manifest names {name!r}: files must sit next to manifest.json")
        digest = hashlib.sha256()
        before = len(rows)
        with store.open(name) as handle:
            for row in iter_rows(handle, name, max_row_bytes, digest):
                rows.append(row)
                if progress and len(rows) % 10000 == 0:
                    progress("load", len(rows))
        digests[name] = digest.hexdigest()
        counts[name] = len(rows) - before
    return LoadedDataset(manifest, manifest_sha, rows, digests, counts)
