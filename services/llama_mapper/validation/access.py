"""Where the validation service may read datasets from: local roots and S3 buckets, nothing else."""

# A caller names a path; the service reads it with its own rights. So every local path is resolved
# (`..` and symlinks followed) before it is compared with the roots, each file again as it is
# opened (a symlink inside a dataset must not lead out of it), and the refusal reads the same
# whether or not the path exists: PERMISSION_DENIED must not tell a caller what is on the disk.

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llama_mapper.domain.errors import InvalidArgument, PermissionDenied


@dataclass(frozen=True)
class DatasetAccess:
    """Local directories (resolved once) and S3 bucket names a dataset may come from."""

    roots: tuple[Path, ...]
    buckets: frozenset[str]

    @classmethod
    def of(cls, roots: Iterable[Path | str], buckets: Iterable[str]) -> DatasetAccess:
        return cls(
            tuple(Path(os.path.realpath(Path(r).expanduser())) for r in roots),
            frozenset(b.strip() for b in buckets if b.strip()),
        )

    def check_path(self, path: Path | str, *, what: str = "dataset") -> Path:
        """The resolved path when it lies under a root; PermissionDenied otherwise."""
        if "\x00" in str(path):
            raise InvalidArgument(f"the {what} path contains a NUL character")
        resolved = Path(os.path.realpath(Path(path).expanduser()))
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.roots):
            raise PermissionDenied(
                f"{what} {str(path)!r} is outside the directories this validation service may "
                "read (MAPPER_VALIDATION_DATASET_ROOTS)"
            )
        return resolved

    def check_bucket(self, bucket: str, *, what: str = "dataset") -> None:
        if bucket not in self.buckets:
            raise PermissionDenied(
                f"{what} bucket {bucket!r} is not one this validation service may read "
                "(MAPPER_VALIDATION_S3_BUCKETS)"
            )
