"""RegistryService over gRPC: proto <-> domain, nothing else (auth and errors: platform/rpc)."""
# ruff: noqa: N802  (servicer methods carry the RPC names the generated base class defines)

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator

import grpc

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.platform.auth import WRITE, current_principal
from llama_mapper.platform.rpc.messages import from_message, to_message
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
        "RenewRolloutLease",
        "FinishRollout",
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
    d.HistoryAction.TEMPERATURE_SET: pb.HISTORY_ACTION_TEMPERATURE_SET,
}


# -- conversions ------------------------------------------------------------------------------------


def _caller(context: grpc.ServicerContext) -> d.Caller:
    """The audit actor is `principal/claim`: the authenticated principal, then what the client
    says it acts as (`x-actor`), kept beside it, never instead of it."""
    metadata = dict(context.invocation_metadata())
    principal = current_principal()
    actor = principal.name if principal is not None else "unknown"
    claimed = "".join(
        c for c in str(metadata.get("x-actor") or "") if c.isprintable() and not c.isspace()
    )[:128]
    if claimed and claimed != actor:
        actor = f"{actor}/{claimed}"
    return d.Caller(actor=actor[:256], request_id=str(metadata.get("x-request-id") or "")[:128])


def version_out(v: d.ModelVersion) -> pb.ModelVersion:
    return to_message(pb.ModelVersion, v, deleted=v.deleted_at is not None)


@functools.lru_cache(maxsize=1024)
def _resolve_response(version: d.ModelVersion) -> pb.ResolveAliasResponse:
    # The hot path: routers resolve the same few aliases constantly, and building the message
    # costs more than the lookup. Versions are frozen dataclasses, so equal means identical.
    return pb.ResolveAliasResponse(version=version_out(version))


def _targets_out(t: d.PerformanceTargets) -> pb.PerformanceTargets:
    return to_message(pb.PerformanceTargets, t)


def _rollout_out(r: d.Rollout) -> pb.Rollout:
    spec = r.spec
    return to_message(
        pb.Rollout,
        r,
        lease_expire_time=r.lease_expires_at,
        **{**vars(spec), "stage": _STAGES_OUT[spec.stage]},
    )


def _history_out(e: d.HistoryEntry) -> pb.HistoryEntry:
    return to_message(pb.HistoryEntry, e, action=_ACTIONS_OUT[e.action])


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
        spec = from_message(d.VersionSpec, meta, lineage=from_message(d.Lineage, meta.lineage))
        version, created = self.registrar.register(
            spec, _upload_parts(request_iterator), _caller(context)
        )
        return pb.RegisterVersionResponse(version=version_out(version), created=created)

    def GetVersion(self, request, context):
        details = self.store.get_version(
            request.model, request.version, include_deleted=request.include_deleted
        )
        return to_message(pb.GetVersionResponse, details, version=version_out(details.version))

    def ListModels(self, request, context):
        return pb.ListModelsResponse(
            models=[to_message(pb.ModelSummary, m) for m in self.store.list_models()]
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
            hardware_profile=request.hardware_profile,
        )
        return pb.SetAliasResponse(alias=to_message(pb.Alias, alias), previous_version=previous)

    def RecordMetrics(self, request, context):
        r = request.record
        record = from_message(
            d.MetricsRecord,
            r,
            values=dict(r.values),
            temperature=r.temperature if r.HasField("temperature") else None,
            threshold=r.threshold if r.HasField("threshold") else None,
        )
        stored = self.store.record_metrics(request.model, request.version, record, _caller(context))
        return pb.RecordMetricsResponse(record=to_message(pb.MetricsRecord, stored))

    def RecordBenchmark(self, request, context):
        r = request.record
        record = from_message(d.BenchmarkRecord, r, values=dict(r.values))
        stored = self.store.record_benchmark(
            request.model, request.version, record, _caller(context)
        )
        return pb.RecordBenchmarkResponse(record=to_message(pb.BenchmarkRecord, stored))

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
        result = from_message(d.GateResult, request.result)
        stored = self.store.record_gate(request.model, request.version, result, _caller(context))
        return pb.RecordGateResultResponse(result=to_message(pb.GateResult, stored))

    def SetRollout(self, request, context):
        if request.stage not in _STAGES:
            raise InvalidArgument(
                "stage must be set (SHADOW, CANARY, COMPLETE, ROLLED_BACK or ABORTED)"
            )
        spec = from_message(d.RolloutSpec, request, stage=_STAGES[request.stage])
        rollout = self.store.set_rollout(
            request.model,
            spec,
            expected_revision=request.expected_revision,
            caller=_caller(context),
            reason=request.reason,
            lease_seconds=request.lease_seconds,
            force=request.force,
            hardware_profile=request.hardware_profile,
        )
        return pb.SetRolloutResponse(rollout=_rollout_out(rollout))

    def RenewRolloutLease(self, request, context):
        rollout = self.store.renew_lease(
            request.model,
            expected_revision=request.expected_revision,
            lease_seconds=request.lease_seconds,
            caller=_caller(context),
        )
        return pb.RenewRolloutLeaseResponse(rollout=_rollout_out(rollout))

    def FinishRollout(self, request, context):
        if request.outcome not in _STAGES:
            raise InvalidArgument("outcome must be COMPLETE, ROLLED_BACK or ABORTED")
        rollout, alias = self.store.finish_rollout(
            request.model,
            _STAGES[request.outcome],
            expected_revision=request.expected_revision,
            caller=_caller(context),
            reason=request.reason,
            alias=request.alias or "champion",
        )
        return pb.FinishRolloutResponse(
            rollout=_rollout_out(rollout),
            alias=to_message(pb.Alias, alias) if alias is not None else None,
        )

    def GetRollout(self, request, context):
        rollout = _rollout_out(self.store.get_rollout(request.model))
        principal = current_principal()
        if principal is None or not principal.may(WRITE):
            # The salt decides every key's arm: a reader who knew it could choose its own.
            rollout.salt = ""
        return pb.GetRolloutResponse(rollout=rollout)

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
        yield pb.DownloadArtifactResponse(manifest=to_message(pb.ArtifactManifest, version))
        for entry, chunks in files:
            yield pb.DownloadArtifactResponse(file=to_message(pb.ArtifactFile, entry))
            for chunk in chunks:
                yield pb.DownloadArtifactResponse(chunk=chunk)

    def DeleteVersion(self, request, context):
        version = self.store.delete_version(
            request.model, request.version, reason=request.reason, caller=_caller(context)
        )
        return pb.DeleteVersionResponse(version=version_out(version))
