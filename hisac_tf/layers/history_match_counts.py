"""`HistoryMatchCounts`: how much of a history matches each candidate.

docs/design.md §2.6. Softmax target attention says *what* in a history
matches a candidate, not *how much*: its weights sum to one, so a candidate
matched by one behaviour and one matched by five hundred can get the same
output. With long histories that amount is often the signal (a lifetime
interest in the candidate's sub-topic that the recent window does not
show). This layer gives the ranking head exact counts.

For T key types (e.g. category id, SID prefix of each level) the
user side sorts the history's keys once and keeps, per type, the M keys
with the most behaviours (all distinct keys when M >= N), their counts and
the time since their newest behaviour. A candidate's key is then found by
binary search, so scoring costs O(C · T · log M) and the cacheable state is
3 · T · M numbers, whatever N. Per candidate and type the head sees

    log(1 + n)            the count, non-saturating
    n / max(n_type, 1)    the share of the type's valid behaviours
    [n > 0]               any match
    [n > 0] · log(1 + Δ)  Δ: hours since the newest matching behaviour

plus log(1 + n_valid) of the request, n_valid being the FIRST type's valid
count (so the first type must count every valid behaviour: the history
length). A key beyond the M kept ones reads as no match (n = 0); with
M >= the number of distinct keys (always when M >= N) every count is
exact.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.shape_checks import check_rank as _check_rank

_NAME = "HistoryMatchCounts"
_EMPTY = tf.int64.max  # Sorts after every real key.
COUNT_STATE_KEYS = ("count_keys", "count_values", "count_gaps",
                    "count_lengths")
FEATURES_PER_TYPE = 4


def _gather_rows(x, idx):
    """x [R, N], idx [R, M] -> [R, M] (per-row gather)."""
    return tf.gather(x, idx, batch_dims=1)


def _per_slot(x, total, rows, width):
    """x [S <= R*W] per segment id -> [R, W], zero past the last id."""
    x = tf.pad(x, [[0, total - tf.shape(x)[0]]])  # [R*W]
    return tf.reshape(x, [rows, width])


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class HistoryMatchCounts(tf.keras.layers.Layer):
    """Per-candidate match counts over a history (see the module doc).

    Args:
      num_slots: M >= 1, the keys kept per type (the most frequent).
      nested_types: P: the last P key types are prefixes of one another
        (e.g. SID prefixes of levels 1..L) and share one sort (checked;
        a speed-up only, the state is the same). 0: one sort per type.

    Call args (`call` = `score(encode(...), cand_keys)`):
      keys: [B, N, T] int64 history keys per type.
      valid: [B, N, T] bool, True where the behaviour takes part for
        that type (e.g. an item without a semantic ID has no SID key).
      timestamps: [B, N] int64 behaviour times (seconds).
      request_time: [B] int64.
      cand_keys: [B, C, T] int64 candidate keys (a key no history key can
        equal, e.g. -1, never matches).

    Returns:
      [B, C, 4 T + 1] float32 features (no weights: the head learns them).

    References:
      HiSAC: Hierarchical Sparse Activation Compression for Ultra-long
      Sequence Modeling in Recommenders (arXiv 2602.21009), Hierarchical
      Voting: the votes of a SID prefix are counts of the user's
      behaviours under it; this layer serves them to every candidate.

    Example:

    ```python
    layer = HistoryMatchCounts(num_slots=64)
    keys = tf.constant([[[3], [5], [3]]], tf.int64)  # [B=1, N=3, T=1]
    state = layer.encode(keys, tf.ones([1, 3, 1], tf.bool),
                         tf.constant([[10, 20, 30]], tf.int64),
                         request_time=tf.constant([3630], tf.int64))
    feats = layer.score(state, tf.constant([[[3], [7]]], tf.int64))
    # log(1 + count) per candidate: item 3 twice, item 7 never.
    np.testing.assert_allclose(feats[0, :, 0], np.log1p([2.0, 0.0]))
    ```
    """

    def __init__(self, num_slots: int = 256, nested_types: int = 0,
                 **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self.num_slots = check_int(_NAME, "num_slots", num_slots, 1)
        self.nested_types = check_int(
            _NAME, "nested_types", nested_types, 0)

    def get_config(self):
        return {**super().get_config(), "num_slots": self.num_slots,
                "nested_types": self.nested_types}

    def _sort_order(self, k):
        """k [B, T, W] keys (int64.max where not valid) -> the per-row
        ascending order [B, T, W].

        With `nested_types` = P >= 2 the last P types are expected to be
        prefixes of one another (SID prefixes of increasing length, the
        same validity): the order sorting the last type sorts them all,
        so they share one sort. That is checked in the graph; where it
        does not hold, each type gets its own sort (same result: only
        runs of equal keys matter, not the order inside a run).
        """
        p = self.nested_types
        t = k.shape[1]
        if p < 2 or t is None or t < p:
            return tf.argsort(k, axis=-1, stable=True)  # [B, T, W]
        own = tf.argsort(k[:, :t - p], axis=-1, stable=True)  # [B, T-P, W]
        nested = k[:, t - p:]  # [B, P, W]
        deepest = tf.argsort(nested[:, -1:], axis=-1, stable=True)
        shared = tf.broadcast_to(deepest, tf.shape(nested))  # [B, P, W]
        by_deepest = tf.gather(nested, shared, batch_dims=2)  # [B, P, W]
        sorted_ok = tf.reduce_all(by_deepest[..., 1:] >= by_deepest[..., :-1])
        nested_order = tf.cond(
            sorted_ok, lambda: shared,
            lambda: tf.argsort(nested, axis=-1, stable=True))  # [B, P, W]
        return tf.concat([own, nested_order], axis=1)  # [B, T, W]

    def num_features(self, num_types: int) -> int:
        return FEATURES_PER_TYPE * num_types + 1

    def encode(self, keys, valid, timestamps, request_time) -> dict:
        """The user side: [B, N, T] keys -> the cacheable count state.

        Returns:
          count_keys [B, T, M'] int64, sorted, int64.max in empty slots;
          count_values [B, T, M'] float32 behaviours per key;
          count_gaps [B, T, M'] float32 hours since the key's newest one;
          count_lengths [B, T] float32 valid behaviours per type.
          M' = min(M, max(N, 1)).
        """
        keys = tf.cast(keys, tf.int64)
        valid = tf.cast(valid, tf.bool)
        _check_rank(_NAME, "keys", keys, 3, "B, N, T")
        _check_rank(_NAME, "valid", valid, 3, "B, N, T")
        timestamps = tf.cast(timestamps, tf.int64)
        _check_rank(_NAME, "timestamps", timestamps, 2, "B, N")
        request_time = tf.cast(request_time, tf.int64)
        b, n, t = tf.unstack(tf.shape(keys))
        # One sentinel column: an empty history still has one (empty) slot.
        keys = tf.pad(keys, [[0, 0], [0, 1], [0, 0]])  # [B, N+1, T]
        valid = tf.pad(valid, [[0, 0], [0, 1], [0, 0]])  # [B, N+1, T]
        timestamps = tf.pad(timestamps, [[0, 0], [0, 1]])  # [B, N+1]
        rows = b * t
        width = n + 1
        k = tf.transpose(keys, [0, 2, 1])  # [B, T, N+1]
        v = tf.reshape(tf.transpose(valid, [0, 2, 1]), [rows, width])
        ts = tf.reshape(tf.broadcast_to(
            timestamps[:, None, :], [b, t, width]), [rows, width]
        )  # [B*T, N+1]
        k = tf.where(tf.reshape(v, tf.shape(k)), k, _EMPTY)  # [B, T, N+1]
        order = tf.reshape(self._sort_order(k), [rows, width])  # [R, N+1]
        k = tf.reshape(k, [rows, width])  # [R, N+1]
        sk = _gather_rows(k, order)  # [R, N+1] sorted keys
        sv = tf.cast(_gather_rows(v, order), tf.float32)  # [R, N+1]
        st = _gather_rows(ts, order)  # [R, N+1]
        first = tf.concat(
            [tf.ones([rows, 1], tf.bool), sk[:, 1:] != sk[:, :-1]], axis=1
        )  # [R, N+1] a run of equal keys starts here
        run = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1  # [R, N+1]
        # Segment ids are sorted (runs in order, rows one after another),
        # so the sorted segment reductions apply (about half the cost of
        # the unsorted ones). Ids past a row's last run are empty
        # segments: 0 there, and never used (their count is 0).
        seg = tf.reshape(run + tf.range(rows)[:, None] * width, [-1])
        total = rows * width
        counts = _per_slot(tf.math.segment_sum(
            tf.reshape(sv, [-1]), seg), total, rows, width)  # [R, N+1]
        ukeys = _per_slot(tf.math.segment_max(
            tf.reshape(sk, [-1]), seg), total, rows, width)  # [R, N+1]
        st = tf.where(sv > 0, st, tf.int64.min)
        last = _per_slot(tf.math.segment_max(
            tf.reshape(st, [-1]), seg), total, rows, width)  # [R, N+1]
        m = tf.minimum(self.num_slots, width)
        top = tf.math.top_k(counts, k=m, sorted=True)  # most frequent
        kept_counts = top.values  # [R, M']
        kept_keys = tf.where(
            kept_counts > 0, _gather_rows(ukeys, top.indices), _EMPTY
        )  # [R, M']
        kept_last = _gather_rows(last, top.indices)  # [R, M']
        by_key = tf.argsort(kept_keys, axis=-1, stable=True)  # [R, M']
        kept_keys = _gather_rows(kept_keys, by_key)
        kept_counts = _gather_rows(kept_counts, by_key)
        kept_last = _gather_rows(kept_last, by_key)
        now = tf.reshape(tf.broadcast_to(request_time[:, None], [b, t]),
                         [rows, 1])  # [R, 1]
        gaps = tf.cast(tf.maximum(now - kept_last, 0), tf.float32) / 3600.0
        gaps = tf.where(kept_counts > 0, gaps, 0.0)  # [R, M']
        shape = [b, t, m]
        return {
            "count_keys": tf.reshape(kept_keys, shape),  # [B, T, M']
            "count_values": tf.reshape(kept_counts, shape),  # [B, T, M']
            "count_gaps": tf.reshape(gaps, shape),  # [B, T, M']
            "count_lengths": tf.reduce_sum(
                tf.cast(valid, tf.float32), axis=1),  # [B, T]
        }

    def score(self, state: dict, cand_keys) -> tf.Tensor:
        """Candidate features from a count state.

        Args:
          state: from `encode`; cand_keys: [B, C, T] int64.
        Returns:
          [B, C, 4 T + 1] float32.
        """
        missing = [name for name in COUNT_STATE_KEYS if name not in state]
        if missing:
            raise ValueError(
                f"{_NAME}: `state` lacks {missing}; received keys "
                f"{sorted(state)}"
            )
        cand_keys = tf.cast(cand_keys, tf.int64)
        _check_rank(_NAME, "cand_keys", cand_keys, 3, "B, C, T")
        keys = tf.cast(state["count_keys"], tf.int64)  # [B, T, M']
        b, t, m = tf.unstack(tf.shape(keys))
        c = tf.shape(cand_keys)[1]
        rows = b * t
        flat_keys = tf.reshape(keys, [rows, m])  # [R, M']
        queries = tf.reshape(
            tf.transpose(cand_keys, [0, 2, 1]), [rows, c])  # [R, C]
        pos = tf.searchsorted(flat_keys, queries, side="left")  # [R, C]
        pos = tf.minimum(pos, m - 1)
        found = tf.logical_and(
            _gather_rows(flat_keys, pos) == queries, queries != _EMPTY
        )  # [R, C]
        counts = tf.where(found, _gather_rows(
            tf.reshape(state["count_values"], [rows, m]), pos), 0.0)
        gaps = tf.where(found, _gather_rows(
            tf.reshape(state["count_gaps"], [rows, m]), pos), 0.0)
        lengths = tf.reshape(
            tf.cast(state["count_lengths"], tf.float32), [rows, 1])
        hit = tf.cast(found, tf.float32)  # [R, C]
        feats = tf.stack([
            tf.math.log1p(counts),
            counts / tf.maximum(lengths, 1.0),
            hit,
            hit * tf.math.log1p(gaps),
        ], axis=-1)  # [R, C, 4]
        feats = tf.reshape(feats, [b, t, c, FEATURES_PER_TYPE])
        feats = tf.reshape(tf.transpose(feats, [0, 2, 1, 3]),
                           [b, c, t * FEATURES_PER_TYPE])  # [B, C, 4T]
        length = tf.math.log1p(
            tf.cast(state["count_lengths"], tf.float32)[:, :1])  # [B, 1]
        length = tf.broadcast_to(length[:, None, :], [b, c, 1])  # [B, C, 1]
        return tf.concat([feats, length], axis=-1)  # [B, C, 4T + 1]

    def call(self, keys, valid, timestamps, request_time, cand_keys,
             training=None):
        del training
        return self.score(
            self.encode(keys, valid, timestamps, request_time), cand_keys
        )
