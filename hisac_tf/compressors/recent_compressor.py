"""`RecentCompressor`: the user's last A valid items (docs/design.md §3).

Each group is one item: the newest min(A, n) valid items, oldest first in
slots 0 .. min(A, n) - 1. Group state = the item's ranking embedding h,
group SID = the item's SID (masked when the item has none); no prior.

Cost: a row-wise binary search, no multiply-add.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.history_compressor import (
    HistoryCompressor,
    select_items,
)
from hisac_tf.compressors.registry import register_compressor


def item_groups(compressor: HistoryCompressor, values, valid, sids, has_sid,
                categories=None) -> dict:
    """The newest G valid items as groups (shared by recent/full/sim_hard).

    values [B, N, D], valid [B, N], sids [B, N, L], has_sid [B, N],
    categories [B, N] or None -> the group dict (plus group_categories
    [B, G] int64 when categories are given).
    """
    tensors = {
        "values": values,
        "sids": tf.cast(sids, tf.int32),
        "has_sid": tf.logical_and(valid, has_sid),
    }
    if categories is not None:
        tensors["categories"] = tf.cast(categories, tf.int64)
    picked, mask, count = select_items(
        tensors, valid, compressor.num_groups, newest=True
    )  # [B, G, ...], [B, G], [B]
    out = {
        "group_states": picked["values"],  # [B, G, D]
        "group_mask": mask,
        "group_prior": tf.zeros(tf.shape(mask), tf.float32),  # [B, G]
        "group_sids": picked["sids"],  # [B, G, L]
        "group_sid_mask": picked["has_sid"],  # [B, G]
        "num_active": count,  # [B]
    }
    if categories is not None:
        out["group_categories"] = picked["categories"]  # [B, G]
    return out


@register_compressor("recent")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class RecentCompressor(HistoryCompressor):
    """The last A valid items, one group each.

    Args:
      num_items: A = G.

    Reads: sids, has_sid (for the groups' SID embeddings).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (the newest behaviours only, the short-term reference).

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = RecentCompressor(num_items=4)
    groups = compressor(values, valid, sids=tf.zeros([2, 10, 2], tf.int32),
                        has_sid=valid)
    groups["group_mask"]  # [2, 4]: the newest 4 items, and the 3 of row 2
    ```
    """

    required_inputs = ("sids", "has_sid")

    def __init__(self, num_items: int, **kwargs):
        kwargs.pop("num_groups", None)
        super().__init__(num_groups=num_items, **kwargs)
        self.num_items = self.num_groups

    @classmethod
    def cost(cls, sizes) -> CompressionCost:
        """G = A items gathered: no multiply-add, and the gather is
        counted with the groups' embeddings."""
        return CompressionCost(groups=sizes.a)

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        return item_groups(self, values, valid, sids, has_sid)

    def get_config(self):
        config = super().get_config()
        config.update(num_items=self.num_items)
        return config
