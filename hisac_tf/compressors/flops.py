"""The cost model: multiply-adds, bytes and time per request of the ranker
with each compressor (the one cost module; docs/performance.md).

`request_flops(RequestSizes(compressor, n=N, a=A, c=C, d=D, ds=Ds, h=H,
...))` counts the multiply-adds (MACs: one multiply-accumulate of a
contraction = 1; one addition of a sum of embeddings or of a segment sum
= 1) that one request costs, split into the user side (once per request,
or once per user when the state is cached) and the candidate side (per
candidate). Not counted:
elementwise work (softmax, exp, masks, biases, activations), integer work
(voting's sorts, SimHash bit packing, binary searches) and embedding-table
reads (memory, not arithmetic). With dk = max(1, D // H), hk = H * dk
(= D when H divides D), L levels, U user features, G groups
(G = N for `full` and `sim_hard`, else A):

user side = history embedding   3 E D        (h = item + cat + beh + gap)
          + compression         (below)
          + group SID embedding (L - 1) G D  (sum of L level embeddings)
          + keys and values     2 G (2D) hk  (group state ++ SID emb.)

compression: each compressor class's own `cost(CompressorSizes)`
(compressor_sizes.py), found by name in the registry (registry.py):
  hisac, hisac_no_voting   (L-1) A Ds  prototypes (sum of L codewords)
                           + N Ds + A Ds  squared norms of z and p
                           + A N Ds      z . p (distances)
                           + A K D       u_a = sum_i alpha_ai h_i
                           (K = N dense; K = m with sparse routing,
                           `routing_top_m` = m < N: `routed_items`)
  hisac_hard               A N D         (dense [A, N] x [N, D] routing)
  kmeans (I iterations)    N Ds + (I + 1) (A Ds + A N Ds)   assignments
                           + I N Ds      centroid updates (segment sums)
                           + N D         group means of h
  lsh (b bits)             N Ds b + N D
  patching                 N D
  aggregator               2 N D hk + 2 A N hk
  recent, full, sim_hard   0 (a gather)

per candidate = candidate SID embedding (L - 1) D
              + query projection        3D hk
              + logits and weighted sum 2 G hk
              + output projection       hk D
              + attention mass          (H + 1) D   (model.attention_mass)
              + head                    F F + F (DCN cross layer, if used)
                                        + sum of MLP kernels + last width
  with F = (1 + U) D + 3D + D the head's input width.

per request = user side + C x per candidate.

E, the history items embedded (`embedded_items`): N with a long-term
branch (with sparse routing only the routed items, at most min(N, A K):
it routes first, in the request or in the input pipeline), + min(S, N)
for the short-term branch's window (embedded on its own,
hisac_tf/models/embedded_history.py; S alone without a long-term
branch).

`RequestSizes.attention_mass` defaults to True, as
`ModelConfig.attention_mass` does; `RequestSizes.from_config(cfg)` reads
every size from a `Config`.

Time, not just arithmetic: `request_cost` (same sizes, + `cached`)
splits one request into components, each with its multiply-adds and the
bytes its elementwise passes touch (float32, 4 bytes an element; a pass
that reads one tensor and writes one of E elements touches 8 E bytes, a
reduction 4 E; gathers count what they write and read):

  user side (once per request; skipped with `cached=True`, the state is
  read from the cache instead)
    semantic_lookup       hashing ids, gathering SIDs and latents
                          32 N + 8 N (L + Ds) + N
    ranking_embedding     four [E, D] gathers and three adds   68 E D
    voting                (hisac*) L sort-like passes over N   8 N L (4 +
                          ceil log2 N)
    compression           the compressor's `cost(sizes).bytes` (hisac:
                          the augmented operands 8 N (Ds + 3) + 4 N Ds
                          + 8 N (D + 1), one exp pass 8 A N; the
                          baselines' passes over [A, N] or [N, D])
    group_sid_embedding   8 L G D
    keys_values           8 G (2D) + 2 x 8 G hk   (per branch)
  candidate side (C candidates)
    candidate_embedding   8 C D (L + 3)
    target_attention      one exp pass over [H, C, G] 8 H C G, the
                          augmented keys, values and logit bound per
                          request 8 G (3 hk + 3 H), and 48 C hk of small
                          per-candidate passes   (per branch)
    head                  16 C (2 F + sum of MLP widths + 1)

and `predict_latency(cost, matmul_flops_per_s, bytes_per_s)` turns it into
seconds, 2 MACs / matmul_flops_per_s + bytes / bytes_per_s per component,
once both throughputs are measured on the machine: `calibrate` measures
them on a large matmul and a large elementwise pass, with the per-op
dispatch cost; `predict_seconds` adds the graph's ops (`graph_ops`) at
that cost, and `component_seconds` splits a cost into seconds per
component (benchmarks/serving_cost.py shows predicted against measured).

Training: `training_cost(sizes, batch, routing_in_pipeline)` splits one
training step into stages (input, routing, forward, backward, optimizer)
of multiply-adds, bytes and integer work (`INTEGER_WORK`: sort steps,
binary-search steps, top-k selection and deduplication elements, which
are neither), and `predict_training` times them at the calibrated rates
(`integer_rates` for the integer kernels) plus each stage's graph ops at
the dispatch cost (benchmarks/training.py shows predicted against
measured per stage; docs/performance.md "Training: where the time
goes").
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.compressors.compressor_sizes import (
    MAX_LSH_BITS,
    CompressionCost,
    CompressorSizes,
    default_num_bits,
    routed_items,
)
from hisac_tf.compressors.factory import compressor_names
from hisac_tf.compressors.registry import NO_COMPRESSOR, lookup
from hisac_tf.layers.ranking_embedding import NUM_BEHAVIORS

__all__ = [
    "MAX_LSH_BITS", "CompressorSizes", "CompressionCost", "RequestSizes",
    "calibrate", "component_seconds", "compression_cost", "config_cost",
    "config_flops", "default_num_bits", "graph_ops", "predict_latency",
    "predict_seconds", "predict_training", "request_cost", "request_flops",
    "routed_items", "training_cost", "embedded_items", "INTEGER_WORK",
    "EXP_WORK", "integer_rates", "table_reads",
]

FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class RequestSizes:
    """Every size one request's cost depends on.

    Args:
      compressor: the `model.compressor` (a registered name, or "none":
        no long-term branch).
      n, a, c, d, ds, h: N, A, C, D, Ds, H.
      num_levels: L; user_features: U (besides user_id).
      mlp_dims, use_cross_layer: the ranking head.
      kmeans_iterations, lsh_bits: the baselines' settings (0 bits: auto).
      attention_mass: the attention's mass projection [H + 1, D] (True,
        as `ModelConfig.attention_mass`).
      short_term_length: S of the short-term branch (0: none).
      count_types: T of the match counts (0: none); they cost sorting
        and binary searches, no multiply-add, and widen the head by
        4 T + 1.
      routing_top_m: m of sparse routing (0: dense; `hisac`,
        `hisac_no_voting`), `model.routing_top_m`.
      semantic_items: V, the ids in the semantic lookup's sorted id
        column (its binary search takes ceil(log2 V) steps an item;
        `training_cost`); 0: not counted.
      routed_positions: U, the width of a sparse routing plan's routed
        positions (`routing_positions` [B, U]: the batch's most distinct
        positions a request routes, which the step embeds, padded),
        a property of the data (agents that share items, unused agents);
        0: its bound min(N, A m) (`embedded_items`).
      table_rows: the rows of the item, category, behaviour, time-gap
        and SID-level embedding tables (the SID levels' summed), in that
        order, which bound the distinct rows a training step updates
        (`table_reads`); () or a shorter tuple: the tables not named are
        unbounded.
    Raises:
      ValueError: a size below its minimum, named.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (every method compared at the same G, with its
        cost per request).

    Example:

    ```python
    from hisac_tf.compressors import flops

    sizes = RequestSizes("hisac", n=1000, a=200, c=100, d=32, ds=32, h=4)
    flops.request_flops(sizes)["per_candidate"]  # MACs per candidate
    flops.request_cost(sizes.replace(compressor="full"), cached=True)
    ```
    """

    compressor: str
    n: int
    a: int
    c: int
    d: int
    ds: int
    h: int
    num_levels: int = 2
    user_features: int = 2
    mlp_dims: tuple[int, ...] = (64, 32)
    use_cross_layer: bool = True
    kmeans_iterations: int = 5
    lsh_bits: int = 0
    attention_mass: bool = True
    short_term_length: int = 0
    count_types: int = 0
    routing_top_m: int = 0
    semantic_items: int = 0
    routed_positions: int = 0
    table_rows: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "mlp_dims", tuple(self.mlp_dims))
        object.__setattr__(self, "table_rows", tuple(self.table_rows))
        if len(self.table_rows) > 5 or any(
                isinstance(r, bool) or not isinstance(r, int) or r < 1
                for r in self.table_rows):
            raise ValueError(
                "RequestSizes: table_rows must be at most 5 ints >= 1 "
                "(item, category, behaviour, time gap, SID levels), got "
                f"{self.table_rows!r}")
        for field in ("n", "a", "c", "d", "ds", "h", "num_levels"):
            value = getattr(self, field)
            if value < 1:
                raise ValueError(f"RequestSizes: {field} must be >= 1, got "
                                 f"{value!r}")
        for field in ("user_features", "kmeans_iterations", "lsh_bits",
                      "short_term_length", "count_types", "routing_top_m",
                      "semantic_items", "routed_positions"):
            value = getattr(self, field)
            if value < 0:
                raise ValueError(f"RequestSizes: {field} must be >= 0, got "
                                 f"{value!r}")

    @property
    def long_term(self) -> bool:
        """True unless `compressor` is "none"."""
        return self.compressor != NO_COMPRESSOR

    @property
    def hk(self) -> int:
        """H * dk with dk = max(1, D // H)."""
        return self.h * max(1, self.d // self.h)

    def compressor_sizes(self) -> CompressorSizes:
        """The sizes the compressor's own `cost` reads."""
        return CompressorSizes(
            n=self.n, a=self.a, d=self.d, ds=self.ds, h=self.h,
            num_levels=self.num_levels,
            kmeans_iterations=self.kmeans_iterations,
            lsh_bits=self.lsh_bits, routing_top_m=self.routing_top_m)

    def replace(self, **changes) -> "RequestSizes":
        """A copy with `changes` (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_config(cls, cfg, compressor: Optional[str] = None,
                    n: Optional[int] = None,
                    c: Optional[int] = None,
                    semantic_items: Optional[int] = None
                    ) -> "RequestSizes":
        """The sizes of a `Config` (defaults: its compressor, N =
        data.max_history, C = data.max_candidates, V = semantic_items =
        synthetic.num_items, the catalogue the tokenizer's tables hold
        for synthetic data; pass the tables' own size for other data).
        table_rows: the model's item, category and time-gap buckets,
        the behaviours and the codebook sizes summed."""
        m = cfg.model
        levels = len(cfg.tokenizer.codebook_sizes)
        return cls(
            compressor=compressor or m.compressor,
            n=n or cfg.data.max_history,
            a=m.num_agents,
            c=c or cfg.data.max_candidates,
            d=m.embedding_dim,
            ds=cfg.tokenizer.latent_dim,
            h=m.num_heads,
            num_levels=levels,
            user_features=len(cfg.data.user_features),
            mlp_dims=m.mlp_dims,
            use_cross_layer=m.use_cross_layer,
            kmeans_iterations=m.kmeans_iterations,
            lsh_bits=m.lsh_bits,
            attention_mass=m.attention_mass,
            short_term_length=m.short_term_length,
            count_types=(1 + levels if m.count_slots else 0),
            routing_top_m=m.routing_top_m,
            semantic_items=(cfg.synthetic.num_items if semantic_items is None
                            else semantic_items),
            table_rows=(m.item_vocab_buckets, m.category_vocab_buckets,
                        NUM_BEHAVIORS, m.time_gap_buckets,
                        sum(cfg.tokenizer.codebook_sizes)),
        )


def compression_cost(name: str, sizes: CompressorSizes) -> CompressionCost:
    """The registered compressor `name`'s own `cost(sizes)` for one user.

    Raises:
      ValueError: an unknown name (the registered names listed).
    """
    if name not in compressor_names():
        raise ValueError(f"unknown compressor {name!r} (choose from "
                         f"{', '.join(sorted(compressor_names()))})")
    cost = lookup(name).cost(sizes)
    if not isinstance(cost, CompressionCost):
        raise TypeError(f"{name}: cost() must return a CompressionCost, "
                        f"got {type(cost).__name__}")
    return cost


def _branches(sizes: RequestSizes) -> tuple[Optional[CompressionCost],
                                             list]:
    """The long-term compression (None without one) and G of each
    attention branch (long-term first, then the short-term S)."""
    compression = (compression_cost(sizes.compressor,
                                    sizes.compressor_sizes())
                   if sizes.long_term else None)
    branches = [compression.groups] if compression else []
    if sizes.short_term_length:
        branches.append(min(sizes.short_term_length, sizes.n))
    if not branches:
        raise ValueError("RequestSizes: compressor 'none' needs "
                         "short_term_length > 0, got 0")
    return compression, branches


def embedded_items(sizes: RequestSizes) -> int:
    """E, the history items one request embeds (module doc): N for a
    long-term branch (at most min(N, A K) with sparse routing, which
    embeds only the routed items; min(N, A K, U) when
    `sizes.routed_positions` gives the plan's measured width U), +
    min(S, N) for the short-term branch."""
    long = 0
    if sizes.long_term:
        long = min(sizes.n, sizes.a * routed_items(sizes.n,
                                                   sizes.routing_top_m))
        if long < sizes.n and sizes.routed_positions:
            long = min(long, sizes.routed_positions)
    short = min(sizes.short_term_length, sizes.n)
    return long + short


def _head_width(sizes: RequestSizes, branches: list) -> int:
    """F, the head's input width."""
    width = (1 + sizes.user_features) * sizes.d + 3 * sizes.d \
        + sizes.d * len(branches)
    return width + (4 * sizes.count_types + 1 if sizes.count_types else 0)


def request_flops(sizes: RequestSizes) -> dict:
    """User-side, per-candidate and per-request MACs of one request.

    Returns:
      dict(groups G, compression, user, per_candidate, request) of ints.
    """
    if not isinstance(sizes, RequestSizes):
        raise TypeError("request_flops takes a RequestSizes; received "
                        f"{type(sizes).__name__}")
    d, h, levels = sizes.d, sizes.h, sizes.num_levels
    hk = sizes.hk
    compression, branches = _branches(sizes)
    macs = compression.macs if compression else 0
    user = 3 * embedded_items(sizes) * d + macs  # h sums, compressor
    per_candidate = (levels - 1) * d  # candidate SID embedding
    for groups in branches:
        user += (
            (levels - 1) * groups * d  # group SID embeddings
            + 2 * groups * (2 * d) * hk  # key and value projections
        )
        per_candidate += (
            3 * d * hk  # query projection
            + 2 * groups * hk  # logits and weighted sum
            + hk * d  # output projection
            + ((h + 1) * d if sizes.attention_mass else 0)  # mass
        )
    width = _head_width(sizes, branches)  # F
    head = width * width + width if sizes.use_cross_layer else 0
    prev = width
    for units in sizes.mlp_dims + (1,):
        head += prev * units
        prev = units
    per_candidate += head
    return {
        "groups": branches[0],
        "compression": macs,
        "user": user,
        "per_candidate": per_candidate,
        "request": user + sizes.c * per_candidate,
    }


def config_flops(cfg, name: Optional[str] = None, n: Optional[int] = None,
                 c: Optional[int] = None) -> dict:
    """`request_flops` for a `Config` (`RequestSizes.from_config`)."""
    return request_flops(RequestSizes.from_config(cfg, name, n, c))


def request_cost(sizes: RequestSizes, cached: bool = False) -> dict:
    """Per-component multiply-adds and elementwise bytes of one request.

    Args:
      sizes: the request's `RequestSizes`.
      cached: the user side comes from a cached state
        (`score_with_state`), so only the candidate side counts.

    Returns:
      dict(components={component: dict(side "user" or "candidate",
      macs, bytes)}, user=dict(macs, bytes), candidate=dict(macs, bytes),
      request=dict(macs, bytes), cached). `request` is user + candidate,
      or candidate alone when cached. Component names: module doc.
    """
    flops = request_flops(sizes)
    n, c, d, h, ds = sizes.n, sizes.c, sizes.d, sizes.h, sizes.ds
    hk = sizes.hk
    levels = sizes.num_levels
    compression, branches = _branches(sizes)
    parts = {}

    def add(component, side, macs, nbytes):
        parts[component] = {"side": side, "macs": int(macs),
                            "bytes": int(nbytes)}

    add("semantic_lookup", "user", 0,
        32 * n + 8 * n * (levels + ds) + n)
    e = embedded_items(sizes)
    add("ranking_embedding", "user", 3 * e * d, 68 * e * d)
    if compression is not None and compression.voting:
        add("voting", "user", 0,
            8 * n * levels * (4 + max(1, (n - 1).bit_length())))
    if compression is not None:
        add("compression", "user", compression.macs, compression.bytes)
    add("group_sid_embedding", "user",
        sum((levels - 1) * g * d for g in branches),
        sum(8 * levels * g * d for g in branches))
    add("keys_values", "user", sum(2 * g * (2 * d) * hk for g in branches),
        sum(8 * g * 2 * d + 16 * g * hk for g in branches))
    per_cand = {
        "candidate_embedding": (levels - 1) * d,
        "target_attention": sum(
            3 * d * hk + 2 * g * hk + hk * d
            + ((h + 1) * d if sizes.attention_mass else 0)
            for g in branches),
    }
    per_cand["head"] = flops["per_candidate"] - sum(per_cand.values())
    width = _head_width(sizes, branches)
    add("candidate_embedding", "candidate",
        c * per_cand["candidate_embedding"], 8 * c * d * (levels + 3))
    add("target_attention", "candidate", c * per_cand["target_attention"],
        sum(8 * h * c * g + 8 * g * (3 * hk + 3 * h) + 48 * c * hk
            for g in branches))
    add("head", "candidate", c * per_cand["head"],
        16 * c * (2 * width + sum(sizes.mlp_dims) + 1))

    def total(side):
        return {key: sum(p[key] for p in parts.values()
                         if p["side"] == side) for key in ("macs", "bytes")}

    user, candidate = total("user"), total("candidate")
    request = dict(candidate) if cached else {
        key: user[key] + candidate[key] for key in user}
    return {"components": parts, "user": user, "candidate": candidate,
            "request": request, "cached": bool(cached)}


def predict_latency(cost: dict, matmul_flops_per_s: float,
                    bytes_per_s: float, per_request_s: float = 0.0) -> dict:
    """Seconds predicted for a `request_cost`, per component and in all.

    Each component takes 2 macs / matmul_flops_per_s + bytes /
    bytes_per_s (a multiply-add is 2 FLOPs); calibrate both throughputs
    on the machine (a large matmul, a large elementwise pass).
    per_request_s: a fixed overhead added to the request (dispatch).

    Returns:
      dict(components={component: seconds}, user_s, candidate_s,
      request_s); with a cached cost request_s is the candidate side.
    """
    for field, value in (("matmul_flops_per_s", matmul_flops_per_s),
                         ("bytes_per_s", bytes_per_s)):
        if not value > 0:
            raise ValueError(f"predict_latency: {field} must be > 0, got "
                             f"{value!r}")
    if per_request_s < 0:
        raise ValueError("predict_latency: per_request_s must be >= 0, "
                         f"got {per_request_s!r}")
    if not isinstance(cost, dict) or "components" not in cost:
        raise ValueError("predict_latency: `cost` must be the dict of "
                         f"request_cost; received {type(cost).__name__}")
    seconds = {
        name: 2.0 * p["macs"] / matmul_flops_per_s
        + p["bytes"] / bytes_per_s
        for name, p in cost["components"].items()
    }
    sides = {side: sum(t for name, t in seconds.items()
                       if cost["components"][name]["side"] == side)
             for side in ("user", "candidate")}
    request = sides["candidate"] + (0.0 if cost["cached"] else sides["user"])
    return {"components": seconds, "user_s": sides["user"],
            "candidate_s": sides["candidate"],
            "request_s": request + per_request_s}


def config_cost(cfg, name: Optional[str] = None, n: Optional[int] = None,
                c: Optional[int] = None, cached: bool = False) -> dict:
    """`request_cost` for a `Config` (`RequestSizes.from_config`)."""
    return request_cost(RequestSizes.from_config(cfg, name, n, c),
                        cached=cached)


def _milliseconds(fn: Callable, calls: int, warmup: int = 0) -> list:
    """Milliseconds of `calls` calls of fn (outputs fetched) after
    `warmup` untimed calls (calibrate's timer)."""
    def run():
        for t in tf.nest.flatten(fn()):
            if hasattr(t, "numpy"):
                t.numpy()

    for _ in range(warmup):
        run()
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        run()
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _seconds(fn: Callable, calls: int, statistic: str) -> float:
    """The `statistic` ("min" or "median") of `calls` timed calls of fn
    after one warm-up call, in seconds (calibrate's measurements)."""
    return _statistic(statistic)(_milliseconds(fn, calls, warmup=1)) / 1e3


# How calibrate summarises its timed calls: the fastest (the machine's
# throughput when nothing else runs), or the median (its typical
# throughput under the load of the moment, to compare with median
# timings on a shared machine).
STATISTICS = {"min": min, "median": lambda ms: float(np.median(ms))}


def _statistic(name: str) -> Callable:
    if name not in STATISTICS:
        raise ValueError(f"calibrate: statistic must be one of "
                         f"{', '.join(STATISTICS)}, got {name!r}")
    return STATISTICS[name]


def calibrate(calls: int = 5, size: int = 1,
              statistic: str = "min") -> dict:
    """The machine's throughputs, measured once (the cost model's inputs).

    * matmul_macs_per_s: multiply-adds per second of float32 matmuls
      whose inner dimension is long (compute-bound): the head's
      [C, 224] x [224, 256] (C = 1,000 * size) and the routing's
      [A = 200, N] x [N, 32] (N = 10,000 * size); the median;
    * elementwise_bytes_per_s: bytes read + written per second of
      elementwise float32 ops (exp, a + b, where) over a [200, N] tensor;
    * op_overhead_s: seconds per op of a chain of ~2,000 dependent ops
      (sin, where, cos, reduce_max, sub) on 8 floats inside one
      tf.function (the executor's per-op dispatch cost), less a chain of
      10;
    * call_overhead_s: calling a one-op tf.function (an identity on 8
      floats): its dispatch and return, measured directly (the short
      chain less its ops' share could come out below 0 under load);
    * exp_s_per_element: seconds an element of the exp pass takes (a
      transcendental: slower than a streaming pass of the same bytes);
    * the integer kernels' rates (`integer_rates`): sort_s_per_step,
      search_s_per_step, select_s_per_element, unique_s_per_element.
    `size` < 1 shrinks the shapes (CI). `statistic` ("min" or
    "median", `STATISTICS`) summarises the throughputs' timed calls.
    """
    _statistic(statistic)  # a bad name fails before any timing
    n = max(64, int(10_000 * size))
    a, ds, c = 200, 32, max(8, int(1000 * size))

    def best(fn):
        return _seconds(fn, calls, statistic)

    mm = tf.function(lambda x, y: tf.matmul(x, y))
    # Compute-bound shapes (long inner dimension): the head's dense layers
    # and the routing's states. A thin matmul (inner dim dk = 8) is bound
    # by writing its output instead, which the cost model counts as
    # elementwise bytes.
    shapes = [((1, c, 224), (1, 224, 256)), ((1, a, n), (1, n, ds))]
    rates = []
    for sx, sy in shapes:
        x, y = tf.random.normal(sx), tf.random.normal(sy)
        macs = float(np.prod(sx)) * sy[-1]
        rates.append(macs / best(lambda: mm(x, y)))
    x = tf.random.normal([a, n])
    y = tf.random.normal([a, n])
    ops = {
        "exp": (tf.function(lambda u: tf.exp(u)), (x,), 2),
        "add": (tf.function(lambda u, v: u + v), (x, y), 3),
        "where": (tf.function(lambda u, v: tf.where(u > 0.0, u, v)),
                  (x, y), 4),
    }
    bandwidths = []
    for fn, args, passes in ops.values():
        bandwidths.append(passes * a * n * 4 / best(lambda: fn(*args)))

    def chain_fn(length):
        @tf.function
        def chained(u):
            # Mixed ops that Grappler neither folds nor fuses.
            for i in range(length):
                if i % 3 == 0:
                    u = tf.sin(u)
                elif i % 3 == 1:
                    u = tf.where(u > 0.5, u, tf.cos(u))
                else:
                    u = u - tf.reduce_max(u, keepdims=True)
            return u
        return chained

    small = tf.random.normal([8])
    short = chain_fn(10)
    long_ = chain_fn(10 + max(200, int(2000 * min(1.0, 10 * size))))

    def median_s(fn):
        return _seconds(fn, calls, "median")

    t_short = median_s(lambda: short(small))
    ops_long = graph_ops(long_.get_concrete_function(small))
    ops_short = graph_ops(short.get_concrete_function(small))
    per_op = max(0.0, median_s(lambda: long_(small)) - t_short) / max(
        1, ops_long - ops_short)
    trivial = tf.function(tf.identity)
    call = median_s(lambda: trivial(small))  # > 0: a measured time
    return {
        "matmul_macs_per_s": float(np.median(rates)),
        "matmul_rates": [float(r) for r in rates],
        "elementwise_bytes_per_s": float(np.median(bandwidths)),
        "elementwise_rates": [float(b) for b in bandwidths],
        "op_overhead_s": float(per_op),
        "call_overhead_s": float(call),
        # One element of the exp pass (its 8 bytes at the exp rate).
        "exp_s_per_element": 8.0 / bandwidths[0],
        **integer_rates(calls, size, statistic),
        "size": size,
        "statistic": statistic,
    }


# Integer work: neither multiply-adds nor streaming bytes, each kind timed
# at its own measured rate (`integer_rates`). Key in a cost -> the
# calibration's seconds per unit.
INTEGER_WORK = {
    # element x ceil(log2 row length) of a full sort (tf.sort, tf.argsort:
    # voting's row sort, the routed positions' argsort)
    "sort_steps": "sort_s_per_step",
    # query x ceil(log2 table rows) of a binary search (tf.searchsorted:
    # the semantic lookup's item ids in its sorted id column)
    "search_steps": "search_s_per_step",
    # elements a top-k selection scans (tf.math.top_k, k = 32: sparse
    # routing's top-m of the [A, N] logits)
    "select_elements": "select_s_per_element",
    # ids a deduplication hashes (tf.unique: the optimiser's embedding
    # rows, before the sparse apply)
    "unique_elements": "unique_s_per_element",
}
# Elements of exp passes (the routing's and the target attention's
# softmax): their bytes are counted as any pass's; the exp's arithmetic
# beyond them is timed at the calibrated exp rate (`predict_training`).
EXP_WORK = {"exp_elements": "exp_s_per_element"}
# The top-k that `integer_rates` times (sparse routing's usual m).
CALIBRATION_TOP_K = 32


def integer_rates(calls: int = 5, size: float = 1,
                  statistic: str = "min") -> dict:
    """Seconds per unit of each `INTEGER_WORK` kind, the `statistic`
    ("min" or "median") of `calls` calls, on shapes like the routing
    plan's at N = 10,000 * size:

    * sort_s_per_step: tf.sort of [16, N] int64 rows / (16 N ceil(log2 N));
    * search_s_per_step: tf.searchsorted of 16 N int64 queries in a sorted
      column of V = 100,000 * size ids / (16 N ceil(log2 V));
    * select_s_per_element: tf.math.top_k (k = 32) of [200, N] float32
      rows / (200 N);
    * unique_s_per_element: tf.unique of 16 N int64 ids drawn from V
      / (16 N).
    """
    n = max(64, int(10_000 * size))
    v = max(1024, int(100_000 * size))
    rows, agents = 16, 200
    gen = tf.random.Generator.from_seed(0)
    keys = gen.uniform([rows, n], 0, 2**40, dtype=tf.int64)  # [16, N]
    column = tf.sort(gen.uniform([v], 0, 2**40, dtype=tf.int64))  # [V]
    queries = gen.uniform([rows * n], 0, v, dtype=tf.int64)  # [16 N]
    logits = gen.normal([agents, n])  # [200, N]

    def best(fn, *args):
        return _seconds(lambda: fn(*args), calls, statistic)

    steps_n = max(1, (n - 1).bit_length())
    steps_v = max(1, (v - 1).bit_length())
    sort = tf.function(lambda x: tf.sort(x, axis=1))
    search = tf.function(lambda c, q: tf.searchsorted(c, q))
    select = tf.function(
        lambda x: tf.math.top_k(x, k=CALIBRATION_TOP_K, sorted=False))
    unique = tf.function(lambda q: tf.unique(q))
    return {
        "sort_s_per_step": best(sort, keys) / (rows * n * steps_n),
        "search_s_per_step": best(
            search, column, tf.gather(column, queries)) / (
                rows * n * steps_v),
        "select_s_per_element": best(select, logits) / (agents * n),
        "unique_s_per_element": best(unique, queries) / (rows * n),
    }


def graph_ops(concrete_fn) -> int:
    """Ops a concrete tf.function's graph runs (excluding constants,
    placeholders, identities and variable reads): the count that the
    per-op dispatch cost multiplies."""
    skip = {"Const", "Placeholder", "Identity", "ReadVariableOp", "NoOp",
            "VarHandleOp"}
    return sum(1 for op in concrete_fn.graph.get_operations()
               if op.type not in skip)


def component_seconds(components: dict, calibration: dict) -> dict:
    """Seconds of each `request_cost` component at the calibrated
    throughputs (`predict_latency`)."""
    cost = {"components": components, "cached": False}
    return predict_latency(
        cost, 2.0 * calibration["matmul_macs_per_s"],
        calibration["elementwise_bytes_per_s"])["components"]


def predict_seconds(cost: dict, ops: int, calibration: dict,
                    requests: int = 1) -> float:
    """The cost model's time of one call (docs/performance.md "Cost
    model"): `predict_latency` of R requests' MACs at the matmul
    rate and elementwise bytes at the measured bandwidth, plus the
    graph's ops at the per-op dispatch cost and one call.

    Args:
      cost: `request_cost` of one request.
      ops: ops of the call's graph (`graph_ops`).
      requests: R, requests per call (MACs and bytes scale with R; the
        ops do not).
    """
    scaled = {
        "cached": cost["cached"],
        "components": {
            name: {**part, "macs": requests * part["macs"],
                   "bytes": requests * part["bytes"]}
            for name, part in cost["components"].items()},
    }
    return predict_latency(
        scaled, 2.0 * calibration["matmul_macs_per_s"],
        calibration["elementwise_bytes_per_s"],
        per_request_s=(ops * calibration["op_overhead_s"]
                       + calibration["call_overhead_s"]))["request_s"]


# Bytes an optimiser touches per parameter: Adam reads the parameter, its
# gradient and two moments and writes three (7 floats); Adagrad on an
# embedding row reads the row, its gradient and accumulator and writes
# two (5 floats), once per distinct row of the step.
ADAM_FLOATS = 7
ADAGRAD_FLOATS = 5
# Multiply-adds of a contraction's backward per forward multiply-add: the
# gradient of each operand (dX and dW) is one contraction of the same
# size.
BACKWARD_MACS = 2
# Bytes of an elementwise pass's backward per forward byte: it reads the
# upstream gradient and the pass's saved operands and writes one
# gradient per operand.
BACKWARD_BYTES = 2
TRAINING_STAGES = ("input", "routing", "forward", "backward", "optimizer")
# Distinct ids whose hash set stays in a core's cache (16 bytes an entry:
# 64 KiB): deduplicating a table of at most this many rows streams its
# ids (16 bytes an id: read it, write its position), counted as bytes;
# larger tables pay the calibrated tf.unique rate an id
# (`unique_elements`, timed on 100,000 distinct ids).
UNIQUE_CACHED_ROWS = 4096
# What a stage of `training_cost` counts: multiply-adds, elementwise
# bytes, and the integer work of `INTEGER_WORK`.
STAGE_KEYS = ("macs", "bytes") + tuple(INTEGER_WORK) + tuple(EXP_WORK)
# The ranking embedding's tables each history item reads (item,
# category, behaviour, time gap): `RequestSizes.table_rows`' first four.
HISTORY_TABLES = ("item", "category", "behavior", "time_gap")
# Components of the forward that are embedding gathers (and sums of
# gathered rows): their backward is the gathered rows' gradient, as
# IndexedSlices, not a pass over the forward's bytes (the sums' gradient
# passes through).
GATHER_COMPONENTS = ("ranking_embedding", "candidate_embedding",
                     "group_sid_embedding")
# Taped components that read frozen inputs only (the semantic tables):
# no gradient is computed for them.
FROZEN_COMPONENTS = ("semantic_lookup",)
# Taped contractions with one frozen operand (HiSAC's aggregation u =
# alpha h: the routing weights alpha come from frozen inputs): the
# backward is the one transposed product dh = alpha^T du, the forward's
# multiply-adds and bytes once (not BACKWARD_MACS, BACKWARD_BYTES).
ONE_SIDED_COMPONENTS = ("aggregation",)


def _part(side: str, macs: int = 0, nbytes: int = 0, **work) -> dict:
    kinds = STAGE_KEYS[2:]
    unknown = sorted(set(work) - set(kinds))
    if unknown:
        raise ValueError(f"training_cost: unknown work {unknown} "
                         f"(choose from {', '.join(kinds)})")
    return {"side": side, "macs": int(macs), "bytes": int(nbytes),
            **{k: int(work.get(k, 0)) for k in kinds}}


def table_reads(sizes: RequestSizes, batch: int,
                routing_in_pipeline: bool = False) -> dict:
    """Embedding rows one training step gathers, per table: {table:
    (rows read, distinct rows at most)}. Rows read: item and category
    B (E + C), behaviour and time gap B E (E = `embedded_items`), the
    SID levels' tables B L (sum G + C) over the branches' groups,
    user_id and each user feature B. Distinct rows: at most the rows
    read and, where `sizes.table_rows` gives it, the table's rows."""
    _, branches = _branches(sizes)
    del routing_in_pipeline  # sparse routing embeds the routed items
    e = embedded_items(sizes)  # either way (embedded_items)
    c, levels = sizes.c, sizes.num_levels
    reads = {"item": e + c, "category": e + c, "behavior": e,
             "time_gap": e, "sid": levels * (sum(branches) + c)}
    caps = dict(zip(HISTORY_TABLES + ("sid",), sizes.table_rows))
    out = {t: (batch * r, min(batch * r, caps.get(t, batch * r)))
           for t, r in reads.items()}
    for i in range(1 + sizes.user_features):  # user_id, user features
        out[f"user_{i}"] = (batch, batch)
    return out


def training_cost(sizes: RequestSizes, batch: int,
                  routing_in_pipeline: bool = False) -> dict:
    """Per-stage work of one training step of `batch` requests, each of
    `sizes` (C = `sizes.c` candidates): multiply-adds, elementwise bytes
    and integer work (`INTEGER_WORK`: sort steps, binary-search steps,
    top-k selection and deduplication elements).

    Stages (components with side = the stage):
      input     the routing plan when `routing_in_pipeline` (the semantic
                lookup: B N ceil(log2 V) search steps, V =
                `sizes.semantic_items`, + its gathers' bytes; voting: the
                row sort of N paths, B N ceil(log2 N) sort steps, + L
                level passes of 4 int64 ops over N, 32 B N L bytes; the
                compressor's off-tape part, e.g. HiSAC's routing logits,
                with sparse routing its top-m selection over A N
                elements and the routed positions' argsort), else
                nothing (parsing is not modelled);
      routing   the same work inside the step when not in the pipeline
                (off the gradient tape either way);
      forward   the taped forward: ranking embedding (of
                `embedded_items`: with sparse routing only the routed
                items), the compressor's taped part (HiSAC: the
                aggregation A K D, K = `routed_items`), group SID
                embeddings, keys / values, the candidate side;
      backward  `BACKWARD_MACS` x the forward's multiply-adds and
                `BACKWARD_BYTES` x its elementwise bytes (1 x both for
                the aggregation, whose routing weights are frozen:
                `ONE_SIDED_COMPONENTS`), except the
                embedding gathers (`GATHER_COMPONENTS`), whose gradient
                is IndexedSlices of the rows read: 8 D bytes a row
                (`table_reads`; one copy of each row's gradient), and
                the semantic lookup (frozen tables, no gradient);
      optimizer Adam over the dense weights (about one weight per
                multiply-add of a per-candidate or per-group matmul,
                `ADAM_FLOATS` each) and, per embedding table, the sparse
                Adagrad update: the rows read deduplicated (tf.unique:
                `unique_elements` for tables of more than
                `UNIQUE_CACHED_ROWS` rows, 16 bytes an id below; and a
                segment sum of their gradients, 8 D bytes a row) and the
                update of the distinct rows (`ADAGRAD_FLOATS` floats a
                value).
    The per-op dispatch of each stage's graph is not in the cost (it
    depends on the graph, not the sizes): `predict_training` adds it
    from the stage's op count.

    Returns:
      dict(components={component: dict(side, macs, bytes, sort_steps,
      search_steps, select_elements, unique_elements)},
      stages={stage: dict(the same keys but side)}).
    """
    if not isinstance(sizes, RequestSizes):
        raise TypeError("training_cost takes a RequestSizes; received "
                        f"{type(sizes).__name__}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"training_cost: batch must be an int >= 1, got "
                         f"{batch!r}")
    cost = request_cost(sizes)
    compression, branches = _branches(sizes)
    n, d, levels = sizes.n, sizes.d, sizes.num_levels
    parts = {k: _part("user", v["macs"], v["bytes"])
             for k, v in cost["components"].items()}
    # The target attention's softmax: one exp of [H, C, G] a branch.
    parts["target_attention"]["exp_elements"] = sum(
        sizes.h * sizes.c * g for g in branches)
    if sizes.semantic_items:  # binary search of N ids in V sorted ids
        parts["semantic_lookup"]["search_steps"] = n * max(
            1, (sizes.semantic_items - 1).bit_length())
    off_tape = {"voting"}
    if compression is not None and compression.voting:
        off_tape.add("semantic_lookup")  # read by voting alone
        # The row sort of the N paths, then L level passes of 4 int64
        # ops (compare, cumsum, segment sum, gather) over at most N.
        parts["voting"] = _part(
            "user", 0, 32 * n * levels,
            sort_steps=n * max(1, (n - 1).bit_length()))
    if compression is not None and (compression.off_tape_macs
                                    or compression.off_tape_bytes):
        comp = parts.pop("compression")
        parts["routing_logits"] = _part(
            "user", compression.off_tape_macs, compression.off_tape_bytes,
            select_elements=compression.select_elements,
            sort_steps=compression.sort_steps,
            exp_elements=compression.exp_elements)
        parts["aggregation"] = _part(
            "user", comp["macs"] - compression.off_tape_macs,
            comp["bytes"] - compression.off_tape_bytes)
        off_tape.add("routing_logits")
    stages = {s: dict.fromkeys(STAGE_KEYS, 0) for s in TRAINING_STAGES}
    components = {}
    for name, p in parts.items():
        if name in off_tape:
            stage = "input" if routing_in_pipeline else "routing"
        else:
            stage = "forward"
        components[name] = {"side": stage, **{
            k: batch * p[k] for k in STAGE_KEYS}}
        for k in STAGE_KEYS:
            stages[stage][k] += components[name][k]
    reads = table_reads(sizes, batch, routing_in_pipeline)
    rows_read = sum(r for r, _ in reads.values())
    taped = {name: p for name, p in components.items()
             if p["side"] == "forward" and name not in FROZEN_COMPONENTS}
    passes = {name: p for name, p in taped.items()
              if name not in GATHER_COMPONENTS}
    components["backward"] = _part(
        "backward",
        sum((1 if name in ONE_SIDED_COMPONENTS else BACKWARD_MACS)
            * p["macs"] for name, p in passes.items()),
        sum((1 if name in ONE_SIDED_COMPONENTS else BACKWARD_BYTES)
            * p["bytes"] for name, p in passes.items())
        + 8 * d * rows_read)
    hk = sizes.hk
    per_candidate = request_flops(sizes)["per_candidate"]
    dense_weights = per_candidate + len(branches) * 2 * (2 * d) * hk
    distinct = sum(u for _, u in reads.values())
    cached = sum(r for r, u in reads.values() if u <= UNIQUE_CACHED_ROWS)
    components["optimizer"] = _part(
        "optimizer", 0,
        FLOAT_BYTES * ADAM_FLOATS * dense_weights
        + 16 * cached  # tf.unique of the ids of small tables
        + 8 * d * rows_read  # segment sum of the rows' gradients
        + FLOAT_BYTES * ADAGRAD_FLOATS * d * distinct,
        unique_elements=rows_read - cached)
    for stage in ("backward", "optimizer"):
        stages[stage] = {k: components[stage][k] for k in STAGE_KEYS}
    return {"components": components, "stages": stages}


def predict_training(cost: dict, matmul_flops_per_s: float,
                     bytes_per_s: float, rates: Optional[dict] = None,
                     ops: Optional[dict] = None,
                     calls: Optional[dict] = None) -> dict:
    """Seconds per stage of a `training_cost`: 2 macs / matmul rate +
    bytes / bandwidth (as `predict_latency`), + each kind of integer
    work at its rate (`INTEGER_WORK`, the `calibrate` keys), + the exp
    elements at exp_s_per_element less the 8 bytes / bandwidth their
    bytes already took (`EXP_WORK`), + the stage's graph ops at the
    per-op dispatch cost and its tf.function calls at call_overhead_s.

    Args:
      cost: `training_cost`'s dict.
      matmul_flops_per_s, bytes_per_s: the calibrated throughputs.
      rates: `calibrate`'s dict (its `INTEGER_WORK` rates and
        op_overhead_s); needed when the cost has integer work or `ops`
        is given.
      ops: {stage: ops of the graph that runs it} (`graph_ops`); a stage
        not named has no dispatch term.
      calls: {stage: tf.function calls that run it} (0 for a stage
        timed as the difference of two calls, as the backward).
    Raises:
      ValueError: a throughput <= 0, a cost that is not
        `training_cost`'s, a missing rate (named), ops for an unknown
        stage or below 0.
    """
    for field, value in (("matmul_flops_per_s", matmul_flops_per_s),
                         ("bytes_per_s", bytes_per_s)):
        if not value > 0:
            raise ValueError(f"predict_training: {field} must be > 0, got "
                             f"{value!r}")
    if not isinstance(cost, dict) or "stages" not in cost:
        raise ValueError("predict_training: `cost` must be the dict of "
                         f"training_cost; received {type(cost).__name__}")
    rates = dict(rates or {})
    ops = dict(ops or {})
    calls = dict(calls or {})
    for field, counts in (("ops", ops), ("calls", calls)):
        unknown = sorted(set(counts) - set(cost["stages"]))
        if unknown:
            raise ValueError(
                f"predict_training: {field} for unknown stages {unknown} "
                f"(stages: {', '.join(cost['stages'])})")
        for stage, count in counts.items():
            if isinstance(count, bool) or not isinstance(count, int) \
                    or count < 0:
                raise ValueError(
                    f"predict_training: {field}[{stage!r}] must be an "
                    f"int >= 0, got {count!r}")

    def rate(key):
        if key not in rates:
            raise ValueError(f"predict_training: rates lacks {key!r} "
                             "(pass calibrate()'s dict as `rates`)")
        if not rates[key] >= 0:
            raise ValueError(f"predict_training: rates[{key!r}] must be "
                             f">= 0, got {rates[key]!r}")
        return rates[key]

    out = {}
    for stage, s in cost["stages"].items():
        seconds = (2.0 * s["macs"] / matmul_flops_per_s
                   + s["bytes"] / bytes_per_s)
        for work, key in INTEGER_WORK.items():
            if s.get(work, 0):
                seconds += s[work] * rate(key)
        for work, key in EXP_WORK.items():
            if s.get(work, 0):
                seconds += s[work] * max(
                    0.0, rate(key) - 8.0 / bytes_per_s)
        if ops.get(stage, 0):
            seconds += ops[stage] * rate("op_overhead_s")
        if calls.get(stage, 0):
            seconds += calls[stage] * rate("call_overhead_s")
        out[stage] = seconds
    return out
