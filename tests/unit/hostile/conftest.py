"""Prints the hostile-input figures after the run (docs/BENCHMARKS.md, 'Hostile input')."""

from __future__ import annotations

import logging

import pytest

from tests.unit.hostile.tally import TALLY


@pytest.fixture
def debug_logs(caplog):
    """Everything logged at DEBUG during the case, as text, for the leak check."""
    caplog.set_level(logging.DEBUG)
    return caplog


def pytest_terminal_summary(terminalreporter):
    if TALLY.cases:
        terminalreporter.section("hostile input")
        for line in TALLY.lines():
            terminalreporter.write_line(line)
