"""`mapperctl map` as users run it: the console script, JSON Lines on stdin, one line out per line in."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llama_mapper.domain.schemas import validate

MAPPERCTL = str(Path(sys.executable).with_name("mapperctl"))
EMAIL_LINE = {
    "detector": "presidio",
    "output": [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 1.0}],
}


def run(stdin: bytes, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [MAPPERCTL, *args], input=stdin, capture_output=True, timeout=120, check=False
    )


def lines_of(proc: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_acceptance_email_maps_with_gdpr_and_soc2_controls():
    proc = run(json.dumps(EMAIL_LINE).encode() + b"\n", "map", "--rules-only")
    assert proc.returncode == 0, proc.stderr
    [result] = lines_of(proc)
    assert result["taxonomy"] == ["pii.email_address"]
    frameworks = {ref["framework"] for ref in result["frameworks"]}
    assert {"GDPR", "SOC2"} <= frameworks
    assert result["findings"][0]["method"] == "rule"
    assert result["provenance"]["taxonomy_version"] == "1.0.0"


def test_bad_lines_get_their_own_errors_and_nothing_else_is_lost():
    good = json.dumps(EMAIL_LINE).encode()
    huge = json.dumps({"detector": "presidio", "output": "x" * (10 * 1024 * 1024)}).encode()
    stdin = (
        b"\n".join(
            [
                good,
                b'{"detector": "presidio", "output": [',  # malformed JSON
                json.dumps({"detector": "nobody-knows", "output": []}).encode(),  # unknown detector
                json.dumps(
                    {"detector": "presidio", "output": {"entity_type": 1}}
                ).encode(),  # shape
                huge,  # 10 MB line
                b"[1, 2, 3]",  # not an object
                json.dumps({"output": []}).encode(),  # no detector
                good,
            ]
        )
        + b"\n"
    )
    proc = run(stdin, "map", "--rules-only")
    assert proc.returncode == 1
    out = lines_of(proc)
    assert len(out) == 8
    assert out[0]["taxonomy"] == ["pii.email_address"]
    assert out[7]["taxonomy"] == ["pii.email_address"]
    errors = {item["error"]["line"]: item["error"] for item in out[1:7]}
    assert sorted(errors) == [2, 3, 4, 5, 6, 7]
    assert errors[2]["code"] == "INVALID_ARGUMENT" and "line is not JSON" in errors[2]["message"]
    assert errors[3]["code"] == "NOT_FOUND" and "nobody-knows" in errors[3]["message"]
    assert errors[4]["code"] == "INVALID_ARGUMENT" and "presidio" in errors[4]["message"]
    assert errors[5]["code"] == "INVALID_ARGUMENT" and "limit" in errors[5]["message"]
    assert "expected a JSON object" in errors[6]["message"]
    assert "detector" in errors[7]["message"]
    assert b"6 of 8 lines failed" in proc.stderr


def test_raw_content_never_reaches_stdout_or_stderr():
    secret = "alice@example.com"
    line = {
        "detector": "presidio",
        "output": [
            {"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 17, "score": 0.9, "text": secret}
        ],
    }
    proc = run(json.dumps(line).encode() + b"\n", "-v", "map", "--rules-only")
    assert secret.encode() not in proc.stdout
    assert secret.encode() not in proc.stderr


@pytest.mark.parametrize("document", [False, True])
def test_model_path_without_endpoint_says_how_to_proceed(document):
    line = {"outputs": [EMAIL_LINE]} if document else EMAIL_LINE
    flags = ("--document",) if document else ()
    proc = run(json.dumps(line).encode() + b"\n", "map", *flags, "--url", "http://127.0.0.1:9")
    assert proc.returncode == 2
    assert b"UNAVAILABLE" in proc.stderr
    assert b"http://127.0.0.1:9" in proc.stderr
    assert b"--rules-only" in proc.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("taxonomy", "show"), b"pii.email_address"),
        (("taxonomy", "validate"), b"67 labels, 22 mapping tables, 22 readers"),
        (("taxonomy", "crosswalk", "llama-guard"), b"S14"),
        (("frameworks", "show", "financial.credit_card"), b"PCI_DSS"),
    ],
)
def test_taxonomy_and_frameworks_commands(args, needle):
    proc = run(b"", *args)
    assert proc.returncode == 0, proc.stderr
    assert needle in proc.stdout


def test_frameworks_show_unknown_label():
    proc = run(b"", "frameworks", "show", "pii.nope")
    assert proc.returncode == 2
    assert b"INVALID_ARGUMENT" in proc.stderr


def test_examples_map_and_only_the_two_custom_labels_go_to_review():
    examples = Path(__file__).resolve().parents[2] / "examples" / "detector-outputs.jsonl"
    stdin = examples.read_bytes()
    proc = run(stdin, "map", "--rules-only")
    assert proc.returncode == 0, proc.stderr
    out = lines_of(proc)
    inputs = [json.loads(line) for line in stdin.decode().splitlines() if line.strip()]
    assert len(out) == len(inputs) and all("error" not in item for item in out)
    detectors = {line["detector"] for line in inputs}
    from llama_mapper.domain.readers.base import known_detectors

    assert detectors >= set(known_detectors()), set(known_detectors()) - detectors
    review = [
        (line["detector"], r["taxonomy"])
        for line, r in zip(inputs, out, strict=True)
        if r["needs_review"]
    ]
    assert review == [("presidio", ["other.unknown"]), ("google-dlp", ["other.unknown"])]


def test_map_adds_crosswalks_when_asked():
    line = json.dumps({"detector": "llama-guard", "output": "unsafe\nS4"}).encode() + b"\n"
    proc = run(
        line, "map", "--rules-only", "--crosswalk", "ailuminate", "--crosswalk", "llama-guard"
    )
    assert proc.returncode == 0, proc.stderr
    [result] = lines_of(proc)
    assert result["crosswalks"] == {
        "ailuminate": [{"label": "sexual.minors", "ids": ["cse"]}],
        "llama-guard": [{"label": "sexual.minors", "ids": ["S4"]}],
    }
    unknown = run(line, "map", "--rules-only", "--crosswalk", "nope")
    assert unknown.returncode == 2 and b"NOT_FOUND" in unknown.stderr


def test_map_document_rules_only_one_result_per_line_and_errors_per_line():
    examples = Path(__file__).resolve().parents[2] / "examples" / "documents.jsonl"
    good = examples.read_bytes().splitlines()[0]
    text = json.loads(good)["text"]
    bad_span = json.dumps(
        {"text": "short", "outputs": [json.loads(good)["outputs"][0]]}, ensure_ascii=False
    ).encode()
    stdin = b"\n".join(
        [
            good,
            b'{"outputs": []}',  # no output
            json.dumps({"outputs": [EMAIL_LINE], "text": 1}).encode(),  # text not a string
            bad_span,  # spans past the text
            json.dumps({"outputs": [EMAIL_LINE, {"detector": "presidio", "output": {}}]}).encode(),
            good,
        ]
    )
    proc = run(stdin + b"\n", "map", "--document", "--rules-only", "--crosswalk", "ailuminate")
    assert proc.returncode == 1
    out = lines_of(proc)
    assert len(out) == 6
    first = out[0]
    assert out[5] == first  # the same line, the same result
    validate("document-output", first)
    assert first["provenance"]["positions"] == "text"
    assert "ailuminate" in first["crosswalks"]
    phone = next(f for f in first["findings"] if f["label"] == "pii.phone_number")
    assert {s["detector"] for s in phone["sources"]} == {"presidio", "google-dlp"}
    assert text[phone["span"]["start"] : phone["span"]["end"]] == "+44 20 7946 0958"
    errors = {item["error"]["line"]: item["error"] for item in out[1:5]}
    assert sorted(errors) == [2, 3, 4, 5]
    assert all(e["code"] == "INVALID_ARGUMENT" for e in errors.values())
    assert "$.outputs" in errors[2]["message"]
    assert "$.text" in errors[3]["message"]
    assert "$.outputs[0].output: finding 0" in errors[4]["message"]
    assert "$.outputs[1].output: presidio" in errors[5]["message"]
    assert b"4 of 6 lines failed" in proc.stderr
    # Nothing of the text reaches stdout or stderr.
    for fragment in ("zoe.muller", "Müller", "AKIAFAKE"):
        assert fragment.encode() not in proc.stdout + proc.stderr


def test_the_document_example_without_its_text_keeps_each_detectors_units():
    examples = Path(__file__).resolve().parents[2] / "examples" / "documents.jsonl"
    proc = run(examples.read_bytes(), "map", "--document", "--rules-only")
    assert proc.returncode == 0, proc.stderr
    with_text, without = lines_of(proc)
    assert without["provenance"]["positions"] == "reported"
    assert without["provenance"]["text_sha256"]  # the caller's, echoed
    assert {f["span_unit"] for f in with_text["findings"]} == {"char"}
    assert {f["span_unit"] for f in without["findings"]} == {"char", "byte", "line"}
    assert with_text["needs_review"] is True  # Comprehend's ADDRESS on Presidio's phone number
    assert any(f.get("conflict") for f in with_text["findings"])
