"""Reader for Gitleaks: its JSON report (`gitleaks git|dir|stdin --report-format json`)."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_json,
    as_object,
    expect,
    json_kind,
    reader,
    required_str,
)

DETECTOR = "gitleaks"

# Where each number of a finding sits in the file; they are positions, not content.
_POSITIONS = (
    ("StartLine", "start_line"),
    ("EndLine", "end_line"),
    ("StartColumn", "start_column"),
    ("EndColumn", "end_column"),
)


@reader(DETECTOR)
def read_gitleaks(output: Any) -> DetectorReport:
    """Reads the JSON report: a list of findings as `report.Finding` serializes them (gitleaks
    v8, `report/finding.go`: RuleID, Description, StartLine, EndLine, StartColumn, EndColumn,
    Match, Secret, File, SymlinkFile, Commit, Link, Entropy, Author, Email, Date, Message, Tags,
    Fingerprint). An empty list is gitleaks' "no leaks found".

    Kept: the rule id (the raw label), the file, commit, line/column positions, the rule's tags.
    Never kept: `Secret` and `Match` (the secret and the line around it), `Fingerprint` (it embeds
    the file and line, already kept, and nothing else of use), and the commit's `Author`, `Email`
    and `Message`, which are personal data of the committer, not part of the finding.
    """
    doc = as_json(DETECTOR, output)
    if isinstance(doc, dict):
        # A single finding, as some wrappers forward them one at a time.
        doc = [doc]
    expect(isinstance(doc, list), DETECTOR, f"expected a list of findings, got {json_kind(doc)}")
    findings = tuple(_finding(i, item) for i, item in enumerate(doc))
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _finding(i: int, item: Any) -> NormalizedFinding:
    where = f"findings[{i}]"
    item = as_object(DETECTOR, item, where)
    rule_id = required_str(DETECTOR, item, "RuleID", where)
    attributes: dict[str, Any] = {}
    for key, name in (("File", "file"), ("SymlinkFile", "symlink_file"), ("Commit", "commit")):
        value = item.get(key)
        if value is not None:
            expect(isinstance(value, str), DETECTOR, f"{where}.{key} must be a string")
            if value:
                attributes[name] = value
    for key, name in _POSITIONS:
        value = item.get(key)
        if value is not None:
            expect(
                isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                DETECTOR,
                f"{where}.{key} must be a non-negative integer, got {json_kind(value)}",
            )
            attributes[name] = value
    tags = item.get("Tags")
    if tags is not None:
        expect(
            isinstance(tags, list) and all(isinstance(tag, str) for tag in tags),
            DETECTOR,
            f"{where}.Tags must be a list of strings",
        )
        if tags:
            attributes["tags"] = sorted(set(tags))
    return NormalizedFinding(DETECTOR, rule_id, attributes=attributes)
