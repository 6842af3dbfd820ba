"""`HistoryCompressor`: the one interface of every history compressor.

docs/design.md §3. A compressor maps one request's history to G groups that the
ranker's target attention consumes, so that one ranking head serves every
method and comparisons are fair (same head, same G except `full`):

    values      h [B, N, D]   learned ranking embeddings (aggregated)
    valid         [B, N] bool True for a real (not padded) history item
    latents     z [B, N, Ds]  frozen semantic latents (0 when OOV)
    sids          [B, N, L]   semantic IDs (0 when OOV)
    has_sid       [B, N] bool True when the item is in the tokenizer tables
    timestamps    [B, N] int  event times, oldest first
    categories    [B, N] int  raw category ids
    codebooks     [sum_l K_l, Ds] the L codebooks, concatenated by rows
        ↓
    group_states    [B, G, D']  in the compute dtype (zeros when masked)
    group_mask      [B, G] bool True for a real group
    group_prior     [B, G] float32 log-weight bias on the attention logits
                    (0 where masked or when the method has no prior)
    group_sids      [B, G, L] int32 the group's SID path (zeros if none)
    group_sid_mask  [B, G] bool True where group_sids is meaningful
    num_active      [B] int32 the number of real groups
    (+ group_categories [B, G] int64 for candidate-dependent methods)

Every compressor must: have a static G (`num_groups`) so that exported
states have a fixed shape; be vectorised over the batch (no Python loop or
`tf.map_fn` over users); use core TensorFlow ops only; give finite zeros
for an all-padding history; and be registered serialisable with a
`get_config`. A compressor reads only the inputs it needs
(`required_inputs`) and raises ValueError naming a missing one.

Which items take part: methods that work in the semantic space (`hisac`
and its ablations, `kmeans`, `lsh`) group only valid items WITH a SID (an
OOV item has no latent z; docs/design.md §4 excludes it from voting and
routing);
the others (`patching`, `aggregator`, `recent`, `full`, `sim_hard`) use
every valid item (an OOV item still has its hashed ranking embedding).

The module also holds the vectorised building blocks that several
compressors share: `pooled_mean` (segment means into G slots) and
`select_items` (gather chosen items into G slots).
"""

from __future__ import annotations

from typing import Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.shape_checks import check_rank as _check_rank

GROUP_KEYS = (
    "group_states", "group_mask", "group_prior", "group_sids",
    "group_sid_mask", "num_active",
)
# Optional outputs for diagnostics, not part of the state: `routing`
# [B, G, N] float32, how much of each history item a group reads (the soft
# routing weights of `hisac` and its ablations).
DIAGNOSTIC_KEYS = ("routing",)
INPUT_NAMES = (
    "latents", "sids", "has_sid", "timestamps", "categories", "codebooks",
)


# The precomputed routing (`HiSACCompressor.plan`,
# `compress(..., routing_plan=...)`), as batch features:
# agent SIDs [B, A, L] int32, agent mask [B, A] bool, agent weights w_a
# [B, A] float32, active agents [B] int32, routing weights [B, A, K]
# float32 and, for sparse routing only, their item index [B, A, K] int32
# (K = min(m, N); dense: K = N and no index), the routed positions
# [B, U] int32 (the union of the index per row, ascending, U <= min(N,
# A K) the batch's largest union), their mask [B, U] bool and the index
# into them [B, A, K] int32 (`routing_slots`): the step then embeds only
# the U routed items (hisac_tf/models/embedded_history.py).
ROUTING_PLAN_KEYS = (
    "routing_agent_sids", "routing_agent_mask", "routing_agent_weights",
    "routing_num_active", "routing_weights", "routing_index",
    "routing_positions", "routing_position_mask", "routing_slots",
)
# The keys only sparse routing's plan has.
SPARSE_PLAN_KEYS = ("routing_index", "routing_positions",
                    "routing_position_mask", "routing_slots")


