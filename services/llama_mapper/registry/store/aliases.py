"""Aliases: the hot-path resolve and the compare-and-set move, gated for gated aliases."""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from llama_mapper.domain.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.db import with_retry
from llama_mapper.registry.records import from_row
from llama_mapper.registry.schema import AliasRow, GateRow, ModelRow, VersionRow
from llama_mapper.registry.store.tx import Transactions, now, to_version

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


class Aliases(Transactions):
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
        return to_version(model, row, ())

    @staticmethod
    def _alias_out(row: AliasRow) -> d.Alias:
        return from_row(d.Alias, row)

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
        hardware_profile: str = "",
    ) -> tuple[d.Alias, int]:
        """Compare-and-set: point `alias` at `version` if it points at `expected_version` (0: unset).
        For a model in promotion_gated_models, a gated alias also needs the version's latest gate
        for `hardware_profile` (default: the registry's) to have passed."""
        d.check_alias_name(alias)
        if expected_version < 0:
            raise InvalidArgument("expected_version must be 0 (unset) or a version number")
        if force and not reason:
            raise InvalidArgument("a forced promotion needs a reason")
        profile = d.check_profile_name(hardware_profile or self.default_hardware_profile)

        def work(session: Session) -> tuple[d.Alias, int]:
            m = self._model(session, model, lock=True)
            moved = self._move_alias(
                session,
                m,
                alias,
                version,
                expected_version,
                caller,
                reason=reason,
                force=force,
                profile=profile,
            )
            return moved, expected_version

        return self._write(work)

    def _move_alias(
        self,
        session: Session,
        m: ModelRow,
        alias: str,
        version: int,
        expected_version: int,
        caller: d.Caller,
        *,
        reason: str,
        force: bool,
        profile: str = "",
    ) -> d.Alias:
        """The compare-and-set and its history entry, inside the caller's transaction (which
        holds the model row's lock)."""
        model = m.name
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
            if model in self.promotion_gated_models and not force:
                # No canary for this model: the alias is its way to traffic, so it is held to
                # the rollout's traffic gate (a passed gate for the profile), temperature aside.
                profile = profile or self.default_hardware_profile
                on_profile = session.scalar(
                    select(GateRow)
                    .where(GateRow.version_id == target.id, GateRow.hardware_profile == profile)
                    .order_by(GateRow.id.desc())
                    .limit(1)
                )
                problems = d.gate_problems(on_profile, profile)
                if problems:
                    raise FailedPrecondition(
                        f"v{version} of {model} cannot become {alias!r}: {'; '.join(problems)}; "
                        f"run `mapperctl eval gate --model {model} {version}`, or promote with "
                        "force and a reason"
                    )
        moved_at = now()
        if expected_version == 0:
            current = session.scalar(
                select(AliasRow).where(AliasRow.model_id == m.id, AliasRow.name == alias)
            )
            if current is not None:
                raise Aborted(f"alias {alias!r} points to version {current.version}, not unset")
            try:
                with session.begin_nested():
                    row = AliasRow(model_id=m.id, name=alias, version=version, updated_at=moved_at)
                    session.add(row)
            except IntegrityError:
                raise Aborted(f"alias {alias!r} was set concurrently; re-read and retry") from None
        else:
            moved = session.execute(
                update(AliasRow)
                .where(
                    AliasRow.model_id == m.id,
                    AliasRow.name == alias,
                    AliasRow.version == expected_version,
                )
                .values(version=version, updated_at=moved_at),
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
        return d.Alias(name=alias, version=version, updated_at=moved_at)
