"""What evaluation and the bench write on a version: metrics (and the temperature), benchmarks, gates."""

from __future__ import annotations

import math

from sqlalchemy.orm import Session

from llama_mapper.domain import jsonio
from llama_mapper.domain.calibrators import calibrator_from_description
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import check_sha256
from llama_mapper.registry.records import from_row
from llama_mapper.registry.schema import BenchmarkRow, GateRow, MetricsRow
from llama_mapper.registry.store.tx import Transactions, check_values, now


class Evaluations(Transactions):
    @staticmethod
    def _metrics_out(r: MetricsRow) -> d.MetricsRecord:
        return from_row(d.MetricsRecord, r)

    @staticmethod
    def _benchmark_out(r: BenchmarkRow) -> d.BenchmarkRecord:
        return from_row(d.BenchmarkRecord, r)

    @staticmethod
    def _gate_out(r: GateRow) -> d.GateResult:
        return from_row(d.GateResult, r)

    def record_metrics(
        self, model: str, version: int, record: d.MetricsRecord, caller: d.Caller
    ) -> d.MetricsRecord:
        values = check_values(record.values, "metrics")
        if record.eval_set_sha256:
            check_sha256(record.eval_set_sha256, "eval_set_sha256")
        if record.temperature is not None and not (
            math.isfinite(record.temperature) and record.temperature > 0
        ):
            raise InvalidArgument(
                f"temperature must be a positive number, got {record.temperature}"
            )
        if record.threshold is not None and not 0.0 <= record.threshold <= 1.0:
            raise InvalidArgument(f"threshold must lie in [0, 1], got {record.threshold}")
        if record.calibrator_json:
            # The one check of what serving will apply: it must load.
            calibrator_from_description(
                jsonio.loads(record.calibrator_json, what="calibrator_json")
            )

        def work(session: Session) -> d.MetricsRecord:
            m = self._model(session, model, lock=True)
            row = self._version(session, m, version)
            metrics = MetricsRow(
                version_id=row.id,
                values=values,
                eval_set_sha256=record.eval_set_sha256,
                temperature=record.temperature,
                calibrator_json=record.calibrator_json,
                threshold=record.threshold,
                report_uri=record.report_uri,
                recorded_at=now(),
                recorded_by=caller.actor,
            )
            session.add(metrics)
            if record.temperature is not None and record.temperature != row.temperature:
                # The serving path applies the latest fitted temperature: a change of what serves,
                # so it is in the history with who recorded it and from which report.
                self._audit(
                    session,
                    m.id,
                    d.HistoryAction.TEMPERATURE_SET,
                    str(version),
                    caller,
                    from_value="" if row.temperature is None else f"{row.temperature:.6g}",
                    to_value=f"{record.temperature:.6g}",
                    reason=record.report_uri,
                )
                row.temperature = record.temperature
            changed = (record.calibrator_json, record.threshold) != (
                row.calibrator_json,
                row.threshold,
            )
            if (record.calibrator_json or record.threshold is not None) and changed:
                self._audit(
                    session,
                    m.id,
                    d.HistoryAction.TEMPERATURE_SET,
                    str(version),
                    caller,
                    from_value=f"{row.calibrator_json or '-'} threshold {row.threshold}",
                    to_value=f"{record.calibrator_json or '-'} threshold {record.threshold}",
                    reason=record.report_uri,
                )
                row.calibrator_json, row.threshold = record.calibrator_json, record.threshold
            return self._metrics_out(metrics)

        return self._write(work)

    def record_benchmark(
        self, model: str, version: int, record: d.BenchmarkRecord, caller: d.Caller
    ) -> d.BenchmarkRecord:
        d.check_profile_name(record.hardware_profile)
        values = check_values(record.values, "benchmark")
        _check_json(record.config_json, "config_json")

        def work(session: Session) -> d.BenchmarkRecord:
            row = self._version(session, self._model(session, model), version)
            bench = BenchmarkRow(
                version_id=row.id,
                hardware_profile=record.hardware_profile,
                values=values,
                config_json=record.config_json,
                recorded_at=now(),
                recorded_by=caller.actor,
            )
            session.add(bench)
            return self._benchmark_out(bench)

        return self._write(work)

    def record_gate(
        self, model: str, version: int, result: d.GateResult, caller: d.Caller
    ) -> d.GateResult:
        d.check_profile_name(result.hardware_profile)
        _check_json(result.details_json, "details_json")

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
                recorded_at=now(),
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


def _check_json(text: str, what: str) -> None:
    """Stored JSON text is bounded JSON (or empty): whoever reads it back parses it safely."""
    if text:
        jsonio.loads(text, limits=jsonio.JsonLimits(allow_nul=False), what=what)
