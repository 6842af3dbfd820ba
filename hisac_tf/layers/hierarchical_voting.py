"""HierarchicalVoting: HiSAC's sparse activation of interest agents.

docs/design.md §2.2. The semantic IDs (SIDs) of all items form one global tree
of L+1 levels: the root, then one level per codebook, a node of level l
being a path (c_1..c_l). For one user:

* a leaf's votes are the number of the user's valid items with that full SID
  (items without a SID are masked out by the caller); an internal node's
  votes are the sum of its descendants' votes, i.e. the number of valid
  items whose SID starts with the node's path;
* top-down sparsification: keep the root's top-k_1 children by votes, then
  under every kept node of level l-1 its top-k_l children with votes > 0
  (ties: smaller code first);
* the kept leaves are the user's interest agents, capped at A by votes
  (ties: smaller SID path, lexicographic), output in that same order (votes
  descending, then path ascending), padded after the last kept agent;
* each agent's weight w_a = v_a^(1/T) / sum_b v_b^(1/T) over the kept agents
  (computed as a softmax of log(v_a) / T, so a small T cannot overflow).

Vectorised over the batch, with no loop over users. Each item's SID becomes
one int64 path `sum_l c_l * R_L / R_l` (mixed radix, R_l = K_1 * ... * K_l,
so path order = lexicographic SID order); each user's row of paths is
sorted (rows sort in parallel, O(N log N) each; masked-out items get the
sentinel R_L and fall off the end) and the valid ones flattened into M keys
`b * R_L + path`, sorted by (user, path). A tree node of level l is then a
run of equal `key // (R_L / R_l)`. Per level (a Python loop over the L
levels): run starts -> dense node ids (cumsum), votes (segment sum), each
node's parent id, the node's rank among its siblings by one stable sort on
`parent * (N + 1) + (N - votes)` (nodes are already in code order inside a
parent, so the stable sort breaks ties by the smaller code), kept = rank <
k_l; only the items under kept nodes go on to the next level. The kept
leaves are ranked inside their user the same way and the first A scattered
into the [B, A] outputs. Cost O(B N log N) for the row sorts plus O(M log M)
at most for the node ranking (in practice far less: level 1 has at most
B * K_1 nodes, deeper levels only the kept subtrees); memory O(B N); no
dense [B, prod(K)] tensor.

Integer limits (checked or guaranteed):
* keys: b * R_L + path < B * R_L. The constructor requires
  R_L = prod(codebook_sizes) <= 2^32 and the call checks B * N < 2^31, so
  B < 2^31 and the key is < 2^63. (K = 1024 at L = 3 gives R_L = 2^30;
  B = 4096 then gives keys < 2^42.)
* rank keys: parent * (N + 1) + (N - votes) with parent < M <= B * N < 2^31
  and votes <= N < 2^31, so the key is < 2^62 (B = 4096, N = 100,000:
  < 4.1e13). B * N < 2^31 also keeps every sort within TensorFlow's int32
  sort indices.

Only core TensorFlow ops (sort/top_k, cumsum, segment sums, gather,
scatter_nd), so the layer goes into a SavedModel served by stock TF Serving.
"""

from __future__ import annotations

import numbers
from typing import Sequence

import tensorflow as tf

