"""`Branch`: one way the ranker reads a history (docs/design.md §2.6).

The ranker embeds a request's history once and hands the same embedded
history to each of its branches (the long-term compressor, the short-term
window, the match counts). A branch does its user-side work once per
request (`encode`), returns a cacheable state under its own names, and
turns that state and the candidates into features for the head (`score`).
`state_spec` says what the state holds, so that the serving signatures
read it instead of probing the model.

    history (an `EmbeddedHistory` built by the ranker, shared by every
    branch; each per-item field is computed when first read, and
    `history.at(positions, mask)` / `history.newest(S)` give the same
    fields for chosen positions only, embedded from the gathered inputs):
      h             [B, N, D]  ranking embeddings h_i (compute dtype)
      valid         [B, N] bool, True for a real history item
      sids          [B, N, L] int32 semantic IDs (0 when OOV)
      latents       [B, N, Ds] frozen semantic latents (0 when OOV)
      has_sid       [B, N] bool
      timestamps    [B, N] int64
      categories    [B, N] int64
      request_time  [B] int64
      codebooks     [sum_l K_l, Ds] the tokenizer's codebooks
      sid_embedding the ranker's `SidEmbedding` (one table for group SID
                    paths and candidate SIDs)
      routing_plan  HiSAC's routing precomputed by the input pipeline
                    (`ROUTING_PLAN_KEYS` features, models/routing_plan.py)
                    or None (optional key)
    candidates:
      queries       [B, C, Dq] the candidate embeddings
      categories    [B, C] int64
      sids          [B, C, L] int32
      has_sid       [B, C] bool

State names are namespaced: a branch's local name `k` is `state_prefix +
k` in the ranker's state (the long-term branch keeps the bare names of
exports made before branches: keys, values, bias, mask).
"""

from __future__ import annotations

from typing import Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

# Per-request diagnostics a branch's `encode` may add beside its state
# (not cached, not exported): agent_mask [B, G], num_active [B] and the
# routing diagnostics (`hisac_tf.layers.routing_diagnostics`).
DIAGNOSTIC_KEYS = ("agent_mask", "num_active")


class Branch(tf.keras.layers.Layer):
    """Base class of the ranker's history branches (module docstring).

    Subclasses implement `encode`, `score` and `state_spec`.

    Args:
      state_prefix: the namespace of this branch's state names.
    """

    def __init__(self, state_prefix: str = "", **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if not isinstance(state_prefix, str):
            raise ValueError(
                f"{type(self).__name__}: state_prefix must be a string; "
                f"received {state_prefix!r}")
        self.state_prefix = state_prefix

    # ------------------------------------------------------------ interface
    def encode(self, history: Mapping, training=None,
               diagnostics: bool = False) -> dict:
        """The user side: history -> local state (+ diagnostics)."""
        raise NotImplementedError(f"{type(self).__name__}.encode")

    def score(self, state: Mapping, candidates: Mapping,
              training=None) -> tf.Tensor:
        """Local state + candidates -> features [B, C, D']."""
        raise NotImplementedError(f"{type(self).__name__}.score")

    def state_spec(self) -> dict:
        """Local state name -> `tf.TensorSpec` ([None, ...]: the request
        axis, and any axis that follows the history width, are None).
        Floats are given as float32 (the cached dtype), masks as bool."""
        raise NotImplementedError(f"{type(self).__name__}.state_spec")

    # -------------------------------------------------------------- names
    @property
    def state_names(self) -> tuple[str, ...]:
        """This branch's names in the ranker's state, in order."""
        return tuple(self.state_prefix + k for k in self.state_spec())

    def namespaced(self, local: Mapping) -> tuple[dict, dict]:
        """encode's output -> (state under the ranker's names,
        diagnostics under their own names)."""
        spec = self.state_spec()
        state = {self.state_prefix + k: v for k, v in local.items()
                 if k in spec}
        extra = {k: v for k, v in local.items() if k not in spec}
        return state, extra

    def local_state(self, state: Mapping) -> dict:
        """The ranker's state -> this branch's local state; a missing
        entry is an error naming it."""
        missing = [n for n in self.state_names if n not in state]
        if missing:
            raise ValueError(
                f"{type(self).__name__} (state_prefix "
                f"{self.state_prefix!r}) needs state {missing}; received "
                f"a state with keys {sorted(state)}")
        n = len(self.state_prefix)
        return {name[n:]: state[name] for name in self.state_names}

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("autocast", None)
        config["state_prefix"] = self.state_prefix
        return config


def encode_groups(groups: Mapping, attention, sid_embedding) -> dict:
    """A compressor's groups -> an attention state.

    Group states get their SID path's embedding appended; the
    compressor's log-weight prior is the attention bias.

    Args:
      groups: `HistoryCompressor` output (group_states [B, G, D],
        group_mask, group_prior [B, G], group_sids [B, G, L],
        group_sid_mask [B, G]).
      attention: an `AgentTargetAttention`.
      sid_embedding: the ranker's `SidEmbedding`.
    Returns:
      keys, values [B, H, G, dk]; bias [B, G] float32; mask [B, G] bool.
    """
    mask = groups["group_mask"]  # [B, G]
    group_sid_emb = sid_embedding(
        groups["group_sids"], groups["group_sid_mask"])  # [B, G, D]
    group_states = tf.concat(
        [groups["group_states"], group_sid_emb], axis=-1)  # [B, G, 2D]
    prior = groups["group_prior"]  # [B, G] log-weights
    state = attention.encode(group_states, tf.ones_like(prior), mask)
    state["bias"] = tf.where(mask, prior, tf.float32.min)  # [B, G]
    return state


def attention_state_spec(attention, num_groups: int) -> dict:
    """The TensorSpecs of `encode_groups`' state for G groups."""
    h, dk = attention.num_heads, attention.key_dim
    return {
        "keys": tf.TensorSpec([None, h, num_groups, dk], tf.float32),
        "values": tf.TensorSpec([None, h, num_groups, dk], tf.float32),
        "bias": tf.TensorSpec([None, num_groups], tf.float32),
        "mask": tf.TensorSpec([None, num_groups], tf.bool),
    }
