"""Multiply-adds per request of the ranker with each compressor.

`request_flops(name, n=N, a=A, c=C, d=D, ds=Ds, h=H, ...)` counts the
multiply-adds (MACs: one multiply-accumulate of a contraction = 1; one
addition of a sum of embeddings or of a segment sum = 1) that one request
costs, split into the user side (once per request, or once per user when
the state is cached) and the candidate side (per candidate). Not counted:
elementwise work (softmax, exp, masks, biases, activations), integer work
(voting's sorts, SimHash bit packing, binary searches) and embedding-table
reads (memory, not arithmetic). With dk = max(1, D // H), hk = H * dk
(= D when H divides D), L levels, U user features, G groups
(G = N for `full` and `sim_hard`, else A):

user side = history embedding   3 N D        (h = item + cat + beh + gap)
          + compression         (below)
          + group SID embedding (L - 1) G D  (sum of L level embeddings)
          + keys and values     2 G (2D) hk  (group state ++ SID emb.)

compression:
  hisac, hisac_no_voting   (L-1) A Ds  prototypes (sum of L codewords)
                           + N Ds + A Ds  squared norms of z and p
                           + A N Ds      z . p (distances)
                           + A N D       u_a = sum_i alpha_ai h_i
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
"""

from __future__ import annotations

from typing import Sequence

COMPRESSION_TERMS = {
    "hisac", "hisac_hard", "hisac_no_voting", "kmeans", "lsh", "patching",
    "aggregator", "recent", "full", "sim_hard",
}


# SimHash bits of `lsh` (LSHCompressor): at most 2^16 buckets.
MAX_LSH_BITS = 16


def default_num_bits(num_groups: int) -> int:
    """ceil(log2 A) + 1: at least 2A buckets, at most 2^MAX_LSH_BITS."""
    return min(MAX_LSH_BITS,
               max(1, int(num_groups - 1).bit_length() + 1))


def compression_flops(
    name: str, *, n: int, a: int, d: int, ds: int, h: int,
    num_levels: int = 2, kmeans_iterations: int = 5, lsh_bits: int = 0,
) -> int:
    """MACs of the compressor itself for one user (see the module doc)."""
    if name not in COMPRESSION_TERMS:
        raise ValueError(f"unknown compressor {name!r} (choose from "
                         f"{', '.join(sorted(COMPRESSION_TERMS))})")
    hk = h * max(1, d // h)
    if name in ("hisac", "hisac_no_voting"):
        return ((num_levels - 1) * a * ds + n * ds + a * ds
                + a * n * ds + a * n * d)
    if name == "hisac_hard":
        return a * n * d
    if name == "kmeans":
        i = kmeans_iterations
        return n * ds + (i + 1) * (a * ds + a * n * ds) + i * n * ds + n * d
    if name == "lsh":
        if lsh_bits <= 0:
            lsh_bits = default_num_bits(a)
        return n * ds * lsh_bits + n * d
    if name == "patching":
        return n * d
    if name == "aggregator":
        return 2 * n * d * hk + 2 * a * n * hk
    return 0  # recent, full, sim_hard


def request_flops(
    name: str,
    *,
    n: int,
    a: int,
    c: int,
    d: int,
    ds: int,
    h: int,
    num_levels: int = 2,
    user_features: int = 2,
    mlp_dims: Sequence[int] = (64, 32),
    use_cross_layer: bool = True,
    kmeans_iterations: int = 5,
    lsh_bits: int = 0,
    attention_mass: bool = False,
    short_term_length: int = 0,
    count_types: int = 0,
) -> dict:
    """User-side, per-candidate and per-request MACs of one request.

    Args:
      name: the compressor (a `model.compressor` value).
      n, a, c, d, ds, h: N, A, C, D, Ds, H.
      num_levels: L; user_features: U (besides user_id).
      mlp_dims, use_cross_layer: the ranking head.
      kmeans_iterations, lsh_bits: the baselines' settings (0 bits: auto).
      attention_mass: the attention's mass projection [H + 1, D].
      short_term_length: S of the short-term branch (0: none); `name`
        "none" drops the long-term branch.
      count_types: T of the match counts (0: none); they cost sorting
        and binary searches, no multiply-add, and widen the head by
        4 T + 1.
    Returns:
      dict(groups G, compression, user, per_candidate, request) of ints.
    """
    for field, value in (("n", n), ("a", a), ("c", c), ("d", d),
                         ("ds", ds), ("h", h), ("num_levels", num_levels)):
        if value < 1:
            raise ValueError(f"request_flops: {field} must be >= 1, got "
                             f"{value!r}")
    hk = h * max(1, d // h)
    long_term = name != "none"
    g = (n if name in ("full", "sim_hard") else a) if long_term else 0
    compression = compression_flops(
        name, n=n, a=a, d=d, ds=ds, h=h, num_levels=num_levels,
        kmeans_iterations=kmeans_iterations, lsh_bits=lsh_bits,
    ) if long_term else 0
    branches = [g] if long_term else []
    if short_term_length:
        branches.append(min(short_term_length, n))
    user = 3 * n * d + compression  # history embedding sum, compressor
    per_candidate = (num_levels - 1) * d  # candidate SID embedding
    for groups in branches:
        user += (
            (num_levels - 1) * groups * d  # group SID embeddings
            + 2 * groups * (2 * d) * hk  # key and value projections
        )
        per_candidate += (
            3 * d * hk  # query projection
            + 2 * groups * hk  # logits and weighted sum
            + hk * d  # output projection
            + ((h + 1) * d if attention_mass else 0)  # mass projection
        )
    width = (1 + user_features) * d + 3 * d + d * len(branches)  # F
    width += 4 * count_types + 1 if count_types else 0
    head = width * width + width if use_cross_layer else 0
    prev = width
    for units in tuple(mlp_dims) + (1,):
        head += prev * units
        prev = units
    per_candidate += head
    return {
        "groups": g if long_term else branches[0],
        "compression": compression,
        "user": user,
        "per_candidate": per_candidate,
        "request": user + c * per_candidate,
    }


def config_flops(cfg, name: str | None = None, n: int | None = None,
                 c: int | None = None) -> dict:
    """`request_flops` for a `Config` (defaults: its compressor, N =
    data.max_history, C = data.max_candidates)."""
    m = cfg.model
    return request_flops(
        name or m.compressor,
        n=n or cfg.data.max_history,
        a=m.num_agents,
        c=c or cfg.data.max_candidates,
        d=m.embedding_dim,
        ds=cfg.tokenizer.latent_dim,
        h=m.num_heads,
        num_levels=len(cfg.tokenizer.codebook_sizes),
        user_features=len(cfg.data.user_features),
        mlp_dims=m.mlp_dims,
        use_cross_layer=m.use_cross_layer,
        kmeans_iterations=m.kmeans_iterations,
        lsh_bits=m.lsh_bits,
        attention_mass=m.attention_mass,
        short_term_length=m.short_term_length,
        count_types=(1 + len(cfg.tokenizer.codebook_sizes)
                     if m.count_slots else 0),
    )
