"""What every aggregate of the store shares: transactions with retry, lookups, the audit entry."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import FileEntry
from llama_mapper.registry.db import with_retry
from llama_mapper.registry.records import from_row
from llama_mapper.registry.schema import AliasRow, HistoryRow, ModelRow, VersionRow

T = TypeVar("T")
MAX_PAGE = 1000


def now() -> datetime:
    return datetime.now(UTC)


def check_values(values: dict[str, float], what: str) -> dict[str, float]:
    if not values:
        raise InvalidArgument(f"{what}: at least one value is required")
    for name, value in values.items():
        if not name or len(name) > 128:
            raise InvalidArgument(f"{what}: value names must be 1-128 characters")
        if not math.isfinite(value):
            raise InvalidArgument(f"{what}: {name} must be a finite number, got {value}")
    return dict(values)


def to_version(model: ModelRow, row: VersionRow, aliases: Iterable[str]) -> d.ModelVersion:
    return from_row(
        d.ModelVersion,
        row,
        model=model.name,
        lineage=from_row(d.Lineage, row),
        files=tuple(FileEntry(**f) for f in row.files),
        target_modules=tuple(row.target_modules),
        idempotency_key=row.idempotency_key or "",
        aliases=tuple(aliases),
    )


class Transactions:
    """One SQL database; every read and write one transaction, retried on transient errors."""

    def __init__(
        self,
        engine: Engine,
        *,
        gated_aliases: Iterable[str] = ("champion",),
        default_hardware_profile: str = "cpu-2core",
        promotion_gated_models: Iterable[str] = ("analyst",),
    ) -> None:
        self.engine = engine
        # The profile whose gate a treatment must have passed when a rollout names none.
        self.default_hardware_profile = default_hardware_profile
        # On SQLite, write transactions take the write lock at BEGIN (see db.make_engine).
        self._writer = engine.execution_options(write=True)
        self.gated_aliases = frozenset(gated_aliases)
        # Models whose gated aliases are their way to traffic: held to the traffic gate.
        self.promotion_gated_models = frozenset(promotion_gated_models)
        # version row id -> the version as registered (rows never change apart from temperature,
        # which the alias query reads fresh, and deletion, which an aliased version cannot undergo).
        self._immutable: dict[int, d.ModelVersion] = {}

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

    def _version_out(self, session: Session, model: ModelRow, row: VersionRow) -> d.ModelVersion:
        return to_version(model, row, self._aliases_of(session, model.id).get(row.version, []))

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
                at=now(),
                actor=caller.actor,
                action=action.value,
                subject=subject,
                from_value=from_value,
                to_value=to_value,
                reason=reason,
                request_id=caller.request_id,
            )
        )

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
                from_row(d.HistoryEntry, r, model=m.name, action=d.HistoryAction(r.action))
                for r in rows
            ]

        return self._read(work)
