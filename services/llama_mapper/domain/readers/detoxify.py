"""Reader for Detoxify's `predict()` output: one probability per label, for one text or a batch."""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import DetectorOutputError, as_json, expect, json_kind, reader

DETECTOR = "detoxify"

# Jigsaw's convention, which Detoxify's models were trained and evaluated under: a label (or an
# identity mention) is positive at >= 0.5. The mapping table applies its own `min_score` to the
# findings; this constant only decides identity mentions and `explicit_no_finding`.
POSITIVE_AT = 0.5

# The identity-attack heads: `identity_attack` (unbiased, multilingual and the renamed original
# head) and `identity_hate` (the original Jigsaw column, as raw checkpoints and toxic-bert emit it).
IDENTITY_ATTACK_LABELS = frozenset({"identity_attack", "identity_hate"})
IDENTITY_ATTACK = "identity_attack"

# The Jigsaw Unintended Bias identity columns. The unbiased model predicts the first nine; the rest
# appear in checkpoints trained on the full column set. They say that an identity is *mentioned*,
# which is not an attack: they never become findings on their own. When identity_attack is
# reported for the same text, each mentioned identity turns it into `identity_attack/<identity>`,
# which the table maps to the matching hate subcategory.
IDENTITY_COLUMNS = (
    "male",
    "female",
    "homosexual_gay_or_lesbian",
    "christian",
    "jewish",
    "muslim",
    "black",
    "white",
    "psychiatric_or_mental_illness",
    "asian",
    "latino",
    "other_race_or_ethnicity",
    "atheist",
    "buddhist",
    "hindu",
    "other_religion",
    "bisexual",
    "heterosexual",
    "other_sexual_orientation",
    "transgender",
    "other_gender",
    "physical_disability",
    "intellectual_or_learning_disability",
    "other_disability",
)
_IDENTITIES = frozenset(IDENTITY_COLUMNS)


@reader(DETECTOR)
def read_detoxify(output: Any) -> DetectorReport:
    """Accepts `{label: score}` (predict on one string) or `{label: [score, ...]}` (predict on a
    list); batch findings carry `attributes["index"]`. Every label's score becomes a finding, so
    the mapping table's threshold decides what counts; unknown labels keep their raw name."""
    doc = as_json(DETECTOR, output)
    expect(
        isinstance(doc, dict),
        DETECTOR,
        f"expected a JSON object of label scores, got {json_kind(doc)}",
    )
    expect(bool(doc), DETECTOR, "expected at least one label score, got an empty object")
    for key in doc:
        expect(isinstance(key, str) and bool(key), DETECTOR, "labels must be non-empty strings")
    if all(isinstance(value, list) for value in doc.values()):
        rows = _batch_rows(doc)
        batch = True
    else:
        for label, value in doc.items():
            expect(
                not isinstance(value, list),
                DETECTOR,
                f"label {label!r} has a list while others have single scores; expected all of one",
            )
            _check_score(value, label)
        rows = [{label: float(value) for label, value in doc.items()}]
        batch = False

    findings: list[NormalizedFinding] = []
    positive = False
    for index, scores in enumerate(rows):
        base = {"index": index} if batch else {}
        mentioned = [name for name in IDENTITY_COLUMNS if scores.get(name, 0.0) >= POSITIVE_AT]
        for label, score in scores.items():
            if label in _IDENTITIES:
                continue
            positive = positive or score >= POSITIVE_AT
            if label in IDENTITY_ATTACK_LABELS and mentioned:
                findings.extend(
                    NormalizedFinding(
                        DETECTOR,
                        f"{IDENTITY_ATTACK}/{identity}",
                        score=score,
                        attributes={
                            **base,
                            "identity": identity,
                            "identity_score": scores[identity],
                        },
                    )
                    for identity in mentioned
                )
            else:
                findings.append(
                    NormalizedFinding(DETECTOR, label, score=score, attributes=dict(base))
                )
    return DetectorReport(DETECTOR, tuple(findings), explicit_no_finding=not positive)


def _batch_rows(doc: dict[str, list[Any]]) -> list[dict[str, float]]:
    lengths = {len(values) for values in doc.values()}
    if len(lengths) != 1:
        raise DetectorOutputError(
            f"{DETECTOR}: batch score lists differ in length ({sorted(lengths)}); "
            "expected one score per text for every label"
        )
    (count,) = lengths
    rows: list[dict[str, float]] = [{} for _ in range(count)]
    for label, values in doc.items():
        for index, value in enumerate(values):
            _check_score(value, f"{label}[{index}]")
            rows[index][label] = float(value)
    return rows


def _check_score(value: Any, where: str) -> None:
    # numbers.Real also admits numpy's float32, which predict() returns for a single text.
    expect(
        isinstance(value, Real) and not isinstance(value, bool),
        DETECTOR,
        f"score of {where!r} must be a number, got {json_kind(value)}",
    )
    expect(
        math.isfinite(value) and 0 <= value <= 1,
        DETECTOR,
        f"score of {where!r} must be a probability between 0 and 1",
    )
