"""Reader for NVIDIA NemoGuard / Nemotron Safety Guard content-safety verdicts (Aegis 2.0 taxonomy)."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import as_json, expect, reader

DETECTOR = "nemoguard"

# The model answers JSON: {"User Safety": "unsafe", "Response Safety": "safe",
# "Safety Categories": "Violence, Criminal Planning/Confessions"}. "Response Safety" and the
# categories are optional; the categories are names, comma separated, not S-codes.
_USER = "User Safety"
_RESPONSE = "Response Safety"
_CATEGORIES = "Safety Categories"
_VERDICTS = {"safe", "unsafe"}


@reader(DETECTOR)
def read_nemoguard(output: Any) -> DetectorReport:
    data = as_json(DETECTOR, output)
    expect(isinstance(data, dict), DETECTOR, f"expected a JSON object, got {type(data).__name__}")
    verdicts = {}
    for key in (_USER, _RESPONSE):
        value = data.get(key)
        if value is None:
            continue
        expect(isinstance(value, str), DETECTOR, f"{key!r} must be a string")
        verdict = value.strip().lower()
        expect(verdict in _VERDICTS, DETECTOR, f"{key!r} must be 'safe' or 'unsafe'")
        verdicts[key] = verdict
    expect(_USER in verdicts, DETECTOR, f"missing {_USER!r}")
    raw_categories = data.get(_CATEGORIES) or ""
    expect(isinstance(raw_categories, str), DETECTOR, f"{_CATEGORIES!r} must be a string")
    categories = []
    for name in (part.strip() for part in raw_categories.split(",")):
        if name and name not in categories:
            categories.append(name)
    unsafe = [key for key, verdict in verdicts.items() if verdict == "unsafe"]
    if not unsafe:
        expect(not categories, DETECTOR, "categories listed although every verdict is 'safe'")
        return DetectorReport(DETECTOR, (), explicit_no_finding=True)
    # An "unsafe" verdict with no category still says something: keep it as a raw label no table
    # maps, so it reaches a person as other.unknown rather than vanishing.
    role = "user" if _USER in unsafe else "response"
    names = categories or ["unsafe"]
    return DetectorReport(
        DETECTOR,
        tuple(NormalizedFinding(DETECTOR, name, attributes={"role": role}) for name in names),
    )
