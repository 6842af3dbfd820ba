"""IdHashing, SemanticIdLookup, RankingEmbedding and SidEmbedding."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.layers.ranking_embedding import RankingEmbedding
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.layers.sid_embedding import SidEmbedding
from hisac_tf.tokenizer.semantic_tables import SemanticTables
from tests.layer_harness import check_layer


def small_tables():
    return SemanticTables(
        item_ids=np.array([3, 7, 10], np.int64),
        sids=np.array([[0, 1], [1, 0], [1, 1]], np.int32),
        latents=np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32),
        codebooks=(
            np.array([[1.0, 0.0], [0.0, 1.0]], np.float32),
            np.array([[0.5, 0.5], [0.25, -0.25]], np.float32),
        ),
    )


def test_id_hashing_padding_range_and_spread():
    layer = IdHashing(num_buckets=11)
    ids = tf.constant([[0, -5, 1, 2], [10**15, 7, 7, 3]], tf.int64)
    rows = layer(ids).numpy()
    assert rows[0, 0] == 0 and rows[0, 1] == 0
    assert np.all((rows[:, 2:] >= 1) & (rows[:, 2:] <= 10))
    assert rows[1, 1] == rows[1, 2]  # deterministic
    spread = IdHashing(101)(tf.range(1, 10_001, dtype=tf.int64)).numpy()
    counts = np.bincount(spread, minlength=101)[1:]
    assert counts.min() > 50 and counts.max() < 150  # ~99 per bucket
    with pytest.raises(ValueError, match="num_buckets must be >= 2, got 1"):
        IdHashing(1)


def test_semantic_lookup_finds_items_and_marks_oov():
    layer = SemanticIdLookup.from_tables(small_tables())
    out = layer(tf.constant([[7, 0, 3, 5], [10, 11, 1, 0]], tf.int64))
    np.testing.assert_array_equal(
        out["has_sid"], [[True, False, True, False],
                         [True, False, False, False]])
    np.testing.assert_array_equal(out["sids"][0, 0], [1, 0])
    np.testing.assert_array_equal(out["sids"][1, 0], [1, 1])
    np.testing.assert_array_equal(out["sids"][0, 3], [0, 0])
    np.testing.assert_allclose(out["latents"][0, 2], [1.0, 0.0])
    np.testing.assert_allclose(out["latents"][1, 1], [0.0, 0.0])
    # p = E1[c1] + E2[c2]
    protos = layer.prototypes(tf.constant([[[1, 0], [0, 1]]])).numpy()
    np.testing.assert_allclose(protos[0], [[0.5, 1.5], [1.25, -0.25]])
    assert not layer.trainable_weights


def test_semantic_lookup_rejects_mismatched_tables():
    layer = SemanticIdLookup(3, (2, 3), 2)
    with pytest.raises(ValueError, match=r"codebook_sizes \(2, 2\)"):
        layer.set_tables(small_tables())
    with pytest.raises(ValueError, match="shape"):
        SemanticIdLookup(4, (2, 2), 2).set_tables(small_tables())


def test_semantic_lookup_harness():
    check_layer(lambda: SemanticIdLookup(3, (2, 2), 2),
                {"item_ids": tf.constant([[7, 0, 3]], tf.int64)},
                train=False)


def test_ranking_embedding_padding_is_zero_and_trains():
    inputs = {
        "item_ids": tf.constant([[5, 6, 0]], tf.int64),
        "category_ids": tf.constant([[1, 2, 0]], tf.int64),
        "behaviors": tf.constant([[1, 4, 0]], tf.int64),
        "timestamps": tf.constant([[100, 3000, 0]], tf.int64),
        "request_time": tf.constant([4000], tf.int64),
    }
    out = check_layer(lambda: RankingEmbedding(50, 10, 8, 4), inputs)
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0, 2], np.zeros(4))
    layer = RankingEmbedding(50, 10, 8, 4)
    gaps = layer.time_gap_bucket(
        tf.constant([[3940, 3000, 0, 1]], tf.int64), tf.constant([4000]))
    # 1 min -> log2(2)=1 -> bucket 2; 16.7 min -> 4 -> 5; pad -> 0; huge -> 7
    np.testing.assert_array_equal(gaps, [[2, 5, 0, 7]])
    with pytest.raises(ValueError, match="item_buckets must be >= 2, got 1"):
        RankingEmbedding(1, 10, 8, 4)


def test_sid_embedding_masks_invalid():
    inputs = {"sids": tf.constant([[[0, 1], [1, 1]]]),
              "valid": tf.constant([[True, False]])}
    out = check_layer(lambda: SidEmbedding((2, 2), 3), inputs)
    np.testing.assert_array_equal(out[0, 1], np.zeros(3))
    assert np.abs(out[0, 0]).sum() > 0
    with pytest.raises(ValueError, match="codebook_sizes must be positive"):
        SidEmbedding((0, 2), 3)
