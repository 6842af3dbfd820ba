"""The match counts' user side as first written (unsorted segments).

Kept verbatim as the reference the faster `HistoryMatchCounts.encode`
must equal exactly (tests/test_history_match_counts.py).
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.layers.history_match_counts import _EMPTY, _gather_rows
from hisac_tf.layers.shape_checks import check_rank as _check_rank

_NAME = "HistoryMatchCounts"


def encode_reference(keys, valid, timestamps, request_time,
                     num_slots: int) -> dict:
    """`HistoryMatchCounts.encode` before the sorted-segment rewrite.

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
    k = tf.reshape(tf.transpose(keys, [0, 2, 1]), [rows, width])
    v = tf.reshape(tf.transpose(valid, [0, 2, 1]), [rows, width])
    ts = tf.reshape(
        tf.repeat(timestamps[:, None, :], t, axis=1), [rows, width]
    )  # [B*T, N+1]
    k = tf.where(v, k, _EMPTY)  # [R, N+1]
    order = tf.argsort(k, axis=-1, stable=True)  # [R, N+1]
    sk = _gather_rows(k, order)  # [R, N+1] sorted keys
    sv = tf.cast(_gather_rows(v, order), tf.float32)  # [R, N+1]
    st = _gather_rows(ts, order)  # [R, N+1]
    first = tf.concat(
        [tf.ones([rows, 1], tf.bool), sk[:, 1:] != sk[:, :-1]], axis=1
    )  # [R, N+1] a run of equal keys starts here
    run = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1  # [R, N+1]
    seg = tf.reshape(run + tf.range(rows)[:, None] * width, [-1])
    total = rows * width
    counts = tf.reshape(tf.math.unsorted_segment_sum(
        tf.reshape(sv, [-1]), seg, total), [rows, width])  # [R, N+1]
    ukeys = tf.reshape(tf.math.unsorted_segment_max(
        tf.reshape(sk, [-1]), seg, total), [rows, width])  # [R, N+1]
    st = tf.where(sv > 0, st, tf.int64.min)
    last = tf.reshape(tf.math.unsorted_segment_max(
        tf.reshape(st, [-1]), seg, total), [rows, width])  # [R, N+1]
    m = tf.minimum(num_slots, width)
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
    now = tf.reshape(tf.repeat(request_time[:, None], t, axis=1),
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

