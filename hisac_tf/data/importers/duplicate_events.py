"""Exact duplicate events: the same five values in two rows."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def duplicate_mask(events: Mapping[str, np.ndarray],
                   columns: Sequence[str]) -> np.ndarray:
    """[E] bool, True for each repeat of an event seen earlier.

    The first occurrence (in input order) of each distinct row of
    `columns` is False; every later copy is True.
    """
    n = len(events[columns[0]])
    if not n:
        return np.zeros(0, bool)
    keys = [events[c] for c in reversed(columns)]
    order = np.lexsort([np.arange(n)] + keys)  # [E] grouped, input order.
    same = np.ones(n - 1, bool)  # [E - 1] row i+1 equals row i (sorted).
    for c in columns:
        v = events[c][order]
        same &= v[1:] == v[:-1]
    repeat = np.zeros(n, bool)
    repeat[order[1:][same]] = True
    return repeat
