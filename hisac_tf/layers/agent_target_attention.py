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

from hisac_tf.layers.shape_checks import check_dim as _check_dim
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.shape_checks import check_rank as _check_rank

_STATE_KEYS = ("keys", "values", "bias", "mask")
_NAME = "AgentTargetAttention"


def _masked_softmax(logits, mask):
    """Softmax over agents [B, H, C, A]; masked agents and all-masked rows
    (uniform after the softmax) get exactly 0."""
    probs = tf.nn.softmax(logits, axis=-1)  # [B, H, C, A]
    return tf.where(mask, probs, tf.zeros_like(probs))  # [B, H, C, A]


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
      attention_mass: also add W_m [logsumexp_a logits, any valid] to the
        output (see the module doc); False: plain softmax attention.

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
        """float32 masked logits [B, H, C, A] and the mask they used.

        Args:
          state: from `encode`.
          queries: [B, C, Dq].
          group_mask: optional [B, C, A] bool, a per-candidate restriction
            of the agents (e.g. `sim_hard`: the candidate's category),
            combined with the state's mask.

        Returns:
          (logits [B, H, C, A] with float32.min at masked agents, mask
          [B, 1, 1 or C, A] bool).
        """
        me = type(self).__name__
        self._check_state(state)
        queries = tf.convert_to_tensor(queries)
        _check_rank(me, "queries", queries, 3, "B, C, Dq")
        _check_dim(me, "queries", queries, 0, "B", "state['keys']",
                   state["keys"], 0)
        if not self.built:
            self.build(queries.shape)
        q = self.query_dense(queries)  # [B, C, H, dk]
        q = tf.cast(q, tf.float32) * (1.0 / math.sqrt(self.key_dim))
        k = tf.cast(state["keys"], tf.float32)  # [B, H, A, dk]
        logits = tf.einsum("bchk,bhak->bhca", q, k)  # [B, H, C, A]
        bias = tf.cast(state["bias"], tf.float32)  # [B, A]
        logits += bias[:, tf.newaxis, tf.newaxis, :]  # [B, H, C, A]
        mask = tf.cast(state["mask"], tf.bool)[
            :, tf.newaxis, tf.newaxis, :
        ]  # [B, 1, 1, A]
        if group_mask is not None:
            group_mask = tf.cast(group_mask, tf.bool)
            _check_rank(me, "group_mask", group_mask, 3, "B, C, A")
            mask = tf.logical_and(
                mask, group_mask[:, tf.newaxis, :, :]
            )  # [B, 1, C, A]
        # Re-mask after the addition: logit + float32.min may round to -inf.
        logits = tf.where(mask, logits, tf.float32.min)  # [B, H, C, A]
        return logits, mask

    def attention_probs(self, state: Mapping[str, tf.Tensor], queries,
                        group_mask=None):
        """float32 attention probabilities [B, H, C, A], before dropout.

        Masked agents get 0; a user with no valid agent gets all zeros.
        `group_mask` as in `attention_logits`.
        """
        logits, mask = self.attention_logits(state, queries, group_mask)
        return _masked_softmax(logits, mask)  # [B, H, C, A]

    def mass_features(self, logits, mask, bias):
        """[B, C, H + 1] float32: per-head attention mass, any valid.

        mass_h = logsumexp_a logits_{h,a} - logsumexp_a log w_a over the
        valid agents: the log of the prior-weighted mean of exp(q.k), so
        that it measures how much of the state matches the candidate on
        the scale of the logits, whatever the number of agents (with
        w_a = 1 over n agents it is log-mean-exp, not log-sum-exp, which
        would grow with log n). A candidate with no valid agent gets 0 for
        every head and 0 for the flag.

        Args:
          logits: [B, H, C, A] and mask [B, 1, 1 or C, A] from
            `attention_logits`; bias: the state's [B, A] log w_a.
        """
        any_valid = tf.reduce_any(mask, axis=-1)  # [B, 1, 1 or C]
        prior = tf.where(
            mask, tf.cast(bias, tf.float32)[:, None, None, :],
            tf.float32.min,
        )  # [B, 1, 1 or C, A]
        lse = tf.reduce_logsumexp(logits, axis=-1)  # [B, H, C]
        lse -= tf.reduce_logsumexp(prior, axis=-1)  # [B, 1, 1 or C]
        lse = tf.where(any_valid, lse, 0.0)  # [B, H, C]
        flag = tf.broadcast_to(
            tf.cast(any_valid, tf.float32), tf.shape(lse[:, :1])
        )  # [B, 1, C]
        return tf.transpose(
            tf.concat([lse, flag], axis=1), [0, 2, 1]
        )  # [B, H + 1, C] -> [B, C, H + 1]

    def score(self, state: Mapping[str, tf.Tensor], queries, training=None,
              group_mask=None):
        """Candidates against an encoded user: [B, C, Dq] -> [B, C, O].

        `group_mask` [B, C, A] bool optionally restricts each candidate's
        agents (see `attention_logits`).
        """
        if not self.built:  # `score` may be called without `__call__`.
            self._maybe_build(tf.TensorShape(queries.shape))
        logits, mask = self.attention_logits(state, queries, group_mask)
        probs = _masked_softmax(logits, mask)  # [B, H, C, A]
        probs = tf.cast(probs, self.compute_dtype)
        probs = self.attention_dropout(probs, training=training)
        values = tf.cast(state["values"], self.compute_dtype)
        context = tf.einsum(
            "bhca,bhak->bchk", probs, values
        )  # [B, H, C, A] x [B, H, A, dk] -> [B, C, H, dk]
        out = self.output_dense(context)  # [B, C, O]
        if self.attention_mass:
            mass = self.mass_features(
                logits, mask, state["bias"]
            )  # [B, C, H + 1]
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
