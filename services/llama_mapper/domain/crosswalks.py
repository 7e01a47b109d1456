"""Crosswalks: canonical label -> the ids of other safety taxonomies (AILuminate, Llama Guard, ...)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.domain import catalog
from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.schemas import validator
from llama_mapper.domain.taxonomy import Taxonomy, default_taxonomy


@dataclass(frozen=True)
class Mapping:
    """Where one canonical label lands in a scheme; `ids` is empty when it has no counterpart."""

    label: str
    ids: tuple[str, ...]
    note: str = ""  # why the mapping is partial, or why there is no counterpart

    @property
    def partial(self) -> bool:
        return bool(self.ids) and bool(self.note)


@dataclass(frozen=True)
class Crosswalk:
    """One scheme: its identity and version, the ids it defines, and every label's mapping."""

    scheme: str
    name: str
    scheme_version: str
    version: str  # of this crosswalk table, bumped when a mapping changes
    source: str
    ids: dict[str, str]  # id -> title, as the scheme defines them
    mappings: dict[str, Mapping]

    @property
    def version_tag(self) -> str:
        return f"{self.scheme}@{self.version}"

    def ids_for(self, label: str) -> tuple[str, ...]:
        try:
            return self.mappings[label].ids
        except KeyError:
            raise InvalidArgument(f"label {label!r} has no {self.scheme} crosswalk entry") from None


@dataclass(frozen=True)
class Crosswalks:
    schemes: dict[str, Crosswalk]

    def scheme(self, name: str) -> Crosswalk:
        try:
            return self.schemes[name]
        except KeyError:
            known = ", ".join(sorted(self.schemes))
            raise NotFound(f"no crosswalk {name!r}; known schemes: {known}") from None


def parse_crosswalk(doc: dict[str, Any], taxonomy: Taxonomy) -> Crosswalk:
    """Every label must be mapped or listed under `no_counterpart` with a reason; every target id
    must be one the scheme defines under `ids`."""
    scheme = str(doc.get("scheme") or "")
    if not scheme:
        raise InvalidArgument("crosswalk has no `scheme`")
    for key in ("name", "scheme_version", "version", "source", "ids"):
        if not doc.get(key):
            raise InvalidArgument(f"crosswalk {scheme}: `{key}` is required")
    ids = {str(k): str(v) for k, v in doc["ids"].items()}
    mappings: dict[str, Mapping] = {}
    for label, spec in (doc.get("mappings") or {}).items():
        taxonomy.get(label)
        spec = {"ids": spec} if isinstance(spec, list | str) else (spec or {})
        targets = spec.get("ids") or []
        targets = (targets,) if isinstance(targets, str) else tuple(str(t) for t in targets)
        if not targets:
            raise InvalidArgument(
                f"crosswalk {scheme}: {label} maps to no id; list it under no_counterpart instead"
            )
        for target in targets:
            if target not in ids:
                raise InvalidArgument(f"crosswalk {scheme}: {label} -> {target!r} is not an id")
        mappings[label] = Mapping(label, targets, str(spec.get("partial") or ""))
    for label, reason in (doc.get("no_counterpart") or {}).items():
        taxonomy.get(label)
        if label in mappings:
            raise InvalidArgument(f"crosswalk {scheme}: {label} is mapped and in no_counterpart")
        if not reason:
            raise InvalidArgument(f"crosswalk {scheme}: {label} has no counterpart and no reason")
        mappings[label] = Mapping(label, (), str(reason))
    missing = sorted(set(taxonomy.labels) - set(mappings))
    if missing:
        raise InvalidArgument(f"crosswalk {scheme}: labels neither mapped nor excused: {missing}")
    return Crosswalk(
        scheme=scheme,
        name=str(doc["name"]),
        scheme_version=str(doc["scheme_version"]),
        version=str(doc["version"]),
        source=str(doc["source"]),
        ids=ids,
        mappings=mappings,
    )


def _crosswalks_dir() -> Path:
    return catalog.path("crosswalks")


@cache
def default_crosswalks() -> Crosswalks:
    """Every shipped crosswalk, validated against the default taxonomy once per process."""
    taxonomy = default_taxonomy()
    schemes = {}
    for path in sorted(_crosswalks_dir().glob("*.yaml")):
        crosswalk = parse_crosswalk(yaml.safe_load(path.read_text(encoding="utf-8")), taxonomy)
        schemes[crosswalk.scheme] = crosswalk
    return Crosswalks(schemes)


def add_crosswalks(
    result: dict[str, Any],
    schemes: Iterable[str],
    crosswalks: Crosswalks | None = None,
    *,
    schema: str = "mapper-output",
) -> dict[str, Any]:
    """A copy of a canonical result (or of a document result: `schema="document-output"`) with
    `crosswalks: {scheme: [{label, ids}]}` for its labels, and each table's version in
    `provenance.crosswalk_versions`. A label without a counterpart is listed with no ids:
    "nothing in this scheme" is an answer, not an omission."""
    crosswalks = crosswalks or default_crosswalks()
    chosen = [crosswalks.scheme(name) for name in dict.fromkeys(schemes)]
    out = copy.deepcopy(result)
    block = out.setdefault("crosswalks", {})
    versions = out["provenance"].setdefault("crosswalk_versions", {})
    for crosswalk in chosen:
        block[crosswalk.scheme] = [
            {"label": label, "ids": list(crosswalk.ids_for(label))} for label in out["taxonomy"]
        ]
        versions[crosswalk.scheme] = crosswalk.version_tag
    validator(schema).validate(out)
    return out
