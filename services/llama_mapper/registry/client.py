"""RegistryClient: the typed Python client of the registry (used by mapperctl, training, evaluation, serving)."""

from __future__ import annotations

import getpass
import hashlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain import errors
from llama_mapper.platform.rpc.channel import call_metadata, open_channel, unary
from llama_mapper.platform.rpc.errors import from_rpc_error
from llama_mapper.platform.settings.common import local_address
from llama_mapper.platform.settings.registry import RegistryClientSettings
from llama_mapper.registry.artifacts import CHUNK_SIZE, collect_upload_files, sha256_file

DEFAULT_ADDRESS = local_address("registry")
T = TypeVar("T")

STAGES = {
    "shadow": pb.ROLLOUT_STAGE_SHADOW,
    "canary": pb.ROLLOUT_STAGE_CANARY,
    "complete": pb.ROLLOUT_STAGE_COMPLETE,
    "rolled_back": pb.ROLLOUT_STAGE_ROLLED_BACK,
    "aborted": pb.ROLLOUT_STAGE_ABORTED,
}


class RegistryClient:
    """One channel to the registry; every method raises llama_mapper.domain.errors on failure."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        token: str | None = None,
        actor: str | None = None,
        tls: bool = False,
        ca_file: Path | None = None,
        root_certificates: bytes | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        self._channel = open_channel(
            address, tls=tls, ca_file=ca_file, root_certificates=root_certificates
        )
        self._stub = pb_grpc.RegistryServiceStub(self._channel)
        self._token = token
        self._actor = actor or _default_actor()
        self.timeout_s = timeout_s

    @classmethod
    def from_env(cls, **overrides: Any) -> RegistryClient:
        """MAPPER_REGISTRY_ADDRESS, _TOKEN, _CA_FILE, _TLS, _ACTOR, _TIMEOUT_S; `overrides`
        that are not None win."""
        settings = RegistryClientSettings()
        kwargs: dict[str, Any] = {
            "address": settings.address,
            "token": settings.bearer(),
            "actor": settings.actor,
            "tls": settings.tls,
            "ca_file": settings.ca_file,
            "timeout_s": settings.timeout_s,
        }
        kwargs.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**kwargs)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _metadata(self) -> list[tuple[str, str]]:
        return call_metadata(self._token, [("x-actor", self._actor)])

    def _call(self, method: Callable[..., T], request: Any, *, timeout_s: float | None = None) -> T:
        return unary(
            method,
            request,
            token=self._token,
            timeout_s=timeout_s or self.timeout_s,
            extra=[("x-actor", self._actor)],
        )

    # -- versions ---------------------------------------------------------------------------------

    def register_directory(
        self,
        model: str,
        directory: Path | str,
        *,
        lineage: pb.Lineage | Mapping[str, str],
        idempotency_key: str = "",
        display_name: str = "",
        description: str = "",
        timeout_s: float = 600.0,
    ) -> pb.RegisterVersionResponse:
        """Upload an adapter directory (symlinks and subdirectories refused) and register it."""
        files = collect_upload_files(Path(directory))
        if not isinstance(lineage, pb.Lineage):
            lineage = pb.Lineage(**lineage)
        metadata = pb.VersionMetadata(
            model=model,
            idempotency_key=idempotency_key,
            display_name=display_name,
            description=description,
            lineage=lineage,
        )
        digests = [(name, path, sha256_file(path), path.stat().st_size) for name, path in files]

        def requests() -> Iterator[pb.RegisterVersionRequest]:
            yield pb.RegisterVersionRequest(metadata=metadata)
            for name, path, digest, size in digests:
                yield pb.RegisterVersionRequest(
                    file=pb.FileHeader(name=name, sha256=digest, size_bytes=size)
                )
                with open(path, "rb") as f:
                    while block := f.read(CHUNK_SIZE):
                        yield pb.RegisterVersionRequest(chunk=block)

        return self._call(self._stub.RegisterVersion, requests(), timeout_s=timeout_s)

    def get_version(
        self, model: str, version: int, *, include_deleted: bool = False
    ) -> pb.GetVersionResponse:
        request = pb.GetVersionRequest(
            model=model, version=version, include_deleted=include_deleted
        )
        return self._call(self._stub.GetVersion, request)

    def list_models(self) -> list[pb.ModelSummary]:
        return list(self._call(self._stub.ListModels, pb.ListModelsRequest()).models)

    def list_versions(self, model: str, *, include_deleted: bool = False) -> list[pb.ModelVersion]:
        versions: list[pb.ModelVersion] = []
        token = ""
        while True:
            request = pb.ListVersionsRequest(
                model=model, include_deleted=include_deleted, page_token=token
            )
            page = self._call(self._stub.ListVersions, request)
            versions.extend(page.versions)
            token = page.next_page_token
            if not token:
                return versions

    def resolve_alias(self, model: str, alias: str) -> pb.ModelVersion:
        request = pb.ResolveAliasRequest(model=model, alias=alias)
        return self._call(self._stub.ResolveAlias, request).version

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        expected_version: int,
        reason: str = "",
        force: bool = False,
        hardware_profile: str = "",
    ) -> pb.SetAliasResponse:
        """Compare-and-set; raises errors.Aborted when the alias moved meanwhile (0: expect unset).
        `hardware_profile`: whose passed gate a model promoted without a canary (the analyst)
        needs; empty: the registry's default."""
        request = pb.SetAliasRequest(
            model=model,
            alias=alias,
            version=version,
            expected_version=expected_version,
            reason=reason,
            force=force,
            hardware_profile=hardware_profile,
        )
        return self._call(self._stub.SetAlias, request)

    def delete_version(self, model: str, version: int, *, reason: str) -> pb.ModelVersion:
        request = pb.DeleteVersionRequest(model=model, version=version, reason=reason)
        return self._call(self._stub.DeleteVersion, request).version

    # -- records ----------------------------------------------------------------------------------

    def record_metrics(
        self,
        model: str,
        version: int,
        values: Mapping[str, float],
        *,
        eval_set_sha256: str = "",
        temperature: float | None = None,
        report_uri: str = "",
        calibrator_json: str = "",
        threshold: float | None = None,
    ) -> pb.MetricsRecord:
        """Appends a metrics record; a temperature, calibrator or threshold also changes what
        serving applies to the version (recorded in the history)."""
        record = pb.MetricsRecord(
            values=values,
            eval_set_sha256=eval_set_sha256,
            temperature=temperature,
            report_uri=report_uri,
            calibrator_json=calibrator_json,
            threshold=threshold,
        )
        request = pb.RecordMetricsRequest(model=model, version=version, record=record)
        return self._call(self._stub.RecordMetrics, request).record

    def record_benchmark(
        self,
        model: str,
        version: int,
        hardware_profile: str,
        values: Mapping[str, float],
        *,
        config_json: str = "",
    ) -> pb.BenchmarkRecord:
        record = pb.BenchmarkRecord(
            hardware_profile=hardware_profile, values=values, config_json=config_json
        )
        request = pb.RecordBenchmarkRequest(model=model, version=version, record=record)
        return self._call(self._stub.RecordBenchmark, request).record

    def set_targets(
        self, model: str, hardware_profile: str, *, reason: str = "", **targets: float
    ) -> pb.PerformanceTargets:
        """Targets by field name: p95_latency_ms, min_accuracy, min_macro_f1, max_ece, ..."""
        message = pb.PerformanceTargets(hardware_profile=hardware_profile, **targets)
        request = pb.SetTargetsRequest(model=model, targets=message, reason=reason)
        return self._call(self._stub.SetTargets, request).targets

    def get_targets(self, model: str, hardware_profile: str = "") -> list[pb.PerformanceTargets]:
        request = pb.GetTargetsRequest(model=model, hardware_profile=hardware_profile)
        return list(self._call(self._stub.GetTargets, request).targets)

    def record_gate_result(
        self,
        model: str,
        version: int,
        hardware_profile: str,
        *,
        passed: bool,
        summary: str = "",
        details_json: str = "",
        report_uri: str = "",
    ) -> pb.GateResult:
        result = pb.GateResult(
            hardware_profile=hardware_profile,
            passed=passed,
            summary=summary,
            details_json=details_json,
            report_uri=report_uri,
        )
        request = pb.RecordGateResultRequest(model=model, version=version, result=result)
        return self._call(self._stub.RecordGateResult, request).result

    # -- rollouts and history ---------------------------------------------------------------------

    def set_rollout(
        self,
        model: str,
        *,
        control_version: int,
        treatment_version: int,
        treatment_weight: float,
        stage: str,
        expected_revision: int,
        shadow: bool = False,
        shadow_fraction: float = 0.0,
        reason: str = "",
        lease_seconds: float = 0.0,
        force: bool = False,
        hardware_profile: str = "",
    ) -> pb.Rollout:
        """Compare-and-set on the rollout revision; stage is shadow|canary|complete|rolled_back|aborted.
        Opening a rollout of a treatment needs its passing gate and temperature, or force."""
        if stage not in STAGES:
            raise errors.InvalidArgument(f"stage must be one of {sorted(STAGES)}, got {stage!r}")
        request = pb.SetRolloutRequest(
            model=model,
            control_version=control_version,
            treatment_version=treatment_version,
            treatment_weight=treatment_weight,
            stage=STAGES[stage],
            shadow=shadow,
            shadow_fraction=shadow_fraction,
            expected_revision=expected_revision,
            reason=reason,
            lease_seconds=lease_seconds,
            force=force,
            hardware_profile=hardware_profile,
        )
        return self._call(self._stub.SetRollout, request).rollout

    def renew_rollout_lease(
        self, model: str, *, expected_revision: int, lease_seconds: float
    ) -> pb.Rollout:
        request = pb.RenewRolloutLeaseRequest(
            model=model, expected_revision=expected_revision, lease_seconds=lease_seconds
        )
        return self._call(self._stub.RenewRolloutLease, request).rollout

    def finish_rollout(
        self,
        model: str,
        outcome: str,
        *,
        expected_revision: int,
        reason: str = "",
        alias: str = "champion",
    ) -> pb.FinishRolloutResponse:
        """Ends the active rollout in one transaction: `complete` also moves `alias`."""
        if outcome not in ("complete", "rolled_back", "aborted"):
            raise errors.InvalidArgument(
                f"outcome must be complete, rolled_back or aborted, got {outcome!r}"
            )
        request = pb.FinishRolloutRequest(
            model=model,
            expected_revision=expected_revision,
            outcome=STAGES[outcome],
            alias=alias,
            reason=reason,
        )
        return self._call(self._stub.FinishRollout, request)

    def get_rollout(self, model: str) -> pb.Rollout:
        return self._call(self._stub.GetRollout, pb.GetRolloutRequest(model=model)).rollout

    def history(self, model: str, *, subject: str = "") -> list[pb.HistoryEntry]:
        entries: list[pb.HistoryEntry] = []
        token = ""
        while True:
            request = pb.GetHistoryRequest(model=model, subject=subject, page_token=token)
            page = self._call(self._stub.GetHistory, request)
            entries.extend(page.entries)
            token = page.next_page_token
            if not token:
                return entries

    # -- download ---------------------------------------------------------------------------------

    def download(
        self, model: str, version: int, dest: Path | str, *, timeout_s: float = 600.0
    ) -> Path:
        """Download a version's files into `dest` (created; must not exist), verifying every sha256.

        Files land in a temporary sibling directory that is renamed to `dest` only once every
        file of the manifest arrived intact: a failed download leaves nothing behind.
        """
        dest = Path(dest)
        if dest.exists():
            raise errors.AlreadyExists(f"{dest} already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
        try:
            self._receive(model, version, tmp, timeout_s)
            tmp.rename(dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return dest

    def _receive(self, model: str, version: int, into: Path, timeout_s: float) -> None:
        request = pb.DownloadArtifactRequest(model=model, version=version)
        expected: dict[str, pb.ArtifactFile] = {}
        received: set[str] = set()
        current: tuple[pb.ArtifactFile, Any, Any] | None = None

        def finish() -> None:
            if current is None:
                return
            entry, handle, digest = current
            size = handle.tell()
            handle.close()
            if digest.hexdigest() != entry.sha256 or size != entry.size_bytes:
                raise errors.DataLoss(
                    f"{entry.name} of {model} v{version} failed sha256 verification"
                )
            received.add(entry.name)

        try:
            stream = self._stub.DownloadArtifact(
                request, metadata=self._metadata(), timeout=timeout_s
            )
            for message in stream:
                part = message.WhichOneof("part")
                if part == "manifest":
                    expected = {f.name: f for f in message.manifest.files}
                elif part == "file":
                    finish()
                    name = message.file.name
                    if expected.get(name) != message.file:
                        raise errors.DataLoss(f"server sent {name!r}, which is not in the manifest")
                    path = into / Path(name).name  # names are plain file names; never leave `into`
                    current = (message.file, open(path, "xb"), hashlib.sha256())  # noqa: SIM115
                elif part == "chunk":
                    if current is None:
                        raise errors.DataLoss("server sent data before a file header")
                    current[1].write(message.chunk)
                    current[2].update(message.chunk)
            finish()
            current = None
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            if current is not None:
                current[1].close()
        missing = sorted(set(expected) - received)
        if missing or not expected:
            raise errors.DataLoss(
                f"download of {model} v{version} ended without {missing or 'a manifest'}"
            )


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
