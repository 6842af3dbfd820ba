"""Events -> requests: windows, histories, candidates and their labels.

The contract (docs/design.md §4):
* Each user's events are cut into requests by aligned time windows of
  `request_window_s` seconds (window = timestamp // request_window_s, UTC
  epoch seconds; 3600 = clock hours). One request per (user, window) with
  at least one event; `request_time` = its earliest event's time.
* History: every event of that user strictly before `request_time` (so
  from earlier windows only), oldest first (ties keep input order), all
  behaviour types, truncated to the newest N (`data.max_history`).
* Candidates: the distinct items of the window, in order of first
  interaction, with the category of that first event; label 1 if any of
  the item's events in the window has a positive behaviour. At most C
  (`data.max_candidates`): positives are kept before the others when they
  do not all fit (the rest are counted as truncated).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data.feature_spec import FeatureSpec, feature_values


@dataclasses.dataclass
class Requests:
    """Requests over events sorted by (user, time, input order); [R] each."""

    start: np.ndarray  # [R] first event of the request's window.
    end: np.ndarray  # [R] one past its last event.
    user_start: np.ndarray  # [R] the user's first event.
    time: np.ndarray  # [R] request_time.
    user: np.ndarray  # [R]


def form_requests(events: Mapping[str, np.ndarray], window_s: int
                  ) -> tuple[dict[str, np.ndarray], Requests]:
    """Sorts the [E] event columns by (user, time) and cuts requests.

    Returns the sorted columns and the requests over them: the history of
    request r is `[user_start[r], start[r])`, its window `[start, end)`.
    """
    n = len(events["user_id"])
    order = np.lexsort((np.arange(n), events["timestamp"], events["user_id"]))
    ev = {k: v[order] for k, v in events.items()}  # [E] each, sorted.
    user, ts = ev["user_id"], ev["timestamp"]
    window = ts // window_s  # [E]
    new_user = np.ones(n, bool)
    new_user[1:] = user[1:] != user[:-1]
    new_request = new_user.copy()
    new_request[1:] |= window[1:] != window[:-1]
    start = np.flatnonzero(new_request)  # [R]
    end = np.append(start[1:], n)  # [R]
    user_first = np.flatnonzero(new_user)  # [U]
    user_start = user_first[np.searchsorted(user_first, start, "right") - 1]
    return ev, Requests(start, end, user_start, ts[start], user[start])


def window_candidates(items: list[int], cats: list[int], behs: list[int],
                      positive: frozenset[int], cap: int
                      ) -> tuple[list[int], list[int], list[int], int]:
    """Distinct items of one window -> (items, cats, labels, dropped).

    Example: items [5, 6, 5], behaviours [pv, pv, buy], cap 1 ->
    ([5], [cat of 5], [1], 1).
    """
    first: dict[int, list[int]] = {}
    for item, cat, beh in zip(items, cats, behs):
        entry = first.setdefault(item, [cat, 0])
        if beh in positive:
            entry[1] = 1
    keys = list(first)
    dropped = max(0, len(keys) - cap)
    if dropped:
        ranked = sorted(range(len(keys)), key=lambda i: (-first[keys[i]][1], i))
        keep = sorted(ranked[:cap])
        keys = [keys[i] for i in keep]
    return (keys, [first[k][0] for k in keys], [first[k][1] for k in keys],
            dropped)


def request_example(spec: FeatureSpec, request: Mapping[str, Any]
                    ) -> tf.train.Example:
    """`spec.to_example` for values known to be Python ints, faster.

    The importer writes one record per request; `FeatureSpec.to_example`
    converts and checks every field through numpy, which dominated the
    import time. Gives a message equal to `spec.to_example` (tested).
    """
    example = tf.train.Example()
    feature = example.features.feature
    for name in spec.scalar_features[:2]:
        feature[spec.record_key(name)].int64_list.value.append(
            request[name])
    for name in spec.list_features:
        feature[spec.record_key(name)].int64_list.value.extend(
            request[name])
    for f in spec.request_features:  # Declared and default features.
        value = request[f.batch_key]
        if f.kind == "categorical" and f.dtype == "int64" and (
                f.location != "event"):
            feature[f.record_key].int64_list.value.append(value)
        else:
            feature[f.record_key].CopyFrom(feature_values(f, value))
    return example
