"""RegistryService over gRPC: proto <-> domain, nothing else (auth and errors: platform/rpc)."""
# ruff: noqa: N802  (servicer methods carry the RPC names the generated base class defines)

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.platform.auth import current_principal
from llama_mapper.registry import domain as d
from llama_mapper.registry.registrar import FileStart, Registrar, UploadPart
from llama_mapper.registry.store import MAX_PAGE, RegistryStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RegistryService"].full_name
MUTATING_METHODS = frozenset(
    {
        "RegisterVersion",
        "SetAlias",
        "RecordMetrics",
        "RecordBenchmark",
        "SetTargets",
        "RecordGateResult",
        "SetRollout",
        "DeleteVersion",
    }
)
_STAGES = {
    pb.ROLLOUT_STAGE_SHADOW: d.RolloutStage.SHADOW,
    pb.ROLLOUT_STAGE_CANARY: d.RolloutStage.CANARY,
    pb.ROLLOUT_STAGE_COMPLETE: d.RolloutStage.COMPLETE,
    pb.ROLLOUT_STAGE_ROLLED_BACK: d.RolloutStage.ROLLED_BACK,
    pb.ROLLOUT_STAGE_ABORTED: d.RolloutStage.ABORTED,
}
_STAGES_OUT = {v: k for k, v in _STAGES.items()}
_ACTIONS_OUT = {
    d.HistoryAction.VERSION_REGISTERED: pb.HISTORY_ACTION_VERSION_REGISTERED,
    d.HistoryAction.ALIAS_SET: pb.HISTORY_ACTION_ALIAS_SET,
    d.HistoryAction.ROLLOUT_SET: pb.HISTORY_ACTION_ROLLOUT_SET,
    d.HistoryAction.VERSION_DELETED: pb.HISTORY_ACTION_VERSION_DELETED,
    d.HistoryAction.TARGETS_SET: pb.HISTORY_ACTION_TARGETS_SET,
    d.HistoryAction.GATE_RECORDED: pb.HISTORY_ACTION_GATE_RECORDED,
}


# -- conversions ------------------------------------------------------------------------------------


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _caller(context: grpc.ServicerContext) -> d.Caller:
    """The audit actor is the authenticated principal; a client's own `x-actor` claim is kept
    beside it, marked as a claim, never instead of it."""
    metadata = dict(context.invocation_metadata())
    principal = current_principal()
    actor = principal.name if principal is not None else "unknown"
    claimed = str(metadata.get("x-actor") or "")[:128]
    if claimed and claimed != actor:
        actor = f"{actor} (as {claimed})"
    return d.Caller(actor=actor[:256], request_id=str(metadata.get("x-request-id") or "")[:128])


def _lineage_in(msg: pb.Lineage) -> d.Lineage:
    return d.Lineage(
        base_model_id=msg.base_model_id,
        base_model_sha256=msg.base_model_sha256,
        base_model_revision=msg.base_model_revision,
        training_config_json=msg.training_config_json,
        dataset_name=msg.dataset_name,
        dataset_manifest_sha256=msg.dataset_manifest_sha256,
        validation_report_sha256=msg.validation_report_sha256,
        ray_submission_id=msg.ray_submission_id,
        git_commit=msg.git_commit,
    )


def version_out(v: d.ModelVersion) -> pb.ModelVersion:
    lineage = v.lineage
    msg = pb.ModelVersion(
        model=v.model,
        version=v.version,
        display_name=v.display_name,
        description=v.description,
        lineage=pb.Lineage(
            base_model_id=lineage.base_model_id,
            base_model_revision=lineage.base_model_revision,
            base_model_sha256=lineage.base_model_sha256,
            training_config_json=lineage.training_config_json,
            dataset_name=lineage.dataset_name,
            dataset_manifest_sha256=lineage.dataset_manifest_sha256,
            validation_report_sha256=lineage.validation_report_sha256,
            ray_submission_id=lineage.ray_submission_id,
            git_commit=lineage.git_commit,
        ),
        files=[
            pb.ArtifactFile(name=f.name, sha256=f.sha256, size_bytes=f.size_bytes) for f in v.files
        ],
        artifact_sha256=v.artifact_sha256,
        lora_rank=v.lora_rank,
        target_modules=v.target_modules,
        idempotency_key=v.idempotency_key,
        create_time=_ts(v.created_at),
        created_by=v.created_by,
        aliases=v.aliases,
        temperature=v.temperature,
        deleted=v.deleted_at is not None,
        delete_time=_ts(v.deleted_at),
        deleted_by=v.deleted_by,
        delete_reason=v.delete_reason,
    )
    return msg


@functools.lru_cache(maxsize=1024)
def _resolve_response(version: d.ModelVersion) -> pb.ResolveAliasResponse:
    # The hot path: routers resolve the same few aliases constantly, and building the message
    # costs more than the lookup. Versions are frozen dataclasses, so equal means identical.
    return pb.ResolveAliasResponse(version=version_out(version))


