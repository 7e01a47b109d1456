"""The validation policy: every threshold with its documented default (docs/VALIDATION.md)."""

# Precedence, lowest first: these defaults, the training config's `validation` section, the
# request's overrides. `max_seq_length` defaults to the training config's `training.max_seq_length`.

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from llama_mapper.domain.errors import InvalidArgument


@dataclass(frozen=True)
class Policy:
    min_examples_per_label: int = 20
    max_imbalance_ratio: float = 50.0
    max_seq_length: int = 512
    min_supervised_tokens: int = 1
    near_duplicate_threshold: float = 0.95
    max_duplicate_fraction: float = 0.02
    leakage_ngram_size: int = 13
    # A training row "leaks" when at least this share of its n-grams occurs in the golden set ...
    max_leakage_overlap: float = 0.8
    # ... and the check fails when more than this share of training rows leak.
    max_leakage_fraction: float = 0.0
    pii_min_score: float = 0.5
    pii_scan: bool = True
    max_offending_rows: int = 20

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> Policy:
        """Refuses values no check can apply, naming the field."""
        for name in (
            "near_duplicate_threshold",
            "max_duplicate_fraction",
            "max_leakage_overlap",
            "max_leakage_fraction",
            "pii_min_score",
        ):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InvalidArgument(f"policy.{name} must be in [0, 1], got {value}")
        for name in ("min_examples_per_label", "min_supervised_tokens", "max_offending_rows"):
            if getattr(self, name) < 0:
                raise InvalidArgument(f"policy.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_seq_length < 1:
            raise InvalidArgument(f"policy.max_seq_length must be >= 1, got {self.max_seq_length}")
        if self.leakage_ngram_size < 1:
            raise InvalidArgument(
                f"policy.leakage_ngram_size must be >= 1, got {self.leakage_ngram_size}"
            )
        if self.max_imbalance_ratio < 1:
            raise InvalidArgument(
                f"policy.max_imbalance_ratio must be >= 1, got {self.max_imbalance_ratio}"
            )
        return self


# training-config.json `validation` keys whose names differ from the policy's.
_CONFIG_NAMES = {"leakage_ngram": "leakage_ngram_size"}
_FIELDS = {f.name for f in fields(Policy)}


def effective_policy(config: dict[str, Any], overrides: dict[str, Any] | None = None) -> Policy:
    """Defaults < the config's thresholds < explicit overrides; validated."""
    values: dict[str, Any] = {"max_seq_length": int(config["training"]["max_seq_length"])}
    for key, value in (config.get("validation") or {}).items():
        values[_CONFIG_NAMES.get(key, key)] = value
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise InvalidArgument(f"unknown policy field {key!r}")
        values[key] = value
    policy = replace(Policy(), **{k: v for k, v in values.items() if k in _FIELDS})
    return policy.check()
