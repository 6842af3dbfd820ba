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

Declared features (`features`, hisac_tf/feature_config.py, docs/design.md
§4.1) add, under their batch key:

    user/context categorical        <name> [B]        int64 or string
    user/context multi_categorical  <name> [B, M]     int64 (0 pad) or
                                                      string (b"" pad)
    user/context dense              <name> [B]        float32, raw
    user/context vector             <name> [B, dim]   float32
    event categorical               hist_<name> [B, N] int64 (0) / string (b"")
    event dense                     hist_<name> [B, N] float32 (0 pad), raw
    event vector                    hist_<name> [B, N, dim] float32
    item (any kind)                 nothing: looked up in the graph

Histories are truncated to their newest N items and padded at the end;
candidates are padded to C = `max_candidates`. Records may name the core
fields and the features with their own keys (`record_keys`,
`features[...].key`): the parse spec reads those keys and the batch always
uses the names above. A dense value that is NaN or missing becomes the
feature's `default`, or, without one, an error naming the feature, the
file and the record.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping, Sequence

import hisac_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
import numpy as np
import tensorflow as tf

from hisac_tf.data.feature_stats import resolve_statistics
from hisac_tf.feature_config import (
    FeatureConfig,
    FeatureConfigError,
    check_features,
    default_features,
)

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
# Core request fields (their record keys may be renamed: `record_keys`).
CORE_FIELDS = (("user_id", "request_time") + HISTORY_FEATURES
               + CANDIDATE_FEATURES + (LABEL, TRUE_CTR))


