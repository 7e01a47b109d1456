"""`mapperctl analyze` on the examples: JSON Lines and the table, errors per line, the router."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from llama_mapper.cli import analyze as cli_analyze
from llama_mapper.cli.main import main
from llama_mapper.domain import rubric
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.schemas import validate
from llama_mapper.inference.analyst import analyze
from llama_mapper.serving.client import MapperClient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "detector-outputs.jsonl"


@pytest.fixture(scope="module")
def results_file(tmp_path_factory):
    """What `mapperctl map --rules-only < examples/detector-outputs.jsonl` prints."""
    mapper = RulesMapper()
    lines = []
    for line in EXAMPLES.read_text().splitlines():
        envelope = json.loads(line)
        lines.append(json.dumps(mapper.map(envelope["detector"], envelope["output"])))
    path = tmp_path_factory.mktemp("analyze") / "results.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_json_lines_one_per_result_every_finding_assessed(results_file, capsys):
    rc = main(["analyze", "--framework", "PCI_DSS", str(results_file)])
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    results = [json.loads(line) for line in results_file.read_text().splitlines()]
    assert rc == 0 and len(out) == len(results)
    for answer, result in zip(out, results, strict=True):
        assert answer["line"] >= 1 and answer["framework"] == "PCI_DSS"
        assert [a["label"] for a in answer["assessments"]] == [
            f["label"] for f in result["findings"]
        ]
        for a in answer["assessments"]:
            validate("analyst-output", a)
            assert a["methods"] == {
                "risk_level": "rule",
                "controls": "rule",
                "remediation": "fallback",
            }
    card = next(a for o in out for a in o["assessments"] if a["label"] == "financial.credit_card")
    assert card["risk_level"] == "critical" and card["controls"]
    # Findings of one result were found together: co_labels from the result.
    assert "pii.national_id" in card["context"]["co_labels"]


def test_context_applies_to_every_finding_and_the_table(results_file, capsys):
    rc = main(
        [
            "analyze",
            "--framework",
            "SOC2",
            "--context",
            '{"environment": "dev", "co_labels": []}',
            "--table",
            str(results_file),
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0
    header = text.splitlines()[0].split()
    assert header[:4] == ["line", "#", "label", "risk"]
    row = next(line for line in text.splitlines() if "pii.email_address" in line)
    assert " low " in row  # medium, one down in dev, no combination (co_labels given empty)


def test_a_bad_line_gets_an_error_the_rest_are_answered(results_file, capsys, tmp_path):
    good = results_file.read_text().splitlines()[0]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        "\n".join([good, "not json", '{"error": {"line": 2}}', "[]", '{"findings": 1}', good])
        + "\n"
    )
    rc = main(["analyze", "--framework", "GDPR", str(mixed)])
    captured = capsys.readouterr()
    out = [json.loads(line) for line in captured.out.splitlines()]
    assert rc == 1 and "4 of 6 lines failed" in captured.err
    assert [("error" in o) for o in out] == [False, True, True, True, True, False]
    assert all(o["error"]["code"] == "INVALID_ARGUMENT" for o in out if "error" in o)
    assert out[-1]["line"] == 6 and out[-1]["assessments"]


def test_bad_context_and_missing_file_fail_once(results_file, capsys):
    assert main(["analyze", "--framework", "SOC2", "--context", '{"volume": 0}']) == 2
    assert "--context" in capsys.readouterr().err
    assert main(["analyze", "--framework", "SOC2", "/nonexistent/x.jsonl"]) == 2
    assert "/nonexistent/x.jsonl" in capsys.readouterr().err


def test_through_the_router_the_same_assessments(results_file):
    seen = []

    def router(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        q = rubric.query(body["framework"], body["finding"], body.get("context"))
        return httpx.Response(200, json={"assessment": analyze(q), "provenance": {}})

    client = MapperClient("http://router")
    client._http = httpx.Client(transport=httpx.MockTransport(router), base_url="http://router")

    def remote(body, context):
        return client.analyze(body["framework"], body["finding"], context or None)

    local_out, _ = cli_analyze.analyze_stream(
        results_file.open("rb"), None, "HIPAA", {"location": "output"}, cli_analyze._local()
    )
    remote_out, failures = cli_analyze.analyze_stream(
        results_file.open("rb"), io.StringIO(), "HIPAA", {"location": "output"}, remote
    )
    assert failures == 0 and remote_out == local_out
    assert seen and all(b["context"]["location"] == "output" for b in seen)


def test_concurrent_assessments_keep_the_input_order(results_file):
    """With --concurrency N, N findings are in flight at once, yet the lines come out in order
    and a bad line still gets its own error."""
    import threading
    import time

    lines = results_file.read_bytes().splitlines()
    stream = io.BytesIO(b"\n".join([*lines, b"not json", *lines]) + b"\n")
    active, peak, lock = [0], [0], threading.Lock()

    def slow(body, context):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.05)
        with lock:
            active[0] -= 1
        return analyze(rubric.query(body["framework"], body["finding"], context))

    answers, failures = cli_analyze.analyze_stream(stream, None, "SOC2", {}, slow, concurrency=4)
    assert [a.get("line", a.get("error", {}).get("line")) for a in answers] == list(
        range(1, 2 * len(lines) + 2)
    )
    assert failures == 1 and "error" in answers[len(lines)]
    assert peak[0] > 1
