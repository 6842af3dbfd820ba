"""Parsing and checking one field value of a raw log or side table."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from hisac_tf.behaviors import behavior_id, is_integer
from hisac_tf.data.importers.bad_rows import BadValue

# The UserBehavior layout, in column order.
LOG_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type",
               "timestamp")
INT64_MAX = 2**63 - 1
# Item embeddings are stored as float32: a larger finite float64 (1e39)
# would become inf there.
FLOAT32_MAX = float(np.finfo(np.float32).max)
UNKNOWN_BEHAVIOR = "is not a known behaviour (pv, cart, fav, buy or 1..4)"


def int_value(value: Any, field: str, minimum: int) -> int:
    """One integer field from CSV text or a Parquet value.

    Raises BadValue naming `field` for None (a null), empty text, a
    non-integer, a value below `minimum` or one beyond int64.
    """
    if value is None:
        raise BadValue(field, None, "is missing")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    else:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        text = str(value).strip()
        if not text:
            raise BadValue(field, value, "is empty")
        if not is_integer(text):
            raise BadValue(field, value, "is not an integer")
        number = int(text)
    if number < minimum:
        what = "an id >= 1" if minimum == 1 else f"an integer >= {minimum}"
        raise BadValue(field, value, f"must be {what}")
    if number > INT64_MAX:
        raise BadValue(field, value, "does not fit in int64")
    return number


def float_value(value: Any, field: str) -> float:
    """One finite float32 value (an embedding value); BadValue otherwise
    (a value beyond float32's range, finite in Python, is refused too)."""
    if value is None:
        raise BadValue(field, None, "is missing")
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        raise BadValue(field, value, "is not a number") from None
    if not math.isfinite(number):
        raise BadValue(field, value, "must be finite")
    if abs(number) > FLOAT32_MAX:
        raise BadValue(field, value, f"does not fit in float32 (|value| <= "
                       f"{FLOAT32_MAX:.8g})")
    return number


def parse_log_row(values: Sequence[Any]) -> tuple[int, int, int, int, int]:
    """(user, item, category, behaviour, timestamp) from 5 raw values."""
    for name, value in zip(LOG_COLUMNS, values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadValue(name, value, "is missing" if value is None
                           else "is empty")
    user = int_value(values[0], "user_id", 1)
    item = int_value(values[1], "item_id", 1)
    category = int_value(values[2], "category_id", 1)
    behavior = behavior_id(values[3])
    if behavior is None:
        raise BadValue("behavior_type", values[3], UNKNOWN_BEHAVIOR)
    timestamp = int_value(values[4], "timestamp", 0)
    return user, item, category, behavior, timestamp