class DataError(ValueError):
    """A record that breaks the data contract; names file, record, field."""


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """Names, dtypes and padded shapes of every request-level feature.

    Attributes:
      max_history: N, the newest items kept of each history.
      max_candidates: C, candidates per request after padding.
      user_features: names of the user features besides `user_id`. Given
        alone (as before the `features` section), each is a categorical
        int64 user feature (`default_features`); with `features` it is
        derived from them (the names of location user).
      with_true_ctr: whether records carry the true click probability
        (synthetic data).
      features: every declared feature, the default user features
        included, dense statistics resolved (`from_config`).
      record_keys: (core field, record key) pairs where a log's records
        name core fields differently (`data.record_keys`).
    """

    max_history: int
    max_candidates: int
    user_features: tuple[str, ...] = ("gender", "age_bucket")
    with_true_ctr: bool = False
    features: tuple[FeatureConfig, ...] = ()
    record_keys: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if self.max_history < 1:
            raise ValueError(
                f"max_history must be >= 1, got {self.max_history}"
            )
        if self.max_candidates < 1:
            raise ValueError(
                f"max_candidates must be >= 1, got {self.max_candidates}"
            )
        clash = set(self.user_features) & {"user_id", "request_time"}
        if clash:
            raise ValueError(f"user_features may not include {sorted(clash)}")
        features = tuple(self.features) or default_features(
            self.user_features)
        try:
            features = check_features(features, where="FeatureSpec.features")
        except FeatureConfigError as e:
            raise DataError(str(e)) from None
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "user_features", tuple(
            f.name for f in features if f.location == "user"))
        keys = self.record_keys
        if isinstance(keys, Mapping):
            keys = keys.items()
        pairs = []
        for entry in keys:
            if isinstance(entry, str):
                field, _, key = entry.partition("=")
                entry = (field.strip(), key.strip())
            field, key = entry
            if field not in CORE_FIELDS:
                raise DataError(
                    f"record_keys: {field!r} is not a core request field "
                    f"(known: {', '.join(CORE_FIELDS)})")
            pairs.append((field, key))
        object.__setattr__(self, "record_keys", tuple(sorted(pairs)))
        taken: dict[str, str] = {}
        for name, key in self._core_keys().items():
            taken.setdefault(key, name)
        for f in self.request_features:
            if f.record_key in taken:
                raise DataError(
                    f"feature {f.name!r} reads record key {f.record_key!r}, "
                    f"which core field {taken[f.record_key]!r} reads too")
            if f.batch_key in CORE_FIELDS:
                raise DataError(f"feature {f.name!r} would replace core "
                                f"field {f.batch_key!r}")
            taken[f.record_key] = f.name

    @classmethod
    def from_config(cls, data_cfg, with_true_ctr: bool = False,
                    features: Sequence[FeatureConfig] | None = None,
                    statistics: bool = True):
        """The spec of a config's data section.

        Args:
          data_cfg: `cfg.data` (N, C, user features, record keys).
          with_true_ctr: whether records carry `true_ctr`.
          features: `cfg.all_features`; None: the default user features
            of `data_cfg.user_features`.
          statistics: fill the mean/std of standardised dense features
            from `<data_cfg.data_dir>/feature_stats.json` (an error
            naming the feature and file when they are not there); False
            for the jobs that write that file.
        """
        features = tuple(features) if features is not None else (
            default_features(data_cfg.user_features))
        if statistics:
            features = resolve_statistics(features, data_cfg.data_dir)
        return cls(
            max_history=data_cfg.max_history,
            max_candidates=data_cfg.max_candidates,
            user_features=tuple(f.name for f in features
                                if f.location == "user"),
            with_true_ctr=with_true_ctr,
            features=features,
            record_keys=tuple(getattr(data_cfg, "record_keys", ())),
        )

    # ---------------------------------------------------------------- names
    @property
    def request_features(self) -> tuple[FeatureConfig, ...]:
        """Declared features the request carries (user, context, event)."""
        return tuple(f for f in self.features if f.in_request)

    @property
    def item_features(self) -> tuple[FeatureConfig, ...]:
        """Declared features of the item table (looked up in the graph)."""
        return tuple(f for f in self.features if f.location == "item")

    @property
    def scalar_features(self) -> tuple[str, ...]:
        """int64 [B] inputs: user_id, request_time and the categorical
        int64 user and context features (the layout before `features`)."""
        return ("user_id", "request_time") + tuple(
            f.name for f in self.features
            if _is_int_scalar(f))

    @property
    def extra_features(self) -> tuple[FeatureConfig, ...]:
        """Request features beyond `scalar_features` (other kinds, strings
        and event features): their inputs follow the module docstring."""
        return tuple(f for f in self.request_features
                     if not _is_int_scalar(f))

    @property
    def list_features(self) -> tuple[str, ...]:
        return HISTORY_FEATURES + CANDIDATE_FEATURES + (LABEL,)

    @property
    def float_list_features(self) -> tuple[str, ...]:
        return (TRUE_CTR,) if self.with_true_ctr else ()

    def _core_keys(self) -> dict[str, str]:
        keys = {name: name for name in CORE_FIELDS}
        keys.update(dict(self.record_keys))
        return keys

    def record_key(self, name: str) -> str:
        """The record key a batch field (core or feature) is read from."""
        for f in self.request_features:
            if f.batch_key == name:
                return f.record_key
        return self._core_keys().get(name, name)

    def feature(self, name: str) -> FeatureConfig:
        for f in self.features:
            if f.name == name or (f.in_request and f.batch_key == name):
                return f
        raise DataError(
            f"unknown feature {name!r} (declared: "
            f"{', '.join(f.name for f in self.features) or 'none'})")

    # -------------------------------------------------------------- parsing
    def raw_parse_spec(self) -> dict:
        """`tf.io.parse_example` spec under the records' own keys:
        scalars dense, lists ragged."""
        keys = self._core_keys()
        spec = {
            keys.get(name, name): tf.io.FixedLenFeature([], tf.int64)
            for name in ("user_id", "request_time")
        }
        for name in self.list_features:
            spec[keys[name]] = tf.io.RaggedFeature(tf.int64)
        for name in self.float_list_features:
            spec[keys[name]] = tf.io.RaggedFeature(tf.float32)
        for f in self.request_features:
            spec[f.record_key] = _feature_parse_spec(f)
        return spec

    def parse(self, serialized: tf.Tensor) -> dict:
        """Parses serialized requests [B] into ragged/dense tensors, keyed
        by batch names (core field names, feature batch keys)."""
        raw = tf.io.parse_example(serialized, self.raw_parse_spec())
        renamed = {}
        for name, key in self._core_keys().items():
            if key in raw:
                renamed[name] = raw[key]
        for f in self.request_features:
            renamed[f.batch_key] = raw[f.record_key]
        return renamed

    def pad_batch(self, raw: Mapping[str, tf.Tensor]) -> dict:
        """Truncates histories to the newest N and pads to the layout above.

        Args:
          raw: output of `parse` for B requests (ragged lists).
        Returns:
          dict of dense tensors (see module docstring).
        """
        n, c = self.max_history, self.max_candidates
        out = {name: raw[name] for name in ("user_id", "request_time")}
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
        for f in self.request_features:
            out[f.batch_key] = _pad_feature(f, raw[f.batch_key], n)
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
        event = tuple(f.batch_key for f in self.request_features
                      if f.location == "event")
        for name in HISTORY_FEATURES[1:] + event:
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
        for f in self.request_features:
            if f.kind not in ("dense", "vector") or f.default is not None:
                continue
            values, rows = _flat_rows(raw[f.batch_key])  # [M], [M]
            checks.append(check(
                f"nan_{f.name}", tf.math.is_nan(values), rows, values,
                f"{f.batch_key} (feature {f.name!r}, key {f.record_key!r}) "
                "must be a number: NaN or missing and the feature has no "
                "default"))
        return checks

    # ------------------------------------------------------------- writing
    def to_example(self, request: Mapping[str, object]) -> tf.train.Example:
        """Builds a request-level `tf.train.Example` from plain values.

        Args:
          request: mapping with every scalar feature (int) and list feature
            (sequence of int; `true_ctr` floats when `with_true_ctr`),
            and every request feature under its batch key (user/context:
            one value, a list for multi_categorical and vector; event: one
            value per history item; strings as str or bytes). Written
            under the record keys.
        Raises:
          DataError: naming the field that is missing or has the wrong
            type.
        """
        keys = self._core_keys()
        feats = {}
        for name in self.scalar_features:  # In the order before features.
            value = (_get(request, name) if name in CORE_FIELDS
                     else _get_feature(request, self.feature(name)))
            feats[self.record_key(name)] = _int_feature(name, [value])
        for name in self.list_features:
            feats[keys[name]] = _int_feature(name, _get(request, name))
        for name in self.float_list_features:
            values = np.asarray(_get(request, name), np.float32).ravel()
            feats[keys[name]] = tf.train.Feature(
                float_list=tf.train.FloatList(value=values)
            )
        for f in self.extra_features:
            feats[f.record_key] = feature_values(
                f, _get_feature(request, f))
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
        for f in self.extra_features:
            spec[f.batch_key] = tf.TensorSpec(
                _input_shape(f), _tf_dtype(f), f.batch_key)
        if include_labels:
            spec[LABEL] = tf.TensorSpec([None, None], tf.float32, LABEL)
        return spec

    def model_feature_names(self) -> tuple[str, ...]:
        return tuple(self.input_signature())

    # -------------------------------------------------- impression examples
    # One record per impression (request × candidate), for serving clients
    # that send flat `tf.Example`s (`predict_examples` signature), under
    # the batch names (not the records' own keys):
    #
    #     user_id, request_time, <user features>   int64 scalars
    #     hist_item_ids, hist_category_ids,
    #     hist_behaviors, hist_timestamps          int64 lists, oldest first
    #     cand_item_id, cand_category_id           int64 scalars
    #     <user/context features>, hist_<event features>  as in records
    #
    # Histories of any length are accepted; `pad_impressions` keeps the
    # newest N items, as `pad_batch` does for request records.
    def impression_parse_spec(self) -> dict:
        """`tf.io.parse_example` spec of per-impression examples."""
        spec = {
            name: tf.io.FixedLenFeature([], tf.int64)
            for name in ("user_id", "request_time")
            + IMPRESSION_CANDIDATE_FEATURES
        }
        for name in HISTORY_FEATURES:
            spec[name] = tf.io.RaggedFeature(tf.int64)
        for f in self.request_features:
            spec[f.batch_key] = _feature_parse_spec(f)
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
          cand_category_ids [B, 1]; cand_count [B] int32 (ones); the
          request features as in `pad_batch`.
        """
        n = self.max_history
        out = {name: raw[name] for name in ("user_id", "request_time")}
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
        for f in self.request_features:
            out[f.batch_key] = _pad_feature(f, raw[f.batch_key], n)
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
        for f in self.extra_features:
            feats[f.batch_key] = feature_values(f, _get_feature(request, f))
        return tf.train.Example(features=tf.train.Features(feature=feats))

    def impression_examples(
        self, request: Mapping[str, object]
    ) -> list[tf.train.Example]:
        """One `impression_example` per candidate of the request."""
        count = len(np.asarray(_get(request, "cand_item_ids")).ravel())
        return [self.impression_example(request, j) for j in range(count)]


def _is_int_scalar(f: FeatureConfig) -> bool:
    return (f.location in ("user", "context") and f.kind == "categorical"
            and f.dtype == "int64")


def _tf_dtype(f: FeatureConfig) -> tf.DType:
    if f.is_categorical:
        return tf.string if f.dtype == "string" else tf.int64
    return tf.float32


def _input_shape(f: FeatureConfig) -> list:
    """The padded input's shape (request and history axes unknown)."""
    if f.location == "event":
        return [None, None, f.dim] if f.kind == "vector" else [None, None]
    if f.kind == "multi_categorical":
        return [None, f.max_values]
    if f.kind == "vector":
        return [None, f.dim]
    return [None]


