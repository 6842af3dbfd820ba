"""`FeatureSpec`: the one data contract of hisac_tf (docs/design.md §4).

A record is one *request*: one user, that user's history at request time
(oldest first) and the C candidates shown in that request with their labels.
The same spec drives TFRecord writing and parsing, the model's inputs, the
serving signatures and the gRPC client.

Padded batch layout produced by `FeatureSpec.pad_batch` (B requests):

    user_id, request_time, <user features>   [B]        int64
    hist_item_ids, hist_category_ids,
    hist_behaviors, hist_timestamps          [B, N]     int64, 0 = padding
    hist_length                              [B]        int32
    cand_item_ids, cand_category_ids         [B, C]     int64, 0 = padding
    cand_count                               [B]        int32
    labels                                   [B, C]     float32
    true_ctr (synthetic data only)           [B, C]     float32

Histories are truncated to their newest N items and padded at the end;
candidates are padded to C = `max_candidates`.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import hisac_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import numpy as np
import tensorflow as tf

HISTORY_FEATURES = (
    "hist_item_ids",
    "hist_category_ids",
    "hist_behaviors",
    "hist_timestamps",
)
CANDIDATE_FEATURES = ("cand_item_ids", "cand_category_ids")
LABEL = "labels"
TRUE_CTR = "true_ctr"
# Ids that must be >= 1 wherever they are present (0 is padding).
POSITIVE_ID_FEATURES = (
    "user_id",
    "hist_item_ids",
    "hist_category_ids",
    "hist_behaviors",
    "cand_item_ids",
    "cand_category_ids",
)
# Item table: one record per item.
ITEM_ID = "item_id"
ITEM_CATEGORY = "category_id"
ITEM_EMBEDDING = "content_embedding"
ITEM_SUBTOPIC = "subtopic_id"  # Synthetic data only: the true sub-topic.
# Per-impression examples (serving's `predict_examples`): one candidate each.
IMPRESSION_CANDIDATE_FEATURES = ("cand_item_id", "cand_category_id")


class DataError(ValueError):
    """A record that breaks the data contract; names file, record, field."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Names, dtypes and padded shapes of every request-level feature.

    Attributes:
      max_history: N, the newest items kept of each history.
      max_candidates: C, candidates per request after padding.
      user_features: categorical int64 user features besides `user_id`.
      with_true_ctr: whether records carry the true click probability
        (synthetic data).
    """

    max_history: int
    max_candidates: int
    user_features: tuple[str, ...] = ("gender", "age_bucket")
    with_true_ctr: bool = False

    def __post_init__(self):
        if self.max_history < 1:
            raise ValueError(
                f"max_history must be >= 1, got {self.max_history}"
            )
        if self.max_candidates < 1:
            raise ValueError(
                f"max_candidates must be >= 1, got {self.max_candidates}"
            )
        clash = set(self.user_features) & set(self.scalar_features[:2])
        if clash:
            raise ValueError(f"user_features may not include {sorted(clash)}")

    @classmethod
    def from_config(cls, data_cfg, with_true_ctr: bool = False):
        return cls(
            max_history=data_cfg.max_history,
            max_candidates=data_cfg.max_candidates,
            user_features=tuple(data_cfg.user_features),
            with_true_ctr=with_true_ctr,
        )

    # ---------------------------------------------------------------- names
    @property
    def scalar_features(self) -> tuple[str, ...]:
        return ("user_id", "request_time") + tuple(self.user_features)

    @property
    def list_features(self) -> tuple[str, ...]:
        return HISTORY_FEATURES + CANDIDATE_FEATURES + (LABEL,)

    @property
    def float_list_features(self) -> tuple[str, ...]:
        return (TRUE_CTR,) if self.with_true_ctr else ()

    # -------------------------------------------------------------- parsing
    def raw_parse_spec(self) -> dict:
        """`tf.io.parse_example` spec: scalars dense, lists ragged."""
        spec = {
            name: tf.io.FixedLenFeature([], tf.int64)
            for name in self.scalar_features
        }
        for name in self.list_features:
            spec[name] = tf.io.RaggedFeature(tf.int64)
        for name in self.float_list_features:
            spec[name] = tf.io.RaggedFeature(tf.float32)
        return spec

    def parse(self, serialized: tf.Tensor) -> dict:
        """Parses serialized requests [B] into ragged/dense tensors."""
        return tf.io.parse_example(serialized, self.raw_parse_spec())

    def pad_batch(self, raw: Mapping[str, tf.Tensor]) -> dict:
        """Truncates histories to the newest N and pads to the layout above.

        Args:
          raw: output of `parse` for B requests (ragged lists).
        Returns:
          dict of dense tensors (see module docstring).
        """
        n, c = self.max_history, self.max_candidates
        out = {name: raw[name] for name in self.scalar_features}
        hist_len = raw["hist_item_ids"].row_lengths()  # [B]
        out["hist_length"] = tf.cast(tf.minimum(hist_len, n), tf.int32)
        out["hist_raw_length"] = tf.cast(hist_len, tf.int32)
        for name in HISTORY_FEATURES:
            newest = raw[name][:, -n:]  # [B, <=N] keeps the newest items.
            out[name] = newest.to_tensor(0, shape=[None, n])  # [B, N]
        cand_len = raw["cand_item_ids"].row_lengths()
        out["cand_count"] = tf.cast(cand_len, tf.int32)
        for name in CANDIDATE_FEATURES:
            out[name] = raw[name].to_tensor(0, shape=[None, c])  # [B, C]
        out[LABEL] = tf.cast(
            raw[LABEL].to_tensor(0, shape=[None, c]), tf.float32
        )  # [B, C]
        if self.with_true_ctr:
            out[TRUE_CTR] = raw[TRUE_CTR].to_tensor(0.0, shape=[None, c])
        return out

    def check_ops(self, raw: Mapping[str, tf.Tensor], where: tf.Tensor):
        """In-graph contract checks on a parsed batch.

        Args:
          raw: output of `parse` for B requests.
          where: string tensor [B], "file:record" of each request, used in
            the error messages.
        Returns:
          list of assert ops; each failure names the field, the offending
          request's file and record, and the value.
        """

        def check(name, bad, rows, values, text):
            """bad, rows, values [M]: fails naming the first bad entry."""
            first = tf.argmax(
                tf.concat([tf.cast(bad, tf.int32), [0]], 0)
            )  # [] in [0, M]; M when nothing is bad (padded entry).
            row = tf.gather(tf.concat([rows, [0]], 0), first)
            value = tf.gather(
                tf.concat([values, tf.zeros([1], values.dtype)], 0), first
            )
            return tf.debugging.Assert(
                tf.logical_not(tf.reduce_any(bad)),
                [f"field {text}; got", value, "in", tf.gather(where, row)],
                name=f"check_{name}",
            )

        def ragged(name):
            t = raw[name]
            return t.flat_values, t.value_rowids()

        def per_row(t):
            return t, tf.range(tf.shape(t, out_type=tf.int64)[0])

        checks = []
        for name in POSITIVE_ID_FEATURES:
            values, rows = (ragged(name) if name in self.list_features
                            else per_row(raw[name]))
            checks.append(check(name, values < 1, rows, values,
                                f"{name} must hold ids >= 1"))
        hist_len = raw["hist_item_ids"].row_lengths()
        cand_len = raw["cand_item_ids"].row_lengths()
        _, batch_rows = per_row(hist_len)
        for name in HISTORY_FEATURES[1:]:
            n = raw[name].row_lengths()
            checks.append(check(
                f"len_{name}", tf.not_equal(n, hist_len), batch_rows, n,
                f"{name} must have as many entries as hist_item_ids"))
        lists = [CANDIDATE_FEATURES[1], LABEL] + list(self.float_list_features)
        for name in lists:
            n = raw[name].row_lengths()
            checks.append(check(
                f"len_{name}", tf.not_equal(n, cand_len), batch_rows, n,
                f"{name} must have as many entries as cand_item_ids"))
        checks.append(check(
            "cand_count",
            tf.logical_or(cand_len < 1, cand_len > self.max_candidates),
            batch_rows, cand_len,
            f"cand_item_ids must hold 1..{self.max_candidates} candidates "
            "(data.max_candidates)"))
        labels, rows = ragged(LABEL)
        checks.append(check(
            "labels", tf.logical_and(labels != 0, labels != 1), rows, labels,
            "labels must be 0 or 1"))
        ts, rows = ragged("hist_timestamps")
        # An entry smaller than its predecessor in the same row is unsorted.
        decreasing = tf.logical_and(
            tf.equal(rows[1:], rows[:-1]), ts[1:] < ts[:-1]
        )  # [M - 1]
        checks.append(check(
            "sorted_timestamps", decreasing, rows[1:], ts[1:],
            "hist_timestamps must be sorted oldest first"))
        after = ts > tf.gather(raw["request_time"], rows)  # [M]
        checks.append(check(
            "history_before_request", after, rows, ts,
            "hist_timestamps must be <= request_time (history before the "
            "request only)"))
        return checks

    # ------------------------------------------------------------- writing
    def to_example(self, request: Mapping[str, object]) -> tf.train.Example:
        """Builds a request-level `tf.train.Example` from plain values.

        Args:
          request: mapping with every scalar feature (int) and list feature
            (sequence of int; `true_ctr` floats when `with_true_ctr`).
        Raises:
          DataError: naming the field that is missing or has the wrong
            type.
        """
        feats = {}
        for name in self.scalar_features:
            value = _get(request, name)
            feats[name] = _int_feature(name, [value])
        for name in self.list_features:
            feats[name] = _int_feature(name, _get(request, name))
        for name in self.float_list_features:
            values = np.asarray(_get(request, name), np.float32).ravel()
            feats[name] = tf.train.Feature(
                float_list=tf.train.FloatList(value=values)
            )
        return tf.train.Example(features=tf.train.Features(feature=feats))

    # ------------------------------------------------------- model inputs
    def input_signature(self, include_labels: bool = False) -> dict:
        """`tf.TensorSpec`s of the padded request-level model inputs.

        The request and history axes are left unknown ([None, None]) so
        that serving can batch requests of different N; the model truncates
        to the newest `max_history` itself.
        """
        spec = {
            name: tf.TensorSpec([None], tf.int64, name)
            for name in self.scalar_features
        }
        for name in HISTORY_FEATURES:
            spec[name] = tf.TensorSpec([None, None], tf.int64, name)
        spec["hist_length"] = tf.TensorSpec([None], tf.int32, "hist_length")
        for name in CANDIDATE_FEATURES:
            spec[name] = tf.TensorSpec([None, None], tf.int64, name)
        spec["cand_count"] = tf.TensorSpec([None], tf.int32, "cand_count")
        if include_labels:
            spec[LABEL] = tf.TensorSpec([None, None], tf.float32, LABEL)
        return spec

    def model_feature_names(self) -> tuple[str, ...]:
        return tuple(self.input_signature())

    # -------------------------------------------------- impression examples
    # One record per impression (request × candidate), for serving clients
    # that send flat `tf.Example`s (`predict_examples` signature):
    #
    #     user_id, request_time, <user features>   int64 scalars
    #     hist_item_ids, hist_category_ids,
    #     hist_behaviors, hist_timestamps          int64 lists, oldest first
    #     cand_item_id, cand_category_id           int64 scalars
    #
    # Histories of any length are accepted; `pad_impressions` keeps the
    # newest N items, as `pad_batch` does for request records.
    def impression_parse_spec(self) -> dict:
        """`tf.io.parse_example` spec of per-impression examples."""
        spec = {
            name: tf.io.FixedLenFeature([], tf.int64)
            for name in self.scalar_features + IMPRESSION_CANDIDATE_FEATURES
        }
        for name in HISTORY_FEATURES:
            spec[name] = tf.io.RaggedFeature(tf.int64)
        return spec

    def parse_impressions(self, serialized: tf.Tensor) -> dict:
        """Parses serialized impressions [B] (scalars [B], ragged lists)."""
        return tf.io.parse_example(serialized, self.impression_parse_spec())

    def pad_impressions(self, raw: Mapping[str, tf.Tensor]) -> dict:
        """Parsed impressions -> the padded request layout with C = 1.

        Args:
          raw: output of `parse_impressions` for B impressions.
        Returns:
          scalars [B]; hist_* [B, N] (newest N, zero-padded at the end);
          hist_length, hist_raw_length [B] int32; cand_item_ids,
          cand_category_ids [B, 1]; cand_count [B] int32 (ones).
        """
        n = self.max_history
        out = {name: raw[name] for name in self.scalar_features}
        hist_len = raw["hist_item_ids"].row_lengths()  # [B]
        out["hist_length"] = tf.cast(tf.minimum(hist_len, n), tf.int32)
        out["hist_raw_length"] = tf.cast(hist_len, tf.int32)
        for name in HISTORY_FEATURES:
            newest = raw[name][:, -n:]  # [B, <=N] keeps the newest items.
            out[name] = newest.to_tensor(0, shape=[None, n])  # [B, N]
        for plural, single in zip(
            CANDIDATE_FEATURES, IMPRESSION_CANDIDATE_FEATURES
        ):
            out[plural] = raw[single][:, None]  # [B, 1]
        out["cand_count"] = tf.ones_like(out["hist_length"])  # [B]
        return out

    def impression_example(
        self, request: Mapping[str, object], candidate: int
    ) -> tf.train.Example:
        """The impression of one candidate of a request.

        Args:
          request: plain values as for `to_example` (labels and `true_ctr`
            are not needed and ignored).
          candidate: index into the request's `cand_item_ids`.
        Raises:
          DataError: a missing field, non-integer values, or a candidate
            index outside the request's candidates.
        """
        items = np.asarray(_get(request, "cand_item_ids")).ravel()
        cats = np.asarray(_get(request, "cand_category_ids")).ravel()
        if len(cats) != len(items):
            raise DataError(
                f"field 'cand_category_ids' has {len(cats)} entries but "
                f"'cand_item_ids' has {len(items)}"
            )
        if not 0 <= candidate < len(items):
            raise DataError(
                f"candidate index {candidate} is outside the request's "
                f"{len(items)} candidates"
            )
        feats = {}
        for name in self.scalar_features:
            feats[name] = _int_feature(name, [_get(request, name)])
        for name in HISTORY_FEATURES:
            feats[name] = _int_feature(name, _get(request, name))
        for name, values in zip(IMPRESSION_CANDIDATE_FEATURES, (items, cats)):
            feats[name] = _int_feature(name, values[candidate:candidate + 1])
        return tf.train.Example(features=tf.train.Features(feature=feats))

    def impression_examples(
        self, request: Mapping[str, object]
    ) -> list[tf.train.Example]:
        """One `impression_example` per candidate of the request."""
        count = len(np.asarray(_get(request, "cand_item_ids")).ravel())
        return [self.impression_example(request, j) for j in range(count)]


def _get(request: Mapping[str, object], name: str):
    if name not in request:
        raise DataError(f"request is missing field {name!r}")
    return request[name]


def _int_feature(name: str, values: Sequence) -> tf.train.Feature:
    arr = np.asarray(values)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise DataError(
            f"field {name!r} must hold integers, got dtype {arr.dtype} "
            f"(first value {arr.ravel()[0]!r})"
        )
    return tf.train.Feature(
        int64_list=tf.train.Int64List(value=arr.astype(np.int64).ravel())
    )


def item_table_parse_spec(content_dim: int) -> dict:
    """Parse spec of the item table (one record per item)."""
    return {
        ITEM_ID: tf.io.FixedLenFeature([], tf.int64),
        ITEM_CATEGORY: tf.io.FixedLenFeature([], tf.int64),
        ITEM_EMBEDDING: tf.io.FixedLenFeature([content_dim], tf.float32),
        ITEM_SUBTOPIC: tf.io.FixedLenFeature([], tf.int64, default_value=0),
    }


def item_example(
    item_id: int,
    category_id: int,
    embedding: Sequence[float],
    subtopic_id: int = 0,
) -> tf.train.Example:
    """One item-table record."""
    if item_id < 1:
        raise DataError(f"field item_id must be >= 1, got {item_id}")
    feats = {
        ITEM_ID: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[item_id])),
        ITEM_CATEGORY: tf.train.Feature(int64_list=tf.train.Int64List(
            value=[category_id])),
        ITEM_EMBEDDING: tf.train.Feature(float_list=tf.train.FloatList(
            value=np.asarray(embedding, np.float32).ravel())),
    }
    if subtopic_id:
        feats[ITEM_SUBTOPIC] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[subtopic_id]))
    return tf.train.Example(features=tf.train.Features(feature=feats))