def _metrics_out(r: d.MetricsRecord) -> pb.MetricsRecord:
    return pb.MetricsRecord(
        values=r.values,
        eval_set_sha256=r.eval_set_sha256,
        temperature=r.temperature,
        report_uri=r.report_uri,
        record_time=_ts(r.recorded_at),
        recorded_by=r.recorded_by,
    )


def _benchmark_out(r: d.BenchmarkRecord) -> pb.BenchmarkRecord:
    return pb.BenchmarkRecord(
        hardware_profile=r.hardware_profile,
        values=r.values,
        config_json=r.config_json,
        record_time=_ts(r.recorded_at),
        recorded_by=r.recorded_by,
    )


def _gate_out(r: d.GateResult) -> pb.GateResult:
    return pb.GateResult(
        hardware_profile=r.hardware_profile,
        passed=r.passed,
        summary=r.summary,
        details_json=r.details_json,
        report_uri=r.report_uri,
        record_time=_ts(r.recorded_at),
        recorded_by=r.recorded_by,
    )


def _targets_out(t: d.PerformanceTargets) -> pb.PerformanceTargets:
    return pb.PerformanceTargets(
        hardware_profile=t.hardware_profile,
        **t.values(),
        update_time=_ts(t.updated_at),
        updated_by=t.updated_by,
    )


def _alias_out(a: d.Alias) -> pb.Alias:
    return pb.Alias(name=a.name, version=a.version, update_time=_ts(a.updated_at))


def _rollout_out(r: d.Rollout) -> pb.Rollout:
    return pb.Rollout(
        model=r.model,
        control_version=r.spec.control_version,
        treatment_version=r.spec.treatment_version,
        treatment_weight=r.spec.treatment_weight,
        stage=_STAGES_OUT[r.spec.stage],
        shadow=r.spec.shadow,
        shadow_fraction=r.spec.shadow_fraction,
        salt=r.salt,
        revision=r.revision,
        update_time=_ts(r.updated_at),
        updated_by=r.updated_by,
        reason=r.reason,
    )


def _history_out(e: d.HistoryEntry) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        id=e.id,
        model=e.model,
        time=_ts(e.at),
        actor=e.actor,
        action=_ACTIONS_OUT[e.action],
        subject=e.subject,
        from_value=e.from_value,
        to_value=e.to_value,
        reason=e.reason,
        request_id=e.request_id,
    )


def _page(page_size: int, page_token: str) -> tuple[int, int]:
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative")
    try:
        after = int(page_token) if page_token else 0
    except ValueError:
        raise InvalidArgument(f"page_token {page_token!r} is not one this server issued") from None
    return after, min(page_size or MAX_PAGE, MAX_PAGE)


def _upload_parts(requests: Iterator[pb.RegisterVersionRequest]) -> Iterator[UploadPart]:
    for request in requests:
        part = request.WhichOneof("part")
        if part == "file":
            yield FileStart(request.file.name, request.file.sha256, request.file.size_bytes)
        elif part == "chunk":
            yield request.chunk
        else:
            raise InvalidArgument("metadata may only be sent once, as the first message")


