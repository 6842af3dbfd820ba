"""Benchmark: users per second of HiSAC's user-side compression components.

Components: `hierarchical_voting` (HierarchicalVoting, docs/design.md
§2.2) at B = 256 users, N = 1,000 and N = 10,000 history items, K = (512,
512), top_k = (20, 10), A = 200, on random Zipf-like SIDs (5% of the items
masked out as OOV), compiled with tf.function over unknown B and N. Each
measurement is the median of several timed calls after warm-up calls; a call
is timed until its outputs are on the host. Writes
`benchmarks/results/voting.json` and prints a table.

and `user_side_compression` (raw history ids → SID/latent lookup → voting
→ prototypes → soft routing into A agent states, D = Ds = 32), the whole
per-request user-side work. Each component is one
`measure_<component>(users, hist_len, rng, repeats, warmup)` function,
listed in COMPONENTS.

    python -m benchmarks.voting [--quick] [--repeats=7] [--output=PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable


from benchmarks.bench_common import device_name  # noqa: E402
import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf.layers.hierarchical_voting import (  # noqa: E402
    HierarchicalVoting,
)
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup  # noqa: E402
from hisac_tf.layers.soft_routing_attention import (  # noqa: E402
    SoftRoutingAttention,
)
from hisac_tf.tokenizer.semantic_tables import SemanticTables  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

CODEBOOK_SIZES = (512, 512)
TOP_K = (20, 10)
NUM_AGENTS = 200
ZIPF_EXPONENT = 1.1
OOV_FRACTION = 0.05
EMBEDDING_DIM = 32  # D of the ranking embeddings routed into agents.
LATENT_DIM = 32  # Ds of the frozen semantic latents.
NUM_ITEMS = 200_000  # Rows of the frozen item -> (SID, z) table.


def zipf_sids(
    users: int,
    hist_len: int,
    sizes: tuple[int, ...],
    rng: np.random.Generator,
    exponent: float = ZIPF_EXPONENT,
) -> np.ndarray:
    """[users, hist_len, L] int32 SIDs, Zipf-like at every level.

    Code ranks follow p(r) ~ 1 / (r + 1)^exponent; each user shifts the
    ranks by its own random offset per level (different users, different
    favourite codes), and a level's code also depends on its parent's, so
    the tree is not a product of independent levels.
    """
    sids = np.zeros((users, hist_len, len(sizes)), np.int64)
    parent = np.zeros((users, hist_len), np.int64)
    for level, size in enumerate(sizes):
        probs = 1.0 / np.arange(1, size + 1) ** exponent
        probs /= probs.sum()
        ranks = rng.choice(size, size=(users, hist_len), p=probs)
        shift = rng.integers(0, size, size=(users, 1))
        code = (ranks + shift + parent * 7919) % size
        sids[:, :, level] = code
        parent = parent * size + code
    return sids.astype(np.int32)


def _time_calls(
    fn: Callable[[], dict], repeats: int, warmup: int
) -> list[float]:
    """Seconds of each of `repeats` calls of fn after `warmup` calls."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times.append(time.perf_counter() - start)
    return times


def _row(component: str, users: int, hist_len: int, times: list[float],
         active: np.ndarray) -> dict:
    """One result row: medians and throughput of timed calls."""
    median = statistics.median(times)
    return {
        "component": component,
        "users": users,
        "hist_len": hist_len,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "users_per_s": users / median,
        "items_per_s": users * hist_len / median,
        "mean_active_agents": float(active.mean()),
        "repeats": len(times),
    }


def measure_hierarchical_voting(
    users: int,
    hist_len: int,
    rng: np.random.Generator,
    repeats: int,
    warmup: int,
) -> dict:
    """Users/s of HierarchicalVoting on one [users, hist_len] batch."""
    layer = HierarchicalVoting(
        CODEBOOK_SIZES, TOP_K, num_agents=NUM_AGENTS
    )
    vote = tf.function(
        lambda sids, mask: layer(sids, mask),
        input_signature=[
            tf.TensorSpec([None, None, len(CODEBOOK_SIZES)], tf.int32),
            tf.TensorSpec([None, None], tf.bool),
        ],
    )
    sids = tf.constant(zipf_sids(users, hist_len, CODEBOOK_SIZES, rng))
    mask = tf.constant(rng.random((users, hist_len)) >= OOV_FRACTION)
    times = _time_calls(lambda: vote(sids, mask), repeats, warmup)
    out = vote(sids, mask)
    active = out["num_active"].numpy()
    return _row("hierarchical_voting", users, hist_len, times, active)


