"""The rollout record: compare-and-set on its revision, gates before traffic, the controller's
lease, and finishing (alias move + close + history) as one transaction."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llama_mapper.domain.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.records import from_row, utc
from llama_mapper.registry.schema import GateRow, ModelRow, RolloutRow, VersionRow
from llama_mapper.registry.store.tx import Transactions, now

REGISTRY = d.Caller(actor="registry")


def _lease_end(seconds: float, at: datetime) -> datetime | None:
    return at + timedelta(seconds=seconds) if seconds else None


class Rollouts(Transactions):
    @staticmethod
    def _rollout_out(model: str, r: RolloutRow) -> d.Rollout:
        spec = from_row(d.RolloutSpec, r, stage=d.RolloutStage(r.stage))
        return from_row(d.Rollout, r, model=model, spec=spec)

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

    def _check_ready_for_traffic(
        self, session: Session, m: ModelRow, version: VersionRow, profile: str
    ) -> None:
        """A treatment takes traffic only with a passing gate for `profile` (which the evaluation
        service records against the registry's targets) and a fitted temperature."""
        latest = session.scalar(
            select(GateRow)
            .where(GateRow.version_id == version.id, GateRow.hardware_profile == profile)
            .order_by(GateRow.id.desc())
            .limit(1)
        )
        problems = d.gate_problems(latest, profile)
        if version.temperature is None:
            problems.append("no fitted temperature (run `mapperctl eval run --hybrid`)")
        if problems:
            raise FailedPrecondition(
                f"v{version.version} of {m.name} cannot take traffic: {'; '.join(problems)}; "
                "evaluate it first, or start with force and a reason"
            )

    def set_rollout(
        self,
        model: str,
        spec: d.RolloutSpec,
        *,
        expected_revision: int,
        caller: d.Caller,
        reason: str = "",
        lease_seconds: float = 0.0,
        force: bool = False,
        hardware_profile: str = "",
    ) -> d.Rollout:
        """Compare-and-set on the rollout's revision (0: expect no rollout yet). Opening a rollout
        of a new treatment checks the treatment's gate and temperature (force: skip, with a reason)."""
        spec.validate()
        d.check_lease(lease_seconds)
        if force and not reason.strip():
            raise InvalidArgument("a forced rollout needs a reason")
        profile = d.check_profile_name(hardware_profile or self.default_hardware_profile)

        def work(session: Session) -> d.Rollout:
            m = self._model(session, model, lock=True)
            if spec.control_version != d.RULES_ONLY:
                self._version(session, m, spec.control_version, lock=True)
            treatment = self._version(session, m, spec.treatment_version, lock=True)
            current = session.scalar(
                select(RolloutRow).where(RolloutRow.model_id == m.id).with_for_update()
            )
            actual = 0 if current is None else current.revision
            if actual != expected_revision:
                raise Aborted(
                    f"rollout of {model} is at revision {actual}, not {expected_revision}; re-read and retry"
                )
            opening = spec.stage in d.ACTIVE_STAGES and (
                current is None
                or d.RolloutStage(current.stage) not in d.ACTIVE_STAGES
                or current.treatment_version != spec.treatment_version
            )
            why = reason
            if opening:
                if force:
                    why = f"forced past the traffic gate: {reason}"
                else:
                    self._check_ready_for_traffic(session, m, treatment, profile)
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
            changed_at = now()
            current.updated_at, current.updated_by, current.reason = changed_at, caller.actor, why
            current.lease_expires_at = (
                _lease_end(lease_seconds, changed_at) if spec.stage in d.ACTIVE_STAGES else None
            )
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
                reason=why,
            )
            return self._rollout_out(m.name, current)

        return self._write(work)

    def _active_rollout(self, session: Session, m: ModelRow, expected_revision: int) -> RolloutRow:
        current = session.scalar(
            select(RolloutRow).where(RolloutRow.model_id == m.id).with_for_update()
        )
        if current is None or d.RolloutStage(current.stage) not in d.ACTIVE_STAGES:
            raise FailedPrecondition(f"{m.name} has no active rollout")
        if current.revision != expected_revision:
            raise Aborted(
                f"rollout of {m.name} is at revision {current.revision}, not {expected_revision}; "
                "re-read and retry"
            )
        return current

    def renew_lease(
        self, model: str, *, expected_revision: int, lease_seconds: float, caller: d.Caller
    ) -> d.Rollout:
        """The controller is alive: its lease runs `lease_seconds` from now. Not a new revision
        and not a history entry (a renewal changes nothing that serves)."""
        if not d.check_lease(lease_seconds):
            raise InvalidArgument("lease_seconds must be positive to renew a lease")

        def work(session: Session) -> d.Rollout:
            m = self._model(session, model, lock=True)
            current = self._active_rollout(session, m, expected_revision)
            expires = utc(current.lease_expires_at)
            if expires is not None and expires <= now():
                raise FailedPrecondition(
                    f"the lease on the rollout of {model} ended at {expires.isoformat()}: "
                    "it routes to control; start a new rollout"
                )
            current.lease_expires_at = _lease_end(lease_seconds, now())
            return self._rollout_out(m.name, current)

        return self._write(work)

    def finish_rollout(
        self,
        model: str,
        outcome: d.RolloutStage,
        *,
        expected_revision: int,
        caller: d.Caller,
        reason: str = "",
        alias: str = "champion",
    ) -> tuple[d.Rollout, d.Alias | None]:
        """Ends the active rollout in one transaction. COMPLETE moves `alias` from control to the
        treatment (compare-and-set: it must still point at control, or be unset when control is
        the rules alone); every outcome closes the rollout, and the history gets both entries."""
        if outcome not in d.FINISHED_STAGES:
            raise InvalidArgument(
                f"outcome must be one of {sorted(s.value for s in d.FINISHED_STAGES)}, got {outcome}"
            )
        d.check_alias_name(alias)

        def work(session: Session) -> tuple[d.Rollout, d.Alias | None]:
            m = self._model(session, model, lock=True)
            current = self._active_rollout(session, m, expected_revision)
            moved = None
            if outcome is d.RolloutStage.COMPLETE:
                moved = self._move_alias(
                    session,
                    m,
                    alias,
                    current.treatment_version,
                    current.control_version,
                    caller,
                    reason=f"rollout complete: {reason}",
                    force=True,  # the rollout's own gate (or its recorded override) decided
                )
            self._close(session, m, current, outcome, caller, reason)
            return self._rollout_out(m.name, current), moved

        return self._write(work)

    def _close(
        self,
        session: Session,
        m: ModelRow,
        current: RolloutRow,
        outcome: d.RolloutStage,
        caller: d.Caller,
        reason: str,
    ) -> None:
        before = self._rollout_summary(current)
        current.stage = outcome.value
        current.treatment_weight = 1.0 if outcome is d.RolloutStage.COMPLETE else 0.0
        current.shadow, current.shadow_fraction = False, 0.0
        current.revision += 1
        current.lease_expires_at = None
        current.updated_at, current.updated_by, current.reason = now(), caller.actor, reason
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

    def expire_leases(self) -> list[d.Rollout]:
        """Aborts every active rollout whose lease has ended (the registry's own sweep): traffic
        already routes to control; this makes the record and the history say so."""

        def work(session: Session) -> list[d.Rollout]:
            expired = session.execute(
                select(RolloutRow.id, ModelRow.name)
                .join(ModelRow, ModelRow.id == RolloutRow.model_id)
                .where(
                    RolloutRow.stage.in_([s.value for s in d.ACTIVE_STAGES]),
                    RolloutRow.lease_expires_at.is_not(None),
                    RolloutRow.lease_expires_at <= now(),
                )
            ).all()
            closed = []
            for _, name in expired:
                m = self._model(session, name, lock=True)
                row = session.scalar(
                    select(RolloutRow).where(RolloutRow.model_id == m.id).with_for_update()
                )
                ended = utc(row.lease_expires_at) if row is not None else None
                if row is None or ended is None or ended > now():
                    continue  # renewed meanwhile
                self._close(
                    session,
                    m,
                    row,
                    d.RolloutStage.ABORTED,
                    REGISTRY,
                    f"the controller's lease ended at {ended.isoformat()}: traffic went to control",
                )
                closed.append(self._rollout_out(m.name, row))
            return closed

        return self._write(work)

    def get_rollout(self, model: str) -> d.Rollout:
        def work(session: Session) -> d.Rollout:
            m = self._model(session, model)
            row = session.scalar(select(RolloutRow).where(RolloutRow.model_id == m.id))
            if row is None:
                raise NotFound(f"{model} has no rollout")
            return self._rollout_out(m.name, row)

        return self._read(work)