# -- the servicer ----------------------------------------------------------------------------------


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(self, store: RegistryStore, registrar: Registrar) -> None:
        self.store = store
        self.registrar = registrar

    def RegisterVersion(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "metadata":
            raise InvalidArgument("the first message of RegisterVersion must carry the metadata")
        meta = first.metadata
        spec = d.VersionSpec(
            model=meta.model,
            lineage=_lineage_in(meta.lineage),
            idempotency_key=meta.idempotency_key,
            display_name=meta.display_name,
            description=meta.description,
        )
        version, created = self.registrar.register(
            spec, _upload_parts(request_iterator), _caller(context)
        )
        return pb.RegisterVersionResponse(version=version_out(version), created=created)

    def GetVersion(self, request, context):
        details = self.store.get_version(
            request.model, request.version, include_deleted=request.include_deleted
        )
        return pb.GetVersionResponse(
            version=version_out(details.version),
            metrics=[_metrics_out(m) for m in details.metrics],
            benchmarks=[_benchmark_out(b) for b in details.benchmarks],
            gate_results=[_gate_out(g) for g in details.gate_results],
        )

    def ListModels(self, request, context):
        return pb.ListModelsResponse(
            models=[
                pb.ModelSummary(
                    name=m.name,
                    latest_version=m.latest_version,
                    version_count=m.version_count,
                    aliases=[_alias_out(a) for a in m.aliases],
                    create_time=_ts(m.created_at),
                )
                for m in self.store.list_models()
            ]
        )

    def ListVersions(self, request, context):
        after, limit = _page(request.page_size, request.page_token)
        versions = self.store.list_versions(
            request.model, include_deleted=request.include_deleted, after=after, limit=limit
        )
        token = str(versions[-1].version) if len(versions) == limit else ""
        return pb.ListVersionsResponse(
            versions=[version_out(v) for v in versions], next_page_token=token
        )

    def ResolveAlias(self, request, context):
        return _resolve_response(self.store.resolve_alias(request.model, request.alias))

    def SetAlias(self, request, context):
        alias, previous = self.store.set_alias(
            request.model,
            request.alias,
            request.version,
            expected_version=request.expected_version,
            caller=_caller(context),
            reason=request.reason,
            force=request.force,
        )
        return pb.SetAliasResponse(alias=_alias_out(alias), previous_version=previous)

    def RecordMetrics(self, request, context):
        r = request.record
        record = d.MetricsRecord(
            values=dict(r.values),
            eval_set_sha256=r.eval_set_sha256,
            temperature=r.temperature if r.HasField("temperature") else None,
            report_uri=r.report_uri,
        )
        stored = self.store.record_metrics(request.model, request.version, record, _caller(context))
        return pb.RecordMetricsResponse(record=_metrics_out(stored))

    def RecordBenchmark(self, request, context):
        r = request.record
        record = d.BenchmarkRecord(
            hardware_profile=r.hardware_profile, values=dict(r.values), config_json=r.config_json
        )
        stored = self.store.record_benchmark(
            request.model, request.version, record, _caller(context)
        )
        return pb.RecordBenchmarkResponse(record=_benchmark_out(stored))

    def SetTargets(self, request, context):
        t = request.targets
        targets = d.PerformanceTargets(
            hardware_profile=t.hardware_profile,
            **{name: getattr(t, name) for name in d.TARGET_FIELDS if t.HasField(name)},
        )
        stored = self.store.set_targets(
            request.model, targets, _caller(context), reason=request.reason
        )
        return pb.SetTargetsResponse(targets=_targets_out(stored))

    def GetTargets(self, request, context):
        targets = self.store.get_targets(request.model, request.hardware_profile)
        return pb.GetTargetsResponse(targets=[_targets_out(t) for t in targets])

    def RecordGateResult(self, request, context):
        r = request.result
        result = d.GateResult(
            hardware_profile=r.hardware_profile,
            passed=r.passed,
            summary=r.summary,
            details_json=r.details_json,
            report_uri=r.report_uri,
        )
        stored = self.store.record_gate(request.model, request.version, result, _caller(context))
        return pb.RecordGateResultResponse(result=_gate_out(stored))

    def SetRollout(self, request, context):
        if request.stage not in _STAGES:
            raise InvalidArgument(
                "stage must be set (SHADOW, CANARY, COMPLETE, ROLLED_BACK or ABORTED)"
            )
        spec = d.RolloutSpec(
            control_version=request.control_version,
            treatment_version=request.treatment_version,
            treatment_weight=request.treatment_weight,
            stage=_STAGES[request.stage],
            shadow=request.shadow,
            shadow_fraction=request.shadow_fraction,
        )
        rollout = self.store.set_rollout(
            request.model,
            spec,
            expected_revision=request.expected_revision,
            caller=_caller(context),
            reason=request.reason,
        )
        return pb.SetRolloutResponse(rollout=_rollout_out(rollout))

    def GetRollout(self, request, context):
        return pb.GetRolloutResponse(rollout=_rollout_out(self.store.get_rollout(request.model)))

    def GetHistory(self, request, context):
        after, limit = _page(request.page_size, request.page_token)
        entries = self.store.history(
            request.model, subject=request.subject, after=after, limit=limit
        )
        token = str(entries[-1].id) if len(entries) == limit else ""
        return pb.GetHistoryResponse(
            entries=[_history_out(e) for e in entries], next_page_token=token
        )

    def DownloadArtifact(self, request, context):
        version, files = self.registrar.open_download(request.model, request.version)
        yield pb.DownloadArtifactResponse(
            manifest=pb.ArtifactManifest(
                files=[
                    pb.ArtifactFile(name=f.name, sha256=f.sha256, size_bytes=f.size_bytes)
                    for f in version.files
                ],
                artifact_sha256=version.artifact_sha256,
            )
        )
        for entry, chunks in files:
            yield pb.DownloadArtifactResponse(
                file=pb.ArtifactFile(
                    name=entry.name, sha256=entry.sha256, size_bytes=entry.size_bytes
                )
            )
            for chunk in chunks:
                yield pb.DownloadArtifactResponse(chunk=chunk)

    def DeleteVersion(self, request, context):
        version = self.store.delete_version(
            request.model, request.version, reason=request.reason, caller=_caller(context)
        )
        return pb.DeleteVersionResponse(version=version_out(version))
