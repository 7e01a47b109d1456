"""The validation report's digest: one definition for the service that signs and the gate that checks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Fields a digest leaves out: the digest itself and timings, which differ between two runs over the
# same bytes. The service's report as JSON (proto field names) and a plain-dict report share them.
UNDIGESTED_FIELDS = frozenset(
    {"report_digest", "report_sha256", "started_at", "finished_at", "duration", "duration_s",
     "rows_per_second", "check_durations_s"}
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
