"""The registry's tables (SQLAlchemy ORM); migrations/ creates them, tests compare the two."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from llama_mapper.domain.errors import InvalidArgument


class Base(DeclarativeBase):
    pass


def _nul_in(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_nul_in(v) for v in value)
    return False


@event.listens_for(Base, "before_insert", propagate=True)
@event.listens_for(Base, "before_update", propagate=True)
def check_text(_mapper: object, _connection: object, row: Base) -> None:
    """Every row the registry writes, on every backend, before the database sees it: no NUL in
    any text or JSON value (PostgreSQL refuses them, SQLite keeps them) and no text over its
    column's length (PostgreSQL refuses, SQLite truncates nothing and keeps it): the caller gets
    INVALID_ARGUMENT naming the field, never INTERNAL from the driver."""
    table = row.__table__
    for column in table.columns:
        value = getattr(row, column.key, None)
        if value is None:
            continue
        if _nul_in(value):
            raise InvalidArgument(f"{table.name}.{column.key}: text must not contain NUL")
        length = getattr(column.type, "length", None)
        if isinstance(value, str) and length and len(value) > length:
            raise InvalidArgument(
                f"{table.name}.{column.key}: {len(value)} characters; the limit is {length}"
            )


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # The last version number handed out. Incremented by UPDATE ... RETURNING inside the
    # registering transaction, so the row lock serializes concurrent registrations.
    last_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class VersionRow(Base):
    __tablename__ = "versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
        UniqueConstraint("model_id", "idempotency_key", name="uq_versions_model_idempotency_key"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    version: Mapped[int] = mapped_column(Integer)
    # NULL when the client gave none: unique constraints ignore NULLs.
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    display_name: Mapped[str] = mapped_column(String(256), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    base_model_id: Mapped[str] = mapped_column(String(512))
    base_model_revision: Mapped[str] = mapped_column(String(128), default="")
    base_model_sha256: Mapped[str] = mapped_column(String(64))
    training_config_json: Mapped[str] = mapped_column(Text, default="")
    dataset_name: Mapped[str] = mapped_column(String(256), default="")
    dataset_manifest_sha256: Mapped[str] = mapped_column(String(64), default="")
    validation_report_sha256: Mapped[str] = mapped_column(String(64), default="")
    ray_submission_id: Mapped[str] = mapped_column(String(256), default="")
    git_commit: Mapped[str] = mapped_column(String(64), default="")
    artifact_key: Mapped[str] = mapped_column(String(512))
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    files: Mapped[list] = mapped_column(JSON)
    lora_rank: Mapped[int] = mapped_column(Integer)
    target_modules: Mapped[list] = mapped_column(JSON)
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    # What serving applies to the model's confidence, and the threshold below which it answers
    # other.unknown: both from the latest evaluation that chose them.
    calibrator_json: Mapped[str] = mapped_column(Text, default="")
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(256))
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    deleted_by: Mapped[str] = mapped_column(String(256), default="")
    delete_reason: Mapped[str] = mapped_column(Text, default="")


class BaseModelRow(Base):
    """The sha256 first registered for a base model revision; later registrations must match it."""

    __tablename__ = "base_models"
    __table_args__ = (
        UniqueConstraint("base_model_id", "revision", name="uq_base_models_id_revision"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    base_model_id: Mapped[str] = mapped_column(String(512))
    revision: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AliasRow(Base):
    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricsRow(Base):
    __tablename__ = "metrics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    values: Mapped[dict] = mapped_column(JSON)
    eval_set_sha256: Mapped[str] = mapped_column(String(64), default="")
    temperature: Mapped[float | None] = mapped_column(Float, nullable=True)
    calibrator_json: Mapped[str] = mapped_column(Text, default="")
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    report_uri: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(256))


class BenchmarkRow(Base):
    __tablename__ = "benchmarks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    hardware_profile: Mapped[str] = mapped_column(String(64))
    values: Mapped[dict] = mapped_column(JSON)
    config_json: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(256))


class TargetsRow(Base):
    __tablename__ = "targets"
    __table_args__ = (
        UniqueConstraint("model_id", "hardware_profile", name="uq_targets_model_profile"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    hardware_profile: Mapped[str] = mapped_column(String(64))
    p95_latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    min_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    min_macro_f1: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_ece: Mapped[float | None] = mapped_column(Float, nullable=True)
    min_schema_valid_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_error_rate: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(256))


class GateRow(Base):
    __tablename__ = "gate_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id"), index=True)
    hardware_profile: Mapped[str] = mapped_column(String(64))
    passed: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text, default="")
    details_json: Mapped[str] = mapped_column(Text, default="")
    report_uri: Mapped[str] = mapped_column(Text, default="")
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_by: Mapped[str] = mapped_column(String(256))


class RolloutRow(Base):
    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), unique=True)
    control_version: Mapped[int] = mapped_column(Integer)
    treatment_version: Mapped[int] = mapped_column(Integer)
    treatment_weight: Mapped[float] = mapped_column(Float)
    stage: Mapped[str] = mapped_column(String(32))
    shadow: Mapped[bool] = mapped_column(Boolean)
    shadow_fraction: Mapped[float] = mapped_column(Float)
    salt: Mapped[str] = mapped_column(String(64))
    revision: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    # Past it, an active rollout routes to control and the registry aborts it (None: no lease).
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )


class HistoryRow(Base):
    """Append-only: the code only inserts, and a database trigger refuses UPDATE and DELETE."""

    __tablename__ = "history"
    __table_args__ = (Index("ix_history_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(256))
    from_value: Mapped[str] = mapped_column(Text, default="")
    to_value: Mapped[str] = mapped_column(Text, default="")
    reason: Mapped[str] = mapped_column(Text, default="")
    request_id: Mapped[str] = mapped_column(String(128), default="")