def measure_user_side_compression(
    users: int,
    hist_len: int,
    rng: np.random.Generator,
    repeats: int,
    warmup: int,
) -> dict:
    """Users/s of the whole user-side compression of one request batch.

    Raw history item ids -> SemanticIdLookup (SID, z) -> HierarchicalVoting
    -> agent prototypes -> SoftRoutingAttention over the ranking embeddings
    h [B, N, D] -> agent states [B, A, D]; everything HiSACRanker runs once
    per request before the candidates (the ranking-embedding lookup aside).
    """
    sids = zipf_sids(NUM_ITEMS, 1, CODEBOOK_SIZES, rng)[:, 0]  # [V, L]
    tables = SemanticTables(
        item_ids=np.arange(1, NUM_ITEMS + 1, dtype=np.int64),
        sids=sids.astype(np.int32),
        latents=rng.normal(size=(NUM_ITEMS, LATENT_DIM)).astype(np.float32),
        codebooks=tuple(
            rng.normal(size=(k, LATENT_DIM)).astype(np.float32)
            for k in CODEBOOK_SIZES
        ),
    )
    lookup = SemanticIdLookup.from_tables(tables)
    voting = HierarchicalVoting(CODEBOOK_SIZES, TOP_K, num_agents=NUM_AGENTS)
    routing = SoftRoutingAttention(temperature=1.0)

    @tf.function(input_signature=[
        tf.TensorSpec([None, None], tf.int64),
        tf.TensorSpec([None, None, EMBEDDING_DIM], tf.float32),
    ])
    def compress(item_ids, values):
        semantic = lookup(item_ids)
        agents = voting(semantic["sids"], semantic["has_sid"])
        prototypes = lookup.prototypes(agents["agent_sids"])  # [B, A, Ds]
        routed = routing(
            latents=semantic["latents"], values=values,
            prototypes=prototypes, history_mask=semantic["has_sid"],
            agent_mask=agents["agent_mask"],
        )
        return {"states": routed["states"],
                "num_active": agents["num_active"]}

    # Ids past NUM_ITEMS are OOV (about OOV_FRACTION of the history).
    top = int(NUM_ITEMS / (1.0 - OOV_FRACTION))
    item_ids = tf.constant(rng.integers(1, top + 1, (users, hist_len)))
    values = tf.constant(
        rng.normal(size=(users, hist_len, EMBEDDING_DIM)).astype(np.float32)
    )
    times = _time_calls(lambda: compress(item_ids, values), repeats, warmup)
    active = compress(item_ids, values)["num_active"].numpy()
    return {
        **_row("user_side_compression", users, hist_len, times, active),
        "embedding_dim": EMBEDDING_DIM,
        "latent_dim": LATENT_DIM,
    }


COMPONENTS: dict[str, Callable[..., dict]] = {
    "hierarchical_voting": measure_hierarchical_voting,
    "user_side_compression": measure_user_side_compression,
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="tiny run (B = 16, N = 100 and 1,000, 3 repeats) as a smoke test",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--components", default=",".join(COMPONENTS),
        help=f"comma-separated subset of {sorted(COMPONENTS)}",
    )
    parser.add_argument(
        "--output", default=os.path.join(RESULTS, "voting.json")
    )
    args = parser.parse_args(argv)
    if args.quick:
        users, lengths, repeats = 16, (100, 1000), args.repeats or 3
    else:
        users, lengths, repeats = 256, (1000, 10000), args.repeats or 7
    names = [n for n in args.components.split(",") if n]
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        parser.error(f"--components: unknown {unknown}, known "
                     f"{sorted(COMPONENTS)}")
    if repeats < 1 or args.warmup < 0:
        parser.error(f"--repeats must be >= 1 and --warmup >= 0, got "
                     f"{repeats} and {args.warmup}")

    rng = np.random.default_rng(args.seed)
    rows = []
    for name in names:
        for hist_len in lengths:
            rows.append(
                COMPONENTS[name](users, hist_len, rng, repeats, args.warmup)
            )
    result = {
        "benchmark": "voting",
        "quick": args.quick,
        "device": device_name(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "codebook_sizes": list(CODEBOOK_SIZES),
        "top_k": list(TOP_K),
        "num_agents": NUM_AGENTS,
        "zipf_exponent": ZIPF_EXPONENT,
        "oov_fraction": OOV_FRACTION,
        "warmup": args.warmup,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)

    print(f"device: {result['device']}  tensorflow {tf.__version__}")
    header = (f"{'component':<22}{'B':>6}{'N':>8}{'median ms':>11}"
              f"{'users/s':>11}{'Mitems/s':>10}{'agents':>8}")
    print(header)
    for r in rows:
        print(f"{r['component']:<22}{r['users']:>6}{r['hist_len']:>8}"
              f"{r['median_s'] * 1e3:>11.1f}{r['users_per_s']:>11.0f}"
              f"{r['items_per_s'] / 1e6:>10.2f}"
              f"{r['mean_active_agents']:>8.1f}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
