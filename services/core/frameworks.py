"""Framework mappings: canonical label -> controls (SOC 2, ISO/IEC 27001:2022, HIPAA, GDPR, PCI DSS)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.core.errors import InvalidArgument
from llama_mapper.core.taxonomy import Taxonomy, default_taxonomy


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
        return [ref.to_dict() for ref in sorted(seen, key=lambda r: (r.framework, r.control))]


def parse_frameworks(doc: dict[str, Any], taxonomy: Taxonomy) -> FrameworkMappings:
    """Every label must be mapped, or listed under `no_control` with a reason; ids must exist."""
    frameworks = {
        key: Framework(
            key=key,
            name=spec["name"],
            version=str(spec["version"]),
            controls={str(k): str(v) for k, v in spec["controls"].items()},
        )
        for key, spec in doc["frameworks"].items()
    }
    mappings: dict[str, tuple[ControlRef, ...]] = {}
    for label, by_framework in (doc.get("mappings") or {}).items():
        taxonomy.get(label)
        refs = []
        for key, control_ids in by_framework.items():
            framework = frameworks.get(key)
            if framework is None:
                raise InvalidArgument(f"{label}: unknown framework {key!r}")
            for control in control_ids:
                control = str(control)
                if control not in framework.controls:
                    raise InvalidArgument(f"{label}: {key} has no control {control!r}")
                refs.append(
                    ControlRef(key, framework.version, control, framework.controls[control])
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


def _default_path() -> Path:
    return Path(str(resources.files("llama_mapper.core") / "data" / "frameworks.yaml"))


@cache
def default_frameworks() -> FrameworkMappings:
    with open(_default_path(), encoding="utf-8") as handle:
        return parse_frameworks(yaml.safe_load(handle), default_taxonomy())
