"""`make_compressor(name, **plain_values)`: every compressor by its name.

The names are the `model.compressor` values of the config (docs/design.md §3):

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

All but `full` and `sim_hard` compress to G = num_groups (A).
"""

from __future__ import annotations

from typing import Optional, Sequence

from hisac_tf.compressors.aggregator_compressor import AggregatorCompressor
from hisac_tf.compressors.full_history import FullHistory
from hisac_tf.compressors.hisac_compressor import HiSACCompressor
from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.kmeans_compressor import KMeansCompressor
from hisac_tf.compressors.lsh_compressor import (
    LSHCompressor,
    default_num_bits,
)
from hisac_tf.compressors.patching_compressor import PatchingCompressor
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.compressors.sim_hard_compressor import SimHardCompressor

COMPRESSOR_NAMES = (
    "hisac", "hisac_hard", "hisac_no_voting", "kmeans", "lsh", "patching",
    "aggregator", "full", "recent", "sim_hard",
)
# Compressors whose G is the history length N rather than A.
FULL_LENGTH = ("full", "sim_hard")


def _need(name: str, field: str, value):
    if value is None:
        raise ValueError(
            f"make_compressor({name!r}) needs `{field}`; received None"
        )
    return value


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
      name: one of `COMPRESSOR_NAMES`.
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
    if name not in COMPRESSOR_NAMES:
        raise ValueError(
            f"unknown compressor {name!r} (choose from "
            f"{', '.join(COMPRESSOR_NAMES)})"
        )
    if name.startswith("hisac"):
        return HiSACCompressor(
            codebook_sizes=_need(name, "codebook_sizes", codebook_sizes),
            top_k=_need(name, "top_k", top_k),
            num_agents=num_groups,
            vote_temperature=vote_temperature,
            routing_temperature=routing_temperature,
            hard_routing=name == "hisac_hard",
            use_voting=name != "hisac_no_voting",
            routing_top_m=routing_top_m,
        )
    if name == "kmeans":
        return KMeansCompressor(num_groups, iterations=kmeans_iterations)
    if name == "lsh":
        return LSHCompressor(
            num_groups,
            num_bits=lsh_bits or default_num_bits(num_groups),
            latent_dim=_need(name, "latent_dim", latent_dim),
            seed=seed,
        )
    if name == "patching":
        return PatchingCompressor(num_groups)
    if name == "aggregator":
        return AggregatorCompressor(num_groups, num_heads=num_heads)
    if name == "recent":
        return RecentCompressor(num_groups)
    if name == "full":
        return FullHistory(_need(name, "max_history", max_history))
    return SimHardCompressor(_need(name, "max_history", max_history))
