"""Reader for Yelp detect-secrets: its JSON report (`detect-secrets scan`) or the bare results map."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import as_json, expect, json_kind, reader

DETECTOR = "detect-secrets"

# Top-level keys of a full report (detect_secrets.core.baseline.format_for_output); any of them
# besides `results` tells a report from a bare `{filename: [secret, ...]}` map.
_REPORT_KEYS = ("version", "plugins_used", "filters_used", "generated_at")


@reader(DETECTOR)
def read_detect_secrets(output: Any) -> DetectorReport:
    """Reads a detect-secrets report. `hashed_secret` is never kept: a SHA-1 of a short password
    is as good as the password to anyone with a wordlist."""
    doc = as_json(DETECTOR, output)
    expect(isinstance(doc, dict), DETECTOR, f"expected a JSON object, got {json_kind(doc)}")
    if "results" in doc or any(key in doc for key in _REPORT_KEYS):
        expect("results" in doc, DETECTOR, "report has no results")
        results = doc["results"]
        expect(
            isinstance(results, dict),
            DETECTOR,
            f"results must be an object of filename -> list, got {json_kind(results)}",
        )
    else:
        results = doc
    findings = []
    for filename, secrets in results.items():
        expect(
            isinstance(secrets, list),
            DETECTOR,
            f"results for a file must be a list of secrets, got {json_kind(secrets)}",
        )
        for i, secret in enumerate(secrets):
            finding = _finding(filename, i, secret)
            if finding is not None:
                findings.append(finding)
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _finding(filename: str, i: int, secret: Any) -> NormalizedFinding | None:
    where = f"secret {i} of a file"
    expect(
        isinstance(secret, dict), DETECTOR, f"{where} must be an object, got {json_kind(secret)}"
    )
    secret_type = secret.get("type")
    expect(secret_type is not None, DETECTOR, f"{where} has no type")
    expect(
        isinstance(secret_type, str) and bool(secret_type.strip()),
        DETECTOR,
        f"{where}.type must be a non-empty string, got {json_kind(secret_type)}",
    )
    attributes: dict[str, Any] = {"filename": filename}
    line = secret.get("line_number")
    if line is not None:
        expect(
            isinstance(line, int) and not isinstance(line, bool) and line >= 0,
            DETECTOR,
            f"{where}.line_number must be a non-negative integer, got {json_kind(line)}",
        )
        attributes["line_number"] = line
    for flag in ("is_verified", "is_secret"):
        value = secret.get(flag)
        if value is not None:
            expect(
                isinstance(value, bool),
                DETECTOR,
                f"{where}.{flag} must be true or false, got {json_kind(value)}",
            )
            attributes[flag] = value
    if attributes.get("is_secret") is False:
        # `detect-secrets audit` marked it a false positive: the report itself says no secret.
        return None
    return NormalizedFinding(DETECTOR, secret_type.strip(), attributes=attributes)
