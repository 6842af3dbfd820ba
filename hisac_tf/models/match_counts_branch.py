"""`MatchCountsBranch`: how many behaviours match each candidate
(docs/design.md §2.6)."""

from __future__ import annotations

from typing import Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.layers.history_match_counts import (
    COUNT_STATE_KEYS,
    HistoryMatchCounts,
)
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.models.branch import Branch

_PREFIX = "count_"
# HistoryMatchCounts' state names without their "count_" prefix.
_LOCAL = tuple(k[len(_PREFIX):] for k in COUNT_STATE_KEYS)


def count_keys(codebook_sizes: Sequence[int], category_ids, sids, has_sid):
    """Keys of the count types: category, then SID prefix per level.

    category_ids [B, X]; sids [B, X, L]; has_sid [B, X] -> (keys
    [B, X, T = 1 + L] int64, type_ok [B, X, T] bool: every item has a
    category key, only items with a SID have prefix keys). A prefix key
    encodes (c_1, .., c_l) as a mixed-radix number, >= 1. Item ids are
    not a count type: with negatives sampled outside the user's history
    (the importer's default) "the candidate is in the history" would read
    as "clicked"; exact repeats stay visible to the attention branches
    through the item embedding.
    """
    sids = tf.cast(sids, tf.int64)
    parts = [tf.cast(category_ids, tf.int64)]
    prefix = tf.zeros_like(parts[0])
    for level, size in enumerate(codebook_sizes):
        prefix = prefix * (size + 1) + sids[..., level] + 1
        parts.append(prefix)
    has_sid = tf.cast(has_sid, tf.bool)[..., None]  # [B, X, 1]
    type_ok = tf.concat([
        tf.ones_like(has_sid),
        tf.repeat(has_sid, len(codebook_sizes), axis=-1),
    ], axis=-1)  # [B, X, T]
    return tf.stack(parts, axis=-1), type_ok  # [B, X, T] each


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class MatchCountsBranch(Branch):
    """Exact per-candidate match counts (category and each SID prefix)
    over the history, or over its newest `window` items.

    Softmax attention normalises away how much of a history matches a
    candidate; this branch gives the head the counts
    (`HistoryMatchCounts`, 4 features per type plus the history length).

    Args:
      num_slots: M, the keys kept per type (the most frequent).
      codebook_sizes: K_l of the semantic IDs (L levels; T = 1 + L types).
      window: 0 counts the whole history; S > 0 only its newest S valid
        items (a ranker without a long-term branch counts what its
        short-term branch sees).
      state_prefix: namespace of the state (default "count_").

    State (`state_spec`): keys, values, gaps [B, T, M'] (M' = min(M,
    N + 1), unknown in the spec) and lengths [B, T].

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Hierarchical Voting" (the votes of a SID prefix are counts).

    Example:

    ```python
    branch = MatchCountsBranch(num_slots=64, codebook_sizes=(4, 4))
    state = branch.encode(history)  # keys [B, 3, min(64, N + 1)], ...
    out = branch.score(state, candidates)  # [B, C, 13]
    ```
    """

    def __init__(
        self,
        num_slots: int,
        codebook_sizes: Sequence[int],
        window: int = 0,
        state_prefix: str = _PREFIX,
        **kwargs,
    ):
        super().__init__(state_prefix=state_prefix, **kwargs)
        self.num_slots = check_int(
            "MatchCountsBranch", "num_slots", num_slots, 1)
        self.codebook_sizes = tuple(
            check_int("MatchCountsBranch", "codebook_sizes", k, 1)
            for k in codebook_sizes)
        if not self.codebook_sizes:
            raise ValueError(
                "MatchCountsBranch: codebook_sizes must name at least one "
                f"level; received {codebook_sizes!r}")
        self.window = check_int("MatchCountsBranch", "window", window, 0)
        # The SID prefix types (one per level) share one sort.
        self.match_counts = HistoryMatchCounts(
            self.num_slots, nested_types=len(self.codebook_sizes))

    @property
    def num_types(self) -> int:
        return 1 + len(self.codebook_sizes)

    def state_spec(self) -> dict:
        t = self.num_types
        return {
            "keys": tf.TensorSpec([None, t, None], tf.int64),
            "values": tf.TensorSpec([None, t, None], tf.float32),
            "gaps": tf.TensorSpec([None, t, None], tf.float32),
            "lengths": tf.TensorSpec([None, t], tf.float32),
        }

    def encode(self, history: Mapping, training=None,
               diagnostics: bool = False) -> dict:
        del training, diagnostics
        valid = history["valid"]  # [B, N]
        window = valid
        if self.window:  # The newest `window` valid items only.
            rank = tf.cumsum(tf.cast(valid, tf.int32), axis=1)  # [B, N]
            total = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
            window = tf.logical_and(
                valid, rank > (total - self.window)[:, None])  # [B, N]
        keys, type_ok = count_keys(
            self.codebook_sizes, history["categories"], history["sids"],
            history["has_sid"])  # [B, N, T] each
        state = self.match_counts.encode(
            keys, tf.logical_and(window[..., None], type_ok),
            history["timestamps"], history["request_time"])
        return {local: state[full]
                for local, full in zip(_LOCAL, COUNT_STATE_KEYS)}

    def score(self, state: Mapping, candidates: Mapping,
              training=None) -> tf.Tensor:
        del training
        keys, type_ok = count_keys(
            self.codebook_sizes, candidates["categories"],
            candidates["sids"], candidates["has_sid"])  # [B, C, T] each
        # A key a candidate lacks never matches (history keys are >= 1).
        keys = tf.where(type_ok, keys, tf.constant(-1, tf.int64))
        return self.match_counts.score(
            {full: state[local]
             for local, full in zip(_LOCAL, COUNT_STATE_KEYS)},
            keys)  # [B, C, 4T + 1]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_slots": self.num_slots,
            "codebook_sizes": list(self.codebook_sizes),
            "window": self.window,
        }
