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
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data.importers.event_columns import feature_column
from hisac_tf.data.importers.feature_columns import missing_value
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.request_formation import (
    request_example,
    window_candidates,
)
from hisac_tf.data.importers.user_table import (UNKNOWN_USER_FEATURE,
                                                declared_user_features)

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
                                with_true_ctr=False,
                                features=cfg.all_features,
                                record_keys=tuple(self.data.record_keys))
        self.sampler, self.users = sampler, users
        declared = declared_user_features(cfg)
        # The user table's values: data.user_features, then the declared
        # user features (user_table.read_users).
        self.user_names = tuple(self.data.user_features) + tuple(
            f.name for f in declared)
        self.unknown = (UNKNOWN_USER_FEATURE,) * len(
            self.data.user_features) + tuple(missing_value(f)
                                             for f in declared)
        self.event = [f for f in self.spec.request_features
                      if f.location == "event"]
        self.context = [f for f in self.spec.request_features
                        if f.location == "context"]
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
            **dict(zip(self.user_names,
                       self.users.get(user, self.unknown))),
            "hist_item_ids": columns["item_id"][h0:s].tolist(),
            "hist_category_ids": columns["category_id"][h0:s].tolist(),
            "hist_behaviors": columns["behavior_type"][h0:s].tolist(),
            "hist_timestamps": columns["timestamp"][h0:s].tolist(),
            "cand_item_ids": items + negatives.items,
            "cand_category_ids": cats + negatives.categories,
            "labels": labels + [0] * len(negatives.items),
        }
        for f in self.event + self.context:
            if feature_column(f) not in columns:
                raise DataError(
                    f"feature {f.name!r} ({f.location}) has no log column "
                    "here: the Beam engine reads no event or context "
                    "features in this version (use --engine=local)")
        for f in self.event:  # One value per history event.
            request[f.batch_key] = columns[feature_column(f)][h0:s].tolist()
        for f in self.context:  # The request's first event's value.
            value = columns[feature_column(f)][s]
            request[f.batch_key] = (value.item() if isinstance(
                value, np.generic) else value)
        record = request_example(self.spec, request).SerializeToString()
        return BuiltRequest(record, len(items) + len(negatives.items),
                            sum(labels))
