"""Sampled negatives: items in proportion to their popularity so far.

Drawing a uniformly random past event (of all users) and taking its item
samples the catalogue's popularity as seen before the request, never the
future (`popularity_table`: the past events in (time, item, category)
order, so the draws do not depend on the input order). A draw is
rejected when its item is in the request's window (the user interacted
with it: not a negative) or already drawn, and, when the caller passes
the user's history, when the user interacted with it before the request:
such an item labelled 0 would teach an exact-match attention that "seen
before" means "not clicked" (a label leak). Rejected history draws are
counted.
"""

from __future__ import annotations

from typing import Container, NamedTuple

import numpy as np

from hisac_tf.data.importers.popularity_table import (
    PopularityTable,
    popularity_table,
)


class Negatives(NamedTuple):
    """The sampled negatives of one request."""

    items: list[int]
    categories: list[int]
    history_rejected: int  # Draws rejected as items of the user's history.


class NegativeSampler:
    """Items in proportion to their number of events before a time.

    Args:
      items_by_time: [E] item of each event, in time order.
      cats_by_time: [E] its category.
      ts_by_time: [E] its timestamp, sorted.
      seed: the sampling seed.
      table: instead of the three arrays, their `PopularityTable`.

    Draws are per request: `sample(..., key=user)` draws from a generator
    seeded by (seed, key, before), so a request's negatives depend only on
    the seed, the user, the request time and the popularity table, not on
    which requests were sampled before it (the Beam pipeline samples users
    in any order and on any worker, and must give the single-process
    importer's records). Without a key the draws come from one seeded
    stream, in call order.

    Example:
      sampler = NegativeSampler(items, cats, ts, seed=0)
      negatives = sampler.sample(4, request_time, window_items, history,
                                 key=user)
    """

    DRAWS_PER_NEGATIVE = 32

    def __init__(self, items_by_time: np.ndarray | None = None,
                 cats_by_time: np.ndarray | None = None,
                 ts_by_time: np.ndarray | None = None, seed: int = 0,
                 table: PopularityTable | None = None):
        if table is None:
            table = popularity_table(ts_by_time, items_by_time, cats_by_time)
        self.table = table
        self.seed = int(seed)
        self.rng = np.random.default_rng(seed)

    def _uniform(self, n: int, before: int, key: int | None) -> np.ndarray:
        if key is None:
            return self.rng.random(n)
        return np.random.default_rng([self.seed, int(key), int(before)]
                                     ).random(n)

    def sample(self, k: int, before: int, exclude: Container[int],
               history: Container[int] = frozenset(),
               key: int | None = None) -> Negatives:
        """Up to k distinct items seen before `before`.

        None is in `exclude` (the window's items) or in `history` (the
        user's items before the request; empty: no history exclusion).
        Gives up after 32 * k draws (a catalogue seen so far with too few
        other items): the caller counts the shortfall. `key` (>= 0, the
        user id) seeds the request's own draws, see the class.
        """
        items: list[int] = []
        cats: list[int] = []
        rejected = 0
        seen = self.table.seen_before(before)
        if k <= 0 or seen <= 0:
            return Negatives(items, cats, rejected)
        uniform = self._uniform(self.DRAWS_PER_NEGATIVE * k, before, key)
        events = (uniform * seen).astype(np.int64)  # Uniform past events.
        runs = self.table.event_runs(events)  # [32k]
        taken: set[int] = set()
        for item, cat in zip(self.table.items[runs].tolist(),
                             self.table.cats[runs].tolist()):
            if item in taken or item in exclude:
                continue
            if item in history:
                rejected += 1
                continue
            taken.add(item)
            items.append(item)
            cats.append(cat)
            if len(items) == k:
                break
        return Negatives(items, cats, rejected)
