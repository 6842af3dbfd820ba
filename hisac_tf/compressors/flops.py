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

`request_flops(attention_mass=...)` defaults to True, as
`ModelConfig.attention_mass` does.

Time, not just arithmetic: `request_cost` (same arguments, + `cached`)
splits one request into components, each with its multiply-adds and the
bytes its elementwise passes touch (float32, 4 bytes an element; a pass
that reads one tensor and writes one of E elements touches 8 E bytes, a
reduction 4 E; gathers count what they write and read):

  user side (once per request; skipped with `cached=True`, the state is
  read from the cache instead)
    semantic_lookup       hashing ids, gathering SIDs and latents
                          32 N + 8 N (L + Ds) + N
    ranking_embedding     four [N, D] gathers and three adds   68 N D
    voting                (hisac*) L sort-like passes over N   8 N L (4 +
                          ceil log2 N)
    compression           routing (hisac: the augmented operands
                          8 N (Ds + 3) + 4 N Ds + 8 N (D + 1), one exp
                          pass 8 A N), the baselines' passes over [A, N]
                          or [N, D] (see `compression_bytes`)
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
once both throughputs are measured on the machine (benchmarks/
serving_cost.py calibrates them on a large matmul and a large elementwise
pass and shows predicted against measured).
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


def routed_items(n: int, routing_top_m: int = 0) -> int:
    """K, the history items each agent aggregates: N dense (m = 0 or
    m >= N), else m (sparse routing, SoftRoutingAttention(top_m=m))."""
    return n if not routing_top_m or routing_top_m >= n else routing_top_m


def compression_flops(
    name: str, *, n: int, a: int, d: int, ds: int, h: int,
    num_levels: int = 2, kmeans_iterations: int = 5, lsh_bits: int = 0,
    routing_top_m: int = 0,
) -> int:
    """MACs of the compressor itself for one user (see the module doc;
    routing_top_m = m: sparse routing aggregates A m D, `routed_items`)."""
    if name not in COMPRESSION_TERMS:
        raise ValueError(f"unknown compressor {name!r} (choose from "
                         f"{', '.join(sorted(COMPRESSION_TERMS))})")
    hk = h * max(1, d // h)
    if name in ("hisac", "hisac_no_voting"):
        return ((num_levels - 1) * a * ds + n * ds + a * ds
                + a * n * ds + a * routed_items(n, routing_top_m) * d)
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
    attention_mass: bool = True,
    short_term_length: int = 0,
    count_types: int = 0,
    routing_top_m: int = 0,
) -> dict:
    """User-side, per-candidate and per-request MACs of one request.

    Args:
      name: the compressor (a `model.compressor` value).
      n, a, c, d, ds, h: N, A, C, D, Ds, H.
      num_levels: L; user_features: U (besides user_id).
      mlp_dims, use_cross_layer: the ranking head.
      kmeans_iterations, lsh_bits: the baselines' settings (0 bits: auto).
      attention_mass: the attention's mass projection [H + 1, D] (True,
        as `ModelConfig.attention_mass`).
      short_term_length: S of the short-term branch (0: none); `name`
        "none" drops the long-term branch.
      count_types: T of the match counts (0: none); they cost sorting
        and binary searches, no multiply-add, and widen the head by
        4 T + 1.
      routing_top_m: m of sparse routing (0: dense), hisac variants.
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
        routing_top_m=routing_top_m,
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
    return request_flops(**_config_sizes(cfg, name, n, c))


def _config_sizes(cfg, name: str | None, n: int | None,
                  c: int | None) -> dict:
    """The keyword arguments `request_flops` and `request_cost` share, read
    from a `Config`."""
    m = cfg.model
    return dict(
        name=name or m.compressor,
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
        routing_top_m=m.routing_top_m,
    )


# Compressors with HierarchicalVoting in front of their routing.
VOTING = ("hisac", "hisac_hard", "hisac_no_voting")
FLOAT_BYTES = 4


def compression_bytes(name: str, *, n: int, a: int, d: int, ds: int,
                      kmeans_iterations: int = 5, lsh_bits: int = 0,
                      routing_top_m: int = 0) -> int:
    """Bytes the compressor's elementwise passes touch for one user."""
    if name not in COMPRESSION_TERMS:
        raise ValueError(f"unknown compressor {name!r} (choose from "
                         f"{', '.join(sorted(COMPRESSION_TERMS))})")
    k = routed_items(n, routing_top_m)
    if name in ("hisac", "hisac_no_voting") and k < n:
        # Sparse: the operands, the top-m selection reading the [A, N]
        # logits, the sparse product reading m rows of h per agent and
        # the [A, m] softmax.
        return (8 * n * (ds + 3) + 4 * n * ds + 8 * a * n
                + 8 * a * k * (d + 2))
    if name in ("hisac", "hisac_no_voting"):
        # z_aug [N, Ds + 3], ||z||^2, values ++ 1 [N, D + 1]; exp [A, N].
        return (8 * n * (ds + 3) + 4 * n * ds + 8 * n * (d + 1)
                + 8 * a * n)
    if name == "hisac_hard":  # [A, N, L] compare, [A, N] hits, divide
        return 8 * a * n * 4
    if name == "kmeans":  # distances, argmin, one-hot per iteration
        return (kmeans_iterations + 1) * 8 * a * n * 3 + 8 * n * d
    if name == "lsh":
        bits = lsh_bits if lsh_bits > 0 else default_num_bits(a)
        return 8 * n * (ds + bits) + 8 * n * d
    if name == "patching":
        return 8 * n * d
    if name == "aggregator":  # softmax over [A, N] and masks
        return 8 * a * n * 4 + 8 * n * d
    return 0  # recent, full, sim_hard: the gather is in group embedding


