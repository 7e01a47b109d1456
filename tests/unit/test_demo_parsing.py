"""The demo reads the JSON documents its commands print between their progress lines."""

import json

from llama_mapper.cli.demo import _json_start, _last_json_document


def test_json_document_between_progress_and_trailing_lines():
    text = 'run 1: hybrid on eval set abc\n{\n  "quality": {"macro_f1": 0.5}\n}\ndone\n'
    assert _last_json_document(text) == {"quality": {"macro_f1": 0.5}}


def test_json_document_alone_and_missing():
    assert _last_json_document('{"registration": {"version": 3}}\n') == {
        "registration": {"version": 3}
    }
    assert _last_json_document("no document here\n") == {}


def test_json_start_splits_progress_from_the_document():
    text = 'run 1: hybrid\n  golden: 5 cases\n{\n  "a": 1\n}\n'
    assert text[: _json_start(text)] == "run 1: hybrid\n  golden: 5 cases\n"
    assert _json_start('{"a": 1}') == 0
    assert _json_start("no document\n") == len("no document\n")


def test_remediation_counts_read_mapperctl_analyze_lines():
    from llama_mapper.cli.demo import remediation_counts

    def line(*methods):
        return json.dumps(
            {"line": 1, "assessments": [{"methods": {"remediation": m}} for m in methods]}
        )

    text = "\n".join([line("model", "fallback"), "", line("model"), line()]) + "\n"
    assert remediation_counts(text) == {"model": 2, "fallback": 1}
    assert remediation_counts("") == {}


def test_demo_analyst_targets_are_registry_target_fields_the_analyst_gate_reads():
    from llama_mapper.cli.demo import ANALYST_TARGETS
    from llama_mapper.evaluation.comparison import ANALYST_TARGETS as GATE
    from llama_mapper.registry.domain import TARGET_FIELDS

    assert set(ANALYST_TARGETS) <= set(TARGET_FIELDS)
    assert set(ANALYST_TARGETS) == {field for _, field, _, _ in GATE}


class _Recorder:
    """A Demo whose mapperctl records the argv and answers with `gate_rc` for `eval gate`."""

    def __init__(self, gate_rc):
        self.gate_rc, self.calls, self.facts = gate_rc, [], {}

    def mapperctl(self, *args, ok=(0,), **kw):
        from types import SimpleNamespace

        self.calls.append(args)
        return SimpleNamespace(returncode=self.gate_rc if args[:2] == ("eval", "gate") else 0)


def test_demo_gates_the_analyst_and_promotes_it_only_when_it_passed():
    from llama_mapper.cli.demo import PROFILE, _gate_and_promote_analyst

    demo = _Recorder(gate_rc=0)
    _gate_and_promote_analyst(demo, 2)
    targets, gate, promote = demo.calls
    assert targets[:5] == ("registry", "targets", "analyst", "--profile", PROFILE)
    assert "min_accuracy=0.5" in targets and "min_macro_f1=0.5" in targets
    assert gate == ("eval", "gate", "--model", "analyst", "2", "--profile", PROFILE)
    assert promote[:6] == ("registry", "promote", "analyst", "2", "--profile", PROFILE)
    assert demo.facts == {"analyst_gate": "passed", "analyst_champion": "v2"}

    failed = _Recorder(gate_rc=1)
    _gate_and_promote_analyst(failed, 2)
    assert [c[:2] for c in failed.calls] == [("registry", "targets"), ("eval", "gate")]
    assert failed.facts == {
        "analyst_gate": "failed",
        "analyst_champion": "none (rubric catalogue)",
    }
