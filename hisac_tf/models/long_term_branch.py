"""`LongTermBranch`: a history compressor and target attention over its
groups (docs/design.md §2.2-2.5, §3)."""

from __future__ import annotations

from typing import Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.sim_hard_compressor import (
    category_masked_attention,
)
from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.routing_diagnostics import routing_diagnostics
from hisac_tf.models.branch import (
    Branch,
    attention_state_spec,
    encode_groups,
)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class LongTermBranch(Branch):
    """Any `HistoryCompressor` over all N items, then target attention.

    The compressor (HiSAC's voting + soft routing, or a baseline) turns
    the history into G groups; each candidate attends over them
    (`AgentTargetAttention`, the compressor's prior as the bias). A
    candidate-dependent compressor (`sim_hard`) also caches the groups'
    categories and lets each candidate see only its own.

    Args:
      compressor: the `HistoryCompressor`.
      num_heads: H of the target attention.
      key_dim: dk per head.
      output_dim: width D' of the branch's output.
      attention_mass: the attention also returns its log-partition
        (`AgentTargetAttention(attention_mass=True)`).
      state_prefix: namespace of the state ("" keeps the names of exports
        made before branches).

    State (`state_spec`): keys, values [B, H, G, dk], bias [B, G], mask
    [B, G] (+ group_categories [B, G] int64 for `sim_hard`).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, sections
        "Soft-Routing Attention" and "Experiments".

    Example:

    ```python
    branch = LongTermBranch(make_compressor("patching", num_groups=4),
                            num_heads=2, key_dim=4, output_dim=8)
    state = branch.encode(history)  # keys [B, 2, 4, 4], ...
    out = branch.score(state, candidates)  # [B, C, 8]
    ```
    """

    def __init__(
        self,
        compressor: HistoryCompressor,
        num_heads: int = 2,
        key_dim: int = 8,
        output_dim: int = 16,
        attention_mass: bool = True,
        state_prefix: str = "",
        **kwargs,
    ):
        super().__init__(state_prefix=state_prefix, **kwargs)
        if isinstance(compressor, dict):
            compressor = tf.keras.layers.deserialize(compressor)
        if not isinstance(compressor, HistoryCompressor):
            raise ValueError(
                "LongTermBranch: compressor must be a hisac_tf.compressors."
                f"HistoryCompressor; received {type(compressor).__name__}")
        self.compressor = compressor
        self.attention = AgentTargetAttention(
            num_heads=num_heads, key_dim=key_dim, output_dim=output_dim,
            attention_mass=attention_mass, name="long_term_attention")

    @property
    def num_groups(self) -> int:
        return self.compressor.num_groups

    def state_spec(self) -> dict:
        spec = attention_state_spec(self.attention, self.num_groups)
        if self.compressor.candidate_dependent:
            spec["group_categories"] = tf.TensorSpec(
                [None, self.num_groups], tf.int64)
        return spec

    def encode(self, history: Mapping, training=None,
               diagnostics: bool = False) -> dict:
        plan = history.get("routing_plan")
        if plan is None and not diagnostics and (
                self.compressor.routes_sparsely(history["valid"].shape[1])):
            # Sparse routing in a request (or a step without the input
            # pipeline's plan): route first, from the frozen inputs.
            plan = self.compressor.plan(
                history["valid"], history["latents"], history["sids"],
                history["has_sid"], history["codebooks"])
        if plan is not None and "routing_positions" in plan:
            # Sparse routing: only the U routed items are embedded
            # (U <= min(N, A m)), so this work does not grow with N; the
            # plan comes from the input pipeline (models/routing_plan.py)
            # or from the lines above.
            routed = history.at(plan["routing_positions"],
                                plan["routing_position_mask"])  # [B, U]
            groups = self.compressor(
                routed["h"],  # [B, U, D]
                valid=routed["valid"],  # [B, U]
                training=training,
                routing_plan={**plan, "routing_index": plan[
                    "routing_slots"]},  # [B, A, K] slots of the U items
            )
        else:
            groups = self.compressor(
                history["h"],  # [B, N, D]
                valid=history["valid"],  # [B, N]
                latents=history["latents"],  # [B, N, Ds]
                sids=history["sids"],  # [B, N, L]
                has_sid=history["has_sid"],  # [B, N]
                timestamps=history["timestamps"],
                categories=history["categories"],
                codebooks=history["codebooks"],  # [sum_l K_l, Ds]
                training=training,
                # Dense routing precomputed off the step, or None.
                routing_plan=plan,
            )
        out = encode_groups(groups, self.attention,
                            history["sid_embedding"])
        if self.compressor.candidate_dependent:
            out["group_categories"] = groups["group_categories"]  # [B, G]
        out["agent_mask"] = groups["group_mask"]  # [B, G]
        out["num_active"] = groups["num_active"]  # [B]
        if diagnostics and "routing" in groups:
            out.update(routing_diagnostics(
                groups["routing"], groups["group_sids"], history["sids"],
                groups["group_mask"],
                tf.logical_and(history["valid"], history["has_sid"]),
            ))  # [B] each
        return out

    def score(self, state: Mapping, candidates: Mapping,
              training=None) -> tf.Tensor:
        queries = candidates["queries"]  # [B, C, Dq]
        if self.compressor.candidate_dependent:
            # sim_hard: each candidate sees the items of its category.
            return category_masked_attention(
                self.attention, state, queries, candidates["categories"],
                training=training)  # [B, C, D']
        return self.attention.score(
            {k: state[k] for k in ("keys", "values", "bias", "mask")},
            queries, training=training)  # [B, C, D']

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "compressor": tf.keras.layers.serialize(self.compressor),
            "num_heads": self.attention.num_heads,
            "key_dim": self.attention.key_dim,
            "output_dim": self.attention.output_dim,
            "attention_mass": self.attention.attention_mass,
        }
