"""`PatchingCompressor`: A contiguous time chunks, mean-pooled
(docs/design.md §3).

A user's n valid items, oldest first, are cut into m = min(A, n)
contiguous chunks of (almost) equal counts: the item of rank r (0-based
among the valid items) goes to chunk floor(r * m / n), so chunk sizes
differ by at most one and a user with n < A gets one item per chunk in
the first n slots. Each group state is the mean ranking embedding h of
its chunk; no prior (0), no SID.

Cost: one segment sum, N x D additions per user.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.history_compressor import (
    HistoryCompressor,
    pooled_mean,
)
from hisac_tf.compressors.registry import register_compressor


@register_compressor("patching")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class PatchingCompressor(HistoryCompressor):
    """Equal-count contiguous chunks of the valid history.

    Args:
      num_patches: A = G.

    Reads: only values and valid (every valid item takes part).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments", the Patching baseline (time chunks).

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = PatchingCompressor(num_patches=4)
    groups = compressor(values, valid)
    groups["group_states"]  # [2, 4, 8]: chunk means, oldest chunk first
    ```
    """

    def __init__(self, num_patches: int, **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_groups=num_patches, **kwargs)
        self.num_patches = self.num_groups

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """N D additions for the chunk means; bytes: one [N, D] pass."""
        return CompressionCost(groups=sizes.a, macs=sizes.n * sizes.d,
                               bytes=8 * sizes.n * sizes.d)

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        valid_i = tf.cast(valid, tf.int64)  # [B, N]
        rank = tf.cumsum(valid_i, axis=1) - 1  # [B, N] rank among valid
        n = tf.reduce_sum(valid_i, axis=1)  # [B]
        m = tf.minimum(n, self.num_patches)  # [B] chunks used
        slot = (rank * m[:, tf.newaxis]) // tf.maximum(
            n, 1
        )[:, tf.newaxis]  # [B, N] floor(r * m / n)
        states, counts = pooled_mean(values, slot, valid, self.num_patches)
        mask = counts > 0  # [B, A]
        group_sids, sid_mask = self.no_sids(values, sids)
        return {
            "group_states": states,  # [B, A, D]
            "group_mask": mask,
            "group_prior": tf.zeros_like(counts),  # [B, A]
            "group_sids": group_sids,
            "group_sid_mask": sid_mask,
            "num_active": tf.cast(m, tf.int32),  # [B]
        }

    def get_config(self):
        config = super().get_config()
        config.update(num_patches=self.num_patches)
        return config
