"""The whole log's timestamp unit and split end, from all its events.

Both are exact and computed by the single-process functions on one
worker: the unit (`timestamps.detect_unit`, the median of the raw
timestamps; only with `importer.timestamp_unit="auto"`) from the files'
[n] timestamp arrays concatenated by `ConcatTimestamps`, and the split
end (`time_split.split_end`, quantiles of the valid events' seconds)
from the merged popularity table, whose runs hold every valid event's
timestamp with its count. Each needs 8 bytes per event on that worker
for the moment it runs (8 GB per billion events); beyond that, set
`importer.timestamp_unit` (no median is taken) and see
docs/data_at_scale.md for approximate quantiles.
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np

from hisac_tf.config import ImporterConfig
from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.importers.popularity_table import PopularityTable
from hisac_tf.data.importers.time_split import split_boundaries, split_end


class ConcatTimestamps(beam.CombineFn):
    """[n] int64 arrays -> one [sum n] array (any order)."""

    def create_accumulator(self) -> list[np.ndarray]:
        return []

    def add_input(self, acc: list[np.ndarray], ts: np.ndarray
                  ) -> list[np.ndarray]:
        acc.append(np.asarray(ts, np.int64))
        return acc

    def merge_accumulators(self, accs) -> list[np.ndarray]:
        return [a for acc in accs for a in acc]

    def extract_output(self, acc: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(acc) if acc else np.zeros(0, np.int64)


def log_split(table: PopularityTable, imp: ImporterConfig) -> dict:
    """{bounds, split_end_ts, events_after_split_end} of the valid log.

    Raises DataError when the log holds no valid event.
    """
    if not table.events:
        raise DataError(f"no valid events in {imp.input!r}")
    ts_sorted = np.repeat(table.ts, table.counts)  # [E] sorted by time.
    end_ts, past_end = split_end(ts_sorted)
    return {"bounds": split_boundaries(imp, end_ts), "split_end_ts": end_ts,
            "events_after_split_end": past_end}
