"""`IdHashing`: raw int64 ids to embedding rows, inside the graph."""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.buckets import MIN_BUCKETS


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class IdHashing(tf.keras.layers.Layer):
    """Maps raw ids to rows 1..num_buckets-1; padding (id <= 0) to row 0.

    Clients send raw ids; the model hashes them in the graph with core ops
    only (served by stock TF Serving). Ids are scrambled by an xor-shift
    mix before the modulo so that structured id ranges spread evenly.

    Args:
      num_buckets: rows of the embedding table fed by this layer (>= 2).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (raw id features: user, item, category); the in-graph
        hashing is this project's (docs/design.md §2.5).

    Example:

    ```python
    hashing = IdHashing(num_buckets=1000)
    rows = hashing(tf.constant([[0, 42, 10**12]]))  # [1, 3] int64 in 0..999
    embedding = tf.keras.layers.Embedding(1000, 8)(rows)  # [1, 3, 8]
    ```
    """

    def __init__(self, num_buckets: int, **kwargs):
        super().__init__(**kwargs)
        if num_buckets < MIN_BUCKETS:
            raise ValueError(
                f"num_buckets must be >= {MIN_BUCKETS}, got {num_buckets}")
        self.num_buckets = num_buckets

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        """ids: int [...] -> int64 rows [...] (same shape)."""
        ids = tf.cast(ids, tf.int64)
        x = tf.bitwise.bitwise_xor(ids, tf.bitwise.right_shift(
            ids, tf.constant(17, tf.int64)))
        x = tf.math.floormod(x, 2_147_483_629)  # prime; no overflow below
        x = tf.math.floormod(x * 40_503 + 12_345, 2_147_483_629)
        rows = 1 + tf.math.floormod(x, self.num_buckets - 1)
        return tf.where(ids > 0, rows, tf.zeros_like(rows))

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets}
