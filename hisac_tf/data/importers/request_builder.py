"""One request's record: history, window candidates, negatives, user row.

Shared by both import engines (the single-process `log_importer` and the
Beam pipeline `hisac_tf.data.beam_import`), so they write the same
records: the caller gives one request's place in a user's events sorted
by (time, input order) and the user's history items so far; the builder
truncates the history to the newest N, forms the candidates
(`request_formation.window_candidates`), samples the negatives keyed by
the user (`NegativeSampler.sample(key=user)`) and counts the losses.
"""

from __future__ import annotations

import collections
from typing import Mapping, NamedTuple

import numpy as np

from hisac_tf.config import Config
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.request_formation import (
    request_example,
    window_candidates,
)
from hisac_tf.data.importers.user_table import UNKNOWN_USER_FEATURE

# The loss counters every request adds to (the summary's keys).
COUNTERS = ("histories_truncated", "window_candidates",
            "truncated_candidates", "negatives_sampled", "negatives_short",
            "negatives_truncated", "negatives_history_rejected",
            "negatives_from_history")
EVENT_FIELDS = ("item_id", "category_id", "behavior_type", "timestamp")


class BuiltRequest(NamedTuple):
    """A serialized record and its split figures."""

    record: bytes
    impressions: int
    positives: int


class RequestBuilder:
    """Builds request records and sums their `COUNTERS` into `counters`.

    Args:
      cfg: the config (`importer` and `data` sections).
      sampler: the negatives' sampler.
      users: the user table, {user_id: feature values}.

    Example:
      builder = RequestBuilder(cfg, sampler, users)
      built = builder.build(columns, s, e, u0, user, time, history)
    """

    def __init__(self, cfg: Config, sampler: NegativeSampler,
                 users: Mapping[int, tuple[int, ...]]):
        self.imp, self.data = cfg.importer, cfg.data
        self.spec = FeatureSpec(self.data.max_history,
                                self.data.max_candidates,
                                self.data.user_features, with_true_ctr=False)
        self.sampler, self.users = sampler, users
        self.unknown = (UNKNOWN_USER_FEATURE,) * len(self.data.user_features)
        self.counters: collections.Counter = collections.Counter()

    def build(self, columns: Mapping[str, np.ndarray], s: int, e: int,
              u0: int, user: int, time: int, history: set[int]
              ) -> BuiltRequest:
        """The request whose window is events [s, e) of `columns`.

        `columns`: `EVENT_FIELDS` -> [E] sorted by (user, time, input
        order); the user's events start at u0; `history`: the user's items
        in [u0, s).
        """
        imp, data, counters = self.imp, self.data, self.counters
        h0 = max(u0, s - data.max_history)
        counters["histories_truncated"] += h0 > u0
        window = {k: columns[k][s:e].tolist() for k in EVENT_FIELDS}
        items, cats, labels, dropped = window_candidates(
            window["item_id"], window["category_id"],
            window["behavior_type"], imp.positive_ids, data.max_candidates)
        counters["window_candidates"] += len(items) + dropped
        counters["truncated_candidates"] += dropped
        want = min(imp.negatives_per_request,
                   data.max_candidates - len(items))
        negatives = self.sampler.sample(
            want, time, set(window["item_id"]),
            history if imp.exclude_history_from_negatives else frozenset(),
            key=user)
        counters["negatives_sampled"] += len(negatives.items)
        counters["negatives_short"] += want - len(negatives.items)
        counters["negatives_truncated"] += imp.negatives_per_request - want
        counters["negatives_history_rejected"] += negatives.history_rejected
        counters["negatives_from_history"] += sum(
            i in history for i in negatives.items)
        request = {
            "user_id": user,
            "request_time": time,
            **dict(zip(data.user_features,
                       self.users.get(user, self.unknown))),
            "hist_item_ids": columns["item_id"][h0:s].tolist(),
            "hist_category_ids": columns["category_id"][h0:s].tolist(),
            "hist_behaviors": columns["behavior_type"][h0:s].tolist(),
            "hist_timestamps": columns["timestamp"][h0:s].tolist(),
            "cand_item_ids": items + negatives.items,
            "cand_category_ids": cats + negatives.categories,
            "labels": labels + [0] * len(negatives.items),
        }
        record = request_example(self.spec, request).SerializeToString()
        return BuiltRequest(record, len(items) + len(negatives.items),
                            sum(labels))
