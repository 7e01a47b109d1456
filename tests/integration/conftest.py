"""Fixtures the integration tests share: one registry server per test that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry import running_registry


@pytest.fixture
def registry_address(tmp_path) -> Iterator[str]:
    """A registry server (SQLite, local artifacts, the test token) for one test."""
    with running_registry(tmp_path / "registry") as address:
        yield address
