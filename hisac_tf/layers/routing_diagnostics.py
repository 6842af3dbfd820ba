"""`routing_diagnostics`: how soft soft routing is, per user.

docs/design.md §2.3. From the routing weights alpha [B, A, N] of
`SoftRoutingAttention` and the SIDs of agents and items it measures, per
user:

- effective_items_per_agent: exp of the entropy of alpha_{a,.} over the
  items (1: the agent reads one item; v: it reads v items evenly),
  averaged over the user's valid agents.
- off_sid_mass: sum_i alpha_{a,i} 1[SID_i != SID_a], the share of the
  agent's routing mass on items outside its own SID (0 for hard routing),
  averaged over the valid agents.
- agents_per_user: the number of real agents (agent_mask).

A valid agent is a real agent of a user with at least one valid item (its
routing row sums to 1); a user with none gets 0 for the two averages.

References: "Hierarchical Sparse Activation Compression" (HiSAC, Taobao
2026), soft-routing attention.

Example:

    out = SoftRoutingAttention()(latents=z, values=h, prototypes=p,
                                 history_mask=m_items, agent_mask=m_agents)
    d = routing_diagnostics(out["routing"], agent_sids, item_sids,
                            m_agents, m_items)
    tf.reduce_mean(d["effective_items_per_agent"])  # a batch figure
"""

from __future__ import annotations

import tensorflow as tf

from hisac_tf.layers.shape_checks import check_dim as _check_dim
from hisac_tf.layers.shape_checks import check_rank as _check_rank

_ME = "routing_diagnostics"
# The keys `routing_diagnostics` returns, [B] each.
ROUTING_KEYS = ("effective_items_per_agent", "off_sid_mass",
                "agents_per_user")


def routing_diagnostics(alpha, agent_sids, item_sids, agent_mask,
                        item_valid) -> dict:
    """Per-user routing figures (module docstring); no gradient.

    Args:
      alpha: [B, A, N] routing weights (rows sum to 1 or are all 0).
      agent_sids: [B, A, L] int, the agents' SIDs.
      item_sids: [B, N, L] int, the history items' SIDs.
      agent_mask: [B, A] bool, True for a real agent.
      item_valid: [B, N] bool, True for a valid history item.
    Returns:
      dict(effective_items_per_agent [B], off_sid_mass [B],
      agents_per_user [B]), float32.
    """
    alpha = tf.stop_gradient(tf.cast(tf.convert_to_tensor(alpha),
                                     tf.float32))
    agent_sids = tf.convert_to_tensor(agent_sids)
    item_sids = tf.convert_to_tensor(item_sids)
    agent_mask = tf.cast(agent_mask, tf.bool)
    item_valid = tf.cast(item_valid, tf.bool)
    _check_rank(_ME, "alpha", alpha, 3, "B, A, N")
    _check_rank(_ME, "agent_sids", agent_sids, 3, "B, A, L")
    _check_rank(_ME, "item_sids", item_sids, 3, "B, N, L")
    _check_rank(_ME, "agent_mask", agent_mask, 2, "B, A")
    _check_rank(_ME, "item_valid", item_valid, 2, "B, N")
    _check_dim(_ME, "agent_sids", agent_sids, 1, "A", "alpha", alpha, 1)
    _check_dim(_ME, "item_sids", item_sids, 1, "N", "alpha", alpha, 2)
    _check_dim(_ME, "agent_mask", agent_mask, 1, "A", "alpha", alpha, 1)
    _check_dim(_ME, "item_valid", item_valid, 1, "N", "alpha", alpha, 2)
    _check_dim(_ME, "item_sids", item_sids, 2, "L", "agent_sids",
               agent_sids, 2)
    for name, t in (("agent_sids", agent_sids), ("item_sids", item_sids),
                    ("agent_mask", agent_mask), ("item_valid", item_valid)):
        _check_dim(_ME, name, t, 0, "B", "alpha", alpha, 0)

    has_items = tf.reduce_any(item_valid, axis=-1)  # [B]
    valid_agent = tf.logical_and(agent_mask, has_items[:, tf.newaxis])
    agent_weight = tf.cast(valid_agent, tf.float32)  # [B, A]
    num_valid = tf.reduce_sum(agent_weight, axis=-1)  # [B]
    pair = tf.cast(tf.logical_and(
        valid_agent[:, :, tf.newaxis], item_valid[:, tf.newaxis, :]),
        tf.float32)  # [B, A, N]
    a = alpha * pair  # [B, A, N]
    # Entropy with 0 log 0 = 0.
    plogp = tf.where(a > 0.0, a * tf.math.log(tf.maximum(a, 1e-30)), 0.0)
    entropy = -tf.reduce_sum(plogp, axis=-1)  # [B, A]
    same = tf.reduce_all(tf.equal(
        tf.cast(agent_sids, tf.int64)[:, :, tf.newaxis, :],  # [B, A, 1, L]
        tf.cast(item_sids, tf.int64)[:, tf.newaxis, :, :],  # [B, 1, N, L]
    ), axis=-1)  # [B, A, N]
    off = tf.reduce_sum(a * (1.0 - tf.cast(same, tf.float32)),
                        axis=-1)  # [B, A]

    def agent_mean(per_agent):  # [B, A] -> [B]
        return tf.math.divide_no_nan(
            tf.reduce_sum(per_agent * agent_weight, axis=-1), num_valid)

    return {
        "effective_items_per_agent": agent_mean(tf.exp(entropy)),
        "off_sid_mass": agent_mean(off),
        "agents_per_user": tf.reduce_sum(
            tf.cast(agent_mask, tf.float32), axis=-1),
    }
