"""One user's valid events -> their request records, tagged by split.

The single-process importer's steps, per user: `form_requests` over the
user's events sorted by (time, input order), the time split
(`assign_splits` with the log's boundaries), the `min_history` filter,
and `RequestBuilder` (history truncated to the newest N at write time,
window candidates, negatives keyed by the user from the log's popularity
table). Users are independent, so any runner may process them anywhere in
any order and the records are the single-process importer's. Each user
also gives the `split_plan` of their kept requests (`PLANS`, merged by
`merge_plans`), so the launcher refuses a single-class split with
`check_plans` exactly as the single-process importer does.

Memory (skew): a user's events are held as five [E] int64 columns (40
bytes per event; `user_events` held [n, 6] blocks before, 48 bytes per
event) plus the set of their distinct history items, so a heavy hitter
with 10M events needs about 0.5 GB on one worker; the
records are yielded one by one, never held. A user's events must fit a
worker; docs/data_at_scale.md.
"""

from __future__ import annotations

import collections
from typing import Iterator, Mapping

import apache_beam as beam
import numpy as np

from hisac_tf.config import Config
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.popularity_table import PopularityTable
from hisac_tf.data.importers.request_builder import RequestBuilder
from hisac_tf.data.importers.request_formation import form_requests
from hisac_tf.data.importers.split_labels import split_plan, window_labels
from hisac_tf.data.importers.time_split import SPLITS, assign_splits

STATS = "stats"
PLANS = "plans"


class UserRequests(beam.DoFn):
    """(user, [E] event columns) -> TaggedOutput(split, record), stats.

    Side inputs: the log's `PopularityTable`, its split (`log_split`:
    `bounds`, the `SplitBoundaries`) and the user table {user_id:
    features}. The `STATS` output holds one dict of counts per user
    (summed by `SumCounts`), `PLANS` one {split: `split_plan`}.
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self._builder = None
        self._table_id = None

    def _builder_for(self, table: PopularityTable,
                     users: Mapping) -> RequestBuilder:
        if self._table_id != (id(table), id(users)):
            sampler = NegativeSampler(seed=self.cfg.importer.seed,
                                      table=table)
            self._builder = RequestBuilder(self.cfg, sampler, users)
            self._table_id = (id(table), id(users))
        return self._builder

    def process(self, element: tuple[int, Mapping[str, np.ndarray]],
                table: PopularityTable, log_split: Mapping,
                users: Mapping) -> Iterator:
        user, events = element
        imp = self.cfg.importer
        ev, req = form_requests(events, imp.request_window_s)
        builder = self._builder_for(table, users)
        builder.counters = collections.Counter()  # This user's.
        keep = (req.start - req.user_start) >= imp.min_history  # [R]
        split_index = assign_splits(req.time, log_split["bounds"])  # [R]
        labels = window_labels(ev["item_id"], ev["behavior_type"],
                               req.start, req.end, imp.positive_ids,
                               self.cfg.data.max_candidates)
        yield beam.pvalue.TaggedOutput(PLANS, {
            split: split_plan(np.flatnonzero(keep & (split_index == k)),
                              *labels, req.time)
            for k, split in enumerate(SPLITS)})
        splits: dict[str, collections.Counter] = {}
        history: set[int] = set()
        upto = 0
        items = ev["item_id"]
        for r in np.flatnonzero(keep).tolist():
            s = int(req.start[r])
            history.update(items[upto:s].tolist())
            upto = s
            built = builder.build(ev, s, int(req.end[r]),
                                  int(req.user_start[r]), user,
                                  int(req.time[r]), history)
            split = SPLITS[split_index[r]]
            stats = splits.setdefault(split, collections.Counter())
            stats["requests"] += 1
            stats["impressions"] += built.impressions
            stats["positives"] += built.positives
            yield beam.pvalue.TaggedOutput(split, built.record)
        dropped = int((~keep).sum())
        counters = builder.counters
        requests = int(keep.sum())
        beam.metrics.Metrics.counter("hisac_import", "users").inc()
        beam.metrics.Metrics.counter("hisac_import", "requests").inc(requests)
        beam.metrics.Metrics.counter(
            "hisac_import", "requests_dropped_short_history").inc(dropped)
        yield beam.pvalue.TaggedOutput(STATS, {
            "users": 1,
            "requests_dropped_short_history": dropped,
            **{k: int(v) for k, v in counters.items()},
            "splits": {k: dict(v) for k, v in splits.items()},
        })
