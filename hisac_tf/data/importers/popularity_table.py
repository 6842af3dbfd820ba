"""Item popularity over time: how many events of each item before a time.

The table behind the negative sampler. Its rows are runs of equal
(timestamp, item, category) in that order, with their event counts and
running totals, so a uniformly random past event is a binary search away,
and the table does not depend on the order the events were read in: the
single-process importer builds it from all events at once, the Beam
pipeline (`hisac_tf.data.beam_import`) from one partial table per input
file merged by `merge_popularity`; both give the same table.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np


@dataclasses.dataclass(frozen=True)
class PopularityTable:
    """Runs of equal (timestamp, item, category), sorted; [R] each.

    Attributes:
      ts, items, cats: [R] the run's timestamp, item and category.
      counts: [R] its number of events.
      cum: [R + 1] events before run r (cum[0] = 0, cum[R] = E).
    """

    ts: np.ndarray
    items: np.ndarray
    cats: np.ndarray
    counts: np.ndarray
    cum: np.ndarray

    @property
    def events(self) -> int:
        return int(self.cum[-1])

    def seen_before(self, time: int) -> int:
        """Events with timestamp < `time`."""
        return int(self.cum[np.searchsorted(self.ts, time, "left")])

    def event_runs(self, events: np.ndarray) -> np.ndarray:
        """[D] event indices (in the canonical order) -> [D] their runs."""
        return np.searchsorted(self.cum, events, "right") - 1


def popularity_table(ts: np.ndarray, items: np.ndarray, cats: np.ndarray,
                     counts: np.ndarray | None = None) -> PopularityTable:
    """The table of [E] events (or of runs with `counts`), any order."""
    ts, items, cats = (np.asarray(a, np.int64) for a in (ts, items, cats))
    counts = (np.ones(len(ts), np.int64) if counts is None
              else np.asarray(counts, np.int64))
    order = np.lexsort((cats, items, ts))  # Sorted by (ts, item, cat).
    ts, items, cats, counts = ts[order], items[order], cats[order], \
        counts[order]
    new = np.ones(len(ts), bool)
    new[1:] = ((ts[1:] != ts[:-1]) | (items[1:] != items[:-1])
               | (cats[1:] != cats[:-1]))
    first = np.flatnonzero(new)  # [R]
    run_counts = np.add.reduceat(counts, first) if len(first) else counts
    cum = np.zeros(len(first) + 1, np.int64)
    np.cumsum(run_counts, out=cum[1:])
    return PopularityTable(ts[first], items[first], cats[first],
                           run_counts.astype(np.int64), cum)


def merge_popularity(tables: Iterable[PopularityTable]) -> PopularityTable:
    """One table of the events of several (partial) tables."""
    tables = list(tables)
    if not tables:
        return popularity_table(*(np.zeros(0, np.int64),) * 3)
    return popularity_table(
        *(np.concatenate([getattr(t, k) for t in tables])
          for k in ("ts", "items", "cats", "counts")))
