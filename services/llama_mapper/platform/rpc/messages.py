"""Records <-> protobuf messages by field name: the one copy a servicer needs, nested and repeated
messages and timestamps included. A field that differs in more than its name is passed explicitly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, TypeVar

from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

M = TypeVar("M", bound=Message)
R = TypeVar("R")

# Message field -> record attribute, where the two spell a time differently (AIP-142 names on the
# wire, `*_at` in the records).
TIME_NAMES: Mapping[str, str] = {
    "create_time": "created_at",
    "update_time": "updated_at",
    "record_time": "recorded_at",
    "delete_time": "deleted_at",
    "time": "at",
}


def _value(field: FieldDescriptor, value: Any) -> Any:
    if isinstance(value, datetime):
        stamp = Timestamp()
        stamp.FromDatetime(value)
        return stamp
    if field.message_type is not None and dataclasses.is_dataclass(value):
        return to_message(message_factory.GetMessageClass(field.message_type), value)
    return value


def to_message(
    message_cls: type[M], record: Any, *, names: Mapping[str, str] = TIME_NAMES, **overrides: Any
) -> M:
    """`message_cls` from `record`: each message field takes the record attribute of the same name
    (or `names[field]`); `overrides` win; None leaves a field unset."""
    kwargs: dict[str, Any] = {}
    for field in message_cls.DESCRIPTOR.fields:
        if field.name in overrides:
            value = overrides[field.name]
        else:
            attribute = names.get(field.name, field.name)
            if not hasattr(record, attribute):
                continue
            value = getattr(record, attribute)
        if value is None:
            continue
        if field.is_repeated and field.message_type is not None and not isinstance(value, dict):
            value = [_value(field, item) for item in value]
        else:
            value = _value(field, value)
        kwargs[field.name] = value
    return message_cls(**kwargs)


def from_message(cls: type[R], message: Message, **overrides: Any) -> R:
    """A `cls` record from the scalar message fields of the same names, then `overrides`."""
    present = {f.name for f in message.DESCRIPTOR.fields}
    values = {
        f.name: getattr(message, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.name in present and f.name not in overrides
    }
    return cls(**values, **overrides)
