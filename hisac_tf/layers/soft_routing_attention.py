"""Soft-Routing Attention: history items -> interest-agent states.

docs/design.md §2.3. Each interest agent a has a prototype p_a = sum_l
E^l[c_{a,l}] in the latent space of the frozen semantic embeddings (the
caller sums the codewords of the agent's SID). Every valid history item i
has a frozen semantic latent z_i (routes) and a learned ranking embedding
h_i (is aggregated):

    alpha_{a,i} = softmax over valid i of ( -||z_i - p_a||^2 / (tau s^2) )
    u_a         = sum_i alpha_{a,i} h_i

The temperature is relative to the latent scale s^2, so that how soft the
routing is does not depend on the scale the tokenizer happened to give its
latents: tau = 1 means distances measured in units of the latent
variance s^2, the mean square of one latent coordinate,
s^2 = mean_i ||z_i||^2 / Ds (the per-dimension variance of centred
latents). s^2 is `latent_variance` when given (e.g. the tokenizer
report's `latent.latent_variance`, over the whole item table; 1.0 gives
the absolute distances of the paper's formula), otherwise the mean of
||z_i||^2 / Ds over the user's valid history items (per user, no
gradient). With the tokenizer's normalised latents
(`tokenizer.latent_norm` "rms" or "layer") every ||z_i||^2 = Ds, so both
agree and s^2 = 1: tau keeps the meaning it has on unit-RMS latents.

Every agent sees the whole history, so long-tail items still contribute.
`hard=True` is the paper's hard-routing ablation: an item goes to the agent
with the identical full SID only, alpha_{a,i} = 1[SID_i == SID_a] / v_a.

Gradients: the layer applies `tf.stop_gradient` to `latents` and
`prototypes`. Routing is defined on the frozen tokenizer's space, so nothing
upstream of z or p (tokenizer tables, codebooks) trains through the routing
weights; only `values` (the ranking embeddings) receive gradients.

References: "Hierarchical Sparse Activation Compression" (HiSAC, Taobao
2026), soft-routing attention.

Example:

    layer = SoftRoutingAttention(temperature=0.5)
    out = layer(latents=z, values=h, prototypes=p, history_mask=m_items,
                agent_mask=m_agents)
    out["states"]  # [B, A, D]; out["routing"]  # [B, A, N]

Cost: the logits -||z_i - p_a||^2 / (tau s^2) = c (2 p.z - ||z||^2 -
||p||^2), c = 1 / (tau s^2), come out of one batched matmul of augmented
operands, [2c p, c, 1, -c ||p||^2] . [z, -||z||^2, mask bias, 1] (Ds + 3
columns: the distance expansion, the history mask as float32.min and the
shift all ride on the matmul), O(B.A.N.Ds) time and a [B, A, N] tensor
(never [B, A, N, Ds]). Since a squared distance is >= 0 the logits are
<= 0, an upper bound of their row maximum, so the softmax is one exp pass
(hisac_tf/layers/bounded_softmax.py: exact-max fallback through tf.cond
when the nearest valid item of some agent is more than 40 logit units
away), and one [B, A, N] x [B, N, D + 1] matmul gives the states and the
normaliser together; masked agents are zeroed on the [B, A, D] states.
With `chunk_size` the history is processed in chunks of that many items
(a `tf.foldl`), so the [B, A, N] logits are never whole in memory.

Sparse routing (`top_m` = m >= 1, an option beside the paper's dense
routing): each agent keeps only its m nearest valid items (the m largest
logits, `tf.math.top_k`), and alpha is the softmax over those m alone
(exact row maximum: the largest kept logit). The aggregation is one
sparse-dense product ([B A, B N] with B A m entries, times h [B N, D]):
A m D multiply-adds forward and the same backward (the transposed
product), instead of A N D, with no [B, A, m, D] intermediate (a gather
of the rows would write one, and on a CPU that costs as much as the
dense product at m D ~ N). The logits still cost A N (Ds + 3) and the
selection a pass over [B, A, N]: they depend on frozen inputs only, so
they are off the gradient tape (`route` computes them alone, e.g. in the
input pipeline, and `aggregate` is all a training step needs). With
m >= N (known statically) the layer is the dense one; with a dynamic N
the sparse code keeps min(m, N) items, which at m >= N is the dense
softmax to float32 rounding.
"""

from __future__ import annotations

import math
from typing import Optional

import tensorflow as tf

