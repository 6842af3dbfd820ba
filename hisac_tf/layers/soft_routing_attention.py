"""Soft-Routing Attention: history items -> interest-agent states.

docs/design.md §2.3. Each interest agent a has a prototype p_a = sum_l
E^l[c_{a,l}] in the latent space of the frozen semantic embeddings (the
caller sums the codewords of the agent's SID). Every valid history item i
has a frozen semantic latent z_i (routes) and a learned ranking embedding
h_i (is aggregated):

    alpha_{a,i} = softmax over valid i of ( -||z_i - p_a||^2 / tau )
    u_a         = sum_i alpha_{a,i} h_i

Every agent sees the whole history, so long-tail items still contribute.
`hard=True` is the paper's hard-routing ablation: an item goes to the agent
with the identical full SID only, alpha_{a,i} = 1[SID_i == SID_a] / v_a.

Gradients: the layer applies `tf.stop_gradient` to `latents` and
`prototypes`. Routing is defined on the frozen tokenizer's space, so nothing
upstream of z or p (tokenizer tables, codebooks) trains through the routing
weights; only `values` (the ranking embeddings) receive gradients.

Cost: distances are ||z||^2 + ||p||^2 - 2 z.p with one batched matmul,
O(B.A.N.Ds) time and an [B, A, N] routing tensor (never [B, A, N, Ds]),
then one [B, A, N] x [B, N, D] matmul for the states.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from hisac_tf.layers.shape_checks import check_dim as _check_dim
from hisac_tf.layers.shape_checks import check_rank as _check_rank


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class SoftRoutingAttention(tf.keras.layers.Layer):
    """Routes history items to interest agents; returns the agent states.

    Args:
      temperature: tau > 0 of the routing softmax (smaller: sharper).
      hard: the hard-routing ablation (needs `item_sids` and `agent_sids`
        at call).

    Call args:
      latents: z [B, N, Ds] frozen semantic latents of the history items.
      values: h [B, N, D] learned ranking embeddings of the history items.
      prototypes: p [B, A, Ds] agent prototypes (sum of SID codewords).
      history_mask: [B, N] bool, True for a valid history item with a SID.
      agent_mask: [B, A] bool, True for a real (not padding) agent.
      item_sids: [B, N, L] int, the items' SIDs (hard routing only).
      agent_sids: [B, A, L] int, the agents' SIDs (hard routing only).
      training: unused (no weights, no dropout).

    Returns:
      dict(states [B, A, D], routing [B, A, N]) in the layer's compute
      dtype. A masked agent, or any agent of a user with no valid history
      item, has an all-zero state and an all-zero routing row.

    Mixed precision: the layer does its own casting (Keras autocast is
    off): distances, logits and softmax are float32 whatever the input or
    policy dtype; `values`, the states and the routing weights use the
    compute dtype.
    """

    def __init__(self, temperature: float = 1.0, hard: bool = False, **kw):
        kw.setdefault("autocast", False)
        super().__init__(**kw)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, (int, float))
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(
                "SoftRoutingAttention: `temperature` must be a finite "
                f"number > 0; received {temperature!r}"
            )
        if not isinstance(hard, bool):
            raise ValueError(
                f"SoftRoutingAttention: `hard` must be a bool; received "
                f"{hard!r}"
            )
        self.temperature = float(temperature)
        self.hard = hard

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, hard=self.hard)
        return config

    def _check_inputs(self, latents, values, prototypes, history_mask,
                      agent_mask, item_sids, agent_sids):
        me = type(self).__name__
        _check_rank(me, "latents", latents, 3, "B, N, Ds")
        _check_rank(me, "values", values, 3, "B, N, D")
        _check_rank(me, "prototypes", prototypes, 3, "B, A, Ds")
        _check_rank(me, "history_mask", history_mask, 2, "B, N")
        _check_rank(me, "agent_mask", agent_mask, 2, "B, A")
        for name, t in (("values", values), ("prototypes", prototypes),
                        ("history_mask", history_mask),
                        ("agent_mask", agent_mask)):
            _check_dim(me, name, t, 0, "B", "latents", latents, 0)
        _check_dim(me, "values", values, 1, "N", "latents", latents, 1)
        _check_dim(me, "history_mask", history_mask, 1, "N", "latents",
                   latents, 1)
        _check_dim(me, "prototypes", prototypes, 2, "Ds", "latents",
                   latents, 2)
        _check_dim(me, "agent_mask", agent_mask, 1, "A", "prototypes",
                   prototypes, 1)
        if not self.hard:
            return
        if item_sids is None or agent_sids is None:
            raise ValueError(
                f"{me}(hard=True) needs `item_sids` [B, N, L] and "
                f"`agent_sids` [B, A, L]; received item_sids="
                f"{None if item_sids is None else item_sids.shape}, "
                f"agent_sids="
                f"{None if agent_sids is None else agent_sids.shape}"
            )
        _check_rank(me, "item_sids", item_sids, 3, "B, N, L")
        _check_rank(me, "agent_sids", agent_sids, 3, "B, A, L")
        _check_dim(me, "item_sids", item_sids, 0, "B", "latents", latents, 0)
        _check_dim(me, "agent_sids", agent_sids, 0, "B", "latents",
                   latents, 0)
        _check_dim(me, "item_sids", item_sids, 1, "N", "latents", latents, 1)
        _check_dim(me, "agent_sids", agent_sids, 1, "A", "prototypes",
                   prototypes, 1)
        _check_dim(me, "agent_sids", agent_sids, 2, "L", "item_sids",
                   item_sids, 2)
        for name, t in (("item_sids", item_sids), ("agent_sids", agent_sids)):
            if not t.dtype.is_integer:
                raise ValueError(
                    f"{me}: `{name}` must be an integer tensor; received "
                    f"dtype {t.dtype.name}"
                )

    def call(
        self,
        latents,
        values,
        prototypes,
        history_mask,
        agent_mask,
        item_sids: Optional[tf.Tensor] = None,
        agent_sids: Optional[tf.Tensor] = None,
        training=None,
    ):
        del training  # No weights, no dropout.
        latents = tf.convert_to_tensor(latents)
        values = tf.convert_to_tensor(values)
        prototypes = tf.convert_to_tensor(prototypes)
        history_mask = tf.cast(history_mask, tf.bool)
        agent_mask = tf.cast(agent_mask, tf.bool)
        self._check_inputs(latents, values, prototypes, history_mask,
                           agent_mask, item_sids, agent_sids)
        # Valid (agent, item) pairs.
        valid = tf.logical_and(
            agent_mask[:, :, tf.newaxis],  # [B, A, 1]
            history_mask[:, tf.newaxis, :],  # [B, 1, N]
        )  # [B, A, N]
        if self.hard:
            routing = self._hard_routing(item_sids, agent_sids, valid)
        else:
            routing = self._soft_routing(latents, prototypes, valid)
        routing = tf.cast(routing, self.compute_dtype)  # [B, A, N]
        values = tf.cast(values, self.compute_dtype)  # [B, N, D]
        states = tf.einsum("ban,bnd->bad", routing, values)  # [B, A, D]
        return {"states": states, "routing": routing}

    def _soft_routing(self, latents, prototypes, valid):
        """float32 [B, A, N] softmax weights; zero rows where none valid."""
        z = tf.stop_gradient(tf.cast(latents, tf.float32))  # [B, N, Ds]
        p = tf.stop_gradient(tf.cast(prototypes, tf.float32))  # [B, A, Ds]
        zz = tf.reduce_sum(tf.square(z), axis=-1)  # [B, N]
        pp = tf.reduce_sum(tf.square(p), axis=-1)  # [B, A]
        zp = tf.einsum("bas,bns->ban", p, z)  # [B, A, N]
        dist = (
            pp[:, :, tf.newaxis]  # [B, A, 1]
            + zz[:, tf.newaxis, :]  # [B, 1, N]
            - 2.0 * zp
        )  # [B, A, N]
        # Rounding can make ||z - p||^2 of near-identical vectors negative.
        dist = tf.maximum(dist, 0.0)
        # Shift by the nearest valid item before dividing by tau, so the
        # best item's logit is exactly 0 and a tiny tau cannot overflow the
        # softmax into inf - inf (the softmax itself is shift invariant).
        nearest = tf.reduce_min(
            tf.where(valid, dist, tf.float32.max), axis=-1, keepdims=True
        )  # [B, A, 1]
        logits = (nearest - dist) / self.temperature  # [B, A, N]
        logits = tf.where(valid, logits, tf.float32.min)  # [B, A, N]
        alpha = tf.nn.softmax(logits, axis=-1)  # [B, A, N]
        # A row with no valid item is uniform after softmax: zero it.
        return tf.where(valid, alpha, tf.zeros_like(alpha))  # [B, A, N]

    def _hard_routing(self, item_sids, agent_sids, valid):
        """float32 [B, A, N]: 1[SID_i == SID_a] / v_a over valid items."""
        item_sids = tf.cast(item_sids, tf.int64)
        agent_sids = tf.cast(agent_sids, tf.int64)
        same = tf.reduce_all(
            tf.equal(
                agent_sids[:, :, tf.newaxis, :],  # [B, A, 1, L]
                item_sids[:, tf.newaxis, :, :],  # [B, 1, N, L]
            ),  # [B, A, N, L]
            axis=-1,
        )  # [B, A, N]
        hits = tf.cast(tf.logical_and(same, valid), tf.float32)  # [B, A, N]
        votes = tf.reduce_sum(hits, axis=-1, keepdims=True)  # [B, A, 1]
        return hits / tf.maximum(votes, 1.0)  # [B, A, N]
