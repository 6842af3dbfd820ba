"""Micro-benchmark: the lean target attention and soft routing against the
previous plain code and against their two-matmul floor.

At one request (B = 1) with N history items, C candidates, A = 200 agents,
D = Ds = 32, H = 4 (dk = 8), float32 on the host:

  attention_full   AgentTargetAttention.score over G = N items (`full`)
  attention_hisac  the same over G = A agents (`hisac`)
  routing          SoftRoutingAttention, A agents over N items
  user_side        voting + prototypes + routing (`hisac`'s compression)

Each is timed as `lean` (the layers as they are), `plain` (the previous
code, hisac_tf/testing/reference_attention.py) and `floor`: only the two
matmuls the component cannot avoid, on the same shapes (attention: q.k
[C x G] then [C x G] x [G x dk] per head; routing: p.z [A x N] then
[A x N] x [N x D]).
`lean_xla` is the lean path under tf.function(jit_compile=True), for the
record only: the exported SavedModel does not use XLA (stock TF Serving
does not compile it). Calls are interleaved round by round in one process;
each ratio is the median over rounds of that round's ratio. Writes
`benchmarks/results/layer_floor.json` and prints a table.

    python -m benchmarks.layer_floor [--n=10000] [--c=1000] [--rounds=9]
    python -m benchmarks.layer_floor --quick   # tiny smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

_HERE = os.path.dirname(os.path.abspath(__file__))

from benchmarks.bench_common import device_name  # noqa: E402
import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf.layers.agent_target_attention import (  # noqa: E402
    AgentTargetAttention,
)
from hisac_tf.layers.hierarchical_voting import (  # noqa: E402
    HierarchicalVoting,
)
from hisac_tf.layers.soft_routing_attention import (  # noqa: E402
    SoftRoutingAttention,
)
from hisac_tf.testing import reference_attention as plain  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CODEBOOK_SIZES = (512, 512)
TOP_K = (20, 10)


def _attention_calls(groups, cands, d, h, rng):
    """{variant: callable} for the target attention over `groups`."""
    layer = AgentTargetAttention(num_heads=h, key_dim=d // h,
                                 attention_mass=True)
    queries = tf.constant(rng.normal(size=(1, cands, d)), tf.float32)
    states = tf.constant(rng.normal(size=(1, groups, 2 * d)), tf.float32)
    weights = tf.constant(rng.random((1, groups)) + 0.1, tf.float32)
    mask = tf.ones([1, groups], tf.bool)
    layer(queries, states, weights, mask)
    state = layer.encode(states, weights, mask)
    q = tf.constant(rng.normal(size=(1, cands, h, d // h)), tf.float32)

    def floor():
        logits = tf.einsum("bchk,bhak->bhca", q, state["keys"])
        return tf.einsum("bhca,bhak->bchk", logits, state["values"])

    lean = tf.function(lambda: layer.score(state, queries))
    return {
        "lean": lean,
        "plain": tf.function(
            lambda: plain.attention_score(layer, state, queries)),
        "floor": tf.function(floor),
        "lean_xla": tf.function(lean.python_function, jit_compile=True),
    }


# Share of ||z||^2 left to the quantisation residual (the tokenizer's is
# about 7 %, hisac_tf/config.py TokenizerConfig.beta): each item lies near
# its agent's prototype, as with a trained tokenizer.
RESIDUAL = 0.07


def _routing_calls(n, agents, d, ds, rng):
    z = tf.constant(rng.normal(size=(1, n, ds)), tf.float32)  # ||z||^2~Ds
    h = tf.constant(rng.normal(size=(1, n, d)), tf.float32)
    p = tf.constant(
        z.numpy()[:, rng.choice(n, agents, replace=False)]
        + rng.normal(scale=RESIDUAL ** 0.5, size=(1, agents, ds)),
        tf.float32)  # [1, A, Ds] prototypes near some items
    hist = tf.ones([1, n], tf.bool)
    amask = tf.ones([1, agents], tf.bool)
    layer = SoftRoutingAttention(temperature=1.0)

    def lean():
        return layer(latents=z, values=h, prototypes=p, history_mask=hist,
                     agent_mask=amask)["states"]

    def floor():
        logits = tf.einsum("bas,bns->ban", p, z)  # [B, A, N]
        return tf.einsum("ban,bnd->bad", logits, h)

    return {
        "lean": tf.function(lean),
        "plain": tf.function(lambda: plain.soft_routing(
            z, h, p, hist, amask, temperature=1.0)[0]),
        "floor": tf.function(floor),
        "lean_xla": tf.function(lean, jit_compile=True),
    }


def _user_side_calls(n, agents, d, ds, rng):
    """voting + prototypes + routing (lean, plain) vs the routing floor."""
    ranks = np.arange(1, CODEBOOK_SIZES[0] + 1)
    zipf = ranks ** -1.1 / np.sum(ranks ** -1.1)
    sids = tf.constant(np.stack(
        [rng.choice(k, size=(1, n), p=zipf) for k in CODEBOOK_SIZES], -1),
        tf.int32)  # [1, N, L]
    level_scale = ((1.0 - RESIDUAL) / len(CODEBOOK_SIZES)) ** 0.5
    codebooks = [tf.constant(rng.normal(scale=level_scale, size=(k, ds)),
                             tf.float32) for k in CODEBOOK_SIZES]
    z = sum(tf.gather(cb, sids[..., i]) for i, cb in enumerate(codebooks))
    z += tf.constant(rng.normal(scale=RESIDUAL ** 0.5, size=(1, n, ds)),
                     tf.float32)  # [1, N, Ds]: SID codewords + residual
    h = tf.constant(rng.normal(size=(1, n, d)), tf.float32)
    hist = tf.ones([1, n], tf.bool)
    voting = HierarchicalVoting(CODEBOOK_SIZES, TOP_K, num_agents=agents)
    layer = SoftRoutingAttention(temperature=1.0)

    def compress(route):
        picked = voting(sids, mask=hist)
        prototypes = sum(
            tf.gather(cb, picked["agent_sids"][..., i])
            for i, cb in enumerate(codebooks))  # [B, A, Ds]
        return route(prototypes, picked["agent_mask"])

    def lean():
        return compress(lambda p, m: layer(
            latents=z, values=h, prototypes=p, history_mask=hist,
            agent_mask=m)["states"])

    def before():
        return compress(lambda p, m: plain.soft_routing(
            z, h, p, hist, m, temperature=1.0)[0])

    p = tf.constant(rng.normal(size=(1, agents, ds)), tf.float32)

    def floor():
        logits = tf.einsum("bas,bns->ban", p, z)
        return tf.einsum("ban,bnd->bad", logits, h)

    return {"lean": tf.function(lean), "plain": tf.function(before),
            "floor": tf.function(floor)}


def measure(calls: dict, rounds: int, warmup: int = 2) -> dict:
    """Median ms per variant and median per-round ratios to `floor`."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            start = time.perf_counter()
            out = fn()
            np.asarray(out if not isinstance(out, (tuple, list)) else out[0])
            times[name].append(time.perf_counter() - start)
    row = {f"{name}_ms": 1e3 * statistics.median(t)
           for name, t in times.items()}
    for name in calls:
        if name != "floor":
            row[f"{name}_over_floor"] = statistics.median(
                a / b for a, b in zip(times[name], times["floor"]))
    row["plain_over_lean"] = statistics.median(
        a / b for a, b in zip(times["plain"], times["lean"]))
    return row


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--c", type=int, default=1_000)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--quick", action="store_true",
                        help="N = 300, C = 20, A = 16, 2 rounds (smoke)")
    parser.add_argument("--output",
                        default=os.path.join(RESULTS, "layer_floor.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.c, args.agents, args.rounds = 300, 20, 16, 2
    d, ds, h = 32, 32, 4
    rng = np.random.default_rng(0)
    components = {
        "attention_full": lambda: _attention_calls(args.n, args.c, d, h,
                                                   rng),
        "attention_hisac": lambda: _attention_calls(args.agents, args.c, d,
                                                    h, rng),
        "routing": lambda: _routing_calls(args.n, args.agents, d, ds, rng),
        "user_side": lambda: _user_side_calls(args.n, args.agents, d, ds,
                                              rng),
    }
    rows = {}
    for name, make in components.items():
        rows[name] = measure(make(), args.rounds)
    result = {"device": device_name(), "n": args.n, "c": args.c,
              "agents": args.agents, "d": d, "ds": ds, "heads": h,
              "rounds": args.rounds, "components": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)),
                exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"N = {args.n}, C = {args.c}, A = {args.agents}, "
          f"{result['device']}")
    print(f"{'component':<16} {'floor ms':>9} {'plain ms':>9} "
          f"{'lean ms':>8} {'lean/floor':>10} {'plain/floor':>11} "
          f"{'xla/floor':>9}")
    for name, r in rows.items():
        xla = r.get("lean_xla_over_floor")
        print(f"{name:<16} {r['floor_ms']:9.2f} {r['plain_ms']:9.2f} "
              f"{r['lean_ms']:8.2f} {r['lean_over_floor']:10.2f} "
              f"{r['plain_over_floor']:11.2f} "
              f"{'-' if xla is None else f'{xla:.2f}':>9}")
    return result


if __name__ == "__main__":
    main()