from hisac_tf.layers.bounded_softmax import bound_is_tight, safe_sums
from hisac_tf.layers.shape_checks import check_dim as _check_dim
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.shape_checks import check_rank as _check_rank


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class SoftRoutingAttention(tf.keras.layers.Layer):
    """Routes history items to interest agents; returns the agent states.

    Args:
      temperature: tau > 0 of the routing softmax (smaller: sharper), in
        units of the latent scale s^2 (module docstring).
      hard: the hard-routing ablation (needs `item_sids` and `agent_sids`
        at call).
      latent_variance: s^2 > 0, fixed; None (default): per user, the
        mean of ||z_i||^2 / Ds over the valid history items.
      chunk_size: None (default): the whole history at once; an int >= 1:
        chunks of that many items, bounding memory to [B, A, chunk_size]
        (the `routing` output, when used, is still [B, A, N]).
      top_m: 0 (default): dense routing (the paper's); m >= 1: each agent
        keeps its m nearest valid items (module docstring); m >= N is
        dense. Not with `hard` or `chunk_size`.

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

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section "Soft-
        Routing Attention".

    Example:

    ```python
    routing = SoftRoutingAttention(temperature=1.0)
    out = routing(
        latents=tf.random.normal([1, 6, 4]),  # z [B=1, N=6, Ds=4]
        values=tf.random.normal([1, 6, 8]),  # h [B, N, D=8]
        prototypes=tf.random.normal([1, 2, 4]),  # p [B, A=2, Ds]
        history_mask=tf.ones([1, 6], tf.bool),
        agent_mask=tf.ones([1, 2], tf.bool))
    out["states"].shape  # [1, 2, 8]: u_a = sum_i alpha_{a,i} h_i
    ```
    """

    def __init__(self, temperature: float = 1.0, hard: bool = False,
                 latent_variance: Optional[float] = None,
                 chunk_size: Optional[int] = None, top_m: int = 0,
                 **kw):
        kw.setdefault("autocast", False)
        super().__init__(**kw)
        if latent_variance is not None and (
            isinstance(latent_variance, bool)
            or not isinstance(latent_variance, (int, float))
            or not math.isfinite(latent_variance)
            or latent_variance <= 0
        ):
            raise ValueError(
                "SoftRoutingAttention: `latent_variance` must be None or a "
                f"finite number > 0; received {latent_variance!r}"
            )
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
        if chunk_size is not None and (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, int)
            or chunk_size < 1
        ):
            raise ValueError(
                "SoftRoutingAttention: `chunk_size` must be None or an int "
                f">= 1; received {chunk_size!r}"
            )
        self.top_m = check_int("SoftRoutingAttention", "top_m", top_m, 0)
        if self.top_m and (hard or chunk_size is not None):
            raise ValueError(
                "SoftRoutingAttention: `top_m` (sparse routing) works with "
                "soft, unchunked routing only; received top_m="
                f"{top_m!r} with hard={hard!r}, chunk_size={chunk_size!r}"
            )
        self.chunk_size = chunk_size
        self.temperature = float(temperature)
        self.hard = hard
        self.latent_variance = (
            None if latent_variance is None else float(latent_variance))

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, hard=self.hard,
                      latent_variance=self.latent_variance,
                      chunk_size=self.chunk_size, top_m=self.top_m)
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
        values = tf.cast(values, self.compute_dtype)  # [B, N, D]
        if self.hard:
            valid = tf.logical_and(
                agent_mask[:, :, tf.newaxis],  # [B, A, 1]
                history_mask[:, tf.newaxis, :],  # [B, 1, N]
            )  # [B, A, N] valid (agent, item) pairs
            routing = self._hard_routing(item_sids, agent_sids, valid)
            routing = tf.cast(routing, self.compute_dtype)  # [B, A, N]
            states = tf.einsum("ban,bnd->bad", routing, values)  # [B, A, D]
            return {"states": states, "routing": routing}
        if self.is_sparse(latents.shape[1]):
            plan = self._sparse_route(latents, prototypes, history_mask,
                                      agent_mask)
            states = self.aggregate(values, plan["weights"], plan["index"])
            return {"states": states,
                    "routing": self._dense_weights(plan, latents)}
        return self._soft_routing(latents, values, prototypes, history_mask,
                                  agent_mask)

    def is_sparse(self, length) -> bool:
        """True when a history of `length` items (None: unknown) routes
        sparsely: top_m >= 1 and not top_m >= length."""
        return bool(self.top_m) and (length is None or self.top_m < length)

    def route(self, latents, prototypes, history_mask, agent_mask,
              item_sids: Optional[tf.Tensor] = None,
              agent_sids: Optional[tf.Tensor] = None):
        """The routing weights alone (frozen inputs, no `values`).

        Returns dict(weights [B, A, K] float32, index [B, A, K] int32 or
        None): sparse routing gives each agent's K = min(m, N) kept items
        (`index` into the history) and their weights; dense (and hard)
        routing gives alpha [B, A, N] over the whole history and no index.
        `aggregate(values, **route(...))` equals the layer's states.
        """
        latents = tf.convert_to_tensor(latents)
        prototypes = tf.convert_to_tensor(prototypes)
        history_mask = tf.cast(history_mask, tf.bool)
        agent_mask = tf.cast(agent_mask, tf.bool)
        shape = tf.shape(latents)  # (B, N, Ds)
        dummy = tf.zeros(tf.stack([shape[0], shape[1], 1]))  # [B, N, 1]
        self._check_inputs(latents, dummy, prototypes, history_mask,
                           agent_mask, item_sids, agent_sids)
        if self.hard:
            valid = tf.logical_and(
                agent_mask[:, :, tf.newaxis],  # [B, A, 1]
                history_mask[:, tf.newaxis, :],  # [B, 1, N]
            )  # [B, A, N]
            return {"weights": self._hard_routing(item_sids, agent_sids,
                                                  valid), "index": None}
        if self.is_sparse(latents.shape[1]):
            return self._sparse_route(latents, prototypes, history_mask,
                                      agent_mask)
        routing = self._soft_routing(latents, dummy, prototypes,
                                     history_mask, agent_mask)["routing"]
        return {"weights": tf.cast(routing, tf.float32), "index": None}

    def aggregate(self, values, weights, index=None):
        """u_a = sum_k weights_ak h_(index_ak): [B, A, D] in the compute
        dtype. values [B, N, D]; weights [B, A, K] (K = N when index is
        None); index [B, A, K] int (sparse) or None (dense). Costs A K D
        multiply-adds, and the same for the gradient of `values`."""
        values = tf.cast(tf.convert_to_tensor(values), self.compute_dtype)
        if index is None:
            weights = tf.cast(weights, self.compute_dtype)
            return tf.einsum("ban,bnd->bad", weights, values)  # [B, A, D]
        # One sparse [B A, B N] x [B N, D] product (float32): no [B, A,
        # K, D] gather in the forward pass nor in the gradient of h (the
        # transposed product), which a gather + einsum would write.
        shape = tf.shape(index, out_type=tf.int64)  # (B, A, K)
        n = tf.shape(values, out_type=tf.int64)[1]
        d = tf.shape(values)[2]
        rows = tf.broadcast_to(
            tf.range(shape[0] * shape[1])[:, tf.newaxis],
            tf.stack([shape[0] * shape[1], shape[2]]))  # [B A, K]
        cols = (tf.cast(index, tf.int64)
                + tf.range(shape[0])[:, tf.newaxis, tf.newaxis] * n
                )  # [B, A, K] flat item of b's history
        alpha = tf.sparse.SparseTensor(
            tf.stack([tf.reshape(rows, [-1]), tf.reshape(cols, [-1])], 1),
            tf.reshape(tf.cast(weights, tf.float32), [-1]),
            tf.stack([shape[0] * shape[1], shape[0] * n]),
        )  # [B A, B N], B A K entries
        flat = tf.reshape(tf.cast(values, tf.float32),
                          tf.stack([-1, d]))  # [B N, D]
        states = tf.sparse.sparse_dense_matmul(alpha, flat)  # [B A, D]
        states = tf.reshape(states, tf.stack(
            [shape[0], shape[1], tf.cast(d, tf.int64)]))  # [B, A, D]
        return tf.cast(states, self.compute_dtype)

    def _sparse_route(self, latents, prototypes, history_mask, agent_mask):
        """dict(weights [B, A, K] float32, index [B, A, K] int32): each
        agent's K = min(m, N) largest logits, softmax over them."""
        p_aug, z_aug = self._routing_operands(latents, prototypes,
                                              history_mask)
        agent_ok = tf.logical_and(
            agent_mask, tf.reduce_any(history_mask, -1, keepdims=True)
        )  # [B, A]
        logits = tf.einsum("bas,bns->ban", p_aug, z_aug)  # [B, A, N]
        k = tf.minimum(self.top_m, tf.shape(logits)[2])
        top, index = tf.math.top_k(logits, k=k, sorted=False)  # [B, A, K]
        kept = tf.logical_and(
            tf.gather(history_mask, index, batch_dims=1),  # [B, A, K]
            agent_ok[..., tf.newaxis],
        )  # [B, A, K] a valid item of a routed agent
        top = tf.where(kept, top, tf.float32.min)  # [B, A, K]
        shift = tf.reduce_max(top, axis=-1, keepdims=True)  # [B, A, 1]
        e = tf.where(kept, tf.exp(top - shift), 0.0)  # [B, A, K]
        sums = safe_sums(tf.reduce_sum(e, -1, keepdims=True))  # [B, A, 1]
        return {"weights": tf.stop_gradient(e / sums),
                "index": tf.stop_gradient(index)}

    def _dense_weights(self, plan, latents):
        """The sparse weights scattered into alpha [B, A, N] (diagnostics;
        pruned from graphs that do not read it)."""
        index = plan["index"]  # [B, A, K]
        shape = tf.shape(index)  # (B, A, K)
        b = tf.broadcast_to(tf.range(shape[0])[:, None, None], shape)
        a = tf.broadcast_to(tf.range(shape[1])[None, :, None], shape)
        at = tf.stack([b, a, index], axis=-1)  # [B, A, K, 3]
        dense = tf.scatter_nd(
            at, plan["weights"],
            tf.stack([shape[0], shape[1], tf.shape(latents)[1]]))
        return tf.cast(dense, self.compute_dtype)  # [B, A, N]

    def _latent_scale(self, zz, history_mask, latent_dim):
        """s^2 [B, 1, 1]: fixed, or the mean ||z_i||^2 / Ds of valid items."""
        if self.latent_variance is not None:
            return tf.fill([tf.shape(zz)[0], 1, 1], self.latent_variance)
        weight = tf.cast(history_mask, tf.float32)  # [B, N]
        count = tf.reduce_sum(weight, axis=-1)  # [B]
        mean_sq = tf.reduce_sum(zz * weight, axis=-1) / tf.maximum(
            count, 1.0) / latent_dim  # [B]
        # A user with no valid item (no routing row) or all-zero latents
        # (all distances 0, uniform routing) gets s^2 = 1.
        mean_sq = tf.where(mean_sq > 0.0, mean_sq, tf.ones_like(mean_sq))
        return mean_sq[:, tf.newaxis, tf.newaxis]  # [B, 1, 1]

    def _routing_operands(self, latents, prototypes, history_mask):
        """Augmented float32 operands whose product is the logits.

        Returns (p_aug [B, A, Ds + 3] = [2c p, c, 1, -c ||p||^2],
        z_aug [B, N, Ds + 3] = [z, -||z||^2, 0 or float32.min, 1]):
        p_aug . z_aug = -c ||z - p||^2 for a valid item, about float32.min
        for a masked one; c = 1 / (tau s^2) per user.
        """
        z = tf.stop_gradient(tf.cast(latents, tf.float32))  # [B, N, Ds]
        p = tf.stop_gradient(tf.cast(prototypes, tf.float32))  # [B, A, Ds]
        zz = tf.reduce_sum(tf.square(z), axis=-1)  # [B, N]
        scale = self._latent_scale(
            zz, history_mask, tf.cast(tf.shape(z)[-1], tf.float32))
        c = 1.0 / (self.temperature * scale)  # [B, 1, 1]
        pp = tf.reduce_sum(tf.square(p), axis=-1, keepdims=True)  # [B,A,1]
        ones_p = tf.ones_like(pp)  # [B, A, 1]
        p_aug = tf.concat(
            [2.0 * c * p, c * ones_p, ones_p, -c * pp], axis=-1
        )  # [B, A, Ds + 3]
        item_bias = tf.where(history_mask, 0.0, tf.float32.min)  # [B, N]
        z_aug = tf.concat(
            [z, -zz[..., tf.newaxis], item_bias[..., tf.newaxis],
             tf.ones_like(zz[..., tf.newaxis])], axis=-1
        )  # [B, N, Ds + 3]
        return p_aug, z_aug

    def _weighted(self, e, values):
        """(sum_i e_ai h_i [B, A, D] float32, sum_i e_ai [B, A])."""
        if values.dtype != tf.float32:  # 16-bit states, float32 sums.
            states = tf.einsum("ban,bnd->bad", tf.cast(e, values.dtype),
                               values)  # [B, A, D]
            return tf.cast(states, tf.float32), tf.reduce_sum(e, -1)
        both = tf.einsum(
            "ban,bnd->bad", e,
            tf.concat([values, tf.ones_like(values[..., :1])], -1),
        )  # [B, A, D + 1]: the weighted sum and the normaliser
        return both[..., :-1], both[..., -1]

    def _chunks(self, p_aug, z_aug, values):
        """z_aug and values padded to whole chunks, chunk-major:
        ([K, B, chunk, Ds + 3], [K, B, chunk, D])."""
        size = self.chunk_size
        n = tf.shape(z_aug)[1]
        pad = (size - n % size) % size
        # Padding items carry float32.min like masked ones: exp gives 0.
        pad_row = tf.constant([0.0, tf.float32.min, 0.0])  # [3]
        z_pad = tf.concat([
            tf.zeros_like(z_aug[:, :1, :-3]),
            tf.broadcast_to(pad_row, tf.shape(z_aug[:, :1, -3:])),
        ], -1)  # [B, 1, Ds + 3]
        z_aug = tf.concat(
            [z_aug, tf.repeat(z_pad, pad, axis=1)], axis=1)  # [B, K c, .]
        values = tf.pad(values, [[0, 0], [0, pad], [0, 0]])

        def chunked(t):  # [B, K chunk, X] -> [K, B, chunk, X]
            shape = tf.shape(t)
            t = tf.reshape(t, [shape[0], -1, size, shape[2]])
            return tf.transpose(t, [1, 0, 2, 3])

        return chunked(z_aug), chunked(values)

    def _sums(self, p_aug, z_aug, values, shift=None):
        """(sum_i exp(l_ai - shift_a) h_i [B, A, D], sums [B, A]) float32,
        whole or by chunks; shift [B, A, 1], None: 0 (no pass)."""

        def exp(logits):
            return tf.exp(logits if shift is None else logits - shift)

        if self.chunk_size is None:
            logits = tf.einsum("bas,bns->ban", p_aug, z_aug)  # [B, A, N]
            return self._weighted(exp(logits), values)
        z_chunks, v_chunks = self._chunks(p_aug, z_aug, values)
        batch, agents = tf.shape(p_aug)[0], tf.shape(p_aug)[1]
        init = (tf.zeros(tf.stack([batch, agents, tf.shape(values)[2]])),
                tf.zeros(tf.stack([batch, agents])))

        def step(acc, chunk):
            z_c, v_c = chunk  # [B, chunk, Ds + 3], [B, chunk, D]
            logits = tf.einsum("bas,bns->ban", p_aug, z_c)  # [B, A, chunk]
            states, sums = self._weighted(exp(logits), v_c)
            return acc[0] + states, acc[1] + sums

        return tf.foldl(step, (z_chunks, v_chunks), initializer=init)

    def _row_max(self, p_aug, z_aug, values):
        """[B, A, 1] exact maximum logit of each agent, whole or chunked."""
        if self.chunk_size is None:
            return tf.reduce_max(tf.einsum("bas,bns->ban", p_aug, z_aug),
                                 axis=-1, keepdims=True)
        z_chunks, _ = self._chunks(p_aug, z_aug, values)
        init = tf.fill(tf.shape(p_aug[..., :1]), tf.float32.min)

        def step(top, z_c):
            logits = tf.einsum("bas,bns->ban", p_aug, z_c)  # [B, A, chunk]
            return tf.maximum(top, tf.reduce_max(logits, -1, keepdims=True))

        return tf.foldl(step, z_chunks, initializer=init)

    def _soft_routing(self, latents, values, prototypes, history_mask,
                      agent_mask):
        """dict(states [B, A, D], routing [B, A, N]) in the compute dtype;
        zero for a masked agent or a user without valid items."""
        p_aug, z_aug = self._routing_operands(latents, prototypes,
                                              history_mask)
        agent_ok = tf.logical_and(
            agent_mask, tf.reduce_any(history_mask, -1, keepdims=True)
        )  # [B, A]
        zero = tf.zeros_like(p_aug[..., :1])  # [B, A, 1]: -c dist <= 0
        fast = self._sums(p_aug, z_aug, values)

        def exact():
            shift = tf.stop_gradient(
                self._row_max(p_aug, z_aug, values))  # [B, A, 1]
            return self._sums(p_aug, z_aug, values, shift) + (shift,)

        states, sums, shift = tf.cond(
            bound_is_tight(fast[1], agent_ok),
            lambda: fast + (zero,), exact)
        sums = safe_sums(sums)[..., tf.newaxis]  # [B, A, 1]
        states = tf.where(agent_ok[..., tf.newaxis], states / sums, 0.0)
        # The routing weights cost one more [B, A, N] pass; a graph that
        # does not use them (serving, training) prunes it.
        logits = tf.einsum("bas,bns->ban", p_aug, z_aug)  # [B, A, N]
        routing = tf.where(agent_ok[..., tf.newaxis],
                           tf.exp(logits - shift) / sums, 0.0)  # [B, A, N]
        return {"states": tf.cast(states, self.compute_dtype),
                "routing": tf.cast(routing, self.compute_dtype)}

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
