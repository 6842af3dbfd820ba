"""Declared-feature layers: categorical tables, dense transforms, the
item table's lookup (docs/design.md §4.1)."""

import numpy as np
import pytest
import tensorflow as tf

from hisac_tf.data.item_feature_values import (
    ItemFeatureError,
    ItemFeatureValues,
)
from hisac_tf.feature_config import FeatureConfig
from hisac_tf.layers.categorical_feature_embedding import (
    CategoricalFeatureEmbedding,
)
from hisac_tf.layers.dense_feature_transform import DenseFeatureTransform
from hisac_tf.layers.item_feature_lookup import ItemFeatureLookup
from tests.layer_harness import check_config_round_trip, check_layer


@pytest.mark.parametrize("kwargs, values", [
    pytest.param(dict(hash_buckets=50), [[3, 0, 10**12]], id="int_hashed"),
    pytest.param(dict(value_dtype="string", hash_buckets=50),
                 [["a", "", "zz"]], id="string_hashed"),
    pytest.param(dict(vocabulary=[7, 3, 11]), [[3, 0, 5]], id="int_vocab"),
    pytest.param(dict(value_dtype="string", vocabulary=["x", "y"]),
                 [["y", "", "q"]], id="string_vocab"),
])
def test_categorical_embedding_layer_contract(kwargs, values):
    values = tf.constant(values)
    out = check_layer(
        lambda: CategoricalFeatureEmbedding(embedding_dim=4, **kwargs),
        {"values": values})
    assert out.shape == (1, 3, 4)
    np.testing.assert_array_equal(out[0, 1].numpy(), 0.0)  # padding


def test_vocabulary_rows_oov_and_padding():
    layer = CategoricalFeatureEmbedding(
        embedding_dim=2, value_dtype="string", vocabulary=["b", "a"])
    rows = layer.rows(tf.constant(["a", "b", "c", ""])).numpy()
    np.testing.assert_array_equal(rows, [3, 2, 1, 0])  # line i -> i + 2
    ints = CategoricalFeatureEmbedding(embedding_dim=2,
                                       vocabulary=[40, 10])
    np.testing.assert_array_equal(
        ints.rows(tf.constant([10, 40, 99, 0])).numpy(), [3, 2, 1, 0])


def test_string_hashing_is_stable_and_skips_padding_row():
    layer = CategoricalFeatureEmbedding(
        embedding_dim=2, value_dtype="string", hash_buckets=8)
    rows = layer.rows(tf.constant(["a", "a", "b", ""])).numpy()
    assert rows[0] == rows[1] and 1 <= rows[2] < 8 and rows[3] == 0


def test_multi_valued_pooling_ignores_padding():
    layer = CategoricalFeatureEmbedding(embedding_dim=3, hash_buckets=20)
    values = tf.constant([[4, 9, 0], [0, 0, 0]])
    rows = layer.rows(values)
    table = layer.embeddings.numpy()
    want = table[rows[0, :2].numpy()].mean(axis=0)
    mean = layer(values, combiner="mean").numpy()
    np.testing.assert_allclose(mean[0], want, rtol=1e-6)
    np.testing.assert_array_equal(mean[1], 0.0)  # all padding: zeros
    total = layer(values, combiner="sum").numpy()
    np.testing.assert_allclose(total[0], 2 * want, rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(embedding_dim=0, hash_buckets=4), "embedding_dim"),
    (dict(embedding_dim=2), "exactly one of hash_buckets"),
    (dict(embedding_dim=2, hash_buckets=1), "hash_buckets must be >= 2"),
    (dict(embedding_dim=2, vocabulary=[1, 1]), "twice"),
    (dict(embedding_dim=2, vocabulary=[0, 1]), "ids >= 1"),
    (dict(embedding_dim=2, value_dtype="float", hash_buckets=4),
     "value_dtype"),
])
def test_categorical_embedding_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CategoricalFeatureEmbedding(**kwargs)


