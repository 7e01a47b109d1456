"""The rollout record: compare-and-set on its revision, a new salt for a new pair of arms."""

from __future__ import annotations

import json
import secrets

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from llama_mapper.domain.errors import Aborted, NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.records import from_row
from llama_mapper.registry.schema import RolloutRow
from llama_mapper.registry.store.tx import Transactions, now


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
            current.updated_at, current.updated_by, current.reason = now(), caller.actor, reason
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
