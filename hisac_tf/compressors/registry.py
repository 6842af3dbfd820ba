"""The compressor registry: every `model.compressor` name, held once.

One decorator adds a compressor (docs/design.md §3):

    @register_compressor("patching")
    class PatchingCompressor(HistoryCompressor):
        ...

`make_compressor(name, ...)` (factory.py) then builds it with
`cls.from_values(values, **options)` and the cost model (flops.py) reads
`cls.cost(sizes, **options)`; `options` are constructor values the name
fixes (`hisac_hard` is `HiSACCompressor` with `hard_routing=True`). The
built-in compressors register in their own modules, which factory.py
imports; a compressor defined elsewhere registers when its module is
imported. "none" is reserved: no long-term branch.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping, Optional

from hisac_tf.compressors.history_compressor import HistoryCompressor

# The `model.compressor` value that drops the long-term branch.
NO_COMPRESSOR = "none"


@dataclasses.dataclass(frozen=True)
class CompressorValues:
    """The plain values a compressor is built from (`make_compressor`'s
    keywords); each class's `from_values` reads the ones it needs.

    Args:
      name: the registered name being built (for error messages).
      num_groups: A (`full` and `sim_hard` use max_history instead).
      codebook_sizes, top_k: the semantic-ID levels (hisac variants).
      latent_dim: Ds (lsh).
      max_history: N (full, sim_hard).
      vote_temperature, routing_temperature: T and tau (hisac variants).
      num_heads: H (aggregator).
      kmeans_iterations: Lloyd steps (kmeans).
      lsh_bits: SimHash bits; 0 picks ceil(log2 A) + 1 (lsh).
      seed: the hyperplanes' seed (lsh).
      routing_top_m: m of sparse routing, 0 dense (hisac, hisac_no_voting;
        `model.routing_top_m`).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compared at the same G, with its
        cost per request).

    Example:

    ```python
    values = CompressorValues(name="kmeans", num_groups=8,
                              kmeans_iterations=3)
    KMeansCompressor.from_values(values).iterations  # 3
    ```
    """

    name: str
    num_groups: int
    codebook_sizes: Optional[tuple[int, ...]] = None
    top_k: Optional[tuple[int, ...]] = None
    latent_dim: Optional[int] = None
    max_history: Optional[int] = None
    vote_temperature: float = 1.0
    routing_temperature: float = 1.0
    num_heads: int = 2
    kmeans_iterations: int = 5
    lsh_bits: int = 0
    seed: int = 0
    routing_top_m: int = 0

    def need(self, field: str):
        """The value of `field`; ValueError naming it when it is None."""
        value = getattr(self, field)
        if value is None:
            raise ValueError(
                f"make_compressor({self.name!r}) needs `{field}`; received "
                "None")
        return value


@dataclasses.dataclass(frozen=True)
class CompressorEntry:
    """One registered name: its class and the constructor values it fixes.

    Args:
      name: the `model.compressor` value.
      cls: the `HistoryCompressor` subclass.
      options: constructor values the name fixes (read-only).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compared at the same G, with its
        cost per request).

    Example:

    ```python
    entry = lookup("hisac_hard")
    entry.cls.__name__, dict(entry.options)
    # ("HiSACCompressor", {"hard_routing": True})
    ```
    """

    name: str
    cls: type
    options: Mapping[str, Any]

    def build(self, values: CompressorValues):
        """The compressor layer, from plain values."""
        return self.cls.from_values(values, **self.options)

    def cost(self, sizes):
        """`CompressionCost` of one user (`CompressorSizes` in)."""
        return self.cls.cost(sizes, **self.options)


_REGISTRY: dict[str, CompressorEntry] = {}


def register_compressor(name: str, **options):
    """Class decorator: registers a `HistoryCompressor` subclass as
    `name` (a `model.compressor` value), with constructor `options` the
    name fixes. The class must implement `compress` and `cost`.

    Raises:
      ValueError: a name that is not an identifier, "none", or taken by
        another class.
      TypeError: a class without its own `compress` or `cost`.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError("register_compressor: the name must be an "
                         f"identifier, got {name!r}")
    if name == NO_COMPRESSOR:
        raise ValueError(f"register_compressor: {name!r} is reserved (no "
                         "long-term branch)")

    def register(cls):
        if not (isinstance(cls, type) and issubclass(cls, HistoryCompressor)):
            raise TypeError(f"register_compressor({name!r}): {cls!r} is not "
                            "a HistoryCompressor subclass")
        for method in ("compress", "cost"):
            owner = next(c for c in cls.__mro__ if method in vars(c))
            if owner is HistoryCompressor:
                raise TypeError(f"register_compressor({name!r}): "
                                f"{cls.__name__} must implement {method}()")
        taken = _REGISTRY.get(name)
        if taken is not None and taken.cls.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"register_compressor: {name!r} is already "
                f"{taken.cls.__module__}.{taken.cls.__qualname__}")
        _REGISTRY[name] = CompressorEntry(
            name, cls, types.MappingProxyType(dict(options)))
        return cls

    return register


def registered_names() -> tuple[str, ...]:
    """Every registered compressor name, in registration order."""
    return tuple(_REGISTRY)


def lookup(name: str) -> CompressorEntry:
    """The entry of `name`; ValueError listing the names when unknown."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise ValueError(f"unknown compressor {name!r} (choose from "
                         f"{', '.join(_REGISTRY)})")
    return entry
