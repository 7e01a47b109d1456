"""Reader for the OpenAI Moderation API (`POST /v1/moderations`): categories and category_scores."""

from __future__ import annotations

import math
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import as_json, expect, json_kind, reader

DETECTOR = "openai-moderation"

# A category OpenAI did not flag still counts when its score reaches this. The decision is made
# here rather than as a table `min_score` because the table's threshold would also drop categories
# that OpenAI itself flagged below it: "flagged OR score >= threshold" is not expressible there.
SCORE_THRESHOLD = 0.5

# A result with flagged=true whose categories are all false: kept under this raw label, which no
# table maps, so the rules mapper answers other.unknown with needs_review.
FLAGGED_WITHOUT_CATEGORY = "flagged"

# The category names of the current reference (omni-moderation and text-moderation models).
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


def _spellings() -> dict[str, str]:
    # The Python SDK's model_dump() (without by_alias) writes attribute names such as
    # `self_harm_intent`; some clients only swap the hyphen (`self_harm/intent`). Both are folded
    # to the wire name so one table entry serves every spelling.
    out: dict[str, str] = {}
    for name in CATEGORIES:
        out[name.replace("-", "_")] = name
        out[name.replace("-", "_").replace("/", "_")] = name
    return out


_SPELLINGS = _spellings()


def canonical_category(name: str) -> str:
    """The wire spelling of a category key; unknown keys come back unchanged."""
    return _SPELLINGS.get(name, name)


@reader(DETECTOR)
def read_openai_moderation(output: Any) -> DetectorReport:
    """One finding per category that is flagged or scores at least SCORE_THRESHOLD, per result;
    `attributes["index"]` is the input's position when several inputs were moderated at once."""
    doc = as_json(DETECTOR, output)
    expect(isinstance(doc, dict), DETECTOR, f"expected a JSON object, got {json_kind(doc)}")
    results = doc.get("results")
    expect(
        isinstance(results, list), DETECTOR, f"`results` must be a list, got {json_kind(results)}"
    )
    expect(bool(results), DETECTOR, "`results` is empty; the API returns one result per input")
    findings: list[NormalizedFinding] = []
    for index, result in enumerate(results):
        findings.extend(_read_result(index, result))
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not findings)


def _read_result(index: int, result: Any) -> list[NormalizedFinding]:
    where = f"results[{index}]"
    expect(
        isinstance(result, dict), DETECTOR, f"{where} must be an object, got {json_kind(result)}"
    )
    flagged = result.get("flagged")
    expect(
        isinstance(flagged, bool),
        DETECTOR,
        f"{where}.flagged must be true or false, got {json_kind(flagged)}",
    )
    categories = _object(result, "categories", where)
    scores = _object(result, "category_scores", where)
    applied = result.get("category_applied_input_types")
    if applied is not None:
        expect(
            isinstance(applied, dict),
            DETECTOR,
            f"{where}.category_applied_input_types must be an object, got {json_kind(applied)}",
        )
    else:
        applied = {}

    flags: dict[str, bool] = {}
    for key, value in categories.items():
        # Older models answer null for categories they do not score (e.g. illicit).
        expect(
            value is None or isinstance(value, bool),
            DETECTOR,
            f"{where}.categories[{key!r}] must be true, false or null, got {json_kind(value)}",
        )
        if value is not None:
            flags[canonical_category(key)] = value
    values: dict[str, float] = {}
    for key, value in scores.items():
        if value is None:
            continue
        expect(
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 <= value <= 1,
            DETECTOR,
            f"{where}.category_scores[{key!r}] must be a number between 0 and 1",
        )
        values[canonical_category(key)] = float(value)
    input_types = {canonical_category(key): types for key, types in applied.items()}

    findings = []
    for category in dict.fromkeys([*flags, *values]):
        is_flagged = flags.get(category, False)
        score = values.get(category)
        if not is_flagged and (score is None or score < SCORE_THRESHOLD):
            continue
        attributes: dict[str, Any] = {"index": index, "flagged": is_flagged}
        types = input_types.get(category)
        if isinstance(types, list) and all(isinstance(t, str) for t in types):
            attributes["applied_input_types"] = list(types)
        findings.append(NormalizedFinding(DETECTOR, category, score=score, attributes=attributes))
    if flagged and not findings:
        findings.append(
            NormalizedFinding(
                DETECTOR, FLAGGED_WITHOUT_CATEGORY, attributes={"index": index, "flagged": True}
            )
        )
    return findings


def _object(result: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = result.get(key)
    expect(
        isinstance(value, dict),
        DETECTOR,
        f"{where}.{key} must be an object, got {json_kind(value)}",
    )
    return value
