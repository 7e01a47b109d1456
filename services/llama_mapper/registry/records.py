"""The one mapping between database rows and domain records: fields are copied by name."""

# A column and a record field with the same name hold the same value (datetimes come back as
# UTC), so adding a field to both is the whole change; only genuine conversions are written out.

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

R = TypeVar("R")


def utc(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything the store writes is UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def from_row(cls: type[R], row: Any, **overrides: Any) -> R:
    """A `cls` record from an ORM row: every field the row has a column for, then `overrides`."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides or not hasattr(row, field.name):
            continue
        value = getattr(row, field.name)
        values[field.name] = utc(value) if isinstance(value, datetime) else value
    return cls(**values, **overrides)


def row_values(record: Any, row_cls: type, *, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The columns of `row_cls` that `record` has a field for, as keyword arguments."""
    columns = set(row_cls.__table__.columns.keys())  # type: ignore[attr-defined]
    return {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name in columns and f.name not in exclude
    }
