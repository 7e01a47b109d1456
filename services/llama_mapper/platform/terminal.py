"""Plain-text tables for terminal output, sized to their content."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import IO


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def print_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], stream: IO[str] | None = None
) -> None:
    print(format_table(headers, rows), file=stream or sys.stdout)
