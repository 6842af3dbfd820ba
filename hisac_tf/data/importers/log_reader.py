"""All events of the raw logs, as int64 columns, with the read counts."""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.config import ImporterConfig
from hisac_tf.data import filesystems
from hisac_tf.data.importers.bad_rows import BadRows
from hisac_tf.data.importers.csv_reader import csv_log_events
from hisac_tf.data.importers.duplicate_events import duplicate_mask
from hisac_tf.data.importers.event_columns import EventColumns
from hisac_tf.data.importers.feature_columns import log_features
from hisac_tf.data.importers.field_values import LOG_COLUMNS
from hisac_tf.data.importers.parquet_reader import parquet_log_events
from hisac_tf.data.importers.progress import progress
from hisac_tf.data.importers.timestamps import in_range, to_seconds
from hisac_tf.feature_config import FeatureConfig

PARQUET_SUFFIXES = (".parquet", ".parq", ".pq")


def format_of(path: str, fmt: str = "auto") -> str:
    """"csv" or "parquet": `fmt` unless "auto", else by file extension."""
    if fmt != "auto":
        return fmt
    return "parquet" if path.lower().endswith(PARQUET_SUFFIXES) else "csv"


def expand_inputs(spec: str) -> list[str]:
    """Comma-separated paths or glob patterns -> sorted unique files.

    Raises FileNotFoundError naming a path, or a pattern, that matches
    nothing.
    """
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            files.extend(filesystems.glob(part))
        else:
            filesystems.ensure_filesystem(part)
            if not tf.io.gfile.exists(part):
                raise FileNotFoundError(f"input file {part!r} does not exist")
            files.append(part)
    return sorted(dict.fromkeys(files))


def read_events(cfg: ImporterConfig, features: Sequence[FeatureConfig] = ()
                ) -> tuple[dict[str, np.ndarray], dict]:
    """All valid events of `cfg.input` as [E] int64 columns, and counts.

    The columns are `LOG_COLUMNS` in input order (files in sorted order),
    timestamps in seconds (`timestamps.to_seconds`), without the events
    outside the valid time range and, with `drop_duplicates`, without
    repeats of an earlier row. The counts are `inputs`, `rows_read`,
    `events` (kept), `skipped_rows`, `skipped_by_reason`,
    `timestamp_unit`, `timestamps_out_of_range` (with up to 3 examples in
    `timestamps_out_of_range_examples`, as read), `duplicate_events` and
    `duplicate_events_dropped`.
    """
    files = expand_inputs(cfg.input)
    bad = BadRows(cfg.skip_bad_rows, "log")
    out = EventColumns(log_features(features))
    rows = 0
    for path in files:
        fmt = format_of(path, cfg.format)
        progress(f"reading {path} ({fmt})")
        if fmt == "parquet":
            rows += parquet_log_events(path, bad, out, cfg.progress_every)
        else:
            rows += csv_log_events(path, cfg.delimiter, cfg.header, bad, out,
                                   cfg.progress_every)
    events = out.arrays()
    raw_ts = events["timestamp"]
    events["timestamp"], unit = to_seconds(raw_ts, cfg.timestamp_unit)
    keep = in_range(events["timestamp"], cfg.min_timestamp, cfg.max_timestamp)
    out_of_range = int(len(keep) - keep.sum())
    examples = raw_ts[~keep][:3].tolist()
    if out_of_range:
        progress(f"dropped {out_of_range} events with a timestamp outside "
                 f"[{cfg.min_timestamp}, {cfg.max_timestamp}] s (unit "
                 f"{unit}; e.g. {examples}; importer.min_timestamp / "
                 "max_timestamp / timestamp_unit)")
        events = {k: v[keep] for k, v in events.items()}
    repeat = duplicate_mask(events, LOG_COLUMNS)
    duplicates = int(repeat.sum())
    if duplicates and cfg.drop_duplicates:
        events = {k: v[~repeat] for k, v in events.items()}
    counts = {"inputs": files, "rows_read": rows,
              "events": int(len(events["user_id"])), **bad.summary(),
              "timestamp_unit": unit if cfg.timestamp_unit != "auto"
              else f"{unit} (auto)",
              "timestamps_out_of_range": out_of_range,
              "timestamps_out_of_range_examples": examples,
              "duplicate_events": duplicates,
              "duplicate_events_dropped":
                  duplicates if cfg.drop_duplicates else 0}
    return events, counts
