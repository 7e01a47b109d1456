"""The generic envelope: findings from the output of a detector that has no reader of its own."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from typing import Any

from llama_mapper.domain.findings import NormalizedFinding, Span

RAW_LABEL_CHARS = 200
_LIST_KEYS = (
    "findings",
    "results",
    "detections",
    "entities",
    "items",
    "categories",
    "labels",
    "matches",
    "data",
)
_LABEL_KEYS = (
    "label",
    "entity_type",
    "type",
    "category",
    "name",
    "class",
    "kind",
    "rule",
    "policy",
)
_SCORE_KEYS = ("score", "confidence", "probability", "likelihood")
_SPAN_KEYS = (("start", "end"), ("begin_offset", "end_offset"), ("begin", "end"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _finding_from_dict(detector: str, item: Mapping[str, Any]) -> NormalizedFinding | None:
    label = next((item[k] for k in _LABEL_KEYS if isinstance(item.get(k), str) and item[k]), None)
    if label is None:
        return None
    score = next((s for k in _SCORE_KEYS if (s := _number(item.get(k))) is not None), None)
    span = None
    for start_key, end_key in _SPAN_KEYS:
        start, end = item.get(start_key), item.get(end_key)
        if isinstance(start, int) and isinstance(end, int) and 0 <= start <= end:
            span = Span(start, end)
            break
    return NormalizedFinding(detector, label[:RAW_LABEL_CHARS], score=score, span=span)


def extract_generic(
    detector: str, output: Any, *, min_score: float = 0.5
) -> list[NormalizedFinding] | None:
    """Findings from an unknown detector's output, by shape; None when the shape is unrecognized.

    - a list of dicts with a label-like key (`label`, `entity_type`, `type`, ...) and optional score;
    - a dict wrapping such a list (`findings`, `results`, `entities`, ...);
    - a dict of scores (`{"toxicity": 0.91, "insult": 0.2}`): keys at or above `min_score`, and
      boolean flags that are true;
    - free text (a verdict sentence): one finding whose raw label is the text, clipped.
    """
    if isinstance(output, bytes):
        output = output.decode("utf-8", "replace")
    if isinstance(output, str):
        with contextlib.suppress(ValueError):
            output = json.loads(output)
    if isinstance(output, str):
        text = " ".join(output.split())
        return [NormalizedFinding(detector, text[:RAW_LABEL_CHARS])] if text else []
    if isinstance(output, list):
        found = []
        for item in output:
            if isinstance(item, Mapping):
                finding = _finding_from_dict(detector, item)
            elif isinstance(item, str) and item.strip():
                finding = NormalizedFinding(detector, item.strip()[:RAW_LABEL_CHARS])
            else:
                finding = None
            if finding is not None and (finding.score is None or finding.score >= min_score):
                found.append(finding)
        return found if found or not output else None
    if isinstance(output, Mapping):
        for key in _LIST_KEYS:
            if isinstance(output.get(key), list):
                return extract_generic(detector, output[key], min_score=min_score)
        single = _finding_from_dict(detector, output)
        if single is not None:
            return [single]
        scores = {k: v for k, v in output.items() if isinstance(v, bool) or _number(v) is not None}
        if scores and len(scores) == len(output):
            return [
                NormalizedFinding(
                    detector, str(key)[:RAW_LABEL_CHARS], score=None if v is True else float(v)
                )
                for key, v in sorted(scores.items())
                if v is True or (not isinstance(v, bool) and float(v) >= min_score)
            ]
    return None


def short_text(output: Any) -> str:
    try:
        text = output if isinstance(output, str) else json.dumps(output, sort_keys=True)
    except (TypeError, ValueError):
        text = str(output)
    return " ".join(text.split())[:RAW_LABEL_CHARS]