# prod(codebook_sizes) at most this, so batch-offset keys fit in int64.
MAX_TREE_LEAVES = 2**32


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class HierarchicalVoting(tf.keras.layers.Layer):
    """Per-user interest agents from SIDs by hierarchical voting.

    Args:
      codebook_sizes: K_l of each of the L levels, each >= 1.
      top_k: k_l, the children kept under each kept node at level l (k_1 is
        the number of level-1 nodes kept under the root), each >= 1, one per
        level.
      num_agents: A, the most agents kept per user (>= 1).
      temperature: T > 0 of the weights w_a = v_a^(1/T) / sum_b v_b^(1/T).

    Call args:
      sids: [B, N, L] int, the code of each level (0..K_l-1) of each
        history item.
      mask: [B, N] bool, True where the item is valid history AND has a
        SID. Codes of masked-out items are ignored.
      training: unused (the layer is deterministic, no weights).

    Returns a dict:
      agent_sids: [B, A, L] int32, each agent's SID path (0 when padded);
      agent_votes: [B, A] float32, v_a (0 when padded);
      agent_weights: [B, A] float32, w_a (0 when padded; all zeros for a
        user with no valid item);
      agent_mask: [B, A] bool, True for kept agents;
      num_active: [B] int32, the number of kept agents.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Hierarchical Voting" (sparse activation of interest agents).

    Example:

    ```python
    voting = HierarchicalVoting(codebook_sizes=(4, 4), top_k=(2, 2),
                                num_agents=3)
    sids = tf.constant([[[0, 1], [0, 1], [0, 2], [3, 0]]])  # [B=1, N=4, L=2]
    mask = tf.constant([[True, True, True, False]])  # the last item: no SID
    agents = voting(sids, mask)
    agents["agent_sids"]  # [1, 3, 2]: (0, 1), (0, 2), padding
    agents["agent_weights"]  # [1, 3]: 2/3, 1/3, 0
    ```
    """

    def __init__(
        self,
        codebook_sizes: Sequence[int],
        top_k: Sequence[int],
        num_agents: int,
        temperature: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        codebook_sizes = _int_list("codebook_sizes", codebook_sizes)
        top_k = _int_list("top_k", top_k)
        if not codebook_sizes:
            raise ValueError(
                f"codebook_sizes must name at least one level, got "
                f"{codebook_sizes!r}"
            )
        if any(k < 1 for k in codebook_sizes):
            raise ValueError(
                f"codebook_sizes must all be >= 1, got {codebook_sizes!r}"
            )
        if len(top_k) != len(codebook_sizes):
            raise ValueError(
                f"top_k must have one entry per level "
                f"(len(codebook_sizes) = {len(codebook_sizes)}), got "
                f"top_k={top_k!r}"
            )
        if any(k < 1 for k in top_k):
            raise ValueError(f"top_k must all be >= 1, got {top_k!r}")
        num_leaves = 1
        for k in codebook_sizes:
            num_leaves *= k
        if num_leaves > MAX_TREE_LEAVES:
            raise ValueError(
                f"prod(codebook_sizes) must be <= 2^32 so that int64 keys "
                f"cannot overflow, got codebook_sizes={codebook_sizes!r} "
                f"(product {num_leaves})"
            )
        if (
            isinstance(num_agents, bool)
            or not isinstance(num_agents, numbers.Integral)
            or num_agents < 1
        ):
            raise ValueError(
                f"num_agents must be an int >= 1, got {num_agents!r}"
            )
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, numbers.Real)
            or not 0 < temperature < float("inf")
        ):
            raise ValueError(
                f"temperature must be a finite number > 0, got "
                f"{temperature!r}"
            )
        self.codebook_sizes = codebook_sizes
        self.top_k = top_k
        self.num_agents = int(num_agents)
        self.temperature = float(temperature)
        self.num_levels = len(codebook_sizes)
        # radix[l] = R_L / R_{l+1}: the leaf key // radix[l] is the key of
        # its level-(l+1) ancestor (batch offset included).
        radix = []
        step = 1
        for k in reversed(codebook_sizes):
            radix.append(step)
            step *= k
        self._radix = list(reversed(radix))  # [L], radix[L-1] == 1
        self._num_leaves = num_leaves  # R_L

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "codebook_sizes": list(self.codebook_sizes),
                "top_k": list(self.top_k),
                "num_agents": self.num_agents,
                "temperature": self.temperature,
            }
        )
        return config

    def compute_mask(self, inputs, mask=None):
        # `mask` is the item mask of the history, not a Keras output mask.
        return None

    def call(self, sids, mask=None, training=None):
        del training  # deterministic
        if mask is None:
            raise ValueError(
                "mask is required: [B, N] bool, True where the item is "
                "valid history and has a SID; got mask=None"
            )
        sids = tf.convert_to_tensor(sids)
        mask = tf.convert_to_tensor(mask)
        self._check_shapes(sids, mask)
        if not sids.dtype.is_integer:
            raise ValueError(
                f"sids must be an integer tensor, got dtype {sids.dtype.name}"
            )
        if mask.dtype != tf.bool:
            mask = tf.cast(mask, tf.bool)
        sids = tf.cast(sids, tf.int64)
        num_levels = self.num_levels
        num_agents = self.num_agents

        batch = tf.shape(sids, out_type=tf.int64)[0]
        hist_len = tf.shape(sids, out_type=tf.int64)[1]

        sids = self._check_codes(sids, mask)  # [B, N, L]
        # Path = sum_l c_l * radix_l: mixed radix, lexicographic order.
        radix = tf.constant(self._radix, tf.int64)  # [L]
        paths = tf.reduce_sum(sids * radix, axis=2)  # [B, N]
        # Sort each user's paths (rows sort in parallel, N log N each);
        # masked-out items get the sentinel R_L, above every path.
        paths = tf.sort(
            tf.where(mask, paths, self._num_leaves), axis=1
        )  # [B, N]
        user_offset = tf.range(batch)[:, tf.newaxis] * self._num_leaves
        leaf_keys = tf.boolean_mask(
            paths + user_offset,  # [B, N]
            paths < self._num_leaves,
        )  # [M] = b * R_L + path, sorted: grouped by user, then path

        # Level 0: one node per user (node id = b). At every level only the
        # items under kept nodes go on, so a kept node's votes are complete
        # and ranking costs are bounded by the kept subtrees.
        parent_of_item = leaf_keys // self._num_leaves  # [M] user of item
        num_parents = batch
        for level in range(num_levels):
            node_keys_per_item = leaf_keys // self._radix[level]  # [M]
            previous = tf.concat(
                [tf.constant([-1], tf.int64), node_keys_per_item], axis=0
            )[:-1]  # [M] key of the item before (-1 for the first)
            starts = tf.not_equal(node_keys_per_item, previous)  # [M]
            node_of_item = tf.cumsum(tf.cast(starts, tf.int64)) - 1  # [M]
            num_nodes = tf.reduce_sum(tf.cast(starts, tf.int64))  # scalar
            node_keys = tf.boolean_mask(node_keys_per_item, starts)  # [U]
            node_parent = tf.boolean_mask(parent_of_item, starts)  # [U]
            votes = tf.math.unsorted_segment_sum(
                tf.ones_like(node_of_item), node_of_item, num_nodes
            )  # [U]
            rank = _rank_in_parent(
                node_parent, votes, num_parents, hist_len
            )  # [U]
            kept = rank < self.top_k[level]  # [U]
            if level + 1 < num_levels:
                item_kept = tf.gather(kept, node_of_item)  # [M]
                kept_id = tf.cumsum(tf.cast(kept, tf.int64)) - 1  # [U]
                parent_of_item = tf.boolean_mask(
                    tf.gather(kept_id, node_of_item), item_kept
                )  # [M'] kept node id of each remaining item
                leaf_keys = tf.boolean_mask(leaf_keys, item_kept)  # [M']
                num_parents = tf.reduce_sum(tf.cast(kept, tf.int64))

        # Kept leaves, ranked inside their user by (-votes, path).
        leaf_keys = tf.boolean_mask(node_keys, kept)  # [V]
        leaf_votes = tf.boolean_mask(votes, kept)  # [V]
        leaf_batch = leaf_keys // self._num_leaves  # [V]
        slot = _rank_in_parent(leaf_batch, leaf_votes, batch, hist_len)  # [V]
        in_cap = slot < num_agents  # [V]
        leaf_keys = tf.boolean_mask(leaf_keys, in_cap)  # [S]
        leaf_votes = tf.boolean_mask(leaf_votes, in_cap)  # [S]
        leaf_batch = tf.boolean_mask(leaf_batch, in_cap)  # [S]
        slot = tf.boolean_mask(slot, in_cap)  # [S]

        leaf_paths = leaf_keys % self._num_leaves  # [S]
        sizes = tf.constant(self.codebook_sizes, tf.int64)  # [L]
        leaf_codes = (
            leaf_paths[:, tf.newaxis] // radix[tf.newaxis, :]
        ) % sizes[tf.newaxis, :]  # [S, L]

        scatter_at = tf.stack([leaf_batch, slot], axis=1)  # [S, 2]
        out_shape_2d = tf.stack(
            [batch, tf.constant(num_agents, tf.int64)]
        )  # [2] = (B, A)
        out_shape_3d = tf.concat(
            [out_shape_2d, tf.constant([num_levels], tf.int64)], axis=0
        )  # [3] = (B, A, L)
        agent_sids = tf.scatter_nd(
            scatter_at, tf.cast(leaf_codes, tf.int32), out_shape_3d
        )  # [B, A, L]
        agent_votes = tf.scatter_nd(
            scatter_at, tf.cast(leaf_votes, tf.float32), out_shape_2d
        )  # [B, A]
        agent_mask = tf.scatter_nd(
            scatter_at, tf.ones_like(slot, tf.int32), out_shape_2d
        ) > 0  # [B, A]
        num_active = tf.math.unsorted_segment_sum(
            tf.ones_like(slot, tf.int32), leaf_batch, batch
        )  # [B]
        agent_weights = _vote_weights(
            agent_votes, agent_mask, self.temperature
        )  # [B, A]

        static_batch = sids.shape[0]
        agent_sids.set_shape([static_batch, num_agents, num_levels])
        agent_votes.set_shape([static_batch, num_agents])
        agent_weights.set_shape([static_batch, num_agents])
        agent_mask.set_shape([static_batch, num_agents])
        num_active.set_shape([static_batch])
        return {
            "agent_sids": agent_sids,
            "agent_votes": agent_votes,
            "agent_weights": agent_weights,
            "agent_mask": agent_mask,
            "num_active": num_active,
        }

    def _check_shapes(self, sids: tf.Tensor, mask: tf.Tensor) -> None:
        if sids.shape.rank is not None and sids.shape.rank != 3:
            raise ValueError(
                f"sids must be [B, N, L], got shape {sids.shape}"
            )
        if mask.shape.rank is not None and mask.shape.rank != 2:
            raise ValueError(f"mask must be [B, N], got shape {mask.shape}")
        if sids.shape.rank is not None:
            last = sids.shape[-1]
            if last is not None and last != self.num_levels:
                raise ValueError(
                    f"sids' last dimension must be L = len(codebook_sizes) "
                    f"= {self.num_levels}, got sids shape {sids.shape}"
                )
        if sids.shape.rank is not None and mask.shape.rank is not None:
            if not sids.shape[:2].is_compatible_with(mask.shape):
                raise ValueError(
                    f"sids [B, N, L] and mask [B, N] disagree: sids shape "
                    f"{sids.shape}, mask shape {mask.shape}"
                )

    def _check_codes(self, sids: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Runtime checks on [B, N, L] sids: L levels; for valid items,
        0 <= c_l < K_l (codes of masked-out items may be anything)."""
        sizes = tf.constant(self.codebook_sizes, tf.int64)  # [L]
        shape = tf.shape(sids, out_type=tf.int64)  # [3] = (B, N, L)
        shape_checks = [
            tf.debugging.assert_equal(
                shape[2],
                tf.constant(self.num_levels, tf.int64),
                message=(
                    f"sids' last dimension must be L = {self.num_levels}"
                ),
            ),
            tf.debugging.assert_less(
                shape[0] * shape[1],
                tf.constant(2**31, tf.int64),
                message="sids: B * N must be < 2^31 (int64 key limits)",
            ),
        ]
        with tf.control_dependencies(shape_checks):
            sids = tf.identity(sids)  # [B, N, L]
        valid_codes = tf.where(mask[:, :, tf.newaxis], sids, 0)  # [B, N, L]
        range_checks = [
            tf.debugging.assert_non_negative(
                valid_codes, message="sids of valid items must be >= 0"
            ),
            tf.debugging.assert_less(
                valid_codes,
                sizes,
                message=(
                    f"sids of valid items must be < codebook_sizes "
                    f"{list(self.codebook_sizes)} level by level"
                ),
            ),
        ]
        with tf.control_dependencies(range_checks):
            return tf.identity(sids)  # [B, N, L]


def _rank_in_parent(
    parent: tf.Tensor,
    votes: tf.Tensor,
    num_parents: tf.Tensor,
    max_votes: tf.Tensor,
) -> tf.Tensor:
    """Rank of each node among its siblings by (-votes, current order).

    parent: [U] int64, nondecreasing (nodes are grouped by parent, and in
    the tie-break order inside a parent); votes: [U] int64 in 1..max_votes;
    num_parents: scalar, parents are 0..num_parents-1. Returns [U] int64,
    0 for the sibling with the most votes.

    The sort key parent * (max_votes + 1) + (max_votes - votes) < 2^62 as
    parent < 2^31 and votes <= max_votes < 2^31 (int32 sort indices).
    """
    sort_keys = parent * (max_votes + 1) + (max_votes - votes)  # [U]
    order = tf.argsort(sort_keys, stable=True)  # [U] sorted -> node
    # Siblings of a parent occupy the same positions in both orders, from
    # the parent's first position on.
    counts = tf.math.unsorted_segment_sum(
        tf.ones_like(parent), parent, num_parents
    )  # [P]
    first = tf.cumsum(counts, exclusive=True)  # [P]
    position = tf.range(tf.size(parent, out_type=tf.int64))  # [U]
    sorted_rank = position - tf.gather(first, parent)  # [U] by sorted pos.
    return tf.gather(sorted_rank, tf.math.invert_permutation(order))  # [U]


def _vote_weights(
    votes: tf.Tensor, mask: tf.Tensor, temperature: float
) -> tf.Tensor:
    """w = v^(1/T) / sum v^(1/T) over masked-in slots, as a stable softmax.

    votes: [B, A] float32 (>= 1 where mask); mask: [B, A] bool. Returns
    [B, A] float32, zeros where mask is False and for all-masked rows.
    """
    logits = tf.where(
        mask, tf.math.log(tf.maximum(votes, 1.0)) / temperature, 0.0
    )  # [B, A], >= 0 where mask
    # Padded logits are 0 <= every real logit, so the max is a real one.
    top = tf.reduce_max(logits, axis=1, keepdims=True)  # [B, 1]
    powered = tf.where(mask, tf.exp(logits - top), 0.0)  # [B, A]
    total = tf.reduce_sum(powered, axis=1, keepdims=True)  # [B, 1]
    return tf.math.divide_no_nan(powered, total)  # [B, A]


def _int_list(name: str, values) -> list[int]:
    """A sequence of ints (numpy ints accepted), else a ValueError."""
    try:
        out = list(values)
    except TypeError:
        raise ValueError(
            f"{name} must be a sequence of ints, got {values!r}"
        ) from None
    if any(
        isinstance(v, bool) or not isinstance(v, numbers.Integral)
        for v in out
    ):
        raise ValueError(f"{name} must be a sequence of ints, got {values!r}")
    return [int(v) for v in out]
