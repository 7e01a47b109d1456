"""`mapperctl -v map` on a file of hostile lines, as users run it (the console script): every line
answered in order, a result or an error object naming its line; exit status 1 when any line failed
(0 when none did, 2 only for a failure of the whole command); no traceback, no planted content on
stdout or in the DEBUG log on stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llama_mapper.domain.schemas import validate
from tests.unit.hostile import values as v
from tests.unit.hostile.tally import PII_TEXT, TALLY

MAPPERCTL = str(Path(sys.executable).with_name("mapperctl"))
CALLER_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"}
PRESIDIO = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.9}]
NAME_SECRETS = {"pii", "ssn", "email", "aws_key", "card"}


def _envelopes() -> dict[str, bytes]:
    lines: dict[str, object] = {"good": {"detector": "presidio", "output": PRESIDIO}}
    for name, value in v.STRINGS.items():
        if name == "huge":
            continue  # below, as its own line past the limit
        if name not in NAME_SECRETS:  # a detector name is echoed by design: no secrets in it
            lines[f"detector={name}"] = {"detector": value, "output": PRESIDIO}
        lines[f"output={name}"] = {"detector": "acme-unknown", "output": value}
        lines[f"entity_type={name}"] = {
            "detector": "presidio",
            "output": [{**PRESIDIO[0], "entity_type": value}],
        }
    for name, value in v.WRONG_TYPES.items():
        lines[f"detector:{name}"] = {"detector": value, "output": PRESIDIO}
        lines[f"output:{name}"] = {"detector": "presidio", "output": value}
    lines["deep_200"] = {"detector": "presidio", "output": v.deep_value()}
    lines["pii_object"] = {"detector": "acme", "output": {"finding": PII_TEXT, "quote": v.SSN}}
    lines["request_id_huge"] = {
        "detector": "presidio",
        "output": PRESIDIO,
        "request_id": "r" * 5000,
    }
    out = {name: json.dumps(line, ensure_ascii=True).encode() for name, line in lines.items()}
    prefix = b'{"detector": "presidio", "output": '
    for name, raw in v.RAW_BODIES.items():
        if b"\n" in raw:
            continue
        out[f"raw_{name}"] = raw
        out[f"raw_output_{name}"] = prefix + raw + b"}"
    out["huge_10mb"] = json.dumps({"detector": "presidio", "output": "x" * (10 << 20)}).encode()
    out["blank"] = b""
    out["good_last"] = out["good"]
    return out


def _documents() -> dict[str, bytes]:
    good = {"detector": "presidio", "output": PRESIDIO}
    lines: dict[str, object] = {"good": {"outputs": [good], "text": "mail: a@b.co"}}
    for name, value in v.STRINGS.items():
        if name == "huge":
            continue
        lines[f"text={name}"] = {"outputs": [good], "text": value}
        if name not in NAME_SECRETS:
            lines[f"detector={name}"] = {"outputs": [{"detector": value, "output": PRESIDIO}]}
    for name, value in v.WRONG_TYPES.items():
        lines[f"outputs:{name}"] = {"outputs": value}
        lines[f"text:{name}"] = {"outputs": [good], "text": value}
    lines["outputs_33"] = {"outputs": [good] * 33}
    lines["outputs_none"] = {"outputs": []}
    lines["deep_200"] = {"outputs": [{"detector": "presidio", "output": v.deep_value()}]}
    out = {name: json.dumps(line).encode() for name, line in lines.items()}
    out["deep_arrays"] = b'{"outputs": ' + v.deep_arrays().encode() + b"}"
    out["nan"] = b'{"outputs": [{"detector": "presidio", "output": NaN}]}'
    return out


@pytest.mark.parametrize(("mode", "lines"), [("map", _envelopes()), ("document", _documents())])
def test_every_hostile_line_is_answered(mode, lines, tmp_path):
    names = list(lines)
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines[name] for name in names) + b"\n")
    flags = ["--document"] if mode == "document" else []
    with path.open("rb") as stdin:
        proc = subprocess.run(
            [MAPPERCTL, "-v", "map", "--rules-only", *flags],
            stdin=stdin,
            capture_output=True,
            timeout=300,
            check=False,
        )
    stdout, stderr = proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8", "replace")
    answers = stdout.splitlines()
    assert len(answers) == len(names), stderr[-2000:]
    failed = 0
    schema = "document-output" if mode == "document" else "mapper-output"
    for number, (name, answer) in enumerate(zip(names, answers, strict=True), start=1):
        body = json.loads(answer)
        code = body["error"]["code"] if "error" in body else "OK"
        problems = TALLY.record(
            "cli", f"{mode}:{name}", server_error=code not in CALLER_CODES | {"OK"}, texts=[answer]
        )
        assert not problems, f"line {number} ({name}): {answer[:300]}: {problems}"
        if code == "OK":
            validate(schema, body)
        else:
            failed += 1
            assert body["error"]["line"] == number
    # The DEBUG log: metadata only, and no traceback (every error is one of the line's own).
    problems = TALLY.record("cli", f"{mode}:stderr", server_error=False, texts=[stderr])
    assert not problems, f"{problems}: {stderr[-2000:]}"
    assert proc.returncode == (1 if failed else 0)
    assert f"{failed} of {len(names)} lines failed" in stderr
    assert json.loads(answers[0]).get("error") is None  # the first, good line was mapped
