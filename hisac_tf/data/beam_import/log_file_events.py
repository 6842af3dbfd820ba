"""One input log file -> its raw events grouped by user, and its counts.

A file is read whole by one worker with the single-process readers
(`csv_log_events`, `parquet_log_events`), so a bad row is rejected, or
skipped and counted, exactly as there, naming the file and the line (CSV)
or row (Parquet). Many files read in parallel; one file's events must fit
a worker (about 100 bytes per event): split larger logs into files.
Timestamps stay as read: the unit is the whole log's (`RAW_TIMESTAMPS`,
the median over all files, `LogTimestamps`), and the cleaning is per
user (`user_events`).
"""

from __future__ import annotations

from typing import Iterator

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import apache_beam as beam
import numpy as np

from hisac_tf.config import ImporterConfig
from hisac_tf.data.importers.bad_rows import BadRows
from hisac_tf.data.importers.csv_reader import csv_log_events
from hisac_tf.data.importers.event_columns import EventColumns
from hisac_tf.data.importers.log_reader import format_of
from hisac_tf.data.importers.parquet_reader import parquet_log_events

RAW_TIMESTAMPS = "raw_timestamps"
READ_COUNTS = "read_counts"
# Columns of a user's event block [n, 6]; FILE and ROW restore the input
# order, which breaks timestamp ties as in the single-process importer.
FILE, ROW, ITEM, CATEGORY, BEHAVIOR, TIMESTAMP = range(6)


class ReadLogFile(beam.DoFn):
    """(file index, path) -> (user, [n, 6] int64 event block) per user.

    Tagged outputs: `READ_COUNTS`, {rows_read, skipped_rows,
    skipped_by_reason}, and, with `timestamp_unit="auto"`,
    `RAW_TIMESTAMPS`, the file's [n] timestamps as read (for the unit).
    """

    def __init__(self, cfg: ImporterConfig):
        self.cfg = cfg

    def process(self, element: tuple[int, str]) -> Iterator:
        index, path = element
        cfg = self.cfg
        bad = BadRows(cfg.skip_bad_rows, "log")
        out = EventColumns()
        if format_of(path, cfg.format) == "parquet":
            rows = parquet_log_events(path, bad, out, cfg.progress_every)
        else:
            rows = csv_log_events(path, cfg.delimiter, cfg.header, bad, out,
                                  cfg.progress_every)
        ev = out.arrays()
        n = len(ev["user_id"])
        beam.metrics.Metrics.counter("hisac_import", "rows_read").inc(rows)
        beam.metrics.Metrics.counter("hisac_import", "skipped_rows").inc(
            bad.count)
        yield beam.pvalue.TaggedOutput(READ_COUNTS, {
            "rows_read": rows, **bad.summary()})
        if cfg.timestamp_unit == "auto":
            yield beam.pvalue.TaggedOutput(RAW_TIMESTAMPS, ev["timestamp"])
        if not n:
            return
        block = np.stack([np.full(n, index, np.int64),
                          np.arange(n, dtype=np.int64), ev["item_id"],
                          ev["category_id"], ev["behavior_type"],
                          ev["timestamp"]], axis=1)  # [n, 6]
        order = np.argsort(ev["user_id"], kind="stable")  # [n]
        users = ev["user_id"][order]
        cuts = np.flatnonzero(np.diff(users)) + 1
        for part in np.split(order, cuts):
            yield int(ev["user_id"][part[0]]), block[part]