def check_positive_int(owner: str, name: str, value) -> int:
    """`value` as an int >= 1, else a ValueError naming it."""
    return check_int(owner, name, value, 1)


def check_non_negative_int(owner: str, name: str, value) -> int:
    """`value` as an int >= 0, else a ValueError naming it."""
    return check_int(owner, name, value, 0)


class HistoryCompressor(tf.keras.layers.Layer):
    """Base class: history [B, N, ...] -> G groups (see the module doc).

    Subclasses implement `compress(...) -> dict` with the `GROUP_KEYS`
    (and, when `candidate_dependent`, `group_categories`), list the
    optional inputs they read in `required_inputs`, implement the class
    method `cost(sizes)` (the cost model, flops.py), override
    `from_values` when the constructor takes more than `num_groups`, and
    register with `@register_compressor("name")` (registry.py).

    Args:
      num_groups: G, the static number of group slots (>= 1).

    Class attributes:
      candidate_dependent: True when the groups a candidate may attend to
        depend on the candidate (`sim_hard`); the state then carries
        `group_categories` and scoring needs them.
      required_inputs: names among `INPUT_NAMES` that `call` needs.

    Mixed precision: Keras autocast is off; `group_states` come out in the
    layer's compute dtype, priors in float32.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compresses the history to the same number of
        groups in front of one multi-head attention).

    Example:

    ```python
    values = tf.random.normal([2, 10, 8])  # h [B, N, D]
    valid = tf.sequence_mask([10, 3], 10)  # [B, N]: 10 and 3 items
    compressor = make_compressor("patching", num_groups=4)
    groups = compressor(values, valid)
    groups["group_states"]  # [2, 4, 8]
    groups["group_mask"]  # [2, 4]: 4 groups, then 3 and one padded
    ```
    """

    candidate_dependent = False
    required_inputs: tuple[str, ...] = ()
    # True when `compress` accepts `routing_plan` (HiSAC's routing weights
    # computed off the training step).
    supports_routing_plan = False

    def __init__(self, num_groups: int, **kwargs):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        self._num_groups = check_positive_int(
            type(self).__name__, "num_groups", num_groups
        )

    @property
    def num_groups(self) -> int:
        """G, the number of group slots of the output."""
        return self._num_groups

    @property
    def output_keys(self) -> tuple[str, ...]:
        if self.candidate_dependent:
            return GROUP_KEYS + ("group_categories",)
        return GROUP_KEYS

    def compute_mask(self, inputs, mask=None):
        return None  # `valid` is an input, not a Keras output mask.

    def call(
        self,
        values,
        valid,
        latents=None,
        sids=None,
        has_sid=None,
        timestamps=None,
        categories=None,
        codebooks=None,
        training=None,
        routing_plan=None,
    ) -> dict:
        """Compresses histories; see the module docstring for shapes.

        routing_plan: precomputed routing (`ROUTING_PLAN_KEYS`, e.g. from
        the input pipeline) for a compressor that supports it
        (`supports_routing_plan`); None: computed here. With a plan
        only `values` (and `valid`) are read: `required_inputs` may be
        None, and `values` may hold only the plan's routed items."""
        me = type(self).__name__
        values = tf.cast(tf.convert_to_tensor(values), self.compute_dtype)
        valid = tf.cast(valid, tf.bool)
        _check_rank(me, "values", values, 3, "B, N, D")
        _check_rank(me, "valid", valid, 2, "B, N")
        given = {
            "latents": latents, "sids": sids, "has_sid": has_sid,
            "timestamps": timestamps, "categories": categories,
            "codebooks": codebooks,
        }
        if has_sid is not None:
            has_sid = tf.cast(has_sid, tf.bool)
            _check_rank(me, "has_sid", has_sid, 2, "B, N")
        if latents is not None:
            latents = tf.convert_to_tensor(latents)
            _check_rank(me, "latents", latents, 3, "B, N, Ds")
        if sids is not None:
            sids = tf.convert_to_tensor(sids)
            _check_rank(me, "sids", sids, 3, "B, N, L")
        extra = {}
        if routing_plan is None:
            self._check_required(given)
        else:
            if not self.supports_routing_plan:
                raise ValueError(
                    f"{me} takes no precomputed routing; received "
                    f"routing_plan with keys {sorted(routing_plan)}"
                )
            extra["routing_plan"] = routing_plan
        out = self.compress(
            values=values, valid=valid, latents=latents, sids=sids,
            has_sid=has_sid, timestamps=timestamps, categories=categories,
            codebooks=codebooks, training=training, **extra,
        )
        missing = [k for k in self.output_keys if k not in out]
        if missing:  # A subclass bug, not a user error.
            raise AssertionError(f"{me}.compress did not return {missing}")
        batch = values.shape[0]
        g = self.num_groups
        out["group_states"].set_shape([batch, g, None])
        out["group_mask"].set_shape([batch, g])
        out["group_prior"].set_shape([batch, g])
        out["group_sids"].set_shape([batch, g, None])
        out["group_sid_mask"].set_shape([batch, g])
        out["num_active"].set_shape([batch])
        # Diagnostics pass through when a compressor provides them.
        return {k: out[k] for k in self.output_keys + DIAGNOSTIC_KEYS
                if k in out}

    def routes_sparsely(self, length) -> bool:
        """True when `plan(...)` for a history of `length` items (None:
        unknown) reads only some of them (its plan then has the
        `SPARSE_PLAN_KEYS`), so that only those need embedding."""
        del length
        return False

    def _check_required(self, given: dict) -> None:
        """Without a routing plan, every input in `required_inputs`."""
        for name in self.required_inputs:
            if given[name] is None:
                raise ValueError(
                    f"{type(self).__name__} needs `{name}` (it reads "
                    f"{', '.join(self.required_inputs)}); received "
                    f"{name}=None"
                )

    def compress(self, values, valid, latents, sids, has_sid, timestamps,
                 categories, codebooks, training) -> dict:
        raise NotImplementedError(
            f"{type(self).__name__} must implement compress()"
        )

    @classmethod
    def from_values(cls, values, **options) -> "HistoryCompressor":
        """The compressor from `CompressorValues` (registry.py) and the
        constructor `options` its registered name fixes; by default
        `cls(values.num_groups, **options)`."""
        return cls(values.num_groups, **options)

    @classmethod
    def cost(cls, sizes, **options):
        """`CompressionCost` (G, multiply-adds, elementwise bytes) of one
        user for `CompressorSizes` (compressor_sizes.py); `options` as in
        `from_values`. Every registered compressor implements it."""
        raise NotImplementedError(f"{cls.__name__} must implement cost()")

    def no_sids(self, values: tf.Tensor, sids: Optional[tf.Tensor]):
        """Zero group SIDs [B, G, L] and a False mask [B, G] for methods
        whose groups have no single SID (L = 1 when sids are not given)."""
        batch = tf.shape(values)[0]
        levels = 1 if sids is None else tf.shape(sids)[2]
        group_sids = tf.zeros(
            tf.stack([batch, self.num_groups, levels]), tf.int32
        )  # [B, G, L]
        return group_sids, tf.zeros(
            tf.stack([batch, self.num_groups]), tf.bool
        )  # [B, G]

    def get_config(self):
        config = super().get_config()
        config.pop("autocast", None)
        # Subclasses that name G otherwise drop `num_groups` on load.
        config["num_groups"] = self.num_groups
        return config


