"""The evaluation service's gate for an analyst version: its run found by the analyst role,
judged on the analyst section against the analyst's own targets, recorded on the analyst."""

import json

import pytest

from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.evaluation import comparison as gates
from llama_mapper.evaluation.service import SUCCEEDED, EvaluationService, RunInfo

ANALYST = {
    "case_count": 8,
    "schema_valid_rate": 1.0,
    "risk_level_accuracy": 0.75,
    "control_precision": 1.0,
    "control_recall": 0.9,
    "control_f1": 0.947,
    "remediation_model_rate": 0.5,
    "remediation_catalogue_rate": 1.0,
    "fallback_reasons": {"invalid": 4},
}


class FakeModels:
    def __init__(self, targets):
        self._targets = targets
        self.gates = []

    def targets(self, model, profile):
        if (model, profile) not in self._targets:
            raise FailedPrecondition(f"no targets stored for {model} on {profile!r}")
        return self._targets[(model, profile)]

    def champion(self, model):
        return None

    def record_gate(self, model, version, profile, **kw):
        self.gates.append((model, version, profile, kw["passed"], kw["summary"]))


def _run(root, run_id, *, analyst=ANALYST, finished="2026-01-01T00:00:00Z"):
    directory = root / run_id
    directory.mkdir()
    info = RunInfo(
        run_id=run_id,
        state=SUCCEEDED,
        mode="hybrid",
        model="mapper",
        version=1,
        report_dir=str(directory),
        created_at=finished,
        eval_set_sha256="a" * 64,
        finished_at=finished,
        analyst_model="analyst",
        analyst_version=2,
    )
    (directory / "run.json").write_text(json.dumps(info.as_json()))
    report = {"quality": {"exact_set_accuracy": 0.9}, **({"analyst": analyst} if analyst else {})}
    (directory / "report.json").write_text(json.dumps(report))


def _service(tmp_path, targets):
    models = FakeModels(targets)
    return EvaluationService(tmp_path, models), models


def test_analyst_gate_judges_the_analyst_section(tmp_path):
    targets = {"min_schema_valid_rate": 0.9, "min_accuracy": 0.5, "min_macro_f1": 0.5}
    service, models = _service(tmp_path, {("analyst", "cpu-2core"): targets})
    _run(tmp_path, "r1")
    try:
        outcome = service.gate("analyst", 2, "cpu-2core")
    finally:
        service.close()
    assert outcome["passed"]
    names = {c["name"]: c for c in outcome["criteria"]}
    assert set(names) == {"min_schema_valid_rate", "min_risk_level_accuracy", "min_control_f1"}
    assert names["min_risk_level_accuracy"]["actual"] == 0.75
    assert outcome["comparison"] is None and outcome["run"].run_id == "r1"
    assert models.gates == [("analyst", 2, "cpu-2core", True, "passed")]


def test_analyst_gate_fails_below_target_and_takes_the_latest_run(tmp_path):
    targets = {"min_accuracy": 0.95}
    service, models = _service(tmp_path, {("analyst", "cpu-2core"): targets})
    _run(tmp_path, "r1", analyst={**ANALYST, "risk_level_accuracy": 1.0})
    _run(tmp_path, "r2", finished="2026-01-02T00:00:00Z")
    try:
        outcome = service.gate("analyst", 2, "cpu-2core")
    finally:
        service.close()
    assert not outcome["passed"] and outcome["run"].run_id == "r2"
    assert models.gates[-1][-1] == "failed: min_risk_level_accuracy"


def test_analyst_gate_needs_an_analyst_target_and_a_run(tmp_path):
    service, _ = _service(tmp_path, {("analyst", "cpu-2core"): {"p95_latency_ms": 100.0}})
    _run(tmp_path, "r1")
    _run(tmp_path, "r2", analyst=None)  # a run without the analyst section does not count
    try:
        with pytest.raises(FailedPrecondition, match="min_accuracy"):
            service.gate("analyst", 2, "cpu-2core")
        with pytest.raises(NotFound, match="--analyst-version 3"):
            service.latest_run("analyst", 3, analyst=True)
    finally:
        service.close()


def test_analyst_registry_metrics_are_flat():
    values = gates.analyst_registry_metrics({"analyst": ANALYST})
    assert values["control_f1"] == 0.947 and values["case_count"] == 8.0
    assert "fallback_reasons" not in values
    assert gates.analyst_registry_metrics({}) == {}