def request_cost(
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
    attention_mass: bool = True,
    short_term_length: int = 0,
    count_types: int = 0,
    cached: bool = False,
    routing_top_m: int = 0,
) -> dict:
    """Per-component multiply-adds and elementwise bytes of one request.

    Arguments as `request_flops`; `cached`: the user side comes from a
    cached state (`score_with_state`), so only the candidate side counts.

    Returns:
      dict(components={component: dict(side "user" or "candidate",
      macs, bytes)}, user=dict(macs, bytes), candidate=dict(macs, bytes),
      request=dict(macs, bytes), cached). `request` is user + candidate,
      or candidate alone when cached. Component names: module doc.
    """
    flops = request_flops(
        name, n=n, a=a, c=c, d=d, ds=ds, h=h, num_levels=num_levels,
        user_features=user_features, mlp_dims=mlp_dims,
        use_cross_layer=use_cross_layer,
        kmeans_iterations=kmeans_iterations, lsh_bits=lsh_bits,
        attention_mass=attention_mass, short_term_length=short_term_length,
        count_types=count_types, routing_top_m=routing_top_m,
    )
    dk = max(1, d // h)
    hk = h * dk
    levels = num_levels
    long_term = name != "none"
    branches = []  # G of each attention branch
    if long_term:
        branches.append(n if name in ("full", "sim_hard") else a)
    if short_term_length:
        branches.append(min(short_term_length, n))
    parts = {}

    def add(component, side, macs, nbytes):
        parts[component] = {"side": side, "macs": int(macs),
                            "bytes": int(nbytes)}

    add("semantic_lookup", "user", 0,
        32 * n + 8 * n * (levels + ds) + n)
    add("ranking_embedding", "user", 3 * n * d, 68 * n * d)
    if name in VOTING:
        add("voting", "user", 0,
            8 * n * levels * (4 + max(1, (n - 1).bit_length())))
    if long_term:
        add("compression", "user", flops["compression"], compression_bytes(
            name, n=n, a=a, d=d, ds=ds,
            kmeans_iterations=kmeans_iterations, lsh_bits=lsh_bits,
            routing_top_m=routing_top_m))
    add("group_sid_embedding", "user",
        sum((levels - 1) * g * d for g in branches),
        sum(8 * levels * g * d for g in branches))
    add("keys_values", "user", sum(2 * g * (2 * d) * hk for g in branches),
        sum(8 * g * 2 * d + 16 * g * hk for g in branches))
    per_cand = {
        "candidate_embedding": (levels - 1) * d,
        "target_attention": sum(
            3 * d * hk + 2 * g * hk + hk * d
            + ((h + 1) * d if attention_mass else 0) for g in branches),
    }
    per_cand["head"] = flops["per_candidate"] - sum(per_cand.values())
    width = (1 + user_features) * d + 3 * d + d * len(branches)
    width += 4 * count_types + 1 if count_types else 0
    add("candidate_embedding", "candidate",
        c * per_cand["candidate_embedding"], 8 * c * d * (levels + 3))
    add("target_attention", "candidate", c * per_cand["target_attention"],
        sum(8 * h * c * g + 8 * g * (3 * hk + 3 * h) + 48 * c * hk
            for g in branches))
    add("head", "candidate", c * per_cand["head"],
        16 * c * (2 * width + sum(mlp_dims) + 1))

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


def config_cost(cfg, name: str | None = None, n: int | None = None,
                c: int | None = None, cached: bool = False) -> dict:
    """`request_cost` for a `Config` (defaults as `config_flops`)."""
    return request_cost(**_config_sizes(cfg, name, n, c), cached=cached)


# Bytes an optimiser touches per parameter: Adam reads the parameter, its
# gradient and two moments and writes three (7 floats); Adagrad on an
# embedding row reads the row, its gradient and accumulator and writes
# two (5 floats), after deduplicating the rows (a sort: 8 bytes a row a
# pass, log2 rows passes).
ADAM_FLOATS = 7
ADAGRAD_FLOATS = 5


def training_cost(name: str, *, batch: int, routing_in_pipeline: bool =
                  False, **sizes) -> dict:
    """Per-stage multiply-adds and bytes of one training step of `batch`
    requests (each with `sizes["c"]` candidates; `sizes` as
    `request_cost`).

    Stages (components with side = the stage):
      input     the routing plan when `routing_in_pipeline` (HiSAC's
                semantic lookup, voting and routing logits / selection:
                frozen inputs, computed by the tf.data map), else nothing
                (parsing is not modelled);
      routing   the same work inside the step when not in the pipeline
                (off the gradient tape either way);
      forward   the taped forward: ranking embedding, the compressor's
                aggregation (A K D, K = `routed_items`), group SID
                embeddings, keys / values, the candidate side;
      backward  twice the taped forward (gradients of inputs and
                weights);
      optimizer Adam over the dense weights (about one weight per
                multiply-add of a per-candidate or per-group matmul) and
                Adagrad over the embedding rows the step read.
    Returns dict(components, stages={stage: dict(macs, bytes)}).
    """
    if batch < 1:
        raise ValueError(f"training_cost: batch must be >= 1, got {batch!r}")
    cost = request_cost(name, **sizes)
    n, a, d = sizes["n"], sizes["a"], sizes["d"]
    m = sizes.get("routing_top_m", 0)
    parts = {k: dict(v) for k, v in cost["components"].items()}
    off_tape = ("semantic_lookup", "voting")
    if name in ("hisac", "hisac_no_voting") and "compression" in parts:
        k = routed_items(n, m)
        comp = parts.pop("compression")
        agg_bytes = (8 * a * k * (d + 1) if k < n
                     else 4 * a * n + 8 * n * (d + 1))
        parts["routing_logits"] = {
            "side": "user", "macs": comp["macs"] - a * k * d,
            "bytes": max(0, comp["bytes"] - agg_bytes)}
        parts["aggregation"] = {"side": "user", "macs": a * k * d,
                                "bytes": agg_bytes}
        off_tape += ("routing_logits",)
    stages = {s: {"macs": 0, "bytes": 0} for s in (
        "input", "routing", "forward", "backward", "optimizer")}
    components = {}
    for comp, p in parts.items():
        if comp in off_tape:
            if name not in VOTING and comp == "semantic_lookup":
                stage = "forward"  # read by nothing off the tape
            else:
                stage = "input" if routing_in_pipeline else "routing"
        else:
            stage = "forward"
        macs, nbytes = batch * p["macs"], batch * p["bytes"]
        components[comp] = {"side": stage, "macs": macs, "bytes": nbytes}
        stages[stage]["macs"] += macs
        stages[stage]["bytes"] += nbytes
    fwd = stages["forward"]
    components["backward"] = {"side": "backward", "macs": 2 * fwd["macs"],
                              "bytes": 2 * fwd["bytes"]}
    flops = request_flops(name, **sizes)
    h = sizes["h"]
    hk = h * max(1, d // h)
    branches = 1 + (1 if sizes.get("short_term_length") else 0)
    dense_weights = flops["per_candidate"] + branches * 2 * (2 * d) * hk
    rows = batch * (4 * n + 2 * sizes["c"] + 1
                    + sizes.get("user_features", 2))
    opt_bytes = (4 * ADAM_FLOATS * dense_weights
                 + 4 * ADAGRAD_FLOATS * rows * d
                 + 8 * rows * max(1, (rows - 1).bit_length()))
    components["optimizer"] = {"side": "optimizer", "macs": 0,
                               "bytes": opt_bytes}
    for stage in ("backward", "optimizer"):
        stages[stage] = {k: components[stage][k] for k in ("macs", "bytes")}
    return {"components": components, "stages": stages}


def predict_training(cost: dict, matmul_flops_per_s: float,
                     bytes_per_s: float) -> dict:
    """Seconds per stage of a `training_cost` (2 macs / matmul rate +
    bytes / bandwidth, as `predict_latency`)."""
    for field, value in (("matmul_flops_per_s", matmul_flops_per_s),
                         ("bytes_per_s", bytes_per_s)):
        if not value > 0:
            raise ValueError(f"predict_training: {field} must be > 0, got "
                             f"{value!r}")
    return {stage: 2.0 * s["macs"] / matmul_flops_per_s
            + s["bytes"] / bytes_per_s
            for stage, s in cost["stages"].items()}
