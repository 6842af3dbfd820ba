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


_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(z: int) -> int:
    """splitmix64's finaliser of one 64-bit integer."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def keyed_uniform(seed: int, key: int, before: int, lo: int, hi: int
                  ) -> np.ndarray:
    """Draws lo..hi-1 of the stream of (seed, key, before): [hi - lo].

    A counter-based generator (splitmix64 of the stream's hash plus the
    draw's index), so draw i is the same whichever chunks it is drawn in,
    on any machine, and costs no generator set-up per request.
    """
    h = _mix((seed * _GOLDEN) & _MASK)
    h = _mix((h ^ (key & _MASK)) * _GOLDEN & _MASK)
    h = _mix((h ^ (before & _MASK)) * _GOLDEN & _MASK)
    z = np.arange(lo + 1, hi + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
    z += np.uint64(h)  # [hi - lo], wraps mod 2^64.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


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

    Draws are per request: `sample(..., key=user)` draws from the stream
    of (seed, key, before) (`keyed_uniform`), so a request's negatives
    depend only on the seed, the user, the request time and the popularity
    table, not on which requests were sampled before it (the Beam pipeline
    samples users in any order and on any worker, and must give the
    single-process importer's records). Without a key the draws come from
    one seeded stream, in call order.

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

    def _uniform(self, lo: int, hi: int, before: int, key: int | None
                 ) -> np.ndarray:
        """Draws lo..hi-1 of the request's stream, [hi - lo] in [0, 1)."""
        if key is None:
            return self.rng.random(hi - lo)
        return keyed_uniform(self.seed, int(key), int(before), lo, hi)

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
        taken: set[int] = set()
        lo, total = 0, self.DRAWS_PER_NEGATIVE * k
        while lo < total and len(items) < k:
            hi = min(total, max(4 * k, 4 * lo))  # Draws in growing chunks.
            uniform = self._uniform(lo, hi, before, key)  # [D] chunk.
            lo = hi
            events = (uniform * seen).astype(np.int64)  # [D] past events.
            runs = self.table.event_runs(events)  # [D]
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
