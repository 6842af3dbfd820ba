"""One user's raw event blocks -> their valid events, as `read_events`.

The single-process reader's cleaning (`log_reader.read_events`), per
user: the user's blocks in input order (file, row), timestamps to seconds
in the log's unit (`timestamps.to_seconds`; "auto" is the median over the
whole log, a side input), events outside `[importer.min_timestamp,
importer.max_timestamp]` dropped and counted, exact duplicate rows
counted (`duplicate_events.duplicate_mask`) and, with
`importer.drop_duplicates`, dropped. Duplicates share their user, so
counting them within the user's group is exact: the first copy in input
order is kept, as there.

Tagged outputs: `POPULARITY`, the `PopularityTable` of the user's kept
events (merged into the log's table by `MergePopularity`);
`EVENT_COUNTS`, {events, timestamps_out_of_range, duplicate_events}; and
`OUT_OF_RANGE`, up to 3 (file, row, raw timestamp) of the user's first
dropped events (the log's first 3 by `Top.Smallest(3)`).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import apache_beam as beam
import numpy as np

from hisac_tf.config import ImporterConfig
from hisac_tf.data.beam_import.log_file_events import (
    BEHAVIOR,
    CATEGORY,
    FILE,
    ITEM,
    ROW,
    TIMESTAMP,
)
from hisac_tf.data.importers.duplicate_events import duplicate_mask
from hisac_tf.data.importers.field_values import LOG_COLUMNS
from hisac_tf.data.importers.popularity_table import popularity_table
from hisac_tf.data.importers.timestamps import in_range, to_seconds

POPULARITY = "popularity"
EVENT_COUNTS = "event_counts"
OUT_OF_RANGE = "out_of_range"


def input_order(blocks: Iterable[np.ndarray]) -> np.ndarray:
    """A user's [n, 6] blocks -> one [n, 6] block in input order."""
    events = np.concatenate(list(blocks))  # [n, 6]
    return events[np.lexsort((events[:, ROW], events[:, FILE]))]


class UserEvents(beam.DoFn):
    """(user, [n, 6] raw blocks) -> (user, [E] valid event columns).

    Side input: the log's timestamp unit ("s", "ms", "us" or "ns"). A
    user without valid events yields no main output.
    """

    def __init__(self, cfg: ImporterConfig):
        self.cfg = cfg

    def process(self, element: tuple[int, Iterable[np.ndarray]],
                unit: str) -> Iterator:
        user, blocks = element
        cfg = self.cfg
        block = input_order(blocks)  # [n, 6]
        ts, _ = to_seconds(block[:, TIMESTAMP], unit)  # [n]
        keep = in_range(ts, cfg.min_timestamp, cfg.max_timestamp)  # [n]
        dropped = block[~keep][:3]
        for file, row, raw in dropped[:, [FILE, ROW, TIMESTAMP]].tolist():
            yield beam.pvalue.TaggedOutput(OUT_OF_RANGE, (file, row, raw))
        events = {"user_id": np.full(int(keep.sum()), user, np.int64),
                  "item_id": block[keep, ITEM],
                  "category_id": block[keep, CATEGORY],
                  "behavior_type": block[keep, BEHAVIOR],
                  "timestamp": ts[keep]}
        repeat = duplicate_mask(events, LOG_COLUMNS)  # [E]
        duplicates = int(repeat.sum())
        if duplicates and cfg.drop_duplicates:
            events = {k: v[~repeat] for k, v in events.items()}
        n = len(events["user_id"])
        yield beam.pvalue.TaggedOutput(EVENT_COUNTS, {
            "events": n, "timestamps_out_of_range": int((~keep).sum()),
            "duplicate_events": duplicates})
        if not n:
            return
        yield beam.pvalue.TaggedOutput(POPULARITY, popularity_table(
            events["timestamp"], events["item_id"], events["category_id"]))
        yield user, events
