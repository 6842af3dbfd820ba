"""`SidEmbedding`: learned embeddings of semantic-ID paths."""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class SidEmbedding(tf.keras.layers.Layer):
    """Sum over levels of a learned embedding of each level's code.

    Used for candidates' SIDs and agents' SID paths (docs/design.md §2.4).
    Entries without a SID (OOV items, padded agents) get a zero vector.

    Args:
      codebook_sizes: K_l of each of the L levels.
      embedding_dim: D.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Soft-Routing Attention" (agents and candidates carry their SID paths
        into the target attention).

    Example:

    ```python
    embed = SidEmbedding(codebook_sizes=(4, 4), embedding_dim=8)
    sids = tf.constant([[[1, 2], [0, 0]]])  # [B=1, 2, L=2]
    e = embed(sids, tf.constant([[True, False]]))  # [1, 2, 8]; 2nd: zeros
    ```
    """

    def __init__(
        self, codebook_sizes: Sequence[int], embedding_dim: int, **kwargs
    ):
        super().__init__(**kwargs)
        if not codebook_sizes or min(codebook_sizes) < 1:
            raise ValueError(
                f"codebook_sizes must be positive, got {codebook_sizes}"
            )
        if embedding_dim < 1:
            raise ValueError(
                f"embedding_dim must be >= 1, got {embedding_dim}"
            )
        self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
        self.embedding_dim = embedding_dim
        self.tables = [
            tf.keras.layers.Embedding(k, embedding_dim, name=f"sid_level_{i}")
            for i, k in enumerate(self.codebook_sizes)
        ]

    def call(self, sids, valid, training=None):
        """sids [..., L] int, valid [...] bool -> [..., D]."""
        del training
        emb = tf.add_n([
            table(sids[..., level])  # [..., D]
            for level, table in enumerate(self.tables)
        ])
        return emb * tf.cast(valid, emb.dtype)[..., None]

    def get_config(self):
        return {
            **super().get_config(),
            "codebook_sizes": list(self.codebook_sizes),
            "embedding_dim": self.embedding_dim,
        }
