"""`ItemFeatureLookup`: an item's static features, looked up in the graph
(docs/design.md §4.1)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data.item_feature_values import ItemFeatureValues
from hisac_tf.feature_config import FeatureConfig

_NAME = "ItemFeatureLookup"


def _column_shape(feature: FeatureConfig, num_items: int) -> list:
    if feature.kind == "multi_categorical":
        return [num_items, feature.max_values]
    if feature.kind == "vector":
        return [num_items, feature.dim]
    return [num_items]


def _column_dtype(feature: FeatureConfig) -> tf.DType:
    if feature.is_categorical:
        return tf.string if feature.dtype == "string" else tf.int64
    return tf.float32


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class ItemFeatureLookup(tf.keras.layers.Layer):
    """Frozen per-item feature values, found by item id.

    A 10,000-item history does not carry each item's brand 10,000 times
    per request: requests carry item ids, and the item table's values
    (`ItemFeatureValues`) are frozen weights of the model. Raw ids are
    binary-searched in the sorted id column (`tf.searchsorted`, as
    `SemanticIdLookup`); an item not in the table, and padding (id 0),
    get padding values: 0 (int64), b"" (string), 0.0 (dense), zeros
    (vector), which the feature layers embed as zeros.

    Args:
      num_items: V, rows of the table (>= 1).
      features: the item features (`FeatureConfig`, location "item").

    Weights (non-trainable): item_ids [V] int64 sorted; per feature its
    column: [V] (categorical, dense), [V, M] (multi_categorical), [V, dim]
    (vector); int64, string or float32.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Item Tokenization" (item tables looked up in the graph).

    Example:

    ```python
    from hisac_tf.data.item_feature_values import ItemFeatureValues
    from hisac_tf.feature_config import FeatureConfig

    values = ItemFeatureValues(
        item_ids=np.array([3, 8]),
        columns={"brand": np.array([b"acme", b"zeta"], object)})
    brand = FeatureConfig("brand", "item", dtype="string", hash_buckets=64)
    lookup = ItemFeatureLookup.from_values(values, [brand])
    lookup(tf.constant([[8, 5, 0]]))["brand"]  # [[b"zeta", b"", b""]]
    ```
    """

    def __init__(self, num_items: int, features: Sequence, **kwargs):
        super().__init__(trainable=False, **kwargs)
        if isinstance(num_items, bool) or not isinstance(
                num_items, (int, np.integer)) or num_items < 1:
            raise ValueError(
                f"{_NAME}: num_items must be an int >= 1; received "
                f"{num_items!r}")
        features = tuple(
            f if isinstance(f, FeatureConfig) else FeatureConfig(**f)
            for f in features)
        if not features:
            raise ValueError(f"{_NAME}: features must name at least one "
                             "item feature; received none")
        for f in features:
            if f.location != "item":
                raise ValueError(
                    f"{_NAME}: feature {f.name!r} has location "
                    f"{f.location!r}; only item features are looked up")
        self.num_items = int(num_items)
        self.features = features
        self.item_ids = self.add_weight(
            name="item_ids", shape=[self.num_items], dtype=tf.int64,
            initializer="zeros", trainable=False)
        self.columns = {}
        for f in features:
            dtype = _column_dtype(f)
            shape = _column_shape(f, self.num_items)
            if dtype == tf.string:
                init = lambda shape, dtype=None: tf.fill(shape, "")  # noqa
            else:
                init = "zeros"
            self.columns[f.name] = self.add_weight(
                name=f"{f.name}_values", shape=shape, dtype=dtype,
                initializer=init, trainable=False)

    @classmethod
    def from_values(cls, values: ItemFeatureValues,
                    features: Sequence[FeatureConfig],
                    **kwargs) -> "ItemFeatureLookup":
        """The layer holding `values` (checked against `features`)."""
        features = tuple(f for f in features if f.location == "item")
        values.check(features)
        layer = cls(num_items=len(values.item_ids), features=features,
                    **kwargs)
        layer.item_ids.assign(np.asarray(values.item_ids, np.int64))
        for f in features:
            col = np.asarray(values.columns[f.name])
            if f.is_categorical and f.dtype == "string":
                col = np.array([v if isinstance(v, bytes) else
                                str(v).encode() for v in col.ravel()],
                               object).reshape(col.shape)
            layer.columns[f.name].assign(col)
        return layer

    def call(self, item_ids, training=None) -> dict:
        """item_ids [...] int64 -> feature name -> values [...] (or
        [..., M], [..., dim]), padding values where not found."""
        del training
        item_ids = tf.cast(item_ids, tf.int64)
        flat = tf.reshape(item_ids, [-1])  # [X]
        pos = tf.searchsorted(self.item_ids, flat, side="left")  # [X]
        pos = tf.minimum(pos, self.num_items - 1)
        found = tf.logical_and(
            tf.equal(tf.gather(self.item_ids, pos), flat), flat > 0)  # [X]
        shape = tf.shape(item_ids)
        out = {}
        for f in self.features:
            col = self.columns[f.name]
            got = tf.gather(col, pos)  # [X] or [X, W]
            keep = found if got.shape.rank == 1 else found[:, None]
            got = tf.where(keep, got, tf.zeros_like(got))  # b"" for strings
            tail = tf.shape(got)[1:]
            out[f.name] = tf.reshape(
                got, tf.concat([shape, tail], 0))  # [..., (W)]
        return out

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("trainable", None)
        return {
            **config,
            "num_items": self.num_items,
            "features": [dataclasses.asdict(f) for f in self.features],
        }