def _feature_parse_spec(f: FeatureConfig):
    """Parse spec of one request feature (missing dense values: NaN)."""
    dtype = _tf_dtype(f)
    if f.location == "event":
        if f.kind == "vector":
            return tf.io.RaggedFeature(
                dtype, partitions=[
                    tf.io.RaggedFeature.UniformRowLength(f.dim)])
        return tf.io.RaggedFeature(dtype)
    if f.kind == "multi_categorical":
        return tf.io.RaggedFeature(dtype)
    if f.kind == "dense":
        return tf.io.FixedLenFeature([], dtype, default_value=math.nan)
    if f.kind == "vector":
        return tf.io.FixedLenFeature([f.dim], dtype,
                                     default_value=[math.nan] * f.dim)
    return tf.io.FixedLenFeature([], dtype)


def _pad_feature(f: FeatureConfig, t, n: int) -> tf.Tensor:
    """One parsed request feature -> its padded input (module docstring)."""
    pad = b"" if f.dtype == "string" and f.is_categorical else (
        0.0 if not f.is_categorical else 0)
    if f.location == "event":
        newest = t[:, -n:]  # [B, <=N(, dim)] keeps the newest items.
        shape = [None, n, f.dim] if f.kind == "vector" else [None, n]
        out = newest.to_tensor(pad, shape=shape)  # [B, N(, dim)]
    elif f.kind == "multi_categorical":
        out = t[:, :f.max_values].to_tensor(
            pad, shape=[None, f.max_values])  # [B, M]
    else:
        out = t  # [B] or [B, dim]
    if f.kind in ("dense", "vector") and f.default is not None:
        out = tf.where(tf.math.is_nan(out),
                       tf.constant(f.default, out.dtype), out)
    return out


