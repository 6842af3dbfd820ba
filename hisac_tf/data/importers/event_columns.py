"""The events read so far, as growing int64 columns."""

from __future__ import annotations

import numpy as np

from hisac_tf.data.importers.feature_columns import as_array
from hisac_tf.data.importers.field_values import LOG_COLUMNS
from hisac_tf.feature_config import FeatureConfig


def feature_column(f: FeatureConfig) -> str:
    """The events' key of a feature read from the log rows."""
    return f"feature:{f.name}"


class EventColumns:
    """Growing int64 columns (`LOG_COLUMNS`) of the events read so far.

    Rows come one at a time (`append`, the CSV reader) or as column
    batches (`extend`, the Parquet reader); `arrays()` gives [E] columns.
    """

    def __init__(self, features: tuple[FeatureConfig, ...] = ()):
        self.parts: list[list[np.ndarray]] = [[] for _ in LOG_COLUMNS]
        self.pending: list[list[int]] = [[] for _ in LOG_COLUMNS]
        # Event and context features of the rows (feature_columns.py).
        self.features = tuple(features)
        self.extra: dict[str, list] = {f.name: [] for f in self.features}

    def append(self, *values: int, extra: tuple = ()) -> None:
        for column, v in zip(self.pending, values):
            column.append(v)
        for f, v in zip(self.features, extra):
            self.extra[f.name].append(v)
        if len(self.pending[0]) >= 1 << 16:
            self._flush()

    def extend(self, *arrays: np.ndarray, extra: tuple = ()) -> None:
        """Column batches; `extra`: one list of values per feature."""
        self._flush()
        for column, a in zip(self.parts, arrays):
            column.append(np.asarray(a, np.int64))
        for f, values in zip(self.features, extra):
            self.extra[f.name].extend(values)

    def _flush(self) -> None:
        if self.pending[0]:
            for column, values in zip(self.parts, self.pending):
                column.append(np.array(values, np.int64))
            self.pending = [[] for _ in LOG_COLUMNS]

    def arrays(self) -> dict[str, np.ndarray]:
        self._flush()
        out = {
            name: (np.concatenate(parts) if parts else np.zeros(0, np.int64))
            for name, parts in zip(LOG_COLUMNS, self.parts)
        }
        for f in self.features:
            out[feature_column(f)] = as_array(f, self.extra[f.name])
        return out
