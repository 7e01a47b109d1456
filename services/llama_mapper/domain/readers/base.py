"""The reader protocol and the registry of readers, keyed by detector name."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import InvalidArgument, NotFound
from llama_mapper.domain.findings import DetectorReport
from llama_mapper.domain.redaction import clip_words, redact
from llama_mapper.domain.tables import default_tables

Reader = Callable[[Any], DetectorReport]

_READERS: dict[str, Reader] = {}
# A raw label is the vendor's vocabulary ("EMAIL_ADDRESS", "S2"); whatever a hostile or broken
# output puts there instead is bounded and redacted before it reaches a result, a log or the model.
MAX_RAW_LABEL_CHARS = 128


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
    """Parses one detector's native output into a DetectorReport, raw labels bounded and redacted."""
    report = get_reader(detector)(output)
    findings = tuple(
        f
        if (label := bounded_label(detector, f.raw_label)) == f.raw_label
        else dataclasses.replace(f, raw_label=label)
        for f in report.findings
    )
    return dataclasses.replace(report, findings=findings)


def bounded_label(detector: str, raw: str) -> str:
    """`raw` when it is a short label; else clipped and redacted. A label the detector's mapping
    table lists is kept as it is: vocabulary such as `Auth0ManagementApiToken` reads as a token."""
    label = redact(clip_words(raw, MAX_RAW_LABEL_CHARS))
    if label != raw and (table := default_tables().get(detector)) and table.lookup(raw):
        return raw
    return label


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


def is_number(value: Any) -> bool:
    """A JSON number (not a boolean), finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def probability(detector: str, value: Any, where: str) -> float:
    """A score the vendor documents as a probability in [0, 1]; anything else is refused."""
    expect(
        is_number(value) and 0 <= value <= 1,
        detector,
        f"{where} must be a number between 0 and 1, got "
        f"{value if is_number(value) else json_kind(value)}",
    )
    return float(value)


def required_str(detector: str, item: dict[str, Any], key: str, where: str) -> str:
    """A non-empty string field, stripped. The value is never quoted in the error."""
    value = item.get(key)
    expect(value is not None, detector, f"{where} has no {key}")
    expect(
        isinstance(value, str) and bool(value.strip()),
        detector,
        f"{where}.{key} must be a non-empty string, got {json_kind(value)}",
    )
    return value.strip()


def required_bool(detector: str, item: dict[str, Any], key: str, where: str) -> bool:
    value = item.get(key)
    expect(
        isinstance(value, bool),
        detector,
        f"{where}.{key} must be true or false, got {json_kind(value)}",
    )
    return value


def as_object(detector: str, value: Any, where: str) -> dict[str, Any]:
    expect(isinstance(value, dict), detector, f"{where} must be an object, got {json_kind(value)}")
    return value


def as_list(detector: str, value: Any, where: str) -> list[Any]:
    expect(isinstance(value, list), detector, f"{where} must be a list, got {json_kind(value)}")
    return value


def json_documents(detector: str, output: Any) -> list[Any]:
    """One JSON value, a list of them, or JSON Lines text (one value per line), as a list.

    Tools that stream results (TruffleHog's `--json`) print one object per line; people also save
    them as a JSON array or pass a single object. A line that is not JSON is named by its number.
    """
    if isinstance(output, bytes):
        try:
            output = output.decode("utf-8")
        except UnicodeDecodeError:
            raise DetectorOutputError(f"{detector}: output is not UTF-8 text") from None
    if isinstance(output, str):
        try:
            doc = jsonio.loads(output, what=f"{detector}: output")
        except InvalidArgument:
            docs = []
            for number, line in enumerate(output.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    docs.append(jsonio.loads(line, what=f"{detector}: line {number}"))
                except InvalidArgument as exc:
                    raise DetectorOutputError(exc.message) from None
            return docs
    else:
        doc = output
    return list(doc) if isinstance(doc, list | tuple) else [doc]
