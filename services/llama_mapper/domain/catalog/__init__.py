"""The shipped catalog: taxonomy, framework mappings, vendor mapping tables and the golden set."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def path(*parts: str) -> Path:
    """A file or folder of the catalog, from a checkout or an installed package alike."""
    return Path(str(resources.files(__name__).joinpath(*parts)))
