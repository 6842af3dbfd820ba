"""HiSAC's routing computed off the training step, in the input pipeline.

Voting, the agents' prototypes and the routing weights alpha depend only
on frozen inputs (the tokenizer's SIDs, latents and codebooks, and the
history mask); no gradient flows through them (docs/design.md §2.3).
`add_routing_plan(model)` returns a `tf.data` map function that computes
them per batch on the input pipeline's CPU workers and adds them to the
batch as the `ROUTING_PLAN_KEYS` features; the ranker's training step
then finds them and only aggregates u = alpha h (A m D with sparse
routing, `model.routing_top_m`; A N D dense) under the gradient tape.
Request-level serving is untouched: its requests carry raw ids only, so
the model computes the same routing itself (tests/test_routing_plan.py
checks both give the same logits).

Turned on by `training.routing_in_input_pipeline` (hisac_tf/training/
trainer.py); `with_routing_plan(dataset, model)` applies it.

Example:

    ds = input_pipeline.request_dataset(files, spec, batch_size)
    ds = with_routing_plan(ds, model)   # + routing_* features
    model.fit(ds, ...)
"""

from __future__ import annotations

from typing import Callable

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.compressors.hisac_compressor import (
    ROUTING_PLAN_KEYS,
    HiSACCompressor,
)

__all__ = ["ROUTING_PLAN_KEYS", "add_routing_plan", "with_routing_plan"]


def add_routing_plan(model) -> Callable[[dict], dict]:
    """features -> features + the routing plan, for `model` (a
    `HiSACRanker` whose long-term compressor is a `HiSACCompressor`).

    The function reads hist_item_ids [B, N] and hist_length [B], and
    uses the model's frozen semantic tables (no trainable weight).
    """
    compressor = getattr(model, "compressor", None)
    if not isinstance(compressor, HiSACCompressor):
        raise ValueError(
            "add_routing_plan needs a ranker with a HiSAC long-term "
            "compressor (model.compressor hisac, hisac_hard or "
            "hisac_no_voting); received compressor "
            f"{type(compressor).__name__}"
        )
    lookup = model.semantic_lookup

    def plan(features: dict) -> dict:
        item_ids = features["hist_item_ids"]  # [B, N]
        valid = tf.sequence_mask(features["hist_length"],
                                 tf.shape(item_ids)[1])  # [B, N]
        semantic = lookup(item_ids)
        routing = compressor.plan(
            valid, semantic["latents"], semantic["sids"],
            semantic["has_sid"],
            tf.concat(lookup.codebooks, axis=0))  # [sum_l K_l, Ds]
        return {**features, **routing}

    return plan


def with_routing_plan(dataset: tf.data.Dataset, model,
                      num_parallel_calls: int = tf.data.AUTOTUNE
                      ) -> tf.data.Dataset:
    """`dataset` (batches of request features) with the routing plan of
    `model` added to every batch, computed in parallel and prefetched."""
    return dataset.map(
        add_routing_plan(model), num_parallel_calls=num_parallel_calls,
        deterministic=True,
    ).prefetch(tf.data.AUTOTUNE)
