"""`SimHardCompressor`: SIM's hard search, items of the candidate's category.

docs/design.md §3. The items a candidate attends to depend on the candidate, so
this is not a per-user compression: the user side is the full-history path
(`FullHistory`: every valid item a group, G = N) plus each group's raw
category id (`group_categories` [B, G] int64), and the candidate side masks
the attention: candidate c may attend to item g only when
category(g) == category(c) (a category id of 0, unknown, matches nothing).
Masked logits get float32.min and are zeroed after the softmax, so a
candidate whose category is absent from the history gets a zero attention
output (finite), exactly as a user with no valid agent.

Caching: the user state (keys, values, bias, mask of all N items) still
does not depend on the candidates, but it needs `group_categories` beside
the `STATE_KEYS`; the `encode_user` / `score_with_state` serving pair
carries only `STATE_KEYS`, so `sim_hard` cannot use that per-user cache
until the state carries this extra key (`HiSACRanker.state_keys` names it).
Per-candidate cost is that of `full`.
"""

from __future__ import annotations

from typing import Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.full_history import FullHistory
from hisac_tf.compressors.recent_compressor import item_groups
from hisac_tf.compressors.registry import register_compressor


@register_compressor("sim_hard")
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class SimHardCompressor(FullHistory):
    """Full history with each item's category, for category-masked scoring.

    Args:
      max_items: N (= G).

    Reads: sids, has_sid, categories.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Related Work" (two-stage retrieval of SIM and TWIN).
      - [SIM](https://arxiv.org/abs/2006.05639), Pi et al., CIKM 2020.

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = SimHardCompressor(max_items=10)
    groups = compressor(
        values, valid, sids=tf.zeros([2, 10, 2], tf.int32), has_sid=valid,
        categories=tf.random.uniform([2, 10], 1, 4, tf.int64))
    groups["group_categories"]  # [2, 10]: scoring masks by the candidate's
    ```
    """

    candidate_dependent = True
    required_inputs = ("sids", "has_sid", "categories")

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        return item_groups(self, values, valid, sids, has_sid, categories)


def category_mask(group_categories, group_mask, cand_categories):
    """[B, G] int, [B, G] bool, [B, C] int -> [B, C, G] bool: the items of
    the candidate's category (unknown category 0 matches nothing)."""
    cand = tf.cast(cand_categories, tf.int64)[:, :, tf.newaxis]  # [B, C, 1]
    items = tf.cast(group_categories, tf.int64)[:, tf.newaxis, :]  # [B,1,G]
    same = tf.logical_and(tf.equal(cand, items), cand > 0)  # [B, C, G]
    return tf.logical_and(
        same, tf.cast(group_mask, tf.bool)[:, tf.newaxis, :]
    )  # [B, C, G]


def category_masked_attention(
    attention, state: Mapping[str, tf.Tensor], queries, cand_categories,
    training=None,
):
    """`AgentTargetAttention.score` with a per-candidate group mask.

    A state from the layer's `encode` (keys, values [B, H, G, dk], bias
    [B, G], mask [B, G]) plus `group_categories` [B, G]; queries
    [B, C, Dq], cand_categories [B, C] -> [B, C, O] in the layer's compute
    dtype: each candidate attends over the groups of its category.
    """
    if "group_categories" not in state:
        raise ValueError(
            "sim_hard scoring needs the state's `group_categories` [B, G] "
            "(from compress_user); received a state with keys "
            f"{sorted(state)}. The encode_user/score_with_state cache "
            "does not carry it."
        )
    mask = category_mask(
        state["group_categories"], state["mask"], cand_categories
    )  # [B, C, G]
    return attention.score(
        {k: state[k] for k in ("keys", "values", "bias", "mask")},
        queries, training=training, group_mask=mask,
    )  # [B, C, O]