def _flat_rows(t) -> tuple[tf.Tensor, tf.Tensor]:
    """Values [M] of a parsed feature and the request row [M] of each."""
    if isinstance(t, tf.RaggedTensor):
        rows = t.value_rowids()  # [items]
        values = tf.reshape(t.flat_values, [-1])  # [items (* dim)]
        per = tf.shape(values, out_type=tf.int64)[0] // tf.maximum(
            tf.shape(rows, out_type=tf.int64)[0], 1)
        return values, tf.repeat(rows, per)
    batch = tf.shape(t, out_type=tf.int64)[0]
    values = tf.reshape(t, [-1])  # [B] or [B * dim]
    per = tf.shape(values, out_type=tf.int64)[0] // tf.maximum(batch, 1)
    return values, tf.repeat(tf.range(batch), per)


def _get_feature(request: Mapping[str, object], f: FeatureConfig):
    if f.batch_key in request:
        return request[f.batch_key]
    raise DataError(
        f"request is missing feature {f.name!r} (field {f.batch_key!r})")


def feature_values(f: FeatureConfig, value) -> tf.train.Feature:
    """A feature's plain value(s) as a `tf.train.Feature`.

    Categorical: int or str/bytes (a list for multi_categorical and event
    features); dense: a float (None -> NaN, the 'missing' value); vector:
    `dim` floats (event: a list of them). Raises DataError naming the
    feature on a value of the wrong type.
    """
    flat = (list(value) if isinstance(value, (list, tuple, np.ndarray))
            else [value])
    if f.kind == "vector":
        flat = np.asarray(value, np.float32).ravel().tolist()
    if f.is_categorical and f.dtype == "string":
        out = []
        for v in flat:
            if isinstance(v, np.bytes_):
                v = bytes(v)
            if isinstance(v, str):
                v = v.encode("utf-8")
            if not isinstance(v, bytes):
                raise DataError(
                    f"feature {f.name!r} is a string feature, got {v!r}")
            out.append(v)
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=out))
    if f.is_categorical:
        return _int_feature(f"{f.name} (feature)", flat)
    try:
        floats = np.asarray(
            [math.nan if v is None else v for v in flat], np.float32)
    except (TypeError, ValueError):
        raise DataError(
            f"feature {f.name!r} ({f.kind}) must hold numbers, got "
            f"{value!r}") from None
    return tf.train.Feature(float_list=tf.train.FloatList(value=floats))


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
    features: Mapping[str, tf.train.Feature] | None = None,
) -> tf.train.Example:
    """One item-table record; `features`: item feature columns by record
    key (`feature_values(f, value)` each)."""
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
    for key, feature in (features or {}).items():
        if key in feats:
            raise DataError(f"item feature key {key!r} is a core item "
                            "table column")
        feats[key] = feature
    return tf.train.Example(features=tf.train.Features(feature=feats))
