"""`make_compressor(name, **plain_values)`: every compressor by its name.

The names are the `model.compressor` values of the config (docs/design.md
§3), held once in the registry (registry.py): each compressor's module
registers its class with `@register_compressor`. This module imports the
built-in ones:

    hisac            HiSACCompressor (voting + soft routing)
    hisac_hard       HiSACCompressor(hard_routing=True)
    hisac_no_voting  HiSACCompressor(use_voting=False)
    kmeans           KMeansCompressor
    lsh              LSHCompressor
    patching         PatchingCompressor
    aggregator       AggregatorCompressor
    full             FullHistory (G = max_history)
    recent           RecentCompressor
    sim_hard         SimHardCompressor (G = max_history, candidate mask)

All but `full` and `sim_hard` compress to G = num_groups (A). A new
compressor needs one file: its class with `compress`, `cost` (and
`from_values` when it takes more than num_groups) under
`@register_compressor("name")`.
"""

from __future__ import annotations

from typing import Optional, Sequence

# The built-in compressors register themselves when imported, in this
# order (the order of `COMPRESSOR_NAMES`).
import hisac_tf.compressors.hisac_compressor  # noqa: F401
import hisac_tf.compressors.kmeans_compressor  # noqa: F401
import hisac_tf.compressors.lsh_compressor  # noqa: F401
import hisac_tf.compressors.patching_compressor  # noqa: F401
import hisac_tf.compressors.aggregator_compressor  # noqa: F401
import hisac_tf.compressors.recent_compressor  # noqa: F401
import hisac_tf.compressors.full_history  # noqa: F401
import hisac_tf.compressors.sim_hard_compressor  # noqa: F401
from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.registry import (
    NO_COMPRESSOR,
    CompressorValues,
    lookup,
    registered_names,
)

# The built-in names (a snapshot of the registry once they registered);
# `compressor_names()` also lists compressors registered later.
COMPRESSOR_NAMES = registered_names()


def compressor_names() -> tuple[str, ...]:
    """Every registered compressor name (built-in and added)."""
    return registered_names()


def supported_compressors() -> tuple[str, ...]:
    """Every `model.compressor` value: the registered names and "none"
    (no long-term branch)."""
    return registered_names() + (NO_COMPRESSOR,)


def make_compressor(
    name: str,
    *,
    num_groups: int,
    codebook_sizes: Optional[Sequence[int]] = None,
    top_k: Optional[Sequence[int]] = None,
    latent_dim: Optional[int] = None,
    max_history: Optional[int] = None,
    vote_temperature: float = 1.0,
    routing_temperature: float = 1.0,
    num_heads: int = 2,
    kmeans_iterations: int = 5,
    lsh_bits: int = 0,
    seed: int = 0,
    routing_top_m: int = 0,
) -> HistoryCompressor:
    """The compressor called `name`, from plain values.

    Args:
      name: a registered name (`compressor_names()`).
      num_groups: A (ignored by `full` and `sim_hard`, whose G = N).
      codebook_sizes, top_k: the semantic-ID levels (hisac variants).
      latent_dim: Ds (lsh).
      max_history: N (full, sim_hard).
      vote_temperature, routing_temperature: T and tau (hisac variants).
      num_heads: H (aggregator).
      kmeans_iterations: Lloyd steps (kmeans).
      lsh_bits: SimHash bits; 0 picks ceil(log2 A) + 1 (lsh).
      seed: the hyperplanes' seed (lsh).
      routing_top_m: m of sparse routing, 0 dense (hisac, hisac_no_voting).
    Raises:
      ValueError: an unknown name or a missing value, named.
    """
    entry = lookup(name)
    return entry.build(CompressorValues(
        name=name,
        num_groups=num_groups,
        codebook_sizes=None if codebook_sizes is None
        else tuple(codebook_sizes),
        top_k=None if top_k is None else tuple(top_k),
        latent_dim=latent_dim,
        max_history=max_history,
        vote_temperature=vote_temperature,
        routing_temperature=routing_temperature,
        num_heads=num_heads,
        kmeans_iterations=kmeans_iterations,
        lsh_bits=lsh_bits,
        seed=seed,
        routing_top_m=routing_top_m,
    ))
