"""`mapperctl map`: JSON Lines in, one canonical result (or one error object) per line out, in order."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument, MapperError, PayloadTooLarge
from llama_mapper.domain.schemas import validate

logger = logging.getLogger(__name__)

# One detector output per line; a line past this is refused without being held in memory whole.
DEFAULT_MAX_LINE_BYTES = 1 << 20
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Line:
    number: int
    data: bytes | None  # None when the line was longer than the limit
    size: int


def read_lines(stream: IO[bytes], max_bytes: int) -> Iterator[Line]:
    """Yields each line; an over-long line is skipped in chunks, so a 2 GB line costs 64 KiB."""
    number = 0
    while True:
        chunk = stream.readline(max_bytes + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) <= max_bytes or chunk.endswith(b"\n"):
            yield Line(number, chunk.rstrip(b"\r\n"), len(chunk))
            continue
        size = len(chunk)
        while chunk and not chunk.endswith(b"\n"):
            chunk = stream.readline(_CHUNK)
            size += len(chunk)
        yield Line(number, None, size)


def read_object(line: Line, max_bytes: int, expected: str = "a JSON object") -> dict[str, Any]:
    """One line as a JSON object through the bounded reader; what every line-reading command
    refuses (over-long, empty, not JSON, not an object) said the same way."""
    if line.data is None:
        raise PayloadTooLarge(
            f"line is {line.size} bytes; the limit is {max_bytes} (--max-line-bytes)"
        )
    if not line.data.strip():
        raise InvalidArgument(f"empty line: expected {expected}")
    value = jsonio.loads(line.data, limits=jsonio.JsonLimits(max_bytes=max_bytes), what="line")
    if not isinstance(value, dict):
        raise InvalidArgument(f"expected a JSON object, got {type(value).__name__}")
    return value


def parse_envelope(line: Line, max_bytes: int, schema: str = "detector-output") -> dict[str, Any]:
    envelope = read_object(line, max_bytes)
    validate(schema, envelope)
    return envelope


def error_object(line_number: int, error: MapperError) -> dict[str, Any]:
    return {
        "error": {
            "line": line_number,
            "code": error.code,
            "message": error.message,
        }
    }


MapFn = Callable[[dict[str, Any]], dict[str, Any]]


def map_stream(
    stream_in: IO[bytes],
    stream_out: IO[str],
    map_one: MapFn,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    schema: str = "detector-output",
) -> tuple[int, int]:
    """Maps every line (each valid against `schema`: one detector output, or a document's
    outputs); returns (lines, failures). A bad line never stops the ones after it."""
    lines = failures = 0
    for line in read_lines(stream_in, max_line_bytes):
        lines += 1
        try:
            result = map_one(parse_envelope(line, max_line_bytes, schema))
        except MapperError as error:
            failures += 1
            result = error_object(line.number, error)
            # Metadata only: the line number and the reason, never the detector output itself.
            logger.info("line %d failed: %s", line.number, error.code)
        stream_out.write(json.dumps(result, ensure_ascii=False, separators=(",", ":")) + "\n")
        stream_out.flush()
    return lines, failures
