"""`EmbeddedHistory`: the history every branch reads, computed on first
use (docs/design.md §2.6, docs/performance.md "Only the routed items on
the tape").

The ranker hands each branch the same history (hisac_tf/models/branch.py
lists its keys). Its per-item fields are computed only when a branch
reads them, and `at(positions, mask)` gives the same history restricted
to K chosen positions per row, embedded from the gathered raw inputs:

* the short-term branch reads only the newest S positions, so a ranker
  without a long-term branch never embeds all N items;
* with a sparse routing plan from the input pipeline
  (hisac_tf/models/routing_plan.py), the long-term branch embeds only
  the U routed positions (U <= A m), so the work under the gradient tape
  no longer grows with N.

An item's h_i depends only on that item's raw inputs (ids, behaviour,
timestamp, request time, its item and event features), so h at a
position is the same whether all N items or K of them are embedded.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

# Per-item fields ([B, N, ...]) computed on first read.
ITEM_KEYS = ("h", "valid", "sids", "latents", "has_sid", "timestamps",
             "categories")
_SEMANTIC_KEYS = ("sids", "latents", "has_sid")
# hist_* features of one value per request ([B]), not per item: `at`
# keeps them as they are (the input pipeline adds hist_raw_length).
PER_REQUEST_KEYS = ("hist_length", "hist_raw_length")


class EmbeddedHistory(Mapping):
    """The branches' history (a read-only mapping), computed lazily.

    Args:
      features: the request features; the history's are hist_* [B, N,
        ...] (the per-request hist_length and hist_raw_length [B]
        aside), the rest (request_time, ...) are
        per request.
      valid: [B, N] bool, True for a real history item.
      embed_items: (features, valid [B, K]) -> h [B, K, D]: the ranking
        embedding of the hist_* items of `features` (any K).
      semantic_lookup: item ids [B, K] -> sids [B, K, L], latents [B, K,
        Ds], has_sid [B, K] (`SemanticIdLookup`).
      shared: per-request values that do not depend on the items
        (request_time, codebooks, sid_embedding, routing_plan).
    """

    def __init__(
        self,
        features: Mapping[str, Any],
        valid: tf.Tensor,
        embed_items: Callable[[Mapping, tf.Tensor], tf.Tensor],
        semantic_lookup: Callable[[tf.Tensor], Mapping],
        shared: Mapping[str, Any],
    ):
        clash = sorted(set(shared) & set(ITEM_KEYS))
        if clash:
            raise ValueError(
                f"EmbeddedHistory: shared values {clash} would hide the "
                f"per-item fields of the same names ({', '.join(ITEM_KEYS)})")
        self._features = dict(features)
        self._embed_items = embed_items
        self._semantic_lookup = semantic_lookup
        self._shared = dict(shared)
        self._items = {"valid": tf.cast(valid, tf.bool)}  # [B, N]

    # ---------------------------------------------------------- Mapping
    def __getitem__(self, key: str):
        if key in self._shared:
            return self._shared[key]
        if key not in ITEM_KEYS:
            raise KeyError(key)
        if key not in self._items:
            self._items.update(self._compute(key))
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        yield from ITEM_KEYS
        yield from self._shared

    def __len__(self) -> int:
        return len(ITEM_KEYS) + len(self._shared)

    def _compute(self, key: str) -> dict:
        if key == "h":
            return {"h": self._embed_items(
                self._features, self._items["valid"])}  # [B, N, D]
        if key in _SEMANTIC_KEYS:
            semantic = self._semantic_lookup(
                self._features["hist_item_ids"])  # [B, N] ids
            return {k: semantic[k] for k in _SEMANTIC_KEYS}
        if key == "timestamps":
            return {key: self._features["hist_timestamps"]}  # [B, N]
        return {key: self._features["hist_category_ids"]}  # [B, N]

    # ---------------------------------------------------- restriction
    def at(self, positions, mask=None) -> "EmbeddedHistory":
        """The items at `positions` [B, K] (int, each in [0, N)) as a
        history of K items; `mask` [B, K] bool (default: all) marks the
        slots in use, and `valid` of the result is mask AND the item's
        validity. Nothing of the N items is embedded: the raw hist_*
        inputs are gathered, then embedded."""
        positions = tf.convert_to_tensor(positions)
        if positions.shape.rank not in (None, 2):
            raise ValueError(
                "EmbeddedHistory.at: positions must be [B, K]; received "
                f"shape {positions.shape.as_list()}")
        features = dict(self._features)
        for key, value in self._features.items():
            if key.startswith("hist_") and key not in PER_REQUEST_KEYS:
                features[key] = tf.gather(
                    value, positions,
                    batch_dims=1)  # [B, N, ...] -> [B, K, ...]
        valid = tf.gather(self._items["valid"], positions,
                          batch_dims=1)  # [B, K]
        if mask is not None:
            valid = tf.logical_and(valid, tf.cast(mask, tf.bool))  # [B, K]
        return EmbeddedHistory(features, valid, self._embed_items,
                               self._semantic_lookup, self._shared)

    def newest(self, count: int) -> "EmbeddedHistory":
        """The newest `count` = S positions of each row, oldest first
        (valid is a prefix of each row: the history is left-aligned);
        slots before a short history's first item are masked. [B, S]."""
        valid = self._items["valid"]  # [B, N]
        length = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)  # [B]
        positions = (length[:, tf.newaxis] - count
                     + tf.range(count)[tf.newaxis, :])  # [B, S]
        return self.at(tf.maximum(positions, 0), positions >= 0)
