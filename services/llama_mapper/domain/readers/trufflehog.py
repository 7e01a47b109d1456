"""Reader for TruffleHog v3: the results `trufflehog ... --json` prints, one JSON object a line."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_object,
    expect,
    json_documents,
    json_kind,
    reader,
    required_bool,
    required_str,
)

DETECTOR = "trufflehog"

# TruffleHog tries each credential against its service. The answer is the finding's severity, so
# it travels in the result (`source.severity`) and a table's `min_severity` can act on it:
#   2 verified   - the service accepted the credential: a live secret, rotate now;
#   1 unknown    - verification was attempted and failed (VerificationError): maybe live;
#   0 unverified - not verified (or --no-verification): possibly a false positive or a dead key.
VERIFIED = 2
VERIFICATION_UNKNOWN = 1
UNVERIFIED = 0
_VERIFICATION = {VERIFIED: "verified", VERIFICATION_UNKNOWN: "unknown", UNVERIFIED: "unverified"}

# Where a finding was found, per source (source_metadatapb.MetaData.Data): file, line, commit and
# repository are locations. `email` (the committer) and `link` are left out on purpose.
_LOCATION_KEYS = {
    "file": "file",
    "line": "line",
    "commit": "commit",
    "repository": "repository",
    "path": "file",
}


@reader(DETECTOR)
def read_trufflehog(output: Any) -> DetectorReport:
    """Reads v3 results as `pkg/output/json.go` (PrintJSON) writes them: SourceMetadata,
    SourceID, SourceType, SourceName, DetectorType, DetectorName, DecoderName, Verified,
    VerificationError, Raw, RawV2, Redacted, ExtraData, StructuredData. Accepts one result, a
    list of them, or the JSON Lines text itself; no result at all is TruffleHog's "nothing found".

    The raw label is `DetectorName`. `Raw` and `RawV2` are the secret; `Redacted` is the part of it
    TruffleHog shows (for AWS, the access key id), `ExtraData` and `StructuredData` describe the
    account the key opens: none of them is ever read into the finding.
    """
    docs = json_documents(DETECTOR, output)
    findings = tuple(_finding(i, doc) for i, doc in enumerate(docs))
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not findings)


def _finding(i: int, doc: Any) -> NormalizedFinding:
    where = f"results[{i}]"
    doc = as_object(DETECTOR, doc, where)
    expect(
        "DetectorName" in doc or "DetectorType" in doc,
        DETECTOR,
        f"{where} has no DetectorName: expected a TruffleHog v3 result (--json, not --json-legacy)",
    )
    name = required_str(DETECTOR, doc, "DetectorName", where)
    verified = required_bool(DETECTOR, doc, "Verified", where) if "Verified" in doc else False
    error = doc.get("VerificationError")
    expect(
        error is None or isinstance(error, str),
        DETECTOR,
        f"{where}.VerificationError must be a string, got {json_kind(error)}",
    )
    if verified:
        severity = VERIFIED
    elif error:
        severity = VERIFICATION_UNKNOWN
    else:
        severity = UNVERIFIED
    # The error text is not kept: it can quote the service's answer about the account.
    attributes: dict[str, Any] = {
        "verified": verified,
        "verification": _VERIFICATION[severity],
    }
    detector_type = doc.get("DetectorType")
    if isinstance(detector_type, int) and not isinstance(detector_type, bool):
        attributes["detector_type"] = detector_type
    for key, name_ in (("DecoderName", "decoder"), ("SourceName", "source_name")):
        value = doc.get(key)
        if isinstance(value, str) and value:
            attributes[name_] = value
    attributes.update(_location(doc.get("SourceMetadata"), where))
    return NormalizedFinding(DETECTOR, name, severity=severity, attributes=attributes)


def _location(metadata: Any, where: str) -> dict[str, Any]:
    if metadata is None:
        return {}
    metadata = as_object(DETECTOR, metadata, f"{where}.SourceMetadata")
    data = metadata.get("Data")
    if data is None:
        return {}
    data = as_object(DETECTOR, data, f"{where}.SourceMetadata.Data")
    out: dict[str, Any] = {}
    for source, fields in data.items():
        if not isinstance(fields, dict):
            continue
        out["source"] = str(source).lower()
        for key, name in _LOCATION_KEYS.items():
            value = fields.get(key)
            if isinstance(value, str) and value:
                if _has_userinfo(value):
                    # A clone URL with user:token@ in it carries a credential: not kept.
                    continue
                out[name] = value
            elif isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                out[name] = value
        break
    return out


def _has_userinfo(value: str) -> bool:
    _scheme, sep, rest = value.partition("://")
    return bool(sep) and "@" in rest.split("/", 1)[0]
