"""`HiSACCompressor`: hierarchical voting + soft routing
(docs/design.md §2.2-2.3).

Groups are the user's interest agents: `HierarchicalVoting` keeps up to A
SID leaves (top-k_l children per kept node, capped at A by votes), each
agent's prototype is p_a = sum_l E^l[c_{a,l}] (codebook rows), and
`SoftRoutingAttention` gives u_a = sum_i softmax_i(-||z_i - p_a||^2 / tau)
h_i over the user's valid items that have a SID. The group prior is
log w_a, w_a = v_a^(1/T) / sum_b v_b^(1/T).

Ablations (docs/design.md §3), same class:
  * `hard_routing=True` (`hisac_hard`): alpha_{a,i} = 1[SID_i = SID_a] /
    v_a, so u_a is the mean ranking embedding of the agent's own items;
  * `use_voting=False` (`hisac_no_voting`): no top-k sparsification, all
    leaves with votes kept, capped at A by votes (ties: smaller SID).

Sparse routing (`routing_top_m` = m >= 1, `model.routing_top_m`): each
agent reads only its m nearest items (`SoftRoutingAttention(top_m=m)`).

Routing off the training step: voting, the prototypes and the routing
weights depend only on frozen inputs (SIDs, latents, codebooks, the
history mask). `plan(...)` computes them alone, as the
`ROUTING_PLAN_KEYS` tensors (e.g. in a `tf.data` map,
hisac_tf/models/routing_plan.py); `compress(..., routing_plan=plan)` then
only aggregates u = alpha h (A m D, or A N D dense) under the tape.
Without a plan (serving) everything is computed from the inputs, with
the same result.
"""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import CompressionCost
from hisac_tf.compressors.history_compressor import (
    ROUTING_PLAN_KEYS,
    SPARSE_PLAN_KEYS,
    HistoryCompressor,
)
from hisac_tf.compressors.registry import register_compressor
from hisac_tf.layers.hierarchical_voting import HierarchicalVoting
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.soft_routing_attention import SoftRoutingAttention


def routed_positions(index, weights, n) -> dict:
    """The history positions sparse routing reads, for embedding only
    them (hisac_tf/models/embedded_history.py).

    Args:
      index: [B, A, K] int, each agent's routed positions in [0, N).
      weights: [B, A, K] its routing weights; a position read only with
        weight 0 (padding, an unused agent) is not routed.
      n: N, the history length.
    Returns:
      routing_positions [B, U] int32: each row's distinct routed
        positions, ascending, then unrouted positions as padding (U =
        the batch's largest count of routed positions, >= 1 when N >= 1,
        <= min(N, A K));
      routing_position_mask [B, U] bool: True for a routed position;
      routing_slots [B, A, K] int32: where index[b, a, k] is in
        routing_positions[b] (0 for a weight-0 entry).
    """
    index = tf.cast(index, tf.int32)
    routed = weights > 0  # [B, A, K]
    shape = tf.shape(index)  # (B, A, K)
    flat = tf.reshape(index, tf.stack([shape[0], -1]))  # [B, A K]
    rows = tf.broadcast_to(tf.range(shape[0])[:, tf.newaxis],
                           tf.shape(flat))  # [B, A K]
    hits = tf.scatter_nd(
        tf.stack([rows, flat], axis=-1),  # [B, A K, 2]
        tf.reshape(tf.cast(routed, tf.int32), tf.shape(flat)),
        tf.stack([shape[0], n]))  # [B, N] routed reads per position
    used = tf.cast(hits > 0, tf.int32)  # [B, N]
    count = tf.reduce_sum(used, axis=1)  # [B]
    width = tf.maximum(tf.reduce_max(tf.concat([count, [0]], 0)),
                       tf.minimum(1, n))  # U
    # Routed positions first, each part ascending (a stable sort).
    order = tf.argsort(1 - used, axis=1, stable=True)  # [B, N]
    slot_of = tf.cumsum(used, axis=1, exclusive=True)  # [B, N]
    return {
        "routing_positions": order[:, :width],  # [B, U]
        "routing_position_mask": (
            tf.range(width)[tf.newaxis, :] < count[:, tf.newaxis]),  # [B, U]
        "routing_slots": tf.where(
            routed, tf.gather(slot_of, index, batch_dims=1),
            0),  # [B, A, K]
    }


