"""Plain numpy references for soft routing and agent target attention.

Written on purpose as straight per-user / per-agent / per-head loops in
float64, sharing no code or trick with the TF layers
`hisac_tf.layers.soft_routing_attention.SoftRoutingAttention` and
`hisac_tf.layers.agent_target_attention.AgentTargetAttention`: distances
are the direct sum of squared differences (not the ||z||^2 + ||p||^2 - 2z.p
expansion), the softmax is the textbook exp / sum over the valid entries
only (no masked logits at all), and attention is head by head.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def soft_routing(
    latents: np.ndarray,
    values: np.ndarray,
    prototypes: np.ndarray,
    history_mask: np.ndarray,
    agent_mask: np.ndarray,
    temperature: float,
    latent_variance: Optional[float] = None,
    top_m: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(states [B, A, D], routing [B, A, N]) by explicit loops.

    latents [B, N, Ds], values [B, N, D], prototypes [B, A, Ds],
    history_mask [B, N] bool, agent_mask [B, A] bool. Scores are
    -||z_i - p_a||^2 / (temperature * s2), s2 = latent_variance, or when
    None the average over the user's valid items and the Ds coordinates of
    z_{i,d}^2 (1 when that is 0). top_m >= 1: sparse routing, each
    agent keeps its top_m best-scored valid items (a full sort; ties: the
    smaller index) and the softmax runs over those only.
    """
    latents = np.asarray(latents, np.float64)
    values = np.asarray(values, np.float64)
    prototypes = np.asarray(prototypes, np.float64)
    batch, length, _ = latents.shape
    num_agents = prototypes.shape[1]
    routing = np.zeros((batch, num_agents, length))
    states = np.zeros((batch, num_agents, values.shape[2]))
    for b in range(batch):
        items = [i for i in range(length) if history_mask[b, i]]
        if latent_variance is not None:
            s2 = float(latent_variance)
        else:
            total = 0.0
            for i in items:
                for value in latents[b, i]:
                    total += float(value) * float(value)
            s2 = total / (len(items) * latents.shape[2]) if items else 0.0
            if s2 == 0.0:
                s2 = 1.0
        for a in range(num_agents):
            if not agent_mask[b, a] or not items:
                continue
            scored = []
            for i in items:
                diff = latents[b, i] - prototypes[b, a]
                scored.append(
                    (-float(np.sum(diff * diff)) / (temperature * s2), i))
            if top_m:
                scored = sorted(scored, key=lambda t: (-t[0], t[1]))[:top_m]
            top = max(s for s, _ in scored)
            exps = [math.exp(s - top) for s, _ in scored]
            total = sum(exps)
            for (_, i), e in zip(scored, exps):
                routing[b, a, i] = e / total
                states[b, a] += routing[b, a, i] * values[b, i]
    return states, routing


def hard_routing(
    values: np.ndarray,
    item_sids: np.ndarray,
    agent_sids: np.ndarray,
    history_mask: np.ndarray,
    agent_mask: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(states, routing): each agent averages the items of its exact SID."""
    values = np.asarray(values, np.float64)
    batch, length = history_mask.shape
    num_agents = agent_sids.shape[1]
    routing = np.zeros((batch, num_agents, length))
    for b in range(batch):
        for a in range(num_agents):
            if not agent_mask[b, a]:
                continue
            hits = [
                i for i in range(length)
                if history_mask[b, i]
                and tuple(item_sids[b, i]) == tuple(agent_sids[b, a])
            ]
            for i in hits:
                routing[b, a, i] = 1.0 / len(hits)
    states = np.einsum("ban,bnd->bad", routing, values)
    return states, routing


def agent_attention(
    queries: np.ndarray,
    agent_states: np.ndarray,
    agent_weights: Optional[np.ndarray],
    agent_mask: np.ndarray,
    weights: dict,
    use_prior: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """(output [B, C, O], probs [B, H, C, A]) by explicit loops.

    weights: wq [Dq, H, dk], bq [H, dk], wk [Dv, H, dk], bk [H, dk],
    wv [Dv, H, dk], bv [H, dk], wo [H, dk, O], bo [O]; optionally
    wm [H + 1, O] (attention mass: out += sum_h m_h wm[h] + any wm[H],
    m_h = log sum_a exp(score_a) - log sum_a w_a over the valid agents
    (w_a = 1 without prior), 0 if none).
    """
    queries = np.asarray(queries, np.float64)
    agent_states = np.asarray(agent_states, np.float64)
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    batch, num_cands, _ = queries.shape
    num_agents = agent_states.shape[1]
    num_heads, key_dim = w["bq"].shape
    out_dim = w["bo"].shape[0]
    output = np.zeros((batch, num_cands, out_dim))
    probs = np.zeros((batch, num_heads, num_cands, num_agents))
    for b in range(batch):
        agents = [a for a in range(num_agents) if agent_mask[b, a]]
        for c in range(num_cands):
            out = w["bo"].copy()
            for h in range(num_heads):
                q = queries[b, c] @ w["wq"][:, h, :] + w["bq"][h]
                context = np.zeros(key_dim)
                if agents:
                    scores = []
                    for a in agents:
                        k = agent_states[b, a] @ w["wk"][:, h, :] + w["bk"][h]
                        s = float(q @ k) / math.sqrt(key_dim)
                        if use_prior:
                            s += math.log(float(agent_weights[b, a]))
                        scores.append(s)
                    top = max(scores)
                    exps = [math.exp(s - top) for s in scores]
                    total = sum(exps)
                    if "wm" in w:
                        prior = sum(
                            float(agent_weights[b, a]) if use_prior else 1.0
                            for a in agents
                        )
                        mass = top + math.log(total) - math.log(prior)
                        out += mass * w["wm"][h]
                    for a, e in zip(agents, exps):
                        p = e / total
                        probs[b, h, c, a] = p
                        v = agent_states[b, a] @ w["wv"][:, h, :] + w["bv"][h]
                        context += p * v
                out += context @ w["wo"][h]
            if "wm" in w and agents:
                out += w["wm"][num_heads]
            output[b, c] = out
    return output, probs
