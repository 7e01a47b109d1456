"""The validation report's digest and signature: one definition for the service that signs and the
gate that checks."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

# Fields a digest leaves out: the digest itself and timings, which differ between two runs over the
# same bytes. The service's report as JSON (proto field names) and a plain-dict report share them.
UNDIGESTED_FIELDS = frozenset(
    {"report_digest", "report_sha256", "report_signature", "started_at", "finished_at",
     "duration", "duration_s", "rows_per_second", "check_durations_s"}
)  # fmt: skip
UNDIGESTED_CHECK_FIELDS = frozenset({"duration", "duration_s"})


def canonical_digest(value: Any) -> str:
    """sha256 of json.dumps(value, sort_keys=True, separators=(",", ":"))."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def report_digest(report: Mapping[str, Any]) -> str:
    """Digest of a validation report without its digest and timing fields, checks included."""
    stable: dict[str, Any] = {k: v for k, v in report.items() if k not in UNDIGESTED_FIELDS}
    if isinstance(stable.get("checks"), list):
        stable["checks"] = [
            {k: v for k, v in check.items() if k not in UNDIGESTED_CHECK_FIELDS}
            if isinstance(check, Mapping)
            else check
            for check in stable["checks"]
        ]
    return canonical_digest(stable)


# What a signature covers, by the service's field names (the plain-dict names are read too). The
# report digest covers the verdict and every check; the rest is named so that a signature says
# outright which dataset, config and policy it vouches for.
SIGNED_FIELDS = (
    ("dataset_manifest_sha256", "dataset_manifest_digest"),
    ("training_config_sha256", "training_config_digest"),
    ("effective_policy", "policy"),
)


def signed_payload(report: Mapping[str, Any]) -> dict[str, Any]:
    """The values a signature covers: the manifest digest, the config hash, the policy, and the
    report's own digest, recomputed (never the digest the report claims)."""
    payload = {name: next((report[n] for n in names if n in report), None)
               for names in SIGNED_FIELDS for name in names[:1]}  # fmt: skip
    payload["report_sha256"] = report_digest(report)
    return payload


def sign_report(report: Mapping[str, Any], key: bytes) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of signed_payload(report) with `key`."""
    canonical = json.dumps(
        signed_payload(report), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hmac.new(key, canonical.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_report(report: Mapping[str, Any], key: bytes) -> bool:
    """True when the report's `report_signature` is sign_report(report, key); constant time."""
    claimed = report.get("report_signature")
    if not isinstance(claimed, str) or not claimed:
        return False
    return hmac.compare_digest(claimed, sign_report(report, key))
