"""HistoryMatchCounts: golden values, a numpy reference, edge cases."""

from __future__ import annotations

import hisac_tf  # noqa: F401
import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.history_match_counts import HistoryMatchCounts
from tests.layer_harness import check_layer
from hisac_tf.testing.reference_match_counts import encode_reference


def _reference(keys, valid, times, now, cand, num_slots):
    """Independent numpy: per type, the num_slots most frequent keys."""
    b, n, t = keys.shape
    c = cand.shape[1]
    out = np.zeros((b, c, 4 * t + 1), np.float32)
    for i in range(b):
        for j in range(t):
            ks = keys[i, :, j][valid[i, :, j]]
            ts = times[i][valid[i, :, j]]
            uniq, counts = np.unique(ks, return_counts=True)
            # most frequent first; ties: smaller key first
            order = sorted(range(len(uniq)), key=lambda x: (-counts[x],
                                                           uniq[x]))
            kept = {int(uniq[x]): int(counts[x]) for x in order[:num_slots]}
            total = len(ks)
            for q in range(c):
                key = int(cand[i, q, j])
                cnt = kept.get(key, 0)
                gap = 0.0
                if cnt:
                    gap = max(now[i] - ts[ks == key].max(), 0) / 3600.0
                out[i, q, 4 * j:4 * j + 4] = [
                    np.log1p(cnt), cnt / max(total, 1), float(cnt > 0),
                    float(cnt > 0) * np.log1p(gap),
                ]
            if j == 0:
                out[i, :, -1] = np.log1p(total)
    return out


def test_golden_values():
    layer = HistoryMatchCounts(num_slots=8)
    keys = tf.constant([[[3, 30], [5, 50], [3, 30], [9, 90]]], tf.int64)
    valid = tf.constant([[[True, True], [True, False], [True, True],
                          [False, False]]])
    times = tf.constant([[0, 3600, 7200, 9000]], tf.int64)
    now = tf.constant([14400], tf.int64)  # 4 hours
    cand = tf.constant([[[3, 30], [5, 50], [9, 90]]], tf.int64)
    got = layer(keys, valid, times, now, cand).numpy()[0]
    # candidate 0: key 3 twice of 3 valid, newest at 2 h -> gap 2 h;
    # type 1: key 30 twice of 2 valid.
    np.testing.assert_allclose(
        got[0], [np.log1p(2), 2 / 3, 1, np.log1p(2.0),
                 np.log1p(2), 1.0, 1, np.log1p(2.0), np.log1p(3)],
        rtol=1e-6)
    # candidate 1: key 5 once (gap 3 h); key 50 is not valid for type 1.
    np.testing.assert_allclose(
        got[1], [np.log1p(1), 1 / 3, 1, np.log1p(3.0), 0, 0, 0, 0,
                 np.log1p(3)], rtol=1e-6)
    # candidate 2: the only 9 / 90 behaviour is padding.
    np.testing.assert_allclose(got[2], [0] * 8 + [np.log1p(3)], rtol=1e-6)


@pytest.mark.parametrize("num_slots", [1, 3, 64], ids=lambda m: f"M{m}")
def test_matches_numpy_reference(num_slots):
    rng = np.random.default_rng(num_slots)
    b, n, t, c = 4, 40, 3, 12
    keys = rng.integers(1, 8, size=(b, n, t)).astype(np.int64)
    valid = rng.random((b, n, t)) < 0.8
    valid[2] = False  # an all-padding history
    times = np.sort(rng.integers(1, 10**6, size=(b, n)), axis=1)
    now = np.full([b], 2 * 10**6, np.int64)
    cand = rng.integers(0, 10, size=(b, c, t)).astype(np.int64)
    got = HistoryMatchCounts(num_slots)(keys, valid, times, now, cand)
    want = _reference(keys, valid, times, now, cand, num_slots)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def test_count_does_not_saturate_and_state_is_bounded():
    layer = HistoryMatchCounts(num_slots=4)
    n = 1000
    keys = tf.constant(np.arange(n)[None, :, None] % 7 + 1, tf.int64)
    state = layer.encode(keys, tf.ones([1, n, 1], tf.bool),
                         tf.zeros([1, n], tf.int64), tf.zeros([1], tf.int64))
    assert state["count_keys"].shape == (1, 1, 4)
    feats = layer.score(state, tf.constant([[[1], [2]]], tf.int64))
    np.testing.assert_allclose(feats[0, :, 0], np.log1p([143, 143]),
                               rtol=1e-6)


