"""Performance targets per hardware profile: what gates and the bench judge a version against."""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session

from llama_mapper.domain.errors import NotFound
from llama_mapper.registry import domain as d
from llama_mapper.registry.records import from_row
from llama_mapper.registry.schema import TargetsRow
from llama_mapper.registry.store.tx import Transactions, now


class Targets(Transactions):
    @staticmethod
    def _targets_out(r: TargetsRow) -> d.PerformanceTargets:
        return from_row(d.PerformanceTargets, r)

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
            row.updated_at, row.updated_by = now(), caller.actor
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
