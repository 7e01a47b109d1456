"""The canonical taxonomy: labels, aliases, versions and migrations, loaded and validated once."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from llama_mapper.domain import catalog
from llama_mapper.domain.errors import InvalidArgument

LABEL_PATTERN = re.compile(r"^[a-z][a-z_]*\.[a-z][a-z0-9_]*$")
SEMVER_PATTERN = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
UNKNOWN = "other.unknown"
NO_FINDING = "other.no_finding"

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[^a-z0-9]+")


def normalize_label_text(text: str) -> str:
    """Folds case, camelCase and separators: `SocialSecurityNo`, `social-security no` -> `social_security_no`."""
    spaced = _CAMEL_BOUNDARY.sub("_", text.strip())
    return _SEPARATORS.sub("_", spaced.lower()).strip("_")


def within_one_edit(a: str, b: str) -> bool:
    """Levenshtein distance <= 1, or one adjacent transposition."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return (
            len(diff) == 2
            and diff[1] == diff[0] + 1
            and a[diff[0]] == b[diff[1]]
            and a[diff[1]] == b[diff[0]]
        )
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


class TaxonomyError(InvalidArgument):
    """The taxonomy file is inconsistent."""


@dataclass(frozen=True)
class Label:
    name: str
    category: str
    subcategory: str
    description: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Migration:
    """How labels of one version map to the next: renamed and removed labels name their successor."""

    from_version: str
    to_version: str
    renamed: dict[str, str] = field(default_factory=dict)
    removed: dict[str, str] = field(default_factory=dict)
    added: tuple[str, ...] = ()

    def apply(self, label: str) -> str:
        return self.renamed.get(label) or self.removed.get(label) or label


@dataclass(frozen=True)
class Taxonomy:
    version: str
    labels: dict[str, Label]
    categories: dict[str, str]
    migrations: tuple[Migration, ...]
    _aliases: dict[str, str] = field(repr=False, default_factory=dict)

    def __contains__(self, label: object) -> bool:
        return label in self.labels

    def get(self, label: str) -> Label:
        try:
            return self.labels[label]
        except KeyError:
            raise InvalidArgument(f"label {label!r} is not in taxonomy v{self.version}") from None

    @property
    def names(self) -> list[str]:
        return sorted(self.labels)

    def digest(self) -> str:
        """sha256 over the sorted label names: what a version bump must accompany."""
        return hashlib.sha256("\n".join(self.names).encode()).hexdigest()

    def resolve_alias(self, text: str) -> str | None:
        """The canonical label whose name or alias equals `text` after normalization, else None."""
        key = normalize_label_text(text)
        if not key:
            return None
        if key in self._aliases:
            return self._aliases[key]
        dotted = text.strip().lower()
        return dotted if dotted in self.labels else None

    def migrate(self, label: str, from_version: str) -> str:
        """Carries a label written under an older version forward to this one."""
        current = from_version
        for migration in self.migrations:
            if migration.from_version == current:
                label = migration.apply(label)
                current = migration.to_version
        if current != self.version:
            raise InvalidArgument(
                f"no migration path from taxonomy v{from_version} to v{self.version}"
            )
        return label


def _default_path() -> Path:
    return catalog.path("taxonomy.yaml")


def parse_taxonomy(doc: dict[str, Any]) -> Taxonomy:
    """Builds and validates a taxonomy from its YAML document; every problem raises TaxonomyError."""
    version = str(doc.get("version", ""))
    if not SEMVER_PATTERN.match(version):
        raise TaxonomyError(f"taxonomy version {version!r} is not semver (MAJOR.MINOR.PATCH)")
    labels: dict[str, Label] = {}
    categories: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for category, body in (doc.get("categories") or {}).items():
        categories[category] = body.get("description", "")
        for subcategory, spec in (body.get("labels") or {}).items():
            name = f"{category}.{subcategory}"
            if not LABEL_PATTERN.match(name):
                raise TaxonomyError(f"label {name!r} does not match {LABEL_PATTERN.pattern}")
            if not spec.get("description"):
                raise TaxonomyError(f"label {name!r} has no description")
            label = Label(
                name=name,
                category=category,
                subcategory=subcategory,
                description=spec["description"],
                aliases=tuple(spec.get("aliases") or ()),
            )
            labels[name] = label
            for alias in (name.replace(".", "_"), *label.aliases):
                key = normalize_label_text(alias)
                if aliases.get(key, name) != name:
                    raise TaxonomyError(f"alias {alias!r} names both {aliases[key]} and {name}")
                aliases[key] = name
    for required in (UNKNOWN, NO_FINDING):
        if required not in labels:
            raise TaxonomyError(f"taxonomy must define {required}")
    migrations = tuple(
        Migration(
            from_version=str(m["from"]),
            to_version=str(m["to"]),
            renamed=dict(m.get("renamed") or {}),
            removed=dict(m.get("removed") or {}),
            added=tuple(m.get("added") or ()),
        )
        for m in doc.get("migrations") or ()
    )
    for migration in migrations:
        for target in (*migration.renamed.values(), *migration.removed.values()):
            if migration.to_version == version and target not in labels:
                raise TaxonomyError(f"migration to v{version} points at unknown label {target!r}")
    return Taxonomy(version, labels, categories, migrations, aliases)


def load_taxonomy(path: Path | None = None) -> Taxonomy:
    with open(path or _default_path(), encoding="utf-8") as handle:
        return parse_taxonomy(yaml.safe_load(handle))


@cache
def default_taxonomy() -> Taxonomy:
    """The taxonomy shipped with the package, validated once per process."""
    return load_taxonomy()


def lock_path() -> Path:
    return catalog.path("taxonomy.lock.json")


def check_version_lock(taxonomy: Taxonomy, lock_file: Path | None = None) -> None:
    """Refuses a label-set change that kept the version: the lock records each version's digest."""
    lock_file = lock_file or lock_path()
    lock = json.loads(lock_file.read_text(encoding="utf-8"))
    recorded = lock.get(taxonomy.version)
    if recorded is None:
        raise TaxonomyError(
            f"taxonomy v{taxonomy.version} is not in {lock_file}; "
            "run `mapperctl taxonomy lock` after bumping the version and adding a migration"
        )
    if recorded["digest"] != taxonomy.digest():
        raise TaxonomyError(
            f"the label set changed but the version is still {taxonomy.version}: "
            "bump the version, add a migration entry and run `mapperctl taxonomy lock`"
        )
