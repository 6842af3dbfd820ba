"""`RankingEmbedding`: the learned item representation h_i
(docs/design.md §2.3)."""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.buckets import MIN_BUCKETS
from hisac_tf.layers.id_hashing import IdHashing

NUM_BEHAVIORS = 8  # Behaviour types 1..7 (0 = padding); larger ids clip.


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class RankingEmbedding(tf.keras.layers.Layer):
    """Learned ranking embeddings of history items and candidates.

    h_i = e_item(i) + e_category(i) + e_behavior(i) + e_gap(i), where the
    time gap is `request_time - timestamp` in log2-spaced minute buckets.
    Candidates use the same item and category tables (`embed_candidates`).
    Raw ids are hashed in the graph (`IdHashing`); row 0 is padding and is
    zeroed, so padding contributes nothing.

    Args:
      item_buckets, category_buckets: hash buckets of the id tables.
      time_gap_buckets: buckets of the time-gap table (row 0 = padding).
      embedding_dim: D.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Soft-Routing Attention" (the learned ranking embedding, item features
        with time decay, is what the agents aggregate).

    Example:

    ```python
    embed = RankingEmbedding(item_buckets=1000, category_buckets=100,
                             time_gap_buckets=16, embedding_dim=8)
    h = embed(
        item_ids=tf.constant([[5, 7, 0]]),  # [B=1, N=3], 0 = padding
        category_ids=tf.constant([[1, 2, 0]]),
        behaviors=tf.constant([[1, 4, 0]]),
        timestamps=tf.constant([[100, 7200, 0]]),
        request_time=tf.constant([9000]),
    )  # [1, 3, 8], zeros for the padding item
    ```
    """

    def __init__(
        self,
        item_buckets: int,
        category_buckets: int,
        time_gap_buckets: int,
        embedding_dim: int,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (
            ("item_buckets", item_buckets),
            ("category_buckets", category_buckets),
            ("time_gap_buckets", time_gap_buckets),
        ):
            if value < MIN_BUCKETS:
                raise ValueError(
                    f"{name} must be >= {MIN_BUCKETS}, got {value}")
        if embedding_dim < 1:
            raise ValueError(
                f"embedding_dim must be >= 1, got {embedding_dim}"
            )
        self.item_buckets = item_buckets
        self.category_buckets = category_buckets
        self.time_gap_buckets = time_gap_buckets
        self.embedding_dim = embedding_dim
        self.item_hash = IdHashing(item_buckets)
        self.category_hash = IdHashing(category_buckets)
        self.item_table = tf.keras.layers.Embedding(
            item_buckets, embedding_dim, name="item_embedding")
        self.category_table = tf.keras.layers.Embedding(
            category_buckets, embedding_dim, name="category_embedding")
        self.behavior_table = tf.keras.layers.Embedding(
            NUM_BEHAVIORS, embedding_dim, name="behavior_embedding")
        self.time_gap_table = tf.keras.layers.Embedding(
            time_gap_buckets, embedding_dim, name="time_gap_embedding")

    def _lookup(self, table, rows):
        """rows [...] -> [..., D]; row 0 (padding) gives zeros."""
        emb = table(rows)  # [..., D]
        return emb * tf.cast(rows > 0, emb.dtype)[..., None]

    def time_gap_bucket(self, timestamps, request_time):
        """timestamps [B, N], request_time [B] -> bucket ids [B, N] int64."""
        timestamps = tf.cast(timestamps, tf.int64)
        request_time = tf.cast(request_time, tf.int64)
        gap = tf.cast(request_time[:, None] - timestamps, tf.float32)
        minutes = tf.maximum(gap, 0.0) / 60.0  # [B, N]
        bucket = tf.floor(tf.math.log(1.0 + minutes) / tf.math.log(2.0))
        bucket = tf.cast(bucket, tf.int64) + 1
        bucket = tf.minimum(bucket, self.time_gap_buckets - 1)
        return tf.where(timestamps > 0, bucket, tf.zeros_like(bucket))

    def embed_candidates(self, item_ids, category_ids):
        """item_ids, category_ids [B, C] -> ([B, C, D], [B, C, D])."""
        items = self._lookup(self.item_table, self.item_hash(item_ids))
        cats = self._lookup(
            self.category_table, self.category_hash(category_ids)
        )
        return items, cats

    def call(
        self, item_ids, category_ids, behaviors, timestamps, request_time,
        training=None,
    ):
        """History [B, N] int64 (+ request_time [B]) -> h [B, N, D]."""
        del training
        items, cats = self.embed_candidates(item_ids, category_ids)
        beh = tf.clip_by_value(
            tf.cast(behaviors, tf.int64), 0, NUM_BEHAVIORS - 1
        )
        gaps = self.time_gap_bucket(timestamps, request_time)
        return (
            items + cats
            + self._lookup(self.behavior_table, beh)
            + self._lookup(self.time_gap_table, gaps)
        )  # [B, N, D]

    def get_config(self):
        return {
            **super().get_config(),
            "item_buckets": self.item_buckets,
            "category_buckets": self.category_buckets,
            "time_gap_buckets": self.time_gap_buckets,
            "embedding_dim": self.embedding_dim,
        }
