"""`AggregatorCompressor`: A learned queries cross-attend the history.

docs/design.md §3 (PolyEncoder / ELASTIC style). A trainable query matrix
Q [A, H, dk] attends over the user's valid items with H heads:

    k_i = h_i W_k, v_i = h_i W_v           ([D, H, dk] each)
    alpha_{h,a,i} = softmax over valid i of q_{a,h} . k_{i,h} / sqrt(dk)
    u_a = concat_h sum_i alpha_{h,a,i} v_{i,h}       [H * dk]

dk = key_dim, default D // H (so the groups have width D when H divides
D, as the config requires). Every valid item (OOV included) takes part.
All A groups are real once the user has one valid item (group mask =
n > 0, num_active = A or 0); no prior, no SID. A user with no valid item
gets zero states.

Cost: 2 N D (H dk) multiply-adds for keys and values, then A N (H dk)
for the logits and again for the weighted sums.
"""

from __future__ import annotations

import math
from typing import Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.history_compressor import (
    HistoryCompressor,
    check_positive_int,
)
from hisac_tf.compressors.registry import register_compressor


@register_compressor("aggregator")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class AggregatorCompressor(HistoryCompressor):
    """Learned-query cross-attention pooling.

    Args:
      num_queries: A = G.
      num_heads: H.
      key_dim: dk per head; None: max(1, D // H) at build.

    Weights: queries [A, H, dk], key_kernel and value_kernel [D, H, dk]
    (glorot-uniform, no bias).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments", the Aggregator baseline (learned queries, as in
        PolyEncoder and ELASTIC).
      - [Poly-encoders](https://arxiv.org/abs/1905.01969), Humeau et al., 2020.

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = AggregatorCompressor(num_queries=4, num_heads=2)
    groups = compressor(values, valid)
    groups["group_states"]  # [2, 4, 8]
    ```
    """

    def __init__(self, num_queries: int, num_heads: int = 2,
                 key_dim: Optional[int] = None, **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_groups=num_queries, **kwargs)
        me = "AggregatorCompressor"
        self.num_queries = self.num_groups
        self.num_heads = check_positive_int(me, "num_heads", num_heads)
        self.key_dim = (
            None if key_dim is None
            else check_positive_int(me, "key_dim", key_dim)
        )

    @classmethod
    def from_values(cls, values) -> "AggregatorCompressor":
        return cls(values.num_groups, num_heads=values.num_heads)

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """2 N D hk for the keys and values, 2 A N hk for the logits and
        the weighted sums; bytes: the softmax over [A, N] and masks, and
        one [N, D] pass."""
        n, a, d, hk = sizes.n, sizes.a, sizes.d, sizes.hk
        return CompressionCost(groups=a, macs=2 * n * d * hk + 2 * a * n * hk,
                               bytes=8 * a * n * 4 + 8 * n * d)

    def build(self, values_shape):
        values_shape = tf.TensorShape(values_shape)
        d = values_shape[-1] if values_shape.rank else None
        if d is None:
            raise ValueError(
                "AggregatorCompressor needs the width D of `values` known "
                f"at build; received shape {values_shape}"
            )
        dk = self.key_dim or max(1, d // self.num_heads)
        self._dk = dk
        heads = (self.num_heads, dk)
        self.queries = self.add_weight(
            name="queries", shape=(self.num_queries,) + heads,
            initializer="glorot_uniform")
        self.key_kernel = self.add_weight(
            name="key_kernel", shape=(d,) + heads,
            initializer="glorot_uniform")
        self.value_kernel = self.add_weight(
            name="value_kernel", shape=(d,) + heads,
            initializer="glorot_uniform")
        super().build(values_shape)

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        dtype = self.compute_dtype
        k = tf.einsum(
            "bnd,dhk->bnhk", values, tf.cast(self.key_kernel, dtype)
        )  # [B, N, H, dk]
        v = tf.einsum(
            "bnd,dhk->bnhk", values, tf.cast(self.value_kernel, dtype)
        )  # [B, N, H, dk]
        q = tf.cast(self.queries, tf.float32) * (
            1.0 / math.sqrt(self._dk)
        )  # [A, H, dk]
        logits = tf.einsum(
            "ahk,bnhk->bhan", q, tf.cast(k, tf.float32)
        )  # [B, H, A, N]
        mask = valid[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, N]
        logits = tf.where(mask, logits, tf.float32.min)  # [B, H, A, N]
        probs = tf.nn.softmax(logits, axis=-1)  # [B, H, A, N]
        probs = tf.where(mask, probs, tf.zeros_like(probs))  # empty: 0
        states = tf.einsum(
            "bhan,bnhk->bahk", tf.cast(probs, dtype), v
        )  # [B, A, H, dk]
        shape = tf.shape(states)
        states = tf.reshape(
            states, tf.stack([shape[0], shape[1], self.num_heads * self._dk])
        )  # [B, A, H * dk]
        n = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
        batch = tf.shape(values)[0]
        group_mask = tf.broadcast_to(
            (n > 0)[:, tf.newaxis], tf.stack([batch, self.num_queries])
        )  # [B, A]
        group_sids, sid_mask = self.no_sids(values, sids)
        return {
            "group_states": states,
            "group_mask": group_mask,
            "group_prior": tf.zeros(tf.shape(group_mask), tf.float32),
            "group_sids": group_sids,
            "group_sid_mask": sid_mask,
            "num_active": tf.where(n > 0, self.num_queries, 0),  # [B]
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            num_queries=self.num_queries, num_heads=self.num_heads,
            key_dim=self.key_dim,
        )
        return config
