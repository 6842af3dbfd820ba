"""Target attention of candidates over a user's interest-agent states.

docs/design.md §2.4. Each candidate (query) attends over the user's A agent
states with multi-head attention; log w_a (the agent's voting weight) is a
prior bias on every head's logits:

    logits_{h,c,a} = q_{h,c} . k_{h,a} / sqrt(dk) + log w_a
    out_c          = W_o [ sum_a softmax_a(logits_{h,c,a}) v_{h,a} ]_h
                     (+ W_m [ mass_{h,c} ]_h, [any a valid])
    mass_{h,c}     = logsumexp_a logits_{h,c,a} - logsumexp_a log w_a

The softmax makes every candidate's attention weights sum to one, so the
attended vector says *what* in the history matches a candidate but not
*how much* of it there is: a candidate matched by one history item and one
matched by five hundred can get the same output. DIN drops the softmax for
this reason. With `attention_mass=True` the layer keeps the softmax and
also returns its normaliser relative to the prior's, per head: mass =
log( sum_a w_a exp(q.k_a) / sum_a w_a ), the log of the prior-weighted
mean of exp(q.k) (+ an any-valid-group flag), through a learned projection
W_m [H + 1, O] added to the output. It rises with the share of the state
(voting weight, or number of items over all items) that matches the
candidate, and stays on the scale of the logits whatever the number of
groups. (The raw log-partition logsumexp_a logits, without the prior's
normaliser, grows with log G: with G = N = 1,000 items it wrecked the
`full` baseline's training, AUC 0.695 -> 0.640;
docs/results/taobao_mm_hour/report.md.)

The user side (keys, values, bias, mask) does not depend on the candidates:
`encode` computes it once per request (or once per user, to be cached
across requests) and `score` reuses it for every candidate; `call` is
exactly `score(encode(...), queries)`.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf

from hisac_tf.layers.bounded_softmax import bound_is_tight, safe_sums
from hisac_tf.layers.shape_checks import check_dim as _check_dim
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.shape_checks import check_rank as _check_rank

_STATE_KEYS = ("keys", "values", "bias", "mask")
_NAME = "AgentTargetAttention"
# dtypes of the two attention matmuls (softmax and mass stay float32).
_MATMUL_DTYPES = ("float32", "bfloat16", "float16")


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class AgentTargetAttention(tf.keras.layers.Layer):
    """Multi-head attention of C candidates over A agents, log-w prior.

    Args:
      num_heads: H >= 1.
      key_dim: dk >= 1, width of each head's queries, keys and values.
      output_dim: width of the output; None: the queries' width Dq.
      dropout: dropout rate on the attention probabilities (training).
      use_prior: add log w_a to the logits (False: plain attention; the
        weights are then optional).
      attention_mass: also add W_m [mass_h, any valid] to the output,
        mass_h = logsumexp_a logits_{h,a} - logsumexp_a log w_a (the
        log-partition relative to the prior's, see the module doc);
        False: plain softmax attention.
      matmul_dtype: dtype of the two [C x A] matmuls (logits, weighted
        values): "float32" (default), or "bfloat16" / "float16" for
        accelerators (the softmax, its normaliser and the mass stay
        float32).

    Weights: `query_dense` [Dq, H, dk] (+ bias [H, dk]), `key_dense` and
    `value_dense` [Dv, H, dk] (+ bias), `output_dense` [H, dk, O] (+ bias
    [O]), all `EinsumDense`; with attention_mass, `mass_dense` [H + 1, O]
    (no bias).

    Call args:
      queries: [B, C, Dq] candidate embeddings.
      agent_states: [B, A, Dv] agent states (e.g. soft-routing states,
        concatenated with the agents' SID embeddings).
      agent_weights: [B, A] float, the agents' weights w_a (> 0 for real
        agents; a valid agent with w_a = 0 gets log(float32 tiny) ~ -87).
      agent_mask: [B, A] bool, True for a real agent.
      training: enables attention dropout.

    Returns:
      [B, C, output_dim] in the compute dtype. Masked agents get exactly
      zero attention; a user with no valid agent gets a zero attention
      output (so the result is the output projection's bias), finite.

    Mixed precision: projections run in the compute dtype; logits and the
    softmax are float32 and cast back.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Target attention over agents" (cached multi-head attention).

    Example:

    ```python
    attention = AgentTargetAttention(num_heads=2, key_dim=4, output_dim=8,
                                     attention_mass=True)
    agents = tf.random.normal([1, 3, 6])  # [B=1, A=3, Dv=6]
    weights = tf.constant([[0.5, 0.3, 0.2]])  # w_a from voting
    mask = tf.constant([[True, True, False]])
    state = attention.encode(agents, weights, mask)  # once per user
    out = attention.score(state, tf.random.normal([1, 5, 8]))  # C = 5
    out.shape  # [1, 5, 8]
    ```
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        output_dim: Optional[int] = None,
        dropout: float = 0.0,
        use_prior: bool = True,
        attention_mass: bool = False,
        matmul_dtype: str = "float32",
        **kw,
    ):
        super().__init__(**kw)
        self.num_heads = check_int(_NAME, "num_heads", num_heads, 1)
        self.key_dim = check_int(_NAME, "key_dim", key_dim, 1)
        if output_dim is not None:
            check_int(_NAME, "output_dim", output_dim, 1)
        self.output_dim = output_dim
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0.0 <= dropout < 1.0
        ):
            raise ValueError(
                "AgentTargetAttention: `dropout` must be a number in "
                f"[0, 1); received {dropout!r}"
            )
        self.dropout = float(dropout)
        if not isinstance(use_prior, bool):
            raise ValueError(
                "AgentTargetAttention: `use_prior` must be a bool; received "
                f"{use_prior!r}"
            )
        self.use_prior = use_prior
        if not isinstance(attention_mass, bool):
            raise ValueError(
                "AgentTargetAttention: `attention_mass` must be a bool; "
                f"received {attention_mass!r}"
            )
        self.attention_mass = attention_mass
        if matmul_dtype not in _MATMUL_DTYPES:
            raise ValueError(
                "AgentTargetAttention: `matmul_dtype` must be one of "
                f"{list(_MATMUL_DTYPES)}; received {matmul_dtype!r}"
            )
        self.matmul_dtype = matmul_dtype
        heads_keys = (self.num_heads, self.key_dim)
        policy = self.dtype_policy
        self.query_dense = tf.keras.layers.EinsumDense(
            "bcq,qhk->bchk",  # [B, C, Dq] x [Dq, H, dk] -> [B, C, H, dk]
            output_shape=(None,) + heads_keys,
            bias_axes="hk",
            dtype=policy,
            name="query",
        )
        self.key_dense = tf.keras.layers.EinsumDense(
            "bav,vhk->bhak",  # [B, A, Dv] x [Dv, H, dk] -> [B, H, A, dk]
            output_shape=(self.num_heads, None, self.key_dim),
            bias_axes="hk",
            dtype=policy,
            name="key",
        )
        self.value_dense = tf.keras.layers.EinsumDense(
            "bav,vhk->bhak",  # [B, A, Dv] x [Dv, H, dk] -> [B, H, A, dk]
            output_shape=(self.num_heads, None, self.key_dim),
            bias_axes="hk",
            dtype=policy,
            name="value",
        )
        self.attention_dropout = tf.keras.layers.Dropout(
            self.dropout, dtype=policy, name="attention_dropout"
        )
        self.output_dense = None  # Created in build: needs Dq by default.
        self.mass_dense = None  # Created in build with attention_mass.

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            output_dim=self.output_dim,
            dropout=self.dropout,
            use_prior=self.use_prior,
            attention_mass=self.attention_mass,
            matmul_dtype=self.matmul_dtype,
        )
        return config

    def build(self, queries_shape):
        queries_shape = tf.TensorShape(queries_shape)
        out_dim = self.output_dim
        if out_dim is None:
            out_dim = queries_shape[-1] if queries_shape.rank else None
            if out_dim is None:
                raise ValueError(
                    "AgentTargetAttention: output_dim=None needs the "
                    "queries' last dimension Dq to be known; received "
                    f"queries shape {queries_shape}"
                )
        self.output_dense = tf.keras.layers.EinsumDense(
            "bchk,hko->bco",  # [B, C, H, dk] x [H, dk, O] -> [B, C, O]
            output_shape=(None, out_dim),
            bias_axes="o",
            dtype=self.dtype_policy,
            name="output",
        )
        if self.attention_mass:
            self.mass_dense = tf.keras.layers.EinsumDense(
                "bcm,mo->bco",  # [B, C, H + 1] x [H + 1, O] -> [B, C, O]
                output_shape=(None, out_dim),
                dtype=self.dtype_policy,
                name="mass",
            )
        super().build(queries_shape)

    def encode(self, agent_states, agent_weights, agent_mask):
        """The user side, once per request: no candidate involved.

        Args:
          agent_states: [B, A, Dv]; agent_weights: [B, A] float or None
            (None only with use_prior=False); agent_mask: [B, A] bool.

        Returns:
          dict(keys [B, H, A, dk], values [B, H, A, dk] in the compute
          dtype, bias [B, A] float32: log w_a for a valid agent (0 without
          prior), float32.min for a masked one, mask [B, A] bool).
        """
        me = type(self).__name__
        agent_states = tf.convert_to_tensor(agent_states)
        agent_mask = tf.cast(agent_mask, tf.bool)
        _check_rank(me, "agent_states", agent_states, 3, "B, A, Dv")
        _check_rank(me, "agent_mask", agent_mask, 2, "B, A")
        _check_dim(me, "agent_mask", agent_mask, 0, "B", "agent_states",
                   agent_states, 0)
        _check_dim(me, "agent_mask", agent_mask, 1, "A", "agent_states",
                   agent_states, 1)
        if agent_weights is None:
            if self.use_prior:
                raise ValueError(
                    f"{me}(use_prior=True) needs `agent_weights` [B, A]; "
                    "received None"
                )
            prior = tf.zeros(tf.shape(agent_mask), tf.float32)  # [B, A]
        else:
            agent_weights = tf.cast(agent_weights, tf.float32)  # [B, A]
            _check_rank(me, "agent_weights", agent_weights, 2, "B, A")
            _check_dim(me, "agent_weights", agent_weights, 0, "B",
                       "agent_states", agent_states, 0)
            _check_dim(me, "agent_weights", agent_weights, 1, "A",
                       "agent_states", agent_states, 1)
            if self.use_prior:
                tiny = float(np.finfo(np.float32).tiny)
                prior = tf.math.log(tf.maximum(agent_weights, tiny))
            else:
                prior = tf.zeros_like(agent_weights)  # [B, A]
        bias = tf.where(agent_mask, prior, tf.float32.min)  # [B, A]
        return {
            "keys": self.key_dense(agent_states),  # [B, H, A, dk]
            "values": self.value_dense(agent_states),  # [B, H, A, dk]
            "bias": bias,
            "mask": agent_mask,
        }

    def _check_state(self, state: Mapping[str, tf.Tensor]):
        me = type(self).__name__
        if not isinstance(state, Mapping):
            raise ValueError(
                f"{me}: `state` must be the dict from encode(); received "
                f"{type(state).__name__}"
            )
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(
                f"{me}: `state` lacks {missing}; received keys "
                f"{sorted(state)} (expected {list(_STATE_KEYS)})"
            )

    def attention_logits(self, state: Mapping[str, tf.Tensor], queries,
                         group_mask=None):
        """float32 logits [B, H, C, A] and the mask they used.

        The plain (unshifted) logits q.k / sqrt(dk) + bias, for
        diagnostics and tests; `score` never builds them this way.

        Args:
          state: from `encode`.
          queries: [B, C, Dq].
          group_mask: optional [B, C, A] bool, a per-candidate restriction
            of the agents (e.g. `sim_hard`: the candidate's category),
            combined with the state's mask.

        Returns:
          (logits [B, H, C, A], about float32.min at masked agents, mask
          [B, 1, 1 or C, A] bool).
        """
        q, k, _, bias, mask = self._operands(state, queries, group_mask)
        logits = tf.einsum("bchk,bhak->bhca", q, k)  # [B, H, C, A]
        return logits + bias, mask  # [B, H, C, A]

    def attention_probs(self, state: Mapping[str, tf.Tensor], queries,
                        group_mask=None):
        """float32 attention probabilities [B, H, C, A], before dropout.

        Masked agents get 0; a user with no valid agent gets all zeros.
        `group_mask` as in `attention_logits`.
        """
        logits, mask = self.attention_logits(state, queries, group_mask)
        e = tf.exp(logits - tf.reduce_max(logits, -1, keepdims=True))
        s = tf.reduce_sum(e, -1, keepdims=True)  # [B, H, C, 1]
        any_valid = tf.reduce_any(mask, -1, keepdims=True)  # [B,1,1|C,1]
        return tf.where(any_valid, e / safe_sums(s), 0.0)  # [B, H, C, A]

    def mass_features(self, logits, mask, bias):
        """[B, C, H + 1] float32: per-head attention mass, any valid.

        mass_h = logsumexp_a logits_{h,a} - logsumexp_a log w_a over the
        valid agents: the log of the prior-weighted mean of exp(q.k), so
        that it measures how much of the state matches the candidate on
        the scale of the logits, whatever the number of agents (with
        w_a = 1 over n agents it is log-mean-exp, not log-sum-exp, which
        would grow with log n). A candidate with no valid agent gets 0 for
        every head and 0 for the flag. (`score` gets the same numbers from
        the logsumexp its softmax already has, `_mass_from_lse`.)

        Args:
          logits: [B, H, C, A] and mask [B, 1, 1 or C, A] from
            `attention_logits`; bias: the state's [B, A] log w_a.
        """
        lse = tf.transpose(
            tf.reduce_logsumexp(logits, axis=-1), [0, 2, 1])  # [B, C, H]
        any_valid = tf.transpose(
            tf.reduce_any(mask, axis=-1), [0, 2, 1])  # [B, 1 or C, 1]
        return self._mass_from_lse(lse, any_valid, mask, bias)

    @staticmethod
    def _mass_from_lse(lse, any_valid, mask, bias):
        """[B, C, H + 1] from the logits' logsumexp lse [B, C, H],
        any_valid [B, 1 or C, 1] and the prior's mask [B, 1, 1 or C, A]
        and bias [B, A]."""
        prior = tf.where(
            mask[:, 0], tf.cast(bias, tf.float32)[:, tf.newaxis, :],
            tf.float32.min,
        )  # [B, 1 or C, A], small: no head, no candidate without group mask
        prior_lse = tf.reduce_logsumexp(prior, -1, keepdims=True)
        mass = tf.where(any_valid, lse - prior_lse, 0.0)  # [B, C, H]
        flag = tf.broadcast_to(
            tf.cast(any_valid, tf.float32), tf.shape(mass[:, :, :1])
        )  # [B, C, 1]
        return tf.concat([mass, flag], axis=-1)  # [B, C, H + 1]

    def _operands(self, state, queries, group_mask):
        """Checked float32 operands of the attention.

        Returns (q [B, C, H, dk] scaled by 1/sqrt(dk), k [B, H, A, dk],
        values [B, H, A, dk] in the compute dtype, bias [B, 1, 1 or C, A]
        (log w_a, float32.min where masked), mask [B, 1, 1 or C, A]).
        """
        me = type(self).__name__
        self._check_state(state)
        queries = tf.convert_to_tensor(queries)
        _check_rank(me, "queries", queries, 3, "B, C, Dq")
        _check_dim(me, "queries", queries, 0, "B", "state['keys']",
                   state["keys"], 0)
        if not self.built:  # `score` may be called without `__call__`.
            self._maybe_build(tf.TensorShape(queries.shape))
        q = self.query_dense(queries)  # [B, C, H, dk]
        q = tf.cast(q, tf.float32) * (1.0 / math.sqrt(self.key_dim))
        k = tf.cast(state["keys"], tf.float32)  # [B, H, A, dk]
        bias = tf.cast(state["bias"], tf.float32)[
            :, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, A]
        mask = tf.cast(state["mask"], tf.bool)[
            :, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, A]
        if group_mask is not None:
            group_mask = tf.cast(group_mask, tf.bool)
            _check_rank(me, "group_mask", group_mask, 3, "B, C, A")
            mask = tf.logical_and(
                mask, group_mask[:, tf.newaxis])  # [B, 1, C, A]
            bias = tf.where(mask, bias, tf.float32.min)  # [B, 1, C, A]
        values = tf.cast(state["values"], self.compute_dtype)
        return q, k, values, bias, mask

    def _logit_bound(self, q, k, bias, mask):
        """[B, C, H] upper bound of max_a (q.k_a + bias_a), no [.., A] pass.

        q.k_a = q.mu + q.(k_a - mu) <= q.mu + |q| max_a |k_a - mu| with
        mu the mean valid key of the head (Cauchy-Schwarz), plus the
        largest valid bias; masked agents' bias is float32.min, so they
        cannot exceed it either.
        """
        valid = tf.cast(mask[:, :, 0, :], tf.float32)[
            ..., tf.newaxis]  # [B, 1, A, 1] (any candidate's mask)
        if mask.shape[2] != 1:  # group mask: the state's, a superset.
            valid = tf.cast(tf.reduce_any(mask[:, 0], axis=1),
                            tf.float32)[:, tf.newaxis, :, tf.newaxis]
        count = tf.maximum(tf.reduce_sum(valid, axis=2), 1.0)  # [B, 1, 1]
        mu = tf.reduce_sum(k * valid, axis=2) / count  # [B, H, dk]
        radius = tf.reduce_max(
            tf.norm(k - mu[:, :, tf.newaxis], axis=-1) * valid[..., 0],
            axis=-1)  # [B, H]
        top_bias = tf.reduce_max(bias, axis=[1, 2, 3])  # [B]
        return (
            tf.einsum("bchk,bhk->bch", q, mu)  # [B, C, H]
            + tf.norm(q, axis=-1) * radius[:, tf.newaxis, :]
            + top_bias[:, tf.newaxis, tf.newaxis]
        )  # [B, C, H]

    def _shifted_logits(self, q, k, bias, shift):
        """float32 [B, H, C, A]: q.k + bias - shift, in one matmul where
        possible (the bias and the per-query shift as extra columns)."""
        ones_q = tf.ones_like(q[..., :1])  # [B, C, H, 1]
        ones_k = tf.ones_like(k[..., :1])  # [B, H, A, 1]
        neg_shift = -shift[..., tf.newaxis]  # [B, C, H, 1]
        low = self.matmul_dtype != "float32"
        if bias.shape[2] == 1 and not low:
            row = tf.broadcast_to(
                tf.transpose(bias[:, 0], [0, 2, 1])[:, tf.newaxis],
                tf.shape(ones_k))  # [B, H, A, 1] per-agent bias
            return tf.einsum(
                "bchk,bhak->bhca",
                tf.concat([q, ones_q, neg_shift], -1),  # [B, C, H, dk+2]
                tf.concat([k, row, ones_k], -1),  # [B, H, A, dk + 2]
            )  # [B, H, C, A]
        if low:  # float32.min and the shift do not fit a 16-bit matmul.
            dot = tf.cast(tf.einsum(
                "bchk,bhak->bhca", tf.cast(q, self.matmul_dtype),
                tf.cast(k, self.matmul_dtype)), tf.float32)  # [B, H, C, A]
            return dot + tf.transpose(neg_shift, [0, 2, 1, 3]) + bias
        dot = tf.einsum(
            "bchk,bhak->bhca", tf.concat([q, neg_shift], -1),
            tf.concat([k, ones_k], -1))  # [B, H, C, A]
        return dot + bias  # group mask: per-candidate bias [B, 1, C, A]

    def _weighted_values(self, e, values, training):
        """(context [B, C, H, dk] unnormalised, sums [B, C, H]) of the
        exponentiated shifted logits e [B, H, C, A]."""
        if self.dropout > 0.0:  # Dropout needs the probabilities.
            s = tf.reduce_sum(e, -1, keepdims=True)  # [B, H, C, 1]
            probs = tf.cast(e / safe_sums(s), self.compute_dtype)
            probs = self.attention_dropout(probs, training=training)
            context = tf.einsum("bhca,bhak->bchk", probs, values)
            s = tf.transpose(s[..., 0], [0, 2, 1])  # [B, C, H]
            return tf.cast(context, tf.float32) * safe_sums(s)[
                ..., tf.newaxis], s
        if self.matmul_dtype != "float32":
            s = tf.transpose(tf.reduce_sum(e, -1), [0, 2, 1])  # [B, C, H]
            context = tf.einsum(
                "bhca,bhak->bchk", tf.cast(e, self.matmul_dtype),
                tf.cast(values, self.matmul_dtype))  # [B, C, H, dk]
            return tf.cast(context, tf.float32), s
        values = tf.cast(values, tf.float32)
        both = tf.einsum(
            "bhca,bhak->bchk", e,
            tf.concat([values, tf.ones_like(values[..., :1])], -1),
        )  # [B, C, H, dk + 1]: context and the row sums
        return both[..., :-1], both[..., -1]

    def score(self, state: Mapping[str, tf.Tensor], queries, training=None,
              group_mask=None):
        """Candidates against an encoded user: [B, C, Dq] -> [B, C, O].

        `group_mask` [B, C, A] bool optionally restricts each candidate's
        agents (see `attention_logits`).

        Lean: the logits come shifted by an upper bound of their row
        maximum straight out of one matmul (bias and shift as extra
        columns), the softmax is one exp pass, its normaliser comes from
        the second matmul, and the output and the attention mass share
        that one logsumexp (hisac_tf/layers/bounded_softmax.py; exact
        fallback through `tf.cond` when the bound is loose). Masking is
        the [B, A] bias only; a candidate without valid agents is zeroed
        on the small [B, C, H, dk] context.
        """
        q, k, values, bias, mask = self._operands(state, queries,
                                                  group_mask)
        any_valid = tf.transpose(
            tf.reduce_any(mask, axis=-1), [0, 2, 1])  # [B, 1 or C, 1]

        def attend(shift):
            e = tf.exp(self._shifted_logits(q, k, bias, shift))
            context, s = self._weighted_values(e, values, training)
            return context, s, shift

        def exact():
            logits = self._shifted_logits(q, k, bias, tf.zeros_like(bound))
            top = tf.transpose(tf.reduce_max(logits, -1), [0, 2, 1])
            return attend(tf.stop_gradient(top))  # [B, C, H] exact max

        # The shift cancels out of the softmax and of m + log s, so no
        # gradient goes through it (through the norms it would be NaN at a
        # zero query or at a single valid key).
        bound = tf.stop_gradient(
            self._logit_bound(q, k, bias, mask))  # [B, C, H]
        fast = attend(bound)
        context, s, shift = tf.cond(
            bound_is_tight(fast[1], any_valid), lambda: fast, exact)
        s = safe_sums(s)  # [B, C, H]
        context = tf.where(
            any_valid[..., tf.newaxis], context / s[..., tf.newaxis], 0.0
        )  # [B, C, H, dk]: zero for a candidate without valid agents
        out = self.output_dense(tf.cast(context, self.compute_dtype))
        if self.attention_mass:
            lse = shift + tf.math.log(s)  # [B, C, H], the softmax's own
            mass = self._mass_from_lse(
                lse, any_valid, mask, state["bias"])  # [B, C, H + 1]
            out += self.mass_dense(tf.cast(mass, self.compute_dtype))
        return out

    def call(
        self,
        queries,
        agent_states,
        agent_weights,
        agent_mask,
        training=None,
    ):
        state = self.encode(agent_states, agent_weights, agent_mask)
        return self.score(state, queries, training=training)
