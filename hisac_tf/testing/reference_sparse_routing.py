"""Plain numpy reference for sparse (top-m) soft routing.

Straight per-user / per-agent loops in float64, sharing no code with
`hisac_tf.layers.soft_routing_attention.SoftRoutingAttention(top_m=m)`:
distances are direct sums of squared differences, each agent's m nearest
valid items are picked by a full sort of its valid items (ties: the
smaller index), and the softmax runs over those m only.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def sparse_routing(
    latents: np.ndarray,
    values: np.ndarray,
    prototypes: np.ndarray,
    history_mask: np.ndarray,
    agent_mask: np.ndarray,
    temperature: float,
    top_m: int,
    latent_variance: Optional[float] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(states [B, A, D], routing [B, A, N]) by explicit loops; each
    agent's routing row is non-zero on at most `top_m` valid items."""
    latents = np.asarray(latents, np.float64)
    values = np.asarray(values, np.float64)
    prototypes = np.asarray(prototypes, np.float64)
    batch, length, dim = latents.shape
    num_agents = prototypes.shape[1]
    routing = np.zeros((batch, num_agents, length))
    states = np.zeros((batch, num_agents, values.shape[2]))
    for b in range(batch):
        items = [i for i in range(length) if history_mask[b, i]]
        if latent_variance is not None:
            s2 = float(latent_variance)
        else:
            total = sum(float(v) * float(v) for i in items
                        for v in latents[b, i])
            s2 = total / (len(items) * dim) if items else 0.0
            s2 = s2 if s2 > 0.0 else 1.0
        for a in range(num_agents):
            if not agent_mask[b, a] or not items:
                continue
            scored = []
            for i in items:
                diff = latents[b, i] - prototypes[b, a]
                scored.append(
                    (-float(np.sum(diff * diff)) / (temperature * s2), i))
            scored.sort(key=lambda t: (-t[0], t[1]))
            kept = scored[:top_m]
            top = kept[0][0]
            exps = [math.exp(s - top) for s, _ in kept]
            norm = sum(exps)
            for (_, i), e in zip(kept, exps):
                routing[b, a, i] = e / norm
                states[b, a] += routing[b, a, i] * values[b, i]
    return states, routing
