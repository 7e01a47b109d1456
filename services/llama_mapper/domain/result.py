"""The canonical result (schemas/mapper-output.json): built in one place, validated on the way out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from jsonschema import Draft202012Validator

from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.frameworks import default_frameworks
from llama_mapper.domain.schemas import load_schema, validator
from llama_mapper.domain.taxonomy import Taxonomy

Method = Literal["rule", "model", "fallback"]


@dataclass(frozen=True)
class CanonicalFinding:
    label: str
    confidence: float
    method: Method
    source: NormalizedFinding
    needs_review: bool = False

    def to_dict(self, taxonomy: Taxonomy) -> dict[str, Any]:
        label = taxonomy.get(self.label)
        out: dict[str, Any] = {
            "label": label.name,
            "category": label.category,
            "subcategory": label.subcategory,
            "confidence": round(min(max(float(self.confidence), 0.0), 1.0), 6),
            "method": self.method,
            "source": self.source.source(),
        }
        if self.needs_review:
            out["needs_review"] = True
        return out


def build_result(
    findings: Iterable[CanonicalFinding],
    *,
    taxonomy: Taxonomy,
    request_id: str,
    mapping_table_version: str | None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assembles and validates a canonical result. The detected content itself is never copied in:
    findings carry labels, scores and spans only."""
    items = [f.to_dict(taxonomy) for f in findings]
    labels = sorted({item["label"] for item in items})
    provenance: dict[str, Any] = {
        "taxonomy_version": taxonomy.version,
        "request_id": request_id,
    }
    if mapping_table_version:
        provenance["mapping_table_version"] = mapping_table_version
    if model:
        provenance["model"] = model
    result = {
        "taxonomy": labels,
        "findings": items,
        "frameworks": [],
        "needs_review": any(item.get("needs_review") for item in items),
        "provenance": provenance,
    }
    validator("mapper-output").validate(result)
    # The controls are a function of the label set and the static framework tables: checked
    # against the same schema once per label set, not on every result (60 % of the validation).
    result["frameworks"] = framework_controls(labels)
    return result


def framework_controls(labels: Iterable[str]) -> list[dict[str, str]]:
    """Every control the labels touch, each once, checked against the schema once per label set
    (the `frameworks` of a canonical result and of a document result)."""
    return [dict(control) for control in _controls(tuple(sorted(set(labels))))]


@lru_cache(maxsize=4096)
def _controls(labels: tuple[str, ...]) -> tuple[dict[str, str], ...]:
    controls = default_frameworks().controls_for(labels)
    schema = load_schema("mapper-output")["properties"]["frameworks"]
    Draft202012Validator(schema).validate(controls)
    return tuple(controls)
