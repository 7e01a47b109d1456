"""Held-out native shapes: whole outputs of detectors no reader knows, in envelopes no training row
uses, for the evaluation to map from the raw output as `/v1/map` does.

Training rows are prompts built from findings already read; what a client sends is a detector's
own JSON. These cases are that JSON: findings under other keys than `findings` (`results`,
`detections`, `hits`), the label under `kind`, `tag` or `type`, the score under `conf`, `p` or
`likelihood`, category maps, parallel label/score lists, [label, score] tuples, a nested response
envelope, and free-text verdicts whose only clue is a sentence. Each case is kept only when the
generic reader finds exactly one finding in it, so the expected label is that finding's.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

from llama_mapper.datasets.generators.variants import REASONS, spellings
from llama_mapper.domain.readers.generic import read_generic
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.taxonomy import NO_FINDING, UNKNOWN, Taxonomy

# Detector names that appear nowhere else: not in the tables, not in the training generators.
HELDOUT_SHAPE_DETECTORS = (
    "orbit-guard",
    "nimbus-dlp",
    "kestrel-moderation",
    "bastion-scan",
    "lumen-safety",
    "quarry-secrets",
)

Shape = Callable[[str, float, random.Random], Any]


def _results(label: str, score: float, rng: random.Random) -> Any:
    return {"results": [{"kind": label, "conf": score}], "model": "v3"}


def _detections(label: str, score: float, rng: random.Random) -> Any:
    start = rng.randint(0, 40)
    return {"detections": [{"tag": label, "p": score, "offset": [start, start + 9]}]}


def _nested(label: str, score: float, rng: random.Random) -> Any:
    return {"data": {"scan": {"hits": [{"type": label, "likelihood": score}]}}, "status": "ok"}


def _category_map(label: str, score: float, rng: random.Random) -> Any:
    return {"flagged": True, "categories": {label: True}, "category_scores": {label: score}}


def _tuples(label: str, score: float, rng: random.Random) -> Any:
    return {"predictions": [[label, score]]}


def _parallel(label: str, score: float, rng: random.Random) -> Any:
    return {"labels": [label], "scores": [score]}


def _response(label: str, score: float, rng: random.Random) -> Any:
    return {"response": {"moderation": {"category": label, "confidence": score, "flagged": True}}}


SHAPES: dict[str, Shape] = {
    "results.kind.conf": _results,
    "detections.tag.p": _detections,
    "data.scan.hits": _nested,
    "categories.map": _category_map,
    "predictions.tuples": _tuples,
    "labels.scores.parallel": _parallel,
    "response.moderation": _response,
}
_VERDICTS = (
    lambda reason: {"verdict": "block", "reason": reason},
    lambda reason: {"decision": "deny", "explanation": reason, "policy_id": "p-17"},
    lambda reason: {"result": {"action": "flag", "message": reason}},
)


def _bases(taxonomy: Taxonomy, rules: RulesMapper, label: str) -> list[str]:
    entry = taxonomy.labels[label]
    bases = [entry.subcategory.replace("_", " "), *entry.aliases]
    for table in rules.tables.values():
        bases.extend(raw for raw, e in table.entries.items() if e.labels == (label,))
    return sorted(set(bases))


def native_cases(
    taxonomy: Taxonomy, rules: RulesMapper, seed: int, per_label: int
) -> Iterator[tuple[str, Any, str, str]]:
    """(detector, native output, expected label, shape) for every label but the two special ones."""
    rng = random.Random(f"{seed}:shapes")  # noqa: S311 - seeded data generation, not cryptography
    names = sorted(SHAPES)
    for label in taxonomy.names:
        if label in (UNKNOWN, NO_FINDING):
            continue
        bases = _bases(taxonomy, rules, label)
        made = 0
        for attempt in range(per_label * 6):
            if made >= per_label:
                break
            detector = rng.choice(HELDOUT_SHAPE_DETECTORS)
            if attempt % 3 == 2:
                output = rng.choice(_VERDICTS)(REASONS[label])
                shape = "free_text.verdict"
            else:
                raw = next(iter(spellings(rng.choice(bases), rng, 1)), label)
                shape = rng.choice(names)
                output = SHAPES[shape](raw, round(rng.uniform(0.6, 0.99), 3), rng)
            findings = read_generic(detector, output)
            if len(findings) != 1 or not (findings[0].raw_label or findings[0].attributes):
                continue
            made += 1
            yield detector, output, label, shape
