"""Merges the per-file popularity tables into the log's one table."""

from __future__ import annotations

import apache_beam as beam

from hisac_tf.data.importers.popularity_table import (
    PopularityTable,
    merge_popularity,
)


class MergePopularity(beam.CombineFn):
    """PopularityTable parts -> the table of all their events.

    The table (runs of equal timestamp, item and category) is a side input
    of every user's requests: it must fit a worker, about 40 bytes per run
    (at most one per event; far fewer when many events of an item share a
    second). Parts come per user (many, small): the accumulator merges
    like a binary counter, so each run is merged O(log) times.
    """

    def create_accumulator(self) -> list[PopularityTable]:
        return []

    def add_input(self, acc: list[PopularityTable],
                  table: PopularityTable) -> list[PopularityTable]:
        acc.append(table)
        while len(acc) > 1 and len(acc[-2].ts) <= 2 * len(acc[-1].ts):
            acc[-2:] = [merge_popularity(acc[-2:])]  # Sizes shrink ~2x.
        return acc

    def merge_accumulators(self, accs) -> list[PopularityTable]:
        return [merge_popularity(t for acc in accs for t in acc)]

    def extract_output(self, acc: list[PopularityTable]) -> PopularityTable:
        return merge_popularity(acc)
