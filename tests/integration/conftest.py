"""Fixtures the integration tests share: one registry server per test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry import running_registry
from tests.support.stack import Stack


@pytest.fixture
def registry_address(tmp_path) -> Iterator[str]:
    """A registry server (SQLite, local artifacts, the test token) for one test."""
    with running_registry(tmp_path / "registry") as address:
        yield address


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory) -> Iterator[Stack]:
    """One `mapperctl stack up` (validation, registry, evaluation, a Ray head) for every test
    that needs the real stack; `stack down` afterwards."""
    stack = Stack(tmp_path_factory.mktemp("stack"))
    stack.mapperctl("stack", "up", timeout=300)
    try:
        yield stack
    finally:
        down = stack.mapperctl("stack", "down", check=False, timeout=180)
        print(down.stdout)
