"""The reader protocol and the registry of readers, keyed by detector name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.findings import DetectorReport

Reader = Callable[[Any], DetectorReport]

_READERS: dict[str, Reader] = {}


class DetectorOutputError(InvalidArgument):
    """The output does not have the shape the detector's documentation describes."""


def reader(name: str) -> Callable[[Reader], Reader]:
    """Registers `fn` as the reader of detector `name`."""

    def register(fn: Reader) -> Reader:
        if name in _READERS:
            raise RuntimeError(f"two readers registered for detector {name!r}")
        _READERS[name] = fn
        return fn

    return register


def get_reader(name: str) -> Reader:
    _load_builtin_readers()
    try:
        return _READERS[name]
    except KeyError:
        raise NotFound(f"no reader for detector {name!r}") from None


def known_detectors() -> list[str]:
    _load_builtin_readers()
    return sorted(_READERS)


def read(detector: str, output: Any) -> DetectorReport:
    """Parses one detector's native output into a DetectorReport."""
    return get_reader(detector)(output)


def expect(condition: bool, detector: str, message: str) -> None:
    if not condition:
        raise DetectorOutputError(f"{detector}: {message}")


def json_kind(value: Any) -> str:
    """Names a JSON value's type for an error message without quoting the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def as_json(detector: str, output: Any) -> Any:
    """Vendors' outputs arrive as parsed JSON or as its text; both are accepted."""
    if isinstance(output, str | bytes):
        try:
            return jsonio.loads(output, what=f"{detector}: output")
        except InvalidArgument as exc:
            raise DetectorOutputError(exc.message) from None
    return output


def _load_builtin_readers() -> None:
    # Importing the package registers every built-in reader exactly once.
    import llama_mapper.domain.readers.builtin  # noqa: F401
