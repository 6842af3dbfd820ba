"""The straightforward TF target attention and soft routing, kept as
references for the lean layers.

These are the layers' previous code paths, written the plain way: masked
logits re-masked with `tf.where` on [B, H, C, A], `tf.nn.softmax`, a
second `tf.where` to zero masked agents, and a separate logsumexp over the
whole logits for the attention mass; routing builds the [B, A, N] valid
mask, clamps the expanded distance, shifts by the nearest valid item,
divides by tau s^2, masks, softmaxes and masks again. The lean layers
(`AgentTargetAttention.score`, `SoftRoutingAttention`) must agree with
them (tests/test_agent_target_attention.py,
tests/test_soft_routing_attention.py) and the micro-benchmark
(benchmarks/layer_floor.py) times them as "before".
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf


def attention_score(layer, state, queries, group_mask=None):
    """[B, C, O]: `layer.score` (no dropout) the previous, plain way.

    Uses the layer's own projections (`query_dense`, `output_dense`,
    `mass_dense`) and the state from `layer.encode`.
    """
    q = layer.query_dense(tf.convert_to_tensor(queries))  # [B, C, H, dk]
    q = tf.cast(q, tf.float32) * (1.0 / math.sqrt(layer.key_dim))
    k = tf.cast(state["keys"], tf.float32)  # [B, H, A, dk]
    logits = tf.einsum("bchk,bhak->bhca", q, k)  # [B, H, C, A]
    bias = tf.cast(state["bias"], tf.float32)  # [B, A]
    logits += bias[:, tf.newaxis, tf.newaxis, :]
    mask = tf.cast(state["mask"], tf.bool)[:, None, None, :]  # [B,1,1,A]
    if group_mask is not None:
        mask = tf.logical_and(
            mask, tf.cast(group_mask, tf.bool)[:, tf.newaxis])  # [B,1,C,A]
    logits = tf.where(mask, logits, tf.float32.min)  # [B, H, C, A]
    probs = tf.nn.softmax(logits, axis=-1)
    probs = tf.where(mask, probs, tf.zeros_like(probs))  # [B, H, C, A]
    probs = tf.cast(probs, layer.compute_dtype)
    values = tf.cast(state["values"], layer.compute_dtype)
    context = tf.einsum("bhca,bhak->bchk", probs, values)  # [B, C, H, dk]
    out = layer.output_dense(context)  # [B, C, O]
    if not layer.attention_mass:
        return out
    any_valid = tf.reduce_any(mask, axis=-1)  # [B, 1, 1 or C]
    prior = tf.where(mask, bias[:, None, None, :], tf.float32.min)
    lse = tf.reduce_logsumexp(logits, axis=-1)  # [B, H, C]
    lse -= tf.reduce_logsumexp(prior, axis=-1)
    lse = tf.where(any_valid, lse, 0.0)  # [B, H, C]
    flag = tf.broadcast_to(tf.cast(any_valid, tf.float32),
                           tf.shape(lse[:, :1]))  # [B, 1, C]
    mass = tf.transpose(tf.concat([lse, flag], axis=1), [0, 2, 1])
    return out + layer.mass_dense(tf.cast(mass, layer.compute_dtype))


def soft_routing(latents, values, prototypes, history_mask, agent_mask,
                 temperature: float, latent_variance: Optional[float] = None):
    """(states [B, A, D], routing [B, A, N]) float32, the previous way."""
    z = tf.cast(latents, tf.float32)  # [B, N, Ds]
    p = tf.cast(prototypes, tf.float32)  # [B, A, Ds]
    history_mask = tf.cast(history_mask, tf.bool)
    valid = tf.logical_and(
        tf.cast(agent_mask, tf.bool)[:, :, tf.newaxis],
        history_mask[:, tf.newaxis, :])  # [B, A, N]
    zz = tf.reduce_sum(tf.square(z), axis=-1)  # [B, N]
    if latent_variance is not None:
        scale = tf.fill([tf.shape(z)[0], 1, 1], float(latent_variance))
    else:
        weight = tf.cast(history_mask, tf.float32)
        mean_sq = tf.reduce_sum(zz * weight, -1) / tf.maximum(
            tf.reduce_sum(weight, -1), 1.0) / tf.cast(
                tf.shape(z)[-1], tf.float32)
        mean_sq = tf.where(mean_sq > 0.0, mean_sq, tf.ones_like(mean_sq))
        scale = mean_sq[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]
    pp = tf.reduce_sum(tf.square(p), axis=-1)  # [B, A]
    zp = tf.einsum("bas,bns->ban", p, z)  # [B, A, N]
    dist = tf.maximum(pp[:, :, None] + zz[:, None, :] - 2.0 * zp, 0.0)
    nearest = tf.reduce_min(tf.where(valid, dist, tf.float32.max), axis=-1,
                            keepdims=True)  # [B, A, 1]
    logits = (nearest - dist) / (temperature * scale)  # [B, A, N]
    logits = tf.where(valid, logits, tf.float32.min)
    alpha = tf.nn.softmax(logits, axis=-1)
    alpha = tf.where(valid, alpha, tf.zeros_like(alpha))  # [B, A, N]
    states = tf.einsum("ban,bnd->bad", alpha,
                       tf.cast(values, tf.float32))  # [B, A, D]
    return states, alpha
