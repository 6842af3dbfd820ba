"""`SemanticIdLookup`: frozen item → (SID, latent z) tables and prototypes."""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class SemanticIdLookup(tf.keras.layers.Layer):
    """Holds the tokenizer's frozen tables (docs/design.md §2.1, §4).

    Raw item ids are found by binary search (`tf.searchsorted`) in the
    sorted id column, so no hash-table resource is needed and the tables
    save with the model's checkpoints. Items not in the table are OOV: no
    SID, zero latent, `has_sid` False (they take no part in voting or
    routing).

    Args:
      num_items: V, rows of the tables.
      codebook_sizes: K_l of each level (L levels).
      latent_dim: Ds.
    Weights (all non-trainable): item_ids [V] int64 sorted, sids [V, L]
    int32, latents [V, Ds], codebook_l [K_l, Ds].

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section "Item
        Tokenization" (RQ-VAE semantic IDs of the frozen multimodal embeddings).

    Example:

    ```python
    from hisac_tf.tokenizer.semantic_tables import SemanticTables

    tables = SemanticTables(
        item_ids=np.array([3, 8]), sids=np.array([[0, 1], [2, 0]], np.int32),
        latents=np.ones([2, 4], np.float32),
        codebooks=(np.zeros([3, 4], np.float32), np.zeros([2, 4], np.float32)))
    lookup = SemanticIdLookup.from_tables(tables)
    found = lookup(tf.constant([[8, 5]]))  # item 5 is not in the table
    found["sids"]  # [1, 2, 2]: (2, 0) and (0, 0)
    found["has_sid"]  # [[True, False]]
    ```
    """

    def __init__(
        self,
        num_items: int,
        codebook_sizes: Sequence[int],
        latent_dim: int,
        **kwargs,
    ):
        super().__init__(trainable=False, **kwargs)
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        if not codebook_sizes or min(codebook_sizes) < 1:
            raise ValueError(
                f"codebook_sizes must be positive, got {codebook_sizes}"
            )
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        self.num_items = num_items
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.latent_dim = latent_dim
        self.item_ids = self.add_weight(
            name="item_ids", shape=[num_items], dtype=tf.int64,
            initializer="zeros", trainable=False)
        self.sids = self.add_weight(
            name="sids", shape=[num_items, len(self.codebook_sizes)],
            dtype=tf.int32, initializer="zeros", trainable=False)
        self.latents = self.add_weight(
            name="latents", shape=[num_items, latent_dim],
            initializer="zeros", trainable=False)
        self.codebooks = [
            self.add_weight(
                name=f"codebook_{level}", shape=[k, latent_dim],
                initializer="zeros", trainable=False)
            for level, k in enumerate(self.codebook_sizes)
        ]

    @classmethod
    def from_tables(cls, tables, **kwargs) -> "SemanticIdLookup":
        """Builds the layer from a tokenizer `SemanticTables`
        (`hisac_tf.tokenizer.semantic_tables`)."""
        layer = cls(
            num_items=len(tables.item_ids),
            codebook_sizes=tables.codebook_sizes,
            latent_dim=tables.latent_dim,
            **kwargs,
        )
        layer.set_tables(tables)
        return layer

    def set_tables(self, tables) -> None:
        ids = np.asarray(tables.item_ids, np.int64)
        if ids.shape != (self.num_items,) or np.any(np.diff(ids) <= 0):
            raise ValueError(
                "tables.item_ids must be strictly increasing with "
                f"{self.num_items} entries, got shape {ids.shape}"
            )
        if tuple(tables.codebook_sizes) != self.codebook_sizes:
            raise ValueError(
                f"tables.codebook_sizes {tuple(tables.codebook_sizes)} "
                f"differ from the layer's {self.codebook_sizes}"
            )
        self.item_ids.assign(ids)
        self.sids.assign(np.asarray(tables.sids, np.int32))
        self.latents.assign(np.asarray(tables.latents, np.float32))
        for var, book in zip(self.codebooks, tables.codebooks):
            var.assign(np.asarray(book, np.float32))

    def call(self, item_ids: tf.Tensor, training=None) -> dict:
        """Looks items up.

        Args:
          item_ids: raw ids [...] int64 (0 = padding).
        Returns:
          dict(sids [..., L] int32 (0 when OOV), latents [..., Ds]
          (0 when OOV), has_sid [...] bool).
        """
        del training
        item_ids = tf.cast(item_ids, tf.int64)
        flat = tf.reshape(item_ids, [-1])  # [M]
        rows = tf.searchsorted(self.item_ids, flat, side="left")  # [M]
        rows = tf.minimum(rows, self.num_items - 1)
        found = tf.logical_and(
            tf.equal(tf.gather(self.item_ids, rows), flat), flat > 0
        )  # [M]
        sids = tf.gather(self.sids, rows)  # [M, L]
        latents = tf.gather(self.latents, rows)  # [M, Ds]
        sids = tf.where(found[:, None], sids, tf.zeros_like(sids))
        latents = tf.where(found[:, None], latents, tf.zeros_like(latents))
        shape = tf.shape(item_ids)
        return {
            "sids": tf.reshape(
                sids, tf.concat([shape, [len(self.codebook_sizes)]], 0)
            ),  # [..., L]
            "latents": tf.reshape(
                latents, tf.concat([shape, [self.latent_dim]], 0)
            ),  # [..., Ds]
            "has_sid": tf.reshape(found, shape),  # [...]
        }

    def prototypes(self, agent_sids: tf.Tensor) -> tf.Tensor:
        """p_a = Σ_l E^l[c_{a,l}]: agent_sids [..., L] -> [..., Ds]."""
        return tf.add_n([
            tf.gather(book, agent_sids[..., level])  # [..., Ds]
            for level, book in enumerate(self.codebooks)
        ])

    def get_config(self):
        config = super().get_config()
        config.pop("trainable", None)
        return {
            **config,
            "num_items": self.num_items,
            "codebook_sizes": list(self.codebook_sizes),
            "latent_dim": self.latent_dim,
        }
