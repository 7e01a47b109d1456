"""The registry's metadata store: every read and write is one transaction with its audit entry."""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine, bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from llama_mapper.domain.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import FileEntry, check_sha256
from llama_mapper.registry.db import with_retry
from llama_mapper.registry.schema import (
    AliasRow,
    BaseModelRow,
    BenchmarkRow,
    GateRow,
    HistoryRow,
    MetricsRow,
    ModelRow,
    RolloutRow,
    TargetsRow,
    VersionRow,
)

T = TypeVar("T")
MAX_PAGE = 1000
_CACHE_SIZE = 4096
_OTHER_ALIAS = aliased(AliasRow)
# Built once: constructing the statement costs more than running it on SQLite.
_RESOLVE = (
    select(
        VersionRow.id,
        VersionRow.temperature,
        select(func.aggregate_strings(_OTHER_ALIAS.name, ","))
        .where(_OTHER_ALIAS.model_id == ModelRow.id, _OTHER_ALIAS.version == AliasRow.version)
        .scalar_subquery(),
    )
    .select_from(ModelRow)
    .join(AliasRow, AliasRow.model_id == ModelRow.id)
    .join(
        VersionRow, (VersionRow.model_id == ModelRow.id) & (VersionRow.version == AliasRow.version)
    )
    .where(ModelRow.name == bindparam("model"), AliasRow.name == bindparam("alias"))
)
_ACTIVE_STAGES = (d.RolloutStage.SHADOW, d.RolloutStage.CANARY)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _check_values(values: dict[str, float], what: str) -> dict[str, float]:
    if not values:
        raise InvalidArgument(f"{what}: at least one value is required")
    for name, value in values.items():
        if not name or len(name) > 128:
            raise InvalidArgument(f"{what}: value names must be 1-128 characters")
        if not math.isfinite(value):
            raise InvalidArgument(f"{what}: {name} must be a finite number, got {value}")
    return dict(values)


