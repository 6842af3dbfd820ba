"""Bad input rows: the error that names them, and the skip-mode counter."""

from __future__ import annotations

import collections
from typing import Any

from absl import logging

from hisac_tf.data.feature_spec import DataError

_LOGGED_BAD_ROWS = 5


class BadRowError(DataError):
    """One bad input row; names the file, line or row, field and value."""

    def __init__(self, path: str, where: str, field: str, value: Any,
                 reason: str):
        self.path, self.where, self.field = path, where, field
        self.value, self.reason = value, reason
        super().__init__(
            f"{path}, {where}: field {field!r} {reason}, got {value!r}"
        )


class BadValue(Exception):
    """Raised by the value parsers; `BadRows.add` gives it its place."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(reason)
        self.field, self.value, self.reason = field, value, reason


class BadRows:
    """Raises on the first bad row, or counts them when `skip` is set.

    Args:
      skip: count and log (the first few) instead of raising.
      what: the table, for the log line ("log", "item table").
    """

    def __init__(self, skip: bool, what: str):
        self.skip, self.what = skip, what
        self.count = 0
        self.by_reason: collections.Counter = collections.Counter()

    def add(self, path: str, where: str, bad: BadValue) -> None:
        error = BadRowError(path, where, bad.field, bad.value, bad.reason)
        if not self.skip:
            raise error
        self.count += 1
        self.by_reason[f"{bad.field} {bad.reason}"] += 1
        if self.count <= _LOGGED_BAD_ROWS:
            logging.warning("skipping bad %s row: %s", self.what, error)

    def summary(self) -> dict:
        return {"skipped_rows": self.count,
                "skipped_by_reason": dict(sorted(self.by_reason.items()))}
