"""Reader for Google ShieldGemma: the probability that the content violates each policy checked."""

from __future__ import annotations

from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import (
    as_json,
    as_object,
    expect,
    json_kind,
    probability,
    reader,
    required_str,
)

DETECTOR = "shieldgemma"

# The model card's convention: the violation probability is softmax over the "Yes"/"No" logits,
# and a policy is violated at 0.5 or above. Every policy becomes a finding with its probability;
# the table's min_score applies the threshold. This constant only decides explicit_no_finding.
VIOLATION_AT = 0.5
_NAME_KEYS = ("policy", "harm_type", "name")
_PROBABILITY_KEYS = ("probability", "score", "yes", "Yes")
_MAX_POLICY_CHARS = 64


@reader(DETECTOR)
def read_shieldgemma(output: Any) -> DetectorReport:
    """Reads the violation probabilities the model card's example computes, one per policy:
    `{policy: p_yes}`, `{policy: {"Yes": p, "No": q}}`, or `[{policy, probability}]`. Policy names
    are the card's harm types (Dangerous Content, Harassment, Hate Speech, Sexually Explicit
    Information; ShieldGemma 2's image policies Sexually Explicit, Dangerous Content, Violence &
    Gore). A policy given as its full guideline text is refused: that is configuration prose, not
    a label, and this reader keeps only names."""
    doc = as_json(DETECTOR, output)
    pairs: list[tuple[str, float]] = []
    if isinstance(doc, dict):
        expect(bool(doc), DETECTOR, "expected at least one policy, got an empty object")
        for name, value in doc.items():
            pairs.append((_name(name, "policy names"), _p_yes(value, f"[{_short(name)}]")))
    else:
        expect(
            isinstance(doc, list),
            DETECTOR,
            f"expected {{policy: probability}} or a list of {{policy, probability}}, got "
            f"{json_kind(doc)}",
        )
        for i, item in enumerate(doc):
            where = f"[{i}]"
            item = as_object(DETECTOR, item, where)
            key = next((k for k in _NAME_KEYS if k in item), "policy")
            name = _name(required_str(DETECTOR, item, key, where), f"{where}.{key}")
            p_key = next((k for k in _PROBABILITY_KEYS if k in item), None)
            expect(p_key is not None, DETECTOR, f"{where} has no probability")
            pairs.append((name, _p_yes(item[p_key], f"{where}.{p_key}")))
    findings = tuple(NormalizedFinding(DETECTOR, name, score=p) for name, p in pairs)
    violated = any(p >= VIOLATION_AT for _, p in pairs)
    return DetectorReport(DETECTOR, findings, explicit_no_finding=not violated)


def _name(name: Any, where: str) -> str:
    expect(
        isinstance(name, str) and 0 < len(name.strip()) <= _MAX_POLICY_CHARS,
        DETECTOR,
        f"{where} must be policy names of at most {_MAX_POLICY_CHARS} characters",
    )
    return name.strip()


def _short(name: Any) -> str:
    return name if isinstance(name, str) and len(name) <= _MAX_POLICY_CHARS else "policy"


def _p_yes(value: Any, where: str) -> float:
    if isinstance(value, dict):
        yes = next((value[k] for k in ("Yes", "yes", "YES") if k in value), None)
        expect(yes is not None, DETECTOR, f"{where} must carry the probability of 'Yes'")
        return probability(DETECTOR, yes, f"{where}.Yes")
    return probability(DETECTOR, value, where)