def test_empty_history_is_finite_and_zero():
    layer = HistoryMatchCounts(num_slots=4)
    keys = tf.zeros([2, 0, 2], tf.int64)
    out = layer(keys, tf.zeros([2, 0, 2], tf.bool), tf.zeros([2, 0], tf.int64),
                tf.zeros([2], tf.int64), tf.ones([2, 3, 2], tf.int64))
    assert out.shape == (2, 3, 9)
    assert np.all(out.numpy() == 0)


def test_harness():
    rng = np.random.default_rng(0)
    check_layer(
        lambda: HistoryMatchCounts(num_slots=5),
        {
            "keys": tf.constant(rng.integers(1, 6, (2, 7, 2)), tf.int64),
            "valid": tf.constant(rng.random((2, 7, 2)) < 0.7),
            "timestamps": tf.constant(rng.integers(1, 100, (2, 7)),
                                      tf.int64),
            "request_time": tf.constant([200, 300], tf.int64),
            "cand_keys": tf.constant(rng.integers(1, 6, (2, 3, 2)),
                                     tf.int64),
        },
        train=False,
    )


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4"], ids=repr)
def test_bad_num_slots_named(bad):
    with pytest.raises(ValueError, match="num_slots"):
        HistoryMatchCounts(num_slots=bad)


def test_missing_state_named():
    with pytest.raises(ValueError, match="count_gaps"):
        HistoryMatchCounts().score(
            {"count_keys": tf.zeros([1, 1, 1], tf.int64),
             "count_values": tf.zeros([1, 1, 1]),
             "count_lengths": tf.zeros([1, 1])},
            tf.zeros([1, 1, 1], tf.int64))


@pytest.mark.parametrize("num_slots,n,key_range", [
    (1, 30, 6), (4, 50, 12), (16, 200, 40), (256, 300, 1000), (8, 1, 3),
], ids=["M1", "M4_ties", "M16", "M256_all_distinct_kept", "N1"])
def test_state_equals_the_first_implementation(num_slots, n, key_range):
    """The sorted-segment encode returns exactly the old state."""
    rng = np.random.default_rng(n)
    b, t = 3, 3
    keys = rng.integers(-2, key_range, size=(b, n, t)).astype(np.int64)
    valid = rng.random((b, n, t)) < 0.85
    valid[1] = False  # an all-padding history
    times = rng.integers(1, 10**6, size=(b, n))  # not sorted on purpose
    now = np.full([b], 2 * 10**6, np.int64)
    got = HistoryMatchCounts(num_slots).encode(keys, valid, times, now)
    want = encode_reference(tf.constant(keys), tf.constant(valid),
                            tf.constant(times), tf.constant(now), num_slots)
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(),
                                      err_msg=name)


@pytest.mark.parametrize("nested", [True, False],
                         ids=["prefix_keys_share_a_sort", "not_nested"])
@pytest.mark.parametrize("num_slots", [3, 64], ids=lambda m: f"M{m}")
def test_nested_types_state_equals_the_first_implementation(nested,
                                                            num_slots):
    """`nested_types` shares one sort among prefix types; where the keys
    are not nested it falls back to one sort per type: same state."""
    rng = np.random.default_rng(num_slots)
    b, n = 3, 80
    cats = rng.integers(1, 9, size=(b, n))
    codes = rng.integers(0, 4, size=(b, n, 2))
    level1 = codes[..., 0] + 1
    level2 = level1 * 5 + codes[..., 1] + 1  # mixed radix, like the ranker
    if not nested:
        level2 = rng.integers(1, 30, size=(b, n))
    keys = np.stack([cats, level1, level2], -1).astype(np.int64)
    has = rng.random((b, n)) < 0.8
    valid = np.stack([np.ones_like(has), has, has], -1)
    valid[0, -5:] = False  # padding at the end
    times = rng.integers(1, 10**6, size=(b, n))
    now = np.full([b], 2 * 10**6, np.int64)
    layer = HistoryMatchCounts(num_slots, nested_types=2)
    got = layer.encode(keys, valid, times, now)
    want = encode_reference(tf.constant(keys), tf.constant(valid),
                            tf.constant(times), tf.constant(now), num_slots)
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy(),
                                      err_msg=name)
    assert HistoryMatchCounts.from_config(
        layer.get_config()).nested_types == 2
