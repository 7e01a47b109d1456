#!/usr/bin/env python3
"""Refuse code that can run whatever a file holds: pickle, unsafe torch.load / yaml.load, eval, exec.

An AST walk (no imports, nothing executed) over services/, bench/ and scripts/ (`make lint`):
  - `torch.load(...)` without `weights_only=True`,
  - an import of `pickle`, `cPickle`, `_pickle`, `dill` or `cloudpickle`,
  - `yaml.load(...)` / `yaml.load_all(...)` without `Loader=yaml.SafeLoader` (or CSafeLoader),
    and `yaml.unsafe_load` / `yaml.full_load`,
  - a call of the builtins `eval` or `exec`.
Method calls that share a name (`model.eval()`, `cursor.exec(...)`) are not builtins and pass.
`python scripts/check_unsafe_loads.py [PATH ...]` prints `file:line: what` for each finding and
exits 1 when there is any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATHS = ("services", "bench", "scripts")
PICKLE_MODULES = frozenset({"pickle", "cPickle", "_pickle", "dill", "cloudpickle"})
SAFE_LOADERS = frozenset({"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"})
SKIPPED_PARTS = frozenset({"_proto", ".venv", "__pycache__", "node_modules"})


def _dotted(node: ast.AST) -> str:
    """`a.b.c` for a Name/Attribute chain, '' for anything else."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


class _Finder(ast.NodeVisitor):
    def __init__(self) -> None:
        self.findings: list[tuple[int, str]] = []
        # Local names bound to the modules and functions that matter: `import torch as t`,
        # `from torch import load`, `from yaml import load as yload`.
        self.torch_names = {"torch"}
        self.yaml_names = {"yaml"}
        self.torch_load: set[str] = set()
        self.yaml_load: set[str] = set()
        self.yaml_unsafe: set[str] = set()

    def _add(self, node: ast.AST, what: str) -> None:
        self.findings.append((getattr(node, "lineno", 0), what))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            top = alias.name.split(".")[0]
            if top in PICKLE_MODULES:
                self._add(node, f"imports {alias.name}: pickle runs code from the data it loads")
            if alias.name == "torch":
                self.torch_names.add(alias.asname or "torch")
            if alias.name == "yaml":
                self.yaml_names.add(alias.asname or "yaml")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in PICKLE_MODULES:
            self._add(node, f"imports from {module}: pickle runs code from the data it loads")
        for alias in node.names:
            local = alias.asname or alias.name
            if module == "torch" and alias.name == "load":
                self.torch_load.add(local)
            if module == "yaml" and alias.name in {"load", "load_all"}:
                self.yaml_load.add(local)
            if module == "yaml" and alias.name in {"unsafe_load", "full_load", "unsafe_load_all"}:
                self.yaml_unsafe.add(local)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _dotted(node.func)
        head, _, attr = name.rpartition(".")
        if (head in self.torch_names and attr == "load") or name in self.torch_load:
            weights_only = _keyword(node, "weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                self._add(node, "torch.load without weights_only=True (it unpickles)")
        elif (head in self.yaml_names and attr in {"load", "load_all"}) or name in self.yaml_load:
            loader = _keyword(node, "Loader")
            if loader is None and len(node.args) > 1:
                loader = node.args[1]
            if loader is None or _dotted(loader).rpartition(".")[2] not in SAFE_LOADERS:
                self._add(node, "yaml.load without Loader=yaml.SafeLoader (use yaml.safe_load)")
        elif (
            head in self.yaml_names and attr in {"unsafe_load", "full_load", "unsafe_load_all"}
        ) or (name in self.yaml_unsafe):
            self._add(node, f"{name} constructs arbitrary objects (use yaml.safe_load)")
        elif name in {"eval", "exec", "builtins.eval", "builtins.exec"}:
            self._add(node, f"calls {name}: it runs a string as code")
        self.generic_visit(node)


def check_source(source: str, filename: str = "<string>") -> list[tuple[int, str]]:
    """(line, what) for every unsafe load in `source`; a syntax error is a finding too."""
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return [(exc.lineno or 0, f"cannot parse: {exc.msg}")]
    finder = _Finder()
    finder.visit(tree)
    return sorted(finder.findings)


def python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_file() and path.suffix == ".py":
            yield path
        elif path.is_dir():
            for file in sorted(path.rglob("*.py")):
                if not SKIPPED_PARTS & set(file.relative_to(path).parts):
                    yield file


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or [REPO_ROOT / p for p in DEFAULT_PATHS]
    failures = 0
    for file in python_files(paths):
        for line, what in check_source(file.read_text(encoding="utf-8"), str(file)):
            shown = file.relative_to(REPO_ROOT) if file.is_relative_to(REPO_ROOT) else file
            print(f"{shown}:{line}: {what}")
            failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
