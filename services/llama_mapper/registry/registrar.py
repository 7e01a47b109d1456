"""Registration and download of adapter versions: artifact staging, compatibility, then the store."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from llama_mapper.domain.errors import AlreadyExists, InvalidArgument
from llama_mapper.inference.compat import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    AdapterInfo,
    check_adapter_config,
    check_safetensors_header,
)
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import (
    ArtifactStore,
    FileEntry,
    StagedUpload,
    iter_chunks,
    manifest_digest,
    read_verified,
)
from llama_mapper.registry.store import RegistryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileStart:
    """Upload part: the next file begins (its bytes follow as `bytes` parts)."""

    name: str
    sha256: str
    size_bytes: int


UploadPart = FileStart | bytes


class Registrar:
    """Turns an upload stream into a registered version, and a version back into verified bytes."""

    def __init__(
        self,
        store: RegistryStore,
        artifacts: ArtifactStore,
        *,
        max_lora_rank: int = 16,
        extra_target_modules: Iterable[str] = (),
        max_upload_bytes: int = 4 * 1024**3,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.max_lora_rank = max_lora_rank
        self.extra_target_modules = tuple(extra_target_modules)
        self.max_upload_bytes = max_upload_bytes

    def _receive(self, staged: StagedUpload, parts: Iterable[UploadPart]) -> None:
        for part in parts:
            if isinstance(part, FileStart):
                staged.begin_file(part.name, part.sha256, part.size_bytes)
            else:
                staged.write(part)
        staged.end_file()

    def _check_serving(self, spec: d.VersionSpec, staged: StagedUpload) -> AdapterInfo:
        names = {f.name for f in staged.files}
        for required in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
            if required not in names:
                raise InvalidArgument(f"the adapter has no {required}")
        info = check_adapter_config(
            staged.path(ADAPTER_CONFIG).read_bytes(),
            base_model_id=spec.lineage.base_model_id,
            max_rank=self.max_lora_rank,
            extra_target_modules=self.extra_target_modules,
        )
        check_safetensors_header(staged.path(ADAPTER_WEIGHTS))
        return info

    def register(
        self, spec: d.VersionSpec, parts: Iterable[UploadPart], caller: d.Caller
    ) -> tuple[d.ModelVersion, bool]:
        """Stage and verify every file, check servability, publish, then commit the version row.

        Until the row commits nothing names the artifact, so a crash at any point leaves no
        partial version: at worst an unreferenced staging directory, swept at the next start.
        """
        self.store.check_spec(spec)
        staged = self.artifacts.stage(max_bytes=self.max_upload_bytes)
        try:
            self._receive(staged, parts)
            info = self._check_serving(spec, staged)
            digest = manifest_digest(staged.files)
            earlier = self.store.find_by_idempotency_key(spec.model, spec.idempotency_key)
            if earlier is not None:
                return self._same_content(earlier, digest), False
            key = self.artifacts.publish(staged, spec.model)
        finally:
            staged.discard()

        artifact = d.PublishedArtifact(
            key=key,
            files=tuple(sorted(staged.files, key=lambda f: f.name)),
            sha256=digest,
            lora_rank=info.rank,
            target_modules=info.target_modules,
        )
        try:
            version, created = self.store.register(spec, artifact, caller)
        except BaseException:
            self.artifacts.remove(key)
            raise
        if not created:  # a concurrent retry with the same key won: ours is not needed
            self.artifacts.remove(key)
            return self._same_content(version, digest), False
        log.info(
            "registered %s version %s (%s files)", spec.model, version.version, len(artifact.files)
        )
        return version, True

    @staticmethod
    def _same_content(earlier: d.ModelVersion, digest: str) -> d.ModelVersion:
        if earlier.artifact_sha256 != digest:
            raise AlreadyExists(
                f"idempotency key {earlier.idempotency_key!r} already registered version "
                f"{earlier.version} of {earlier.model} with a different artifact"
            )
        return earlier

    def open_download(
        self, model: str, version: int
    ) -> tuple[d.ModelVersion, list[tuple[FileEntry, Iterator[bytes]]]]:
        """Every file of the version, each verified against its sha256 before the first byte goes out."""
        found = self.store.get_version(model, version).version
        verified: list[tuple[FileEntry, BinaryIO]] = []
        try:
            for entry in found.files:
                verified.append((entry, read_verified(self.artifacts, found.artifact_key, entry)))
        except BaseException:
            for _, handle in verified:
                handle.close()
            raise
        return found, [(entry, iter_chunks(handle)) for entry, handle in verified]
