"""Imports every reader module in this package, which registers each reader once."""

import importlib
import pkgutil

import llama_mapper.domain.readers as _package

for _module in pkgutil.iter_modules(_package.__path__):
    if _module.name not in {"base", "builtin"} and not _module.name.startswith("_"):
        importlib.import_module(f"{_package.__name__}.{_module.name}")
