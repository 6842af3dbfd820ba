"""Sampled negatives: items in proportion to their popularity so far.

Drawing a uniformly random past event (of all users) and taking its item
samples the catalogue's popularity as seen before the request, never the
future. A draw is rejected when its item is in the request's window (the
user interacted with it: not a negative) or already drawn, and, when the
caller passes the user's history, when the user interacted with it before
the request: such an item labelled 0 would teach an exact-match attention
that "seen before" means "not clicked" (a label leak). Rejected history
draws are counted.
"""

from __future__ import annotations

from typing import Container, NamedTuple

import numpy as np


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
      seed: uniform numbers are drawn in blocks from one seeded generator,
        so the output depends only on the seed and the order of the calls.

    Example:
      sampler = NegativeSampler(items, cats, ts, seed=0)
      negatives = sampler.sample(4, request_time, window_items, history)
    """

    _BLOCK = 1 << 16
    DRAWS_PER_NEGATIVE = 32

    def __init__(self, items_by_time: np.ndarray, cats_by_time: np.ndarray,
                 ts_by_time: np.ndarray, seed: int):
        self.items = items_by_time  # [E]
        self.cats = cats_by_time  # [E]
        self.ts = ts_by_time  # [E] sorted.
        self.rng = np.random.default_rng(seed)
        self.uniform: list[float] = []
        self.next = 0

    def _draw(self) -> float:
        if self.next == len(self.uniform):
            self.uniform = self.rng.random(self._BLOCK).tolist()
            self.next = 0
        self.next += 1
        return self.uniform[self.next - 1]

    def sample(self, k: int, before: int, exclude: Container[int],
               history: Container[int] = frozenset()) -> Negatives:
        """Up to k distinct items seen before `before`.

        None is in `exclude` (the window's items) or in `history` (the
        user's items before the request; empty: no history exclusion).
        Gives up after 32 * k draws (a catalogue seen so far with too few
        other items): the caller counts the shortfall.
        """
        items: list[int] = []
        cats: list[int] = []
        rejected = 0
        seen = int(np.searchsorted(self.ts, before, "left"))
        if k <= 0 or seen <= 0:
            return Negatives(items, cats, rejected)
        taken: set[int] = set()
        for _ in range(self.DRAWS_PER_NEGATIVE * k):
            event = int(self._draw() * seen)  # Uniform over past events.
            item = int(self.items[event])
            if item in taken or item in exclude:
                continue
            if item in history:
                rejected += 1
                continue
            taken.add(item)
            items.append(item)
            cats.append(int(self.cats[event]))
            if len(items) == k:
                break
        return Negatives(items, cats, rejected)
