"""`ShortTermBranch`: exact target attention over the newest S behaviours
(docs/design.md §2.6)."""

from __future__ import annotations

from typing import Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.models.branch import (
    Branch,
    attention_state_spec,
    encode_groups,
)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class ShortTermBranch(Branch):
    """The newest S valid items, each its own group, under target
    attention with its own weights.

    Args:
      length: S, the behaviours kept (>= 1).
      num_heads: H of the target attention.
      key_dim: dk per head.
      output_dim: width D' of the branch's output.
      attention_mass: the attention also returns its log-partition.
      state_prefix: namespace of the state (default "short_").

    State (`state_spec`): keys, values [B, H, S, dk], bias [B, S], mask
    [B, S] (as `short_keys`, ... in the ranker's state).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (the short-term branch beside the long-term one).

    Example:

    ```python
    branch = ShortTermBranch(length=50, num_heads=2, key_dim=8,
                             output_dim=16)
    state = branch.encode(history)  # keys [B, 2, 50, 8], mask [B, 50]
    out = branch.score(state, candidates)  # [B, C, 16]
    ```
    """

    def __init__(
        self,
        length: int,
        num_heads: int = 2,
        key_dim: int = 8,
        output_dim: int = 16,
        attention_mass: bool = True,
        state_prefix: str = "short_",
        **kwargs,
    ):
        super().__init__(state_prefix=state_prefix, **kwargs)
        self.length = check_int("ShortTermBranch", "length", length, 1)
        self.recent = RecentCompressor(self.length)
        self.attention = AgentTargetAttention(
            num_heads=num_heads, key_dim=key_dim, output_dim=output_dim,
            attention_mass=attention_mass, name="short_term_attention")

    def state_spec(self) -> dict:
        return attention_state_spec(self.attention, self.length)

    def encode(self, history: Mapping, training=None,
               diagnostics: bool = False) -> dict:
        del diagnostics
        # Only the newest S positions are embedded (EmbeddedHistory):
        # this branch's work does not grow with N.
        window = history.newest(self.length)  # [B, S] positions
        recent = self.recent(
            window["h"], valid=window["valid"], sids=window["sids"],
            has_sid=window["has_sid"], training=training,
        )  # the newest S items, [B, S, ...]
        out = encode_groups(recent, self.attention,
                            history["sid_embedding"])
        out["agent_mask"] = recent["group_mask"]  # [B, S]
        out["num_active"] = recent["num_active"]  # [B]
        return out

    def score(self, state: Mapping, candidates: Mapping,
              training=None) -> tf.Tensor:
        return self.attention.score(
            dict(state), candidates["queries"], training=training,
        )  # [B, C, D']

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "length": self.length,
            "num_heads": self.attention.num_heads,
            "key_dim": self.attention.key_dim,
            "output_dim": self.attention.output_dim,
            "attention_mass": self.attention.attention_mass,
        }
