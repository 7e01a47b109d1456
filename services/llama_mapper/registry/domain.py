"""The registry's domain records, independent of the database and of the wire."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.registry.artifacts import FileEntry

_MODEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_PROFILE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not _MODEL_RE.fullmatch(name):
        raise InvalidArgument(
            f"model name {name!r}: use 1-128 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def check_alias_name(name: str) -> str:
    if not isinstance(name, str) or not _ALIAS_RE.fullmatch(name):
        raise InvalidArgument(
            f"alias {name!r}: start with a letter, then up to 63 lower-case letters, digits, '_' or '-'"
        )
    return name


def check_profile_name(name: str) -> str:
    if not isinstance(name, str) or not _PROFILE_RE.fullmatch(name):
        raise InvalidArgument(
            f"hardware profile {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-'"
        )
    return name


def check_version_number(version: int) -> int:
    if version < 1:
        raise InvalidArgument(f"version must be 1 or more, got {version}")
    return version


@dataclass(frozen=True)
class Caller:
    """Who is asking, for the audit history."""

    actor: str = "unknown"
    request_id: str = ""


@dataclass(frozen=True)
class Lineage:
    base_model_id: str
    base_model_sha256: str
    base_model_revision: str = ""
    training_config_json: str = ""
    dataset_name: str = ""
    dataset_manifest_sha256: str = ""
    validation_report_sha256: str = ""
    ray_submission_id: str = ""
    git_commit: str = ""


@dataclass(frozen=True)
class VersionSpec:
    """What a client asks to register (the artifact comes separately)."""

    model: str
    lineage: Lineage
    idempotency_key: str = ""
    display_name: str = ""
    description: str = ""


@dataclass(frozen=True)
class PublishedArtifact:
    """An artifact already stored and verified, ready to be named by a version row."""

    key: str
    files: tuple[FileEntry, ...]
    sha256: str
    lora_rank: int
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class ModelVersion:
    model: str
    version: int
    lineage: Lineage
    files: tuple[FileEntry, ...]
    artifact_key: str
    artifact_sha256: str
    lora_rank: int
    target_modules: tuple[str, ...]
    created_at: datetime
    created_by: str
    idempotency_key: str = ""
    display_name: str = ""
    description: str = ""
    aliases: tuple[str, ...] = ()
    temperature: float | None = None
    calibrator_json: str = ""
    threshold: float | None = None
    deleted_at: datetime | None = None
    deleted_by: str = ""
    delete_reason: str = ""


@dataclass(frozen=True)
class MetricsRecord:
    values: dict[str, float]
    eval_set_sha256: str = ""
    temperature: float | None = None
    report_uri: str = ""
    calibrator_json: str = ""
    threshold: float | None = None
    recorded_at: datetime | None = None
    recorded_by: str = ""


@dataclass(frozen=True)
class BenchmarkRecord:
    hardware_profile: str
    values: dict[str, float]
    config_json: str = ""
    recorded_at: datetime | None = None
    recorded_by: str = ""


TARGET_FIELDS = (
    "p95_latency_ms",
    "min_accuracy",
    "min_macro_f1",
    "max_ece",
    "min_schema_valid_rate",
    "max_error_rate",
)


@dataclass(frozen=True)
class PerformanceTargets:
    hardware_profile: str
    p95_latency_ms: float | None = None
    min_accuracy: float | None = None
    min_macro_f1: float | None = None
    max_ece: float | None = None
    min_schema_valid_rate: float | None = None
    max_error_rate: float | None = None
    updated_at: datetime | None = None
    updated_by: str = ""

    def validate(self) -> PerformanceTargets:
        check_profile_name(self.hardware_profile)
        if self.p95_latency_ms is not None and not self.p95_latency_ms > 0:
            raise InvalidArgument(f"p95_latency_ms must be positive, got {self.p95_latency_ms}")
        for name in TARGET_FIELDS[1:]:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"{name} must lie in [0, 1], got {value}")
        if all(getattr(self, name) is None for name in TARGET_FIELDS):
            raise InvalidArgument(f"targets for {self.hardware_profile!r} set no target at all")
        return self

    def values(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in TARGET_FIELDS if getattr(self, n) is not None}


@dataclass(frozen=True)
class GateResult:
    hardware_profile: str
    passed: bool
    summary: str = ""
    details_json: str = ""
    report_uri: str = ""
    recorded_at: datetime | None = None
    recorded_by: str = ""


def gate_problems(latest: Any, profile: str) -> list[str]:
    """Why a version whose latest gate for `profile` is `latest` (anything with `passed` and
    `summary`: a store row, a GateResult, the wire message; None: no gate) may not take traffic."""
    if latest is None:
        return [f"no gate result for {profile!r} (run `mapperctl eval gate`)"]
    if not latest.passed:
        return [f"its latest {profile!r} gate failed ({latest.summary or 'no summary'})"]
    return []


@dataclass(frozen=True)
class Alias:
    name: str
    version: int
    updated_at: datetime


class RolloutStage(enum.StrEnum):
    SHADOW = "shadow"
    CANARY = "canary"
    COMPLETE = "complete"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


RULES_ONLY = 0


@dataclass(frozen=True)
class RolloutSpec:
    control_version: int
    treatment_version: int
    treatment_weight: float
    stage: RolloutStage
    shadow: bool = False
    shadow_fraction: float = 0.0

    def validate(self) -> RolloutSpec:
        # Control 0 is the rules mapper alone: what answers before any adapter is champion.
        if self.control_version != RULES_ONLY:
            check_version_number(self.control_version)
        check_version_number(self.treatment_version)
        if self.control_version == self.treatment_version:
            raise InvalidArgument("control and treatment must be different versions")
        for name in ("treatment_weight", "shadow_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidArgument(f"{name} must lie in [0, 1], got {value}")
        if self.stage in (RolloutStage.ROLLED_BACK, RolloutStage.ABORTED) and self.treatment_weight:
            raise InvalidArgument(f"a {self.stage} rollout must set treatment_weight to 0")
        if self.stage is RolloutStage.SHADOW and self.treatment_weight:
            raise InvalidArgument(
                "a shadow rollout answers from control: treatment_weight must be 0"
            )
        return self


@dataclass(frozen=True)
class Rollout:
    model: str
    spec: RolloutSpec
    salt: str
    revision: int
    updated_at: datetime
    updated_by: str
    reason: str = ""
    lease_expires_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.spec.stage in ACTIVE_STAGES


ACTIVE_STAGES = frozenset({RolloutStage.SHADOW, RolloutStage.CANARY})
FINISHED_STAGES = frozenset({RolloutStage.COMPLETE, RolloutStage.ROLLED_BACK, RolloutStage.ABORTED})
# A lease shorter than this cannot outlive one controller step; longer than a day is no lease.
MIN_LEASE_S, MAX_LEASE_S = 5.0, 86_400.0


def check_lease(seconds: float) -> float:
    if seconds and not MIN_LEASE_S <= seconds <= MAX_LEASE_S:
        raise InvalidArgument(
            f"lease_seconds must be 0 (no lease) or in [{MIN_LEASE_S:g}, {MAX_LEASE_S:g}], got {seconds}"
        )
    return seconds


class HistoryAction(enum.StrEnum):
    VERSION_REGISTERED = "version_registered"
    ALIAS_SET = "alias_set"
    ROLLOUT_SET = "rollout_set"
    VERSION_DELETED = "version_deleted"
    TARGETS_SET = "targets_set"
    GATE_RECORDED = "gate_recorded"
    TEMPERATURE_SET = "temperature_set"


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    model: str
    at: datetime
    actor: str
    action: HistoryAction
    subject: str
    from_value: str = ""
    to_value: str = ""
    reason: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class ModelSummary:
    name: str
    latest_version: int
    version_count: int
    created_at: datetime
    aliases: tuple[Alias, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class VersionDetails:
    version: ModelVersion
    metrics: tuple[MetricsRecord, ...]
    benchmarks: tuple[BenchmarkRecord, ...]
    gate_results: tuple[GateResult, ...]