def log_share(counts: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Prior log(count_g / sum of counts) where mask, else 0.

    counts [B, G] float32 (> 0 where mask); mask [B, G] bool -> [B, G]
    float32. The share is the voting weight w with T = 1.
    """
    total = tf.reduce_sum(
        tf.where(mask, counts, 0.0), axis=1, keepdims=True
    )  # [B, 1]
    share = tf.math.divide_no_nan(counts, total)  # [B, G]
    return tf.where(mask, tf.math.log(tf.maximum(share, 1e-30)), 0.0)


def pooled_mean(values, slot, member, num_groups: int):
    """Means of the member items of each (user, slot).

    Args:
      values: [B, N, D] (any float dtype).
      slot: [B, N] int, the group of each item, in [0, G) where member.
      member: [B, N] bool, items that take part.
      num_groups: G.
    Returns:
      (means [B, G, D] in values' dtype, zeros for empty groups;
       counts [B, G] float32).
    Cost: one segment sum, N x D additions per user (no [B, G, N] tensor).
    """
    batch = tf.shape(values, out_type=tf.int64)[0]
    n = tf.shape(values, out_type=tf.int64)[1]
    d = tf.shape(values, out_type=tf.int64)[2]
    g = tf.constant(num_groups, tf.int64)
    dump = batch * g  # one extra segment for non-members
    ids = tf.range(batch)[:, tf.newaxis] * g + tf.cast(slot, tf.int64)
    ids = tf.where(member, ids, dump)  # [B, N]
    flat_ids = tf.reshape(ids, [-1])  # [B*N]
    flat = tf.reshape(values, tf.stack([batch * n, d]))  # [B*N, D]
    sums = tf.math.unsorted_segment_sum(
        flat, flat_ids, dump + 1
    )[:-1]  # [B*G, D]
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(flat_ids, tf.float32), flat_ids, dump + 1
    )[:-1]  # [B*G]
    sums = tf.reshape(sums, tf.stack([batch, g, d]))  # [B, G, D]
    counts = tf.reshape(counts, tf.stack([batch, g]))  # [B, G]
    inverse = tf.cast(
        tf.math.divide_no_nan(1.0, counts), values.dtype
    )  # [B, G]
    return sums * inverse[:, :, tf.newaxis], counts


def select_items(tensors: dict, valid, num_groups: int, newest: bool):
    """Gathers chosen valid items into G slots, oldest first.

    The chosen items are the user's valid items of ranks start+1 ..
    start+G (rank = position among the valid items, oldest first), where
    start = max(0, n - G) when `newest` (the newest G) else 0.

    Args:
      tensors: name -> [B, N, ...] tensors to gather (same B, N).
      valid: [B, N] bool.
      num_groups: G.
      newest: keep the newest G items (True) or the oldest G (False).
    Returns:
      (name -> [B, G, ...] gathered, zeros in empty slots;
       slot mask [B, G] bool; count [B] int32 = min(n, G)).
    Cost: a row-wise binary search, O(G log N) per user.
    """
    ranks = tf.cumsum(tf.cast(valid, tf.int64), axis=1)  # [B, N]
    n = tf.reduce_sum(tf.cast(valid, tf.int64), axis=1)  # [B]
    g = tf.constant(num_groups, tf.int64)
    start = tf.maximum(n - g, 0) if newest else tf.zeros_like(n)  # [B]
    targets = start[:, tf.newaxis] + tf.range(1, g + 1)[
        tf.newaxis, :
    ]  # [B, G] 1-based ranks
    slot_mask = targets <= n[:, tf.newaxis]  # [B, G]
    pos = tf.searchsorted(ranks, targets, side="left")  # [B, G]
    length = tf.shape(valid)[1]
    # Empty slots point at an appended zero row (also covers N = 0).
    pos = tf.where(slot_mask, pos, length)  # [B, G]
    out = {}
    for name, t in tensors.items():
        shape = tf.shape(t)
        pad = tf.zeros(
            tf.concat([shape[:1], [1], shape[2:]], 0), t.dtype
        )  # [B, 1, ...]
        padded = tf.concat([t, pad], axis=1)  # [B, N + 1, ...]
        out[name] = tf.gather(padded, pos, batch_dims=1)  # [B, G, ...]
    count = tf.cast(tf.minimum(n, g), tf.int32)  # [B]
    return out, slot_mask, count
