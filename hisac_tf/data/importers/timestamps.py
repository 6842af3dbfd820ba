"""The log's timestamp unit, and the valid range of its timestamps.

A log may count time in seconds, milliseconds, microseconds or
nanoseconds since the epoch; requests are cut into windows of seconds, so
a millisecond log read as seconds would make every event its own request.
With `importer.timestamp_unit="auto"` the unit comes from the median
timestamp (robust to a few outliers): below 1e11 seconds (the year 5138),
below 1e14 milliseconds, below 1e17 microseconds, else nanoseconds.
Timestamps are then floored to seconds, and events outside
`[importer.min_timestamp, importer.max_timestamp]` (seconds) are dropped
and counted: one timestamp of the year 5138 must not move the splits.
"""

from __future__ import annotations

import numpy as np

from hisac_tf.data.feature_spec import DataError

PER_SECOND = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}
# Median timestamp at or above which "auto" takes the next finer unit.
_AUTO_THRESHOLDS = (("ns", 10**17), ("us", 10**14), ("ms", 10**11))


def detect_unit(ts: np.ndarray) -> str:
    """The unit of [E] int64 timestamps by their median ("s" when empty)."""
    if not len(ts):
        return "s"
    median = int(np.median(ts))
    for unit, threshold in _AUTO_THRESHOLDS:
        if median >= threshold:
            return unit
    return "s"


def to_seconds(ts: np.ndarray, unit: str) -> tuple[np.ndarray, str]:
    """([E] timestamps in seconds, the unit used); `unit` may be "auto"."""
    if unit == "auto":
        unit = detect_unit(ts)
    if unit not in PER_SECOND:
        raise DataError(f"unknown timestamp unit {unit!r}")
    return ts // PER_SECOND[unit], unit


def in_range(ts: np.ndarray, low: int, high: int) -> np.ndarray:
    """[E] bool: low <= ts <= high (seconds)."""
    return (ts >= low) & (ts <= high)
