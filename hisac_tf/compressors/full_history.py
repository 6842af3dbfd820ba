"""`FullHistory`: no compression, every valid item is a group
(docs/design.md §3).

The quality reference and the cost to beat: target attention over all N
history items. G is static, `max_items` = the model's N (data.max_history),
so that exported states keep a fixed shape: a shorter history fills the
first n slots (oldest first) and masks the rest; a longer one (never the
case behind the input pipeline or the serving signatures, which keep the
newest N) keeps its newest `max_items` items. Group state = the item's
ranking embedding, group SID = the item's SID; no prior. The groups are
`RecentCompressor`'s with G = N.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.compressors.registry import register_compressor


@register_compressor("full")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class FullHistory(RecentCompressor):
    """Every valid history item as its own group (G = N).

    Args:
      max_items: N, the history length of the model (= G).

    Reads: sids, has_sid (for the groups' SID embeddings).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (uncompressed target attention, the cost to beat).
      - [DIN](https://arxiv.org/abs/1706.06978), Zhou et al., KDD 2018.

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = FullHistory(max_items=10)
    groups = compressor(values, valid, sids=tf.zeros([2, 10, 2], tf.int32),
                        has_sid=valid)
    groups["group_mask"]  # [2, 10]: every valid item is a group
    ```
    """

    required_inputs = ("sids", "has_sid")

    def __init__(self, max_items: int, **kwargs):
        kwargs.pop("num_items", None)
        super().__init__(num_items=max_items, **kwargs)
        self.max_items = self.num_groups

    @classmethod
    def from_values(cls, values) -> "FullHistory":
        return cls(values.need("max_history"))

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """G = N items gathered: no multiply-add (the gather is counted
        with the groups' embeddings)."""
        return CompressionCost(groups=sizes.n)

    def get_config(self):
        config = super().get_config()
        config.pop("num_items", None)
        config.update(max_items=self.max_items)
        return config
