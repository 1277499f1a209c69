"""Kept input fields (`input.keep_fields`): their names checked before a run, and each value
converted to its declared type as a record is read (`condlabel.convert.reading` calls
`kept_values`; `reading.check_first_file` checks the first input file has each field).

A value of the wrong type makes its record a reject (`invalid_kept_field`, counted and kept in
`_rejects/`), never a silent null: a null in the output means the record had no value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

from condlabel.config import ConfigError, InputConfig
from condlabel.schema import kept_field_collisions

REJECT_INVALID_KEPT_FIELD = "invalid_kept_field"
_INT64 = (-(2**63), 2**63 - 1)


def check_names(cfg: InputConfig) -> None:
    """A kept field named like a column of the output contract is refused (exit 2)."""
    taken = kept_field_collisions(cfg.kept_types)
    if taken:
        raise ConfigError(
            [
                f"input.keep_fields: {name!r} is a column of the output contract; rename the "
                "field in the input or leave it out"
                for name in taken
            ]
        )


def kept_values(
    record: Mapping[str, Any], types: Mapping[str, str]
) -> tuple[dict[str, Any], tuple[str, str] | None]:
    """(each kept field's value in its declared type, None), or ({}, (field, detail)) for the
    first value that is not of its type. A missing field or a JSON null is None."""
    values = {}
    for name, typ in types.items():
        value = record.get(name)
        try:
            values[name] = None if value is None else _CONVERT[typ](value)
        except (TypeError, ValueError, OverflowError) as exc:
            shown = json.dumps(value, default=str, ensure_ascii=False)[:80]
            return {}, (name, f"expected {typ}, got {shown} ({exc})")
    return values, None


def _string(value: Any) -> str:
    if isinstance(value, str):
        value.encode("utf-8")  # a lone surrogate cannot be stored: UnicodeEncodeError
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    # Numbers, objects and arrays as their JSON text.
    return json.dumps(value, ensure_ascii=False, default=str)


def _int64(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        value = int(value)
    elif isinstance(value, str):
        value = int(value.strip())
    elif not isinstance(value, int):
        raise TypeError(type(value).__name__)
    if not _INT64[0] <= value <= _INT64[1]:
        raise OverflowError("outside int64")
    return value


def _float64(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        number = float(value.strip())
        if math.isnan(number):
            raise ValueError("NaN")
        return number
    raise TypeError(type(value).__name__)


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeError("expected true or false")


def _timestamp(value: Any) -> dt.datetime:
    """ISO 8601 text or a timestamp cell; without a UTC offset it is read as UTC."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.strip())
    elif isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise TypeError("expected ISO 8601 text, e.g. 2024-05-01T12:00:00Z")
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


_CONVERT = {
    "string": _string,
    "int64": _int64,
    "float64": _float64,
    "bool": _bool,
    "timestamp": _timestamp,
}
