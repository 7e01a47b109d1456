"""Framework mappings: canonical label -> controls (SOC 2, ISO/IEC 27001:2022, HIPAA, GDPR, PCI DSS)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.domain import catalog
from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy

_DIGITS = re.compile(r"(\d+)")


def control_order(control: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order, as auditors read ids: A.5.5 before A.5.10, 3.4.1 before 12.5.2."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(control))


@dataclass(frozen=True)
class Framework:
    key: str
    name: str
    version: str
    controls: dict[str, str]  # control id -> title


@dataclass(frozen=True)
class ControlRef:
    framework: str
    version: str
    control: str
    title: str

    def to_dict(self) -> dict[str, str]:
        return {
            "framework": self.framework,
            "version": self.version,
            "control": self.control,
            "title": self.title,
        }


@dataclass(frozen=True)
class FrameworkMappings:
    frameworks: dict[str, Framework]
    mappings: dict[str, tuple[ControlRef, ...]]  # label -> controls; () means "no control"

    def controls(self, label: str) -> tuple[ControlRef, ...]:
        try:
            return self.mappings[label]
        except KeyError:
            raise InvalidArgument(f"label {label!r} has no framework mapping") from None

    def controls_for(self, labels: Iterable[str]) -> list[dict[str, str]]:
        """The union of controls the labels touch, each once, in framework then control order."""
        seen = {ref for label in labels for ref in self.controls(label)}
        ordered = sorted(seen, key=lambda r: (r.framework, control_order(r.control)))
        return [ref.to_dict() for ref in ordered]


def parse_frameworks(doc: dict[str, Any], taxonomy: Taxonomy) -> FrameworkMappings:
    """Every label must be mapped, or listed under `no_control` with a reason; ids must exist."""
    frameworks: dict[str, Framework] = {}
    for key, spec in (doc.get("frameworks") or {}).items():
        if not isinstance(spec, dict) or not all(
            spec.get(f) for f in ("name", "version", "controls")
        ):
            raise InvalidArgument(f"framework {key!r} needs a name, a version and controls")
        for control in spec["controls"]:
            _check_control_id(key, control)
        frameworks[key] = Framework(
            key=key,
            name=spec["name"],
            version=str(spec["version"]),
            controls={k: str(v) for k, v in spec["controls"].items()},
        )
    mappings: dict[str, tuple[ControlRef, ...]] = {}
    for label, by_framework in (doc.get("mappings") or {}).items():
        taxonomy.get(label)
        refs = []
        for key, control_ids in (by_framework or {}).items():
            framework = frameworks.get(key)
            if framework is None:
                raise InvalidArgument(f"{label}: unknown framework {key!r}")
            for control in control_ids or ():
                _check_control_id(f"{label}: {key}", control)
                if control not in framework.controls:
                    raise InvalidArgument(f"{label}: {key} has no control {control!r}")
                refs.append(
                    ControlRef(key, framework.version, control, framework.controls[control])
                )
        if not refs:
            raise InvalidArgument(
                f"{label} is mapped to no control; list it under no_control with a reason instead"
            )
        mappings[label] = tuple(refs)
    for label, reason in (doc.get("no_control") or {}).items():
        taxonomy.get(label)
        if label in mappings:
            raise InvalidArgument(f"{label} is both mapped and listed under no_control")
        if not reason:
            raise InvalidArgument(f"{label} is listed under no_control without a reason")
        mappings[label] = ()
    missing = sorted(set(taxonomy.labels) - set(mappings))
    if missing:
        raise InvalidArgument(
            f"labels with no framework mapping and no no_control entry: {missing}"
        )
    return FrameworkMappings(frameworks, mappings)


def _check_control_id(where: str, control: object) -> None:
    # YAML reads an unquoted 12.10 as the float 12.1: a silently different control id.
    if not isinstance(control, str) or not control:
        raise InvalidArgument(f"{where}: control id {control!r} must be a quoted string")


def _default_path() -> Path:
    return catalog.path("frameworks.yaml")


@cache
def default_frameworks() -> FrameworkMappings:
    with open(_default_path(), encoding="utf-8") as handle:
        return parse_frameworks(yaml.safe_load(handle), default_taxonomy())
