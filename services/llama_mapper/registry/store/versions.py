"""Versions: registration (idempotent, numbered under the model row's lock), reads, soft delete."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import check_sha256
from llama_mapper.registry.records import from_row, row_values
from llama_mapper.registry.schema import (
    AliasRow,
    BaseModelRow,
    BenchmarkRow,
    GateRow,
    MetricsRow,
    ModelRow,
    RolloutRow,
    VersionRow,
)
from llama_mapper.registry.store.tx import MAX_PAGE, Transactions, now, to_version

_ACTIVE_STAGES = (d.RolloutStage.SHADOW, d.RolloutStage.CANARY)


class Versions(Transactions):
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
            jsonio.loads(
                spec.lineage.training_config_json,
                limits=jsonio.JsonLimits(allow_nul=False),
                what="lineage.training_config_json",
            )
        if len(spec.idempotency_key) > 256:
            raise InvalidArgument("idempotency_key is longer than 256 characters")

    def _model_for_write(self, session: Session, name: str) -> ModelRow:
        row = session.scalar(select(ModelRow).where(ModelRow.name == name).with_for_update())
        if row is not None:
            return row
        try:
            with session.begin_nested():
                row = ModelRow(name=name, last_version=0, created_at=now())
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
                            created_at=now(),
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
            row = VersionRow(
                model_id=model.id,
                version=number,
                idempotency_key=spec.idempotency_key or None,
                display_name=spec.display_name,
                description=spec.description,
                **row_values(spec.lineage, VersionRow),
                artifact_key=artifact.key,
                artifact_sha256=artifact.sha256,
                files=[vars(f) for f in artifact.files],
                lora_rank=artifact.lora_rank,
                target_modules=list(artifact.target_modules),
                created_at=now(),
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
            return to_version(model, row, ()), True

        try:
            return self._write(work)
        except IntegrityError:
            # Another registration with the same idempotency key committed first.
            existing = self.find_by_idempotency_key(spec.model, spec.idempotency_key)
            if existing is None:
                raise
            return existing, False

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
                from_row(
                    d.ModelSummary,
                    m,
                    latest_version=m.last_version,
                    version_count=counts.get(m.id, 0),
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
            return [to_version(m, r, aliases.get(r.version, [])) for r in rows]

        return self._read(work)

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
            row.deleted_at, row.deleted_by, row.delete_reason = now(), caller.actor, reason
            self._audit(
                session,
                m.id,
                d.HistoryAction.VERSION_DELETED,
                str(version),
                caller,
                from_value=str(version),
                reason=reason,
            )
            return to_version(m, row, ())

        return self._write(work)