class RegistryStore:
    """Models, versions, aliases, rollouts and their audit history in one SQL database."""

    def __init__(self, engine: Engine, *, gated_aliases: Iterable[str] = ("champion",)) -> None:
        self.engine = engine
        # On SQLite, write transactions take the write lock at BEGIN (see db.make_engine).
        self._writer = engine.execution_options(write=True)
        self.gated_aliases = frozenset(gated_aliases)
        # version row id -> the version as registered (rows never change apart from temperature,
        # which _RESOLVE reads fresh, and deletion, which an aliased version cannot undergo).
        self._immutable: dict[int, d.ModelVersion] = {}

    # -- transactions -------------------------------------------------------------------------

    def _read(self, work: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with Session(self.engine) as session, session.begin():
                return work(session)

        return with_retry(attempt)

    def _write(self, work: Callable[[Session], T]) -> T:
        def attempt() -> T:
            with Session(self._writer, expire_on_commit=False) as session, session.begin():
                return work(session)

        return with_retry(attempt)

    # -- lookups ------------------------------------------------------------------------------

    @staticmethod
    def _model(session: Session, name: str, *, lock: bool = False) -> ModelRow:
        """The model row; `lock` for audited writes, which it orders per model.

        Holding the model row from the start of the transaction to its commit makes history ids
        and times of one model increase together, and gives every writer the same lock order.
        """
        query = select(ModelRow).where(ModelRow.name == d.check_model_name(name))
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFound(f"unknown model {name!r}")
        return row

    @staticmethod
    def _version(
        session: Session, model: ModelRow, version: int, *, include_deleted=False, lock=False
    ) -> VersionRow:
        query = select(VersionRow).where(
            VersionRow.model_id == model.id, VersionRow.version == d.check_version_number(version)
        )
        row = session.scalar(query.with_for_update() if lock else query)
        if row is None:
            raise NotFound(f"{model.name} has no version {version}")
        if row.deleted_at is not None and not include_deleted:
            raise NotFound(
                f"version {version} of {model.name} was deleted by {row.deleted_by}: {row.delete_reason}"
            )
        return row

    @staticmethod
    def _aliases_of(session: Session, model_id: int) -> dict[int, list[str]]:
        by_version: dict[int, list[str]] = {}
        rows = session.execute(
            select(AliasRow.version, AliasRow.name)
            .where(AliasRow.model_id == model_id)
            .order_by(AliasRow.name)
        )
        for version, name in rows:
            by_version.setdefault(version, []).append(name)
        return by_version

    @staticmethod
    def _to_version(model: ModelRow, row: VersionRow, aliases: Iterable[str]) -> d.ModelVersion:
        return d.ModelVersion(
            model=model.name,
            version=row.version,
            lineage=d.Lineage(
                base_model_id=row.base_model_id,
                base_model_sha256=row.base_model_sha256,
                base_model_revision=row.base_model_revision,
                training_config_json=row.training_config_json,
                dataset_name=row.dataset_name,
                dataset_manifest_sha256=row.dataset_manifest_sha256,
                validation_report_sha256=row.validation_report_sha256,
                ray_submission_id=row.ray_submission_id,
                git_commit=row.git_commit,
            ),
            files=tuple(FileEntry(**f) for f in row.files),
            artifact_key=row.artifact_key,
            artifact_sha256=row.artifact_sha256,
            lora_rank=row.lora_rank,
            target_modules=tuple(row.target_modules),
            created_at=_utc(row.created_at),
            created_by=row.created_by,
            idempotency_key=row.idempotency_key or "",
            display_name=row.display_name,
            description=row.description,
            aliases=tuple(aliases),
            temperature=row.temperature,
            deleted_at=_utc(row.deleted_at),
            deleted_by=row.deleted_by,
            delete_reason=row.delete_reason,
        )

    def _version_out(self, session: Session, model: ModelRow, row: VersionRow) -> d.ModelVersion:
        return self._to_version(
            model, row, self._aliases_of(session, model.id).get(row.version, [])
        )

    @staticmethod
    def _audit(
        session: Session,
        model_id: int,
        action: d.HistoryAction,
        subject: str,
        caller: d.Caller,
        *,
        from_value: str = "",
        to_value: str = "",
        reason: str = "",
    ) -> None:
        # The only statement that touches the history table: entries are inserted, never changed.
        session.add(
            HistoryRow(
                model_id=model_id,
                at=_now(),
                actor=caller.actor,
                action=action.value,
                subject=subject,
                from_value=from_value,
                to_value=to_value,
                reason=reason,
                request_id=caller.request_id,
            )
        )

    # -- registration ---------------------------------------------------------------------------

    def find_by_idempotency_key(self, model: str, key: str) -> d.ModelVersion | None:
        if not key:
            return None

        def work(session: Session) -> d.ModelVersion | None:
            row = session.execute(
                select(ModelRow, VersionRow)
                .join(VersionRow, VersionRow.model_id == ModelRow.id)
                .where(ModelRow.name == model, VersionRow.idempotency_key == key)
            ).first()
            return None if row is None else self._version_out(session, row[0], row[1])

        return self._read(work)

    @staticmethod
    def check_spec(spec: d.VersionSpec) -> None:
        d.check_model_name(spec.model)
        if not spec.lineage.base_model_id:
            raise InvalidArgument("lineage.base_model_id is required")
        check_sha256(spec.lineage.base_model_sha256, "lineage.base_model_sha256")
        for name in ("dataset_manifest_sha256", "validation_report_sha256"):
            if value := getattr(spec.lineage, name):
                check_sha256(value, f"lineage.{name}")
        if spec.lineage.training_config_json:
            try:
                json.loads(spec.lineage.training_config_json)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"lineage.training_config_json is not JSON: {exc}") from None
        if len(spec.idempotency_key) > 256:
            raise InvalidArgument("idempotency_key is longer than 256 characters")

    def _model_for_write(self, session: Session, name: str) -> ModelRow:
        row = session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
        if row is not None:
            return row
        try:
            with session.begin_nested():
                row = ModelRow(name=name, last_version=0, created_at=_now())
                session.add(row)
        except IntegrityError:  # created concurrently by another registration
            row = session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
        return row

    @staticmethod
    def _pin_base_model(session: Session, lineage: d.Lineage) -> None:
        query = select(BaseModelRow).where(
            BaseModelRow.base_model_id == lineage.base_model_id,
            BaseModelRow.revision == lineage.base_model_revision,
        )
        row = session.scalar(query)
        if row is None:
            try:
                with session.begin_nested():
                    session.add(
                        BaseModelRow(
                            base_model_id=lineage.base_model_id,
                            revision=lineage.base_model_revision,
                            sha256=lineage.base_model_sha256,
                            created_at=_now(),
                        )
                    )
                return
            except IntegrityError:
                row = session.scalar(query)
        if row.sha256 != lineage.base_model_sha256:
            raise FailedPrecondition(
                f"base model {lineage.base_model_id}@{lineage.base_model_revision or '-'} is recorded "
                f"with sha256 {row.sha256}; this adapter was trained on {lineage.base_model_sha256}"
            )

    def register(
        self, spec: d.VersionSpec, artifact: d.PublishedArtifact, caller: d.Caller
    ) -> tuple[d.ModelVersion, bool]:
        """Insert the next version naming an already published artifact; (version, created).

        The version number comes from incrementing the model row inside this transaction: the
        row lock orders concurrent registrations, and the unique (model, version) constraint
        backs it up. A known idempotency key returns the earlier version instead.
        """
        self.check_spec(spec)

        def work(session: Session) -> tuple[d.ModelVersion, bool]:
            model = self._model_for_write(session, spec.model)
            if spec.idempotency_key:
                existing = session.scalar(
                    select(VersionRow).where(
                        VersionRow.model_id == model.id,
                        VersionRow.idempotency_key == spec.idempotency_key,
                    )
                )
                if existing is not None:
                    return self._version_out(session, model, existing), False
            self._pin_base_model(session, spec.lineage)
            number = session.execute(
                update(ModelRow)
                .where(ModelRow.id == model.id)
                .values(last_version=ModelRow.last_version + 1)
                .returning(ModelRow.last_version),
                execution_options={"synchronize_session": False},
            ).scalar_one()
            lineage = spec.lineage
            row = VersionRow(
                model_id=model.id,
                version=number,
                idempotency_key=spec.idempotency_key or None,
                display_name=spec.display_name,
                description=spec.description,
                base_model_id=lineage.base_model_id,
                base_model_revision=lineage.base_model_revision,
                base_model_sha256=lineage.base_model_sha256,
                training_config_json=lineage.training_config_json,
                dataset_name=lineage.dataset_name,
                dataset_manifest_sha256=lineage.dataset_manifest_sha256,
                validation_report_sha256=lineage.validation_report_sha256,
                ray_submission_id=lineage.ray_submission_id,
                git_commit=lineage.git_commit,
                artifact_key=artifact.key,
                artifact_sha256=artifact.sha256,
                files=[vars(f) for f in artifact.files],
                lora_rank=artifact.lora_rank,
                target_modules=list(artifact.target_modules),
                created_at=_now(),
                created_by=caller.actor,
                deleted_by="",
                delete_reason="",
            )
            session.add(row)
            session.flush()
            self._audit(
                session,
                model.id,
                d.HistoryAction.VERSION_REGISTERED,
                str(number),
                caller,
                to_value=str(number),
                reason=spec.display_name,
            )
            return self._to_version(model, row, ()), True

        try:
            return self._write(work)
        except IntegrityError:
            # Another registration with the same idempotency key committed first.
            existing = self.find_by_idempotency_key(spec.model, spec.idempotency_key)
            if existing is None:
                raise
            return existing, False

    # -- reads ----------------------------------------------------------------------------------

    def get_version(
        self, model: str, version: int, *, include_deleted: bool = False
    ) -> d.VersionDetails:
        def work(session: Session) -> d.VersionDetails:
            m = self._model(session, model)
            row = self._version(session, m, version, include_deleted=include_deleted)
            metrics = session.scalars(
                select(MetricsRow).where(MetricsRow.version_id == row.id).order_by(MetricsRow.id)
            )
            benches = session.scalars(
                select(BenchmarkRow)
                .where(BenchmarkRow.version_id == row.id)
                .order_by(BenchmarkRow.id)
            )
            gates = session.scalars(
                select(GateRow).where(GateRow.version_id == row.id).order_by(GateRow.id)
            )
            return d.VersionDetails(
                version=self._version_out(session, m, row),
                metrics=tuple(self._metrics_out(r) for r in metrics),
                benchmarks=tuple(self._benchmark_out(r) for r in benches),
                gate_results=tuple(self._gate_out(r) for r in gates),
            )

        return self._read(work)

    def list_models(self) -> list[d.ModelSummary]:
        def work(session: Session) -> list[d.ModelSummary]:
            counts = dict(
                session.execute(
                    select(VersionRow.model_id, func.count())
                    .where(VersionRow.deleted_at.is_(None))
                    .group_by(VersionRow.model_id)
                ).all()
            )
            aliases: dict[int, list[d.Alias]] = {}
            for row in session.scalars(select(AliasRow).order_by(AliasRow.name)):
                aliases.setdefault(row.model_id, []).append(self._alias_out(row))
            return [
                d.ModelSummary(
                    name=m.name,
                    latest_version=m.last_version,
                    version_count=counts.get(m.id, 0),
                    created_at=_utc(m.created_at),
                    aliases=tuple(aliases.get(m.id, ())),
                )
                for m in session.scalars(select(ModelRow).order_by(ModelRow.name))
            ]

        return self._read(work)

    def list_versions(
        self, model: str, *, include_deleted: bool = False, after: int = 0, limit: int = MAX_PAGE
    ) -> list[d.ModelVersion]:
        def work(session: Session) -> list[d.ModelVersion]:
            m = self._model(session, model)
            query = select(VersionRow).where(
                VersionRow.model_id == m.id, VersionRow.version > after
            )
            if not include_deleted:
                query = query.where(VersionRow.deleted_at.is_(None))
            rows = session.scalars(query.order_by(VersionRow.version).limit(min(limit, MAX_PAGE)))
            aliases = self._aliases_of(session, m.id)
            return [self._to_version(m, r, aliases.get(r.version, [])) for r in rows]

        return self._read(work)

    def resolve_alias(self, model: str, alias: str) -> d.ModelVersion:
        """The version an alias points to: the hot path of every serving replica and router.

        One prebuilt Core query returns the alias's version id with the only columns of a
        version row that ever change (temperature) and its current aliases; the rest of the
        row is immutable, so it comes from a per-process cache after the first lookup.
        """

        def work() -> d.ModelVersion:
            with self.engine.connect() as conn:
                found = conn.execute(_RESOLVE, {"model": model, "alias": alias}).first()
            if found is None:
                self._read(lambda session: self._model(session, model))
                raise NotFound(f"{model} has no alias {alias!r}")
            version_id, temperature, aliases = found
            cached = self._immutable.get(version_id)
            if cached is None:
                cached = self._read(lambda session: self._load_version(session, version_id))
                if len(self._immutable) >= _CACHE_SIZE:
                    self._immutable.clear()
                self._immutable[version_id] = cached
            return replace(
                cached, temperature=temperature, aliases=tuple(sorted((aliases or "").split(",")))
            )

        return with_retry(work)

    def _load_version(self, session: Session, version_id: int) -> d.ModelVersion:
        row = session.get(VersionRow, version_id)
        model = session.get(ModelRow, row.model_id)
        return self._to_version(model, row, ())

    def history(
        self, model: str, *, subject: str = "", after: int = 0, limit: int = MAX_PAGE
    ) -> list[d.HistoryEntry]:
        def work(session: Session) -> list[d.HistoryEntry]:
            m = self._model(session, model)
            query = select(HistoryRow).where(HistoryRow.model_id == m.id, HistoryRow.id > after)
            if subject:
                query = query.where(HistoryRow.subject == subject)
            rows = session.scalars(query.order_by(HistoryRow.id).limit(min(limit, MAX_PAGE)))
            return [
                d.HistoryEntry(
                    id=r.id,
                    model=m.name,
                    at=_utc(r.at),
                    actor=r.actor,
                    action=d.HistoryAction(r.action),
                    subject=r.subject,
                    from_value=r.from_value,
                    to_value=r.to_value,
                    reason=r.reason,
                    request_id=r.request_id,
                )
                for r in rows
            ]

        return self._read(work)

    # -- aliases --------------------------------------------------------------------------------

    @staticmethod
    def _alias_out(row: AliasRow) -> d.Alias:
        return d.Alias(name=row.name, version=row.version, updated_at=_utc(row.updated_at))

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        expected_version: int,
        caller: d.Caller,
        reason: str = "",
        force: bool = False,
    ) -> tuple[d.Alias, int]:
        """Compare-and-set: point `alias` at `version` if it points at `expected_version` (0: unset)."""
        d.check_alias_name(alias)
        if expected_version < 0:
            raise InvalidArgument("expected_version must be 0 (unset) or a version number")
        if force and not reason:
            raise InvalidArgument("a forced promotion needs a reason")

        def work(session: Session) -> tuple[d.Alias, int]:
            m = self._model(session, model, lock=True)
            target = self._version(session, m, version, lock=True)
            if alias in self.gated_aliases:
                latest = session.scalar(
                    select(GateRow)
                    .where(GateRow.version_id == target.id)
                    .order_by(GateRow.id.desc())
                    .limit(1)
                )
                if latest is not None and not latest.passed and not force:
                    raise FailedPrecondition(
                        f"version {version} of {model} failed its latest gate ({latest.summary or 'no summary'}); "
                        f"promote to {alias!r} with force and a reason to override"
                    )
            now = _now()
            if expected_version == 0:
                current = session.scalar(
                    select(AliasRow).where(AliasRow.model_id == m.id, AliasRow.name == alias)
                )
                if current is not None:
                    raise Aborted(f"alias {alias!r} points to version {current.version}, not unset")
                try:
                    with session.begin_nested():
                        row = AliasRow(model_id=m.id, name=alias, version=version, updated_at=now)
                        session.add(row)
                except IntegrityError:
                    raise Aborted(
                        f"alias {alias!r} was set concurrently; re-read and retry"
                    ) from None
            else:
                moved = session.execute(
                    update(AliasRow)
                    .where(
                        AliasRow.model_id == m.id,
                        AliasRow.name == alias,
                        AliasRow.version == expected_version,
                    )
                    .values(version=version, updated_at=now),
                    execution_options={"synchronize_session": False},
                ).rowcount
                if moved != 1:
                    current = session.scalar(
                        select(AliasRow.version).where(
                            AliasRow.model_id == m.id, AliasRow.name == alias
                        )
                    )
                    raise Aborted(
                        f"alias {alias!r} points to {current or 'nothing'}, not {expected_version}; re-read and retry"
                    )
            self._audit(
                session,
                m.id,
                d.HistoryAction.ALIAS_SET,
                alias,
                caller,
                from_value=str(expected_version or ""),
                to_value=str(version),
                reason=reason,
            )
            return d.Alias(name=alias, version=version, updated_at=now), expected_version

        return self._write(work)

    # -- records --------------------------------------------------------------------------------

    @staticmethod
    def _metrics_out(r: MetricsRow) -> d.MetricsRecord:
        return d.MetricsRecord(
            values=r.values,
            eval_set_sha256=r.eval_set_sha256,
            temperature=r.temperature,
            report_uri=r.report_uri,
            recorded_at=_utc(r.recorded_at),
            recorded_by=r.recorded_by,
        )

    @staticmethod
    def _benchmark_out(r: BenchmarkRow) -> d.BenchmarkRecord:
        return d.BenchmarkRecord(
            hardware_profile=r.hardware_profile,
            values=r.values,
            config_json=r.config_json,
            recorded_at=_utc(r.recorded_at),
            recorded_by=r.recorded_by,
        )

    @staticmethod
    def _gate_out(r: GateRow) -> d.GateResult:
        return d.GateResult(
            hardware_profile=r.hardware_profile,
            passed=r.passed,
            summary=r.summary,
            details_json=r.details_json,
            report_uri=r.report_uri,
            recorded_at=_utc(r.recorded_at),
            recorded_by=r.recorded_by,
        )

    def record_metrics(
        self, model: str, version: int, record: d.MetricsRecord, caller: d.Caller
    ) -> d.MetricsRecord:
        values = _check_values(record.values, "metrics")
        if record.eval_set_sha256:
            check_sha256(record.eval_set_sha256, "eval_set_sha256")
        if record.temperature is not None and not (
            math.isfinite(record.temperature) and record.temperature > 0
        ):
            raise InvalidArgument(
                f"temperature must be a positive number, got {record.temperature}"
            )

        def work(session: Session) -> d.MetricsRecord:
            row = self._version(session, self._model(session, model), version)
            metrics = MetricsRow(
                version_id=row.id,
                values=values,
                eval_set_sha256=record.eval_set_sha256,
                temperature=record.temperature,
                report_uri=record.report_uri,
                recorded_at=_now(),
                recorded_by=caller.actor,
            )
            session.add(metrics)
            if record.temperature is not None:
                # The serving path reads the latest fitted temperature with the version.
                row.temperature = record.temperature
            return self._metrics_out(metrics)

        return self._write(work)

    def record_benchmark(
        self, model: str, version: int, record: d.BenchmarkRecord, caller: d.Caller
    ) -> d.BenchmarkRecord:
        d.check_profile_name(record.hardware_profile)
        values = _check_values(record.values, "benchmark")

        def work(session: Session) -> d.BenchmarkRecord:
            row = self._version(session, self._model(session, model), version)
            bench = BenchmarkRow(
                version_id=row.id,
                hardware_profile=record.hardware_profile,
                values=values,
                config_json=record.config_json,
                recorded_at=_now(),
                recorded_by=caller.actor,
            )
            session.add(bench)
            return self._benchmark_out(bench)

        return self._write(work)

    def record_gate(
        self, model: str, version: int, result: d.GateResult, caller: d.Caller
    ) -> d.GateResult:
        d.check_profile_name(result.hardware_profile)

        def work(session: Session) -> d.GateResult:
            m = self._model(session, model, lock=True)
            row = self._version(session, m, version)
            gate = GateRow(
                version_id=row.id,
                hardware_profile=result.hardware_profile,
                passed=result.passed,
                summary=result.summary,
                details_json=result.details_json,
                report_uri=result.report_uri,
                recorded_at=_now(),
                recorded_by=caller.actor,
            )
            session.add(gate)
            self._audit(
                session,
                m.id,
                d.HistoryAction.GATE_RECORDED,
                str(version),
                caller,
                to_value="passed" if result.passed else "failed",
                reason=result.summary,
            )
            return self._gate_out(gate)

        return self._write(work)

    # -- targets --------------------------------------------------------------------------------

    @staticmethod
    def _targets_out(r: TargetsRow) -> d.PerformanceTargets:
        return d.PerformanceTargets(
            hardware_profile=r.hardware_profile,
            **{n: getattr(r, n) for n in d.TARGET_FIELDS},
            updated_at=_utc(r.updated_at),
            updated_by=r.updated_by,
        )

    def set_targets(
        self, model: str, targets: d.PerformanceTargets, caller: d.Caller, *, reason: str = ""
    ) -> d.PerformanceTargets:
        targets.validate()

        def work(session: Session) -> d.PerformanceTargets:
            m = self._model(session, model, lock=True)
            row = session.scalar(
                select(TargetsRow)
                .where(
                    TargetsRow.model_id == m.id,
                    TargetsRow.hardware_profile == targets.hardware_profile,
                )
                .with_for_update()
            )
            before = (
                "" if row is None else json.dumps(self._targets_out(row).values(), sort_keys=True)
            )
            if row is None:
                row = TargetsRow(model_id=m.id, hardware_profile=targets.hardware_profile)
                session.add(row)
            for name in d.TARGET_FIELDS:
                setattr(row, name, getattr(targets, name))
            row.updated_at, row.updated_by = _now(), caller.actor
            session.flush()
            self._audit(
                session,
                m.id,
                d.HistoryAction.TARGETS_SET,
                targets.hardware_profile,
                caller,
                from_value=before,
                to_value=json.dumps(targets.values(), sort_keys=True),
                reason=reason,
            )
            return self._targets_out(row)

        return self._write(work)

    def get_targets(self, model: str, hardware_profile: str = "") -> list[d.PerformanceTargets]:
        def work(session: Session) -> list[d.PerformanceTargets]:
            m = self._model(session, model)
            query = select(TargetsRow).where(TargetsRow.model_id == m.id)
            if hardware_profile:
                query = query.where(TargetsRow.hardware_profile == hardware_profile)
            rows = [
                self._targets_out(r)
                for r in session.scalars(query.order_by(TargetsRow.hardware_profile))
            ]
            if hardware_profile and not rows:
                raise NotFound(f"{model} has no targets for hardware profile {hardware_profile!r}")
            return rows

        return self._read(work)

    # -- rollouts -------------------------------------------------------------------------------

    @staticmethod
    def _rollout_out(model: str, r: RolloutRow) -> d.Rollout:
        return d.Rollout(
            model=model,
            spec=d.RolloutSpec(
                control_version=r.control_version,
                treatment_version=r.treatment_version,
                treatment_weight=r.treatment_weight,
                stage=d.RolloutStage(r.stage),
                shadow=r.shadow,
                shadow_fraction=r.shadow_fraction,
            ),
            salt=r.salt,
            revision=r.revision,
            updated_at=_utc(r.updated_at),
            updated_by=r.updated_by,
            reason=r.reason,
        )

    @staticmethod
    def _rollout_summary(r: RolloutRow | None) -> str:
        if r is None:
            return ""
        return json.dumps(
            {
                "control": r.control_version,
                "treatment": r.treatment_version,
                "treatment_weight": r.treatment_weight,
                "stage": r.stage,
                "shadow": r.shadow,
                "shadow_fraction": r.shadow_fraction,
                "revision": r.revision,
            },
            sort_keys=True,
        )

    def set_rollout(
        self,
        model: str,
        spec: d.RolloutSpec,
        *,
        expected_revision: int,
        caller: d.Caller,
        reason: str = "",
    ) -> d.Rollout:
        """Compare-and-set on the rollout's revision (0: expect no rollout yet)."""
        spec.validate()

        def work(session: Session) -> d.Rollout:
            m = self._model(session, model, lock=True)
            if spec.control_version != d.RULES_ONLY:
                self._version(session, m, spec.control_version, lock=True)
            self._version(session, m, spec.treatment_version, lock=True)
            current = session.scalar(
                select(RolloutRow).where(RolloutRow.model_id == m.id).with_for_update()
            )
            actual = 0 if current is None else current.revision
            if actual != expected_revision:
                raise Aborted(
                    f"rollout of {model} is at revision {actual}, not {expected_revision}; re-read and retry"
                )
            before = self._rollout_summary(current)
            if current is None:
                current = RolloutRow(model_id=m.id, revision=0, salt="")
                session.add(current)
            if (current.control_version, current.treatment_version) != (
                spec.control_version,
                spec.treatment_version,
            ):
                # A new pair of arms gets a new salt; the same pair keeps its salt so raising the
                # weight only moves tenants from control to treatment.
                current.salt = secrets.token_hex(8)
            current.control_version = spec.control_version
            current.treatment_version = spec.treatment_version
            current.treatment_weight = spec.treatment_weight
            current.stage = spec.stage.value
            current.shadow = spec.shadow
            current.shadow_fraction = spec.shadow_fraction
            current.revision = actual + 1
            current.updated_at, current.updated_by, current.reason = _now(), caller.actor, reason
            try:
                with session.begin_nested():
                    session.flush()
            except IntegrityError:
                raise Aborted(
                    f"rollout of {model} was created concurrently; re-read and retry"
                ) from None
            self._audit(
                session,
                m.id,
                d.HistoryAction.ROLLOUT_SET,
                "rollout",
                caller,
                from_value=before,
                to_value=self._rollout_summary(current),
                reason=reason,
            )
            return self._rollout_out(m.name, current)

        return self._write(work)

    def get_rollout(self, model: str) -> d.Rollout:
        def work(session: Session) -> d.Rollout:
            m = self._model(session, model)
            row = session.scalar(select(RolloutRow).where(RolloutRow.model_id == m.id))
            if row is None:
                raise NotFound(f"{model} has no rollout")
            return self._rollout_out(m.name, row)

        return self._read(work)

    # -- deletion -------------------------------------------------------------------------------

    def delete_version(
        self, model: str, version: int, *, reason: str, caller: d.Caller
    ) -> d.ModelVersion:
        """Soft delete: the row stays (lineage, history), it is no longer listed, resolved or served."""
        if not reason.strip():
            raise InvalidArgument("deleting a version needs a reason")

        def work(session: Session) -> d.ModelVersion:
            m = self._model(session, model, lock=True)
            row = self._version(session, m, version, lock=True)
            aliases = self._aliases_of(session, m.id).get(version, [])
            if aliases:
                raise FailedPrecondition(
                    f"version {version} of {model} is aliased as {', '.join(aliases)}; move the alias first"
                )
            rollout = session.scalar(select(RolloutRow).where(RolloutRow.model_id == m.id))
            if (
                rollout is not None
                and rollout.stage in _ACTIVE_STAGES
                and version in (rollout.control_version, rollout.treatment_version)
            ):
                raise FailedPrecondition(
                    f"version {version} of {model} is in the active {rollout.stage} rollout"
                )
            row.deleted_at, row.deleted_by, row.delete_reason = _now(), caller.actor, reason
            self._audit(
                session,
                m.id,
                d.HistoryAction.VERSION_DELETED,
                str(version),
                caller,
                from_value=str(version),
                reason=reason,
            )
            return self._to_version(m, row, ())

        return self._write(work)