def test_dense_transform_layer_contract_and_values():
    x = tf.constant([[0.0, 3.0, np.nan]])
    out = check_layer(
        lambda: DenseFeatureTransform("log1p_standardize", mean=1.0,
                                      std=0.5, clip_max=2.0, default=0.0),
        {"values": x})
    want = np.minimum((np.log1p([0.0, 3.0, 0.0]) - 1.0) / 0.5, 2.0)
    np.testing.assert_allclose(out.numpy()[0], want, rtol=1e-6)
    plain = DenseFeatureTransform()(tf.constant([np.nan]))
    assert np.isnan(plain.numpy()[0])  # no default: refused upstream


@pytest.mark.parametrize("kwargs, message", [
    (dict(transform="sqrt"), "transform"),
    (dict(transform="standardize"), "needs mean and std"),
    (dict(transform="standardize", mean=0.0, std=0.0), "needs mean"),
    (dict(clip_min=2.0, clip_max=1.0), "clip_min"),
    (dict(default=float("nan")), "default"),
])
def test_dense_transform_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DenseFeatureTransform(**kwargs)


ITEM_FEATURES = [
    FeatureConfig("brand", "item", dtype="string", hash_buckets=32),
    FeatureConfig("tags", "item", kind="multi_categorical",
                  hash_buckets=32, max_values=2),
    FeatureConfig("price", "item", kind="dense"),
    FeatureConfig("content", "item", kind="vector", dim=3),
]


def item_values():
    return ItemFeatureValues(
        item_ids=np.array([2, 5, 9], np.int64),
        columns={
            "brand": np.array([b"a", b"b", b"c"], object),
            "tags": np.array([[1, 2], [3, 0], [0, 0]], np.int64),
            "price": np.array([1.5, 2.5, 3.5], np.float32),
            "content": np.arange(9, dtype=np.float32).reshape(3, 3),
        })


def test_item_feature_lookup_finds_items_and_pads_others():
    lookup = ItemFeatureLookup.from_values(item_values(), ITEM_FEATURES)
    out = lookup(tf.constant([[5, 7, 0], [9, 2, 2]]))
    assert out["brand"].numpy().tolist() == [[b"b", b"", b""],
                                             [b"c", b"a", b"a"]]
    np.testing.assert_array_equal(out["tags"].numpy()[0],
                                  [[3, 0], [0, 0], [0, 0]])
    np.testing.assert_allclose(out["price"].numpy(),
                               [[2.5, 0, 0], [3.5, 1.5, 1.5]])
    assert out["content"].shape == (2, 3, 3)
    np.testing.assert_array_equal(out["content"].numpy()[0, 1], 0.0)
    check_config_round_trip(lookup)
    clone = ItemFeatureLookup.from_config(lookup.get_config())
    clone.set_weights(lookup.get_weights())
    assert clone(tf.constant([5]))["brand"].numpy().tolist() == [b"b"]


def test_item_feature_lookup_layer_contract_numeric_columns():
    numeric = [f for f in ITEM_FEATURES if f.dtype != "string"]
    values = item_values()
    values = ItemFeatureValues(values.item_ids, {
        k: v for k, v in values.columns.items() if k != "brand"})
    check_layer(lambda: ItemFeatureLookup.from_values(values, numeric),
                {"item_ids": tf.constant([[5, 1]], tf.int64)}, train=False)


def test_item_feature_lookup_errors_name_the_feature():
    bad = ItemFeatureValues(np.array([1, 2], np.int64),
                            {"brand": np.array([1, 2], np.int64)})
    with pytest.raises(ItemFeatureError, match="brand"):
        ItemFeatureLookup.from_values(bad, ITEM_FEATURES[:1])
    with pytest.raises(ValueError, match="only item features"):
        ItemFeatureLookup(2, [FeatureConfig("hour", "context",
                                            hash_buckets=4)])
