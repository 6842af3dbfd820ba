"""`CompressorSizes` and `CompressionCost`: what a compressor's cost reads
and what it returns (the cost model, hisac_tf/compressors/flops.py).

Every registered compressor class answers `cost(sizes) -> CompressionCost`
for one user: G (the groups its target attention reads), the
multiply-adds of the compression and the bytes its elementwise passes
touch (float32, 4 bytes an element: a pass reading one tensor and writing
one of E elements is 8 E bytes). Plain Python, no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import numbers

# SimHash bits of `lsh` (LSHCompressor): at most 2^16 buckets.
MAX_LSH_BITS = 16


def default_num_bits(num_groups: int) -> int:
    """ceil(log2 A) + 1: at least 2A buckets, at most 2^MAX_LSH_BITS."""
    return min(MAX_LSH_BITS,
               max(1, int(num_groups - 1).bit_length() + 1))


def routed_items(n: int, routing_top_m: int = 0) -> int:
    """K, the history items each agent aggregates: N dense (m = 0 or
    m >= N), else m (sparse routing, SoftRoutingAttention(top_m=m))."""
    return n if not routing_top_m or routing_top_m >= n else routing_top_m


@dataclasses.dataclass(frozen=True)
class CompressorSizes:
    """The sizes one user's compression depends on.

    Args:
      n: N, the history length.
      a: A, the groups of the compressors that compress (num_agents).
      d: D, the ranking embedding width.
      ds: Ds, the semantic latent width.
      h: H, the attention heads.
      num_levels: L, semantic-ID levels.
      kmeans_iterations: Lloyd steps of `kmeans`.
      lsh_bits: SimHash bits of `lsh` (0: `default_num_bits(a)`).
      routing_top_m: m of sparse routing (`hisac`, `hisac_no_voting`;
        0: dense); each agent aggregates `routed_items` = K items.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compared at the same G, with its
        cost per request).

    Example:

    ```python
    sizes = CompressorSizes(n=1000, a=200, d=32, ds=32, h=4)
    PatchingCompressor.cost(sizes).macs  # N D = 32,000
    ```
    """

    n: int
    a: int
    d: int
    ds: int
    h: int
    num_levels: int = 2
    kmeans_iterations: int = 5
    lsh_bits: int = 0
    routing_top_m: int = 0

    def __post_init__(self):
        for field in ("n", "a", "d", "ds", "h", "num_levels"):
            _check_int(type(self).__name__, field, getattr(self, field), 1)
        for field in ("kmeans_iterations", "lsh_bits", "routing_top_m"):
            _check_int(type(self).__name__, field, getattr(self, field), 0)

    @property
    def routed_items(self) -> int:
        """K, the history items each agent aggregates (`routed_items`)."""
        return routed_items(self.n, self.routing_top_m)

    @property
    def hk(self) -> int:
        """H * dk with dk = max(1, D // H) (= D when H divides D)."""
        return self.h * max(1, self.d // self.h)


@dataclasses.dataclass(frozen=True)
class CompressionCost:
    """One user's compression: G, multiply-adds, elementwise bytes.

    Args:
      groups: G, the groups the target attention reads.
      macs: multiply-adds of the compression itself.
      bytes: bytes its elementwise passes touch.
      voting: HierarchicalVoting runs in front (its sort-like passes are
        the cost model's `voting` component).
      off_tape_macs, off_tape_bytes: the part of `macs` and `bytes` that
        reads frozen inputs only and can run off the gradient tape
        (HiSAC's routing logits and top-m selection, docs/design.md
        §2.3); the rest (the aggregation) is taped. 0: all taped.
      select_elements: elements a top-k selection scans (HiSAC's sparse
        routing: `tf.math.top_k` of the [A, N] logits, A N), off the tape;
        timed at the calibrated selection rate, not as bytes.
      sort_steps: element x ceil(log2 length) steps of full sorts
        (HiSAC's sparse routing: the routed positions' argsort over N),
        off the tape; timed at the calibrated sort rate.
      exp_elements: elements of its exp passes off the tape (HiSAC's
        routing softmax: A N dense, A m sparse); their bytes are in
        `bytes`, the exp's arithmetic beyond them is timed at the
        calibrated exp rate (`flops.predict_training`).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compared at the same G, with its
        cost per request).

    Example:

    ```python
    cost = CompressionCost(groups=4, macs=80, bytes=640)
    cost.groups  # G = 4: the target attention reads 4 groups
    ```
    """

    groups: int
    macs: int = 0
    bytes: int = 0
    voting: bool = False
    off_tape_macs: int = 0
    off_tape_bytes: int = 0
    select_elements: int = 0
    sort_steps: int = 0
    exp_elements: int = 0

    def __post_init__(self):
        _check_int(type(self).__name__, "groups", self.groups, 1)
        for field in ("macs", "bytes", "off_tape_macs", "off_tape_bytes",
                      "select_elements", "sort_steps", "exp_elements"):
            _check_int(type(self).__name__, field, getattr(self, field), 0)
        for field in ("macs", "bytes"):
            if getattr(self, "off_tape_" + field) > getattr(self, field):
                raise ValueError(
                    f"{type(self).__name__}: off_tape_{field} must be <= "
                    f"{field} = {getattr(self, field)}, got "
                    f"{getattr(self, 'off_tape_' + field)!r}")


def _check_int(owner: str, field: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < low:
        raise ValueError(f"{owner}: {field} must be an int >= {low}, got "
                         f"{value!r}")
