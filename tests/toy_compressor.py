"""A toy compressor, all in this one file: adding a compressor is one
class under one decorator (docs/design.md §3; tests/test_toy_compressor.py
runs it through the factory, the cost model and an experiment plan).

`toy_stride`: item i (oldest first) joins group i mod A; a group's state
is the mean ranking embedding of its items; no prior, no SID.
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

NAME = "toy_stride"


@register_compressor(NAME)
@tf.keras.utils.register_keras_serializable(package="hisac_tf_tests")
class StrideCompressor(HistoryCompressor):
    """Groups the history by position modulo A.

    Args:
      num_groups: A = G.
    """

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """N D additions (one segment sum); one [N, D] pass."""
        return CompressionCost(groups=sizes.a, macs=sizes.n * sizes.d,
                               bytes=8 * sizes.n * sizes.d)

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        n = tf.shape(values)[1]
        slot = tf.broadcast_to(
            tf.range(n)[tf.newaxis] % self.num_groups,
            tf.shape(valid))  # [B, N]
        states, counts = pooled_mean(values, slot, valid,
                                     self.num_groups)  # [B, G, D], [B, G]
        mask = counts > 0  # [B, G]
        group_sids, sid_mask = self.no_sids(values, sids)
        return {
            "group_states": states,
            "group_mask": mask,
            "group_prior": tf.zeros(tf.shape(mask), tf.float32),  # [B, G]
            "group_sids": group_sids,  # [B, G, L]
            "group_sid_mask": sid_mask,  # [B, G]
            "num_active": tf.reduce_sum(tf.cast(mask, tf.int32), 1),  # [B]
        }
