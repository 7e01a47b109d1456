"""The one JSON reader every entry point uses: bounded in size, depth, nodes and string length."""

# Python's json module recurses: a line nested a few thousand arrays deep raises RecursionError,
# and so does everything that walks the result afterwards (readers, jsonschema, json.dumps). Here
# every such input is INVALID_ARGUMENT (PayloadTooLarge over the size) with the JSON path of the
# problem, never a RecursionError, INTERNAL or a traceback. NaN and Infinity are not JSON: refused.

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from llama_mapper.domain.errors import InvalidArgument, PayloadTooLarge


@dataclass(frozen=True)
class JsonLimits:
    """What one document may hold. The defaults fit a detector output or a config comfortably."""

    max_bytes: int = 1 << 20
    max_depth: int = 64
    max_nodes: int = 200_000
    max_string: int = 1 << 18
    allow_nul: bool = True  # False where the text reaches a database that refuses NUL


DEFAULT = JsonLimits()
# JSON's \ud800 escapes decode to lone surrogates: Python keeps them, UTF-8 cannot encode them, so
# they fail later (a response body, a tokenizer, a database) as a crash instead of here as input.
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads(data: str | bytes | bytearray, *, limits: JsonLimits = DEFAULT, what: str = "$") -> Any:
    """Parses `data` and checks the result against `limits`; `what` names the input in errors."""
    size = len(data)
    if size > limits.max_bytes:
        raise PayloadTooLarge(f"{what}: {size} bytes, over the limit of {limits.max_bytes}")
    if isinstance(data, bytes | bytearray):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{what}: not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidArgument(f"{what}: nested deeper than {limits.max_depth} levels") from None
    except ValueError as exc:
        where = getattr(exc, "lineno", None)
        position = f" at line {exc.lineno} column {exc.colno}" if where else ""  # type: ignore[attr-defined]
        message = getattr(exc, "msg", None) or str(exc)
        raise InvalidArgument(f"{what} is not JSON ({message}{position})") from None
    return check(value, limits=limits, what=what)


def check(value: Any, *, limits: JsonLimits = DEFAULT, what: str = "$") -> Any:
    """Checks an already parsed value (a request body, a message field) against `limits`, without
    recursion; returns it unchanged."""
    stack: list[tuple[Any, str, int]] = [(value, what, 0)]
    nodes = 0
    while stack:
        item, path, depth = stack.pop()
        nodes += 1
        if nodes > limits.max_nodes:
            raise InvalidArgument(f"{what}: more than {limits.max_nodes} values")
        if depth > limits.max_depth:
            raise InvalidArgument(f"{path}: nested deeper than {limits.max_depth} levels")
        if isinstance(item, str):
            _check_string(item, path, limits)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidArgument(f"{path}: {item} is not a JSON number")
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidArgument(f"{path}: object keys must be strings")
                _check_string(key, f"{path} (a key)", limits)
                stack.append((child, f"{path}.{_key(key)}", depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif item is not None and not isinstance(item, bool | int):
            raise InvalidArgument(f"{path}: {type(item).__name__} is not a JSON value")
    return value


def _check_string(text: str, path: str, limits: JsonLimits) -> None:
    if len(text) > limits.max_string:
        raise InvalidArgument(
            f"{path}: a string of {len(text)} characters, over {limits.max_string}"
        )
    if not limits.allow_nul and "\x00" in text:
        raise InvalidArgument(f"{path}: NUL characters are not accepted")
    surrogate = _LONE_SURROGATE.search(text)
    if surrogate:
        raise InvalidArgument(f"{path}: a lone surrogate at character {surrogate.start()}")


def _key(key: str) -> str:
    # Paths name keys, bounded: a hostile key must not make the error message itself huge.
    return key if len(key) <= 64 and key.isidentifier() else json.dumps(key[:64])


def dumps_canonical(value: Any) -> str:
    """Sorted keys, no spaces, non-ASCII kept: the form digests are taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