@register_compressor("hisac_no_voting", use_voting=False)
@register_compressor("hisac_hard", hard_routing=True)
@register_compressor("hisac")  # applied first: registered first
@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class HiSACCompressor(HistoryCompressor):
    """HiSAC's interest agents as groups.

    Args:
      codebook_sizes: K_l of the L semantic-ID levels.
      top_k: k_l per level (ignored when use_voting=False).
      num_agents: A = G.
      vote_temperature: T of the agent weights.
      routing_temperature: tau of soft routing.
      hard_routing: the `hisac_hard` ablation.
      use_voting: False for the `hisac_no_voting` ablation.
      routing_top_m: 0: dense soft routing (the paper's); m >= 1: each
        agent keeps its m nearest items (m >= N is dense).

    Reads: latents, sids, has_sid, codebooks ([sum_l K_l, Ds], the L
    codebooks concatenated by rows, level 1 first).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, sections
        "Hierarchical Voting" and "Soft-Routing Attention".

    Example:

    ```python
    compressor = HiSACCompressor(codebook_sizes=(4, 4), top_k=(2, 2),
                                 num_agents=3)
    b, n = 1, 5
    groups = compressor(
        tf.random.normal([b, n, 8]),  # h [B, N, D]
        valid=tf.ones([b, n], tf.bool),
        latents=tf.random.normal([b, n, 2]),  # z [B, N, Ds]
        sids=tf.constant([[[0, 1], [0, 1], [0, 2], [1, 3], [1, 3]]]),
        has_sid=tf.ones([b, n], tf.bool),
        codebooks=tf.random.normal([8, 2]))  # [K_1 + K_2, Ds]
    groups["group_states"].shape  # [1, 3, 8]: A = 3 interest agents
    ```
    """

    required_inputs = ("latents", "sids", "has_sid", "codebooks")
    supports_routing_plan = True

    def __init__(
        self,
        codebook_sizes: Sequence[int],
        top_k: Sequence[int],
        num_agents: int,
        vote_temperature: float = 1.0,
        routing_temperature: float = 1.0,
        hard_routing: bool = False,
        use_voting: bool = True,
        routing_top_m: int = 0,
        **kwargs,
    ):
        kwargs.pop("num_groups", None)
        super().__init__(num_groups=num_agents, **kwargs)
        for name, flag in (("hard_routing", hard_routing),
                           ("use_voting", use_voting)):
            if not isinstance(flag, bool):
                raise ValueError(f"HiSACCompressor: `{name}` must be a bool;"
                                 f" received {flag!r}")
        self.codebook_sizes = [int(k) for k in codebook_sizes]
        self.top_k = [int(k) for k in top_k]
        self.num_agents = int(num_agents)
        self.vote_temperature = float(vote_temperature)
        self.routing_temperature = float(routing_temperature)
        self.hard_routing = hard_routing
        self.use_voting = use_voting
        self.routing_top_m = check_int("HiSACCompressor", "routing_top_m",
                                       routing_top_m, 0)
        if self.routing_top_m and hard_routing:
            raise ValueError(
                "HiSACCompressor: `routing_top_m` applies to soft routing; "
                f"received routing_top_m={routing_top_m!r} with "
                "hard_routing=True"
            )
        # Without voting every level keeps all its children: the kept
        # leaves are all leaves with votes, then the cap A applies.
        kept = self.top_k if use_voting else self.codebook_sizes
        self.voting = HierarchicalVoting(
            self.codebook_sizes, kept, self.num_agents,
            temperature=self.vote_temperature,
        )
        self.routing = SoftRoutingAttention(
            temperature=self.routing_temperature, hard=hard_routing,
            top_m=self.routing_top_m, dtype=self.dtype_policy,
        )
        self._offsets = np.concatenate(
            [[0], np.cumsum(self.codebook_sizes)[:-1]]
        ).astype(np.int32)  # [L] first row of each level's codebook

    @classmethod
    def from_values(cls, values, hard_routing: bool = False,
                    use_voting: bool = True) -> "HiSACCompressor":
        return cls(
            codebook_sizes=values.need("codebook_sizes"),
            top_k=values.need("top_k"),
            num_agents=values.num_groups,
            vote_temperature=values.vote_temperature,
            routing_temperature=values.routing_temperature,
            hard_routing=hard_routing,
            use_voting=use_voting,
            routing_top_m=values.routing_top_m,
        )

    @classmethod
    def cost(cls, sizes, hard_routing: bool = False,
             use_voting: bool = True) -> CompressionCost:
        """Soft routing: (L-1) A Ds prototypes (sum of L codewords), N Ds
        + A Ds squared norms of z and p, A N Ds distances z . p, A K D
        for u_a = sum_i alpha_ai h_i (K = `sizes.routed_items`: N dense,
        m sparse); bytes, dense: z_aug [N, Ds + 3], ||z||^2, values ++ 1
        [N, D + 1], exp [A, N]; sparse: the operands, the top-m selection
        reading the [A, N] logits, the sparse product reading m rows of h
        per agent and the [A, m] softmax. All but the aggregation (A K D)
        reads frozen inputs (off the tape). Sparse routing's integer
        work: the top-m selection scans the A N logits
        (`select_elements`), and `routed_positions` argsorts the N
        positions (N ceil(log2 N) `sort_steps`); the softmax's exp over
        [A, K] is `exp_elements`. Hard routing: a dense
        [A, N] x [N, D] product; bytes: the [A, N, L] compare, [A, N]
        hits and the divide. HierarchicalVoting runs in front either way
        (without voting it keeps every child)."""
        n, a, d, ds = sizes.n, sizes.a, sizes.d, sizes.ds
        if hard_routing:
            return CompressionCost(groups=a, macs=a * n * d,
                                   bytes=8 * a * n * 4, voting=True)
        k = sizes.routed_items
        macs = ((sizes.num_levels - 1) * a * ds + n * ds + a * ds
                + a * n * ds + a * k * d)
        if k < n:
            nbytes = (8 * n * (ds + 3) + 4 * n * ds + 8 * a * n
                      + 8 * a * k * (d + 2))
            aggregation_bytes = 8 * a * k * (d + 1)
        else:
            nbytes = (8 * n * (ds + 3) + 4 * n * ds + 8 * n * (d + 1)
                      + 8 * a * n)
            aggregation_bytes = 4 * a * n + 8 * n * (d + 1)
        sparse = k < n
        return CompressionCost(
            groups=a, macs=macs, bytes=nbytes, voting=True,
            off_tape_macs=macs - a * k * d,
            off_tape_bytes=max(0, nbytes - aggregation_bytes),
            select_elements=a * n if sparse else 0,
            sort_steps=n * max(1, (n - 1).bit_length()) if sparse else 0,
            exp_elements=a * k)  # the routing softmax's exp, [A, K]

    def prototypes(self, codebooks, agent_sids):
        """p_a = sum_l E^l[c_{a,l}]: [sum K, Ds], [B, A, L] -> [B, A, Ds]."""
        rows = agent_sids + tf.constant(self._offsets)  # [B, A, L]
        return tf.reduce_sum(
            tf.gather(codebooks, rows), axis=2
        )  # [B, A, L, Ds] -> [B, A, Ds]

    def _agents(self, valid, latents, sids, has_sid, codebooks):
        """(routable [B, N], voting's agents, prototypes [B, A, Ds])."""
        routable = tf.logical_and(tf.cast(valid, tf.bool),
                                  tf.cast(has_sid, tf.bool))  # [B, N]
        agents = self.voting(sids, mask=routable)
        if self.hard_routing:  # Hard routing compares SIDs only.
            shape = tf.shape(agents["agent_sids"])
            prototypes = tf.zeros(
                tf.stack([shape[0], shape[1], tf.shape(latents)[2]])
            )  # [B, A, Ds], unused
        else:
            prototypes = self.prototypes(
                tf.cast(codebooks, tf.float32), agents["agent_sids"]
            )  # [B, A, Ds]
        return routable, agents, prototypes

    def routes_sparsely(self, length) -> bool:
        return not self.hard_routing and self.routing.is_sparse(length)

    def plan(self, valid, latents, sids, has_sid, codebooks) -> dict:
        """The routing alone, from frozen inputs: `ROUTING_PLAN_KEYS`
        (`routing_index` only for sparse routing). valid, has_sid [B, N];
        latents [B, N, Ds]; sids [B, N, L]; codebooks [sum K, Ds]."""
        routable, agents, prototypes = self._agents(
            valid, latents, sids, has_sid, codebooks)
        route = self.routing.route(
            latents, prototypes, routable, agents["agent_mask"],
            item_sids=sids, agent_sids=agents["agent_sids"])
        out = {
            "routing_agent_sids": agents["agent_sids"],  # [B, A, L]
            "routing_agent_mask": agents["agent_mask"],  # [B, A]
            "routing_agent_weights": agents["agent_weights"],  # [B, A]
            "routing_num_active": agents["num_active"],  # [B]
            "routing_weights": route["weights"],  # [B, A, K]
        }
        if route["index"] is not None:
            out["routing_index"] = route["index"]  # [B, A, K]
            out.update(routed_positions(
                route["index"], route["weights"], tf.shape(valid)[1]))
        return {k: tf.stop_gradient(v) for k, v in out.items()}

    def _groups(self, states, agent_mask, agent_weights, agent_sids,
                num_active):
        tiny = float(np.finfo(np.float32).tiny)
        prior = tf.where(
            agent_mask, tf.math.log(tf.maximum(agent_weights, tiny)), 0.0,
        )  # [B, A]
        return {
            "group_states": states,  # [B, A, D]
            "group_mask": agent_mask,
            "group_prior": prior,
            "group_sids": agent_sids,  # [B, A, L]
            "group_sid_mask": agent_mask,
            "num_active": num_active,
        }

    def _from_plan(self, values, plan) -> dict:
        """Groups from a precomputed `plan` (only u = alpha h here)."""
        needed = [k for k in ROUTING_PLAN_KEYS if k not in SPARSE_PLAN_KEYS]
        missing = [k for k in needed if k not in plan]
        if missing:
            raise ValueError(
                f"HiSACCompressor: routing_plan lacks {missing} (it needs "
                f"{', '.join(needed)}, and routing_index for sparse "
                f"routing); received keys {sorted(plan)}"
            )
        weights = plan["routing_weights"]  # [B, A, K]
        index = plan.get("routing_index")  # [B, A, K] or None
        rank = weights.shape.rank
        if rank is not None and (
                rank != 3
                or weights.shape[1] not in (None, self.num_agents)):
            raise ValueError(
                "HiSACCompressor: routing_plan['routing_weights'] must be "
                f"[B, A = {self.num_agents}, K]; received shape "
                f"{weights.shape.as_list()}"
            )
        states = self.routing.aggregate(values, weights, index)  # [B, A, D]
        mask = tf.cast(plan["routing_agent_mask"], tf.bool)  # [B, A]
        return self._groups(
            states, mask,
            tf.cast(plan["routing_agent_weights"], tf.float32),
            tf.cast(plan["routing_agent_sids"], tf.int32),
            tf.cast(plan["routing_num_active"], tf.int32))

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training, routing_plan=None) -> dict:
        if routing_plan is not None:
            return self._from_plan(values, routing_plan)
        routable, agents, prototypes = self._agents(
            valid, latents, sids, has_sid, codebooks)
        routed = self.routing(
            latents=latents,
            values=values,
            prototypes=prototypes,
            history_mask=routable,
            agent_mask=agents["agent_mask"],
            item_sids=sids,
            agent_sids=agents["agent_sids"],
            training=training,
        )
        out = self._groups(routed["states"], agents["agent_mask"],
                           agents["agent_weights"], agents["agent_sids"],
                           agents["num_active"])
        out["routing"] = routed["routing"]  # [B, A, N] diagnostics only
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            codebook_sizes=list(self.codebook_sizes),
            top_k=list(self.top_k),
            num_agents=self.num_agents,
            vote_temperature=self.vote_temperature,
            routing_temperature=self.routing_temperature,
            hard_routing=self.hard_routing,
            use_voting=self.use_voting,
            routing_top_m=self.routing_top_m,
        )
        return config
