"""Benchmark: the serving cost of HiSAC against its baselines.

For each history length N, the rankers of `bench_common.METHODS` (default
hisac, full, recent and the two-branch ranker; the `taobao_mm` model
settings A = 200, K = 200 x 200, D = Ds = 32, H = 4, random weights and
random semantic tables over 100,000 items: latency does not depend on
training) are wrapped in the export's `ServingModule`, and for every
C candidates and R requests per call the benchmark times, in one process:

* request: `serving_default` (the exported signature's tf.function, input
  checks included): R requests of N items and C candidates;
* cached: `score_with_state` on a state `encode_user` computed before;
* user: `encode_user` alone (once per N and R; the user side).

Every round runs each (method, mode) `--calls` times, in a new random
order per round, so machine noise hits every method alike; each ratio is
computed per round (round medians), and the JSON gives its median over
rounds and the spread (min, max). p50 / p99 pool every call.

Peak memory: the TF allocator's peak (`tf.config.experimental.
get_memory_info("CPU:0")["peak"]` after `reset_memory_stats`, or GPU:0)
of one call minus the bytes live before it: the call's own tensors.

Breakdown (R = 1, C = `--breakdown_c`): the user side (semantic lookup,
ranking embedding, voting, prototypes, routing, the attention's
key/value encode) and the candidate side (queries, target attention,
head), each timed alone on the shapes the model sees, beside its floor
timed on the same shapes: the two routing matmuls [A, Ds] x [Ds, N] and
[A, N] x [N, D]; the attention's two [C, dk] x [dk, G], [C, G] x [G, dk]
einsums per head; the head's dense matmuls; gathers of the same rows for
the lookups.

Cost model: `calibrate` measures the machine's matmul rate, elementwise
bandwidth and per-op cost once; each cell's predicted latency is
`hisac_tf.compressors.flops` multiply-adds and elementwise bytes at those
rates plus the graph's op count at the per-op cost (docs/performance.md).

Writes benchmarks/results/serving_cost.json and prints markdown tables.

    python -m benchmarks.serving_cost [--tiny] [--rounds=5] [--calls=3]
        [--n=1000,3000,10000] [--c=100,500,1000] [--r=1,8]
        [--methods=hisac,full,recent,two_branch] [--output=PATH]
"""

from __future__ import annotations

import argparse
import os
import time

# Imports hisac_tf before TensorFlow (Keras 2).
from benchmarks import bench_common as bc

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf.compressors import flops as flops_lib  # noqa: E402
from hisac_tf.compressors.hisac_compressor import (  # noqa: E402
    HiSACCompressor,
)
from hisac_tf.models.branch import encode_groups  # noqa: E402
from hisac_tf.export import signatures as sig  # noqa: E402
from serving import grpc_client, load_test  # noqa: E402

RESULTS = os.path.join(bc.ROOT, "benchmarks", "results")
METHODS = ("hisac", "full", "recent", "two_branch")
TINY = {"preset": "tiny", "n": (20, 40), "c": (4, 8), "r": (1, 2),
        "rounds": 2, "calls": 1, "calibration_size": 0.01}


class Ranker:
    """One method at one N: the model, its ServingModule and functions."""

    def __init__(self, method: str, n: int, c: int, preset: str,
                 tables_by_preset: dict, seed: int, jit: bool,
                 direct: bool = False):
        self.method = method
        self.cfg = bc.method_config(method, n, c, preset)
        if preset not in tables_by_preset:
            tables_by_preset[preset] = bc.random_tables(self.cfg, seed)
        self.spec, self.model = bc.build_ranker(
            self.cfg, tables_by_preset[preset], seed)
        # The model's own methods under tf.function (no input checks, the
        # state kept in the compute dtype), with XLA when `jit`.
        self.direct = jit or direct
        if not self.direct:
            self.module = sig.ServingModule(self.model, self.spec,
                                            version=1)
        else:
            self.request_fn = tf.function(
                lambda f: self.model(f, training=False), jit_compile=jit)
            self.cached_fn = tf.function(
                lambda s, f: self.model.score(s, f, training=False),
                jit_compile=jit)
            self.user_fn = tf.function(
                lambda f: self.model.compress_user(f, training=False),
                jit_compile=jit)

    def functions(self, request: dict) -> dict:
        """mode -> zero-argument callable for one request dict."""
        inputs = {k: tf.constant(v) for k, v in request.items()}
        user, cands = grpc_client.split_request(inputs)
        if self.direct:
            state = self.user_fn(inputs)
            return {
                "request": lambda: self.request_fn(inputs),
                "cached": lambda: self.cached_fn(state, cands),
                "user": lambda: self.user_fn(inputs),
            }
        # The signatures' concrete functions, as a server runs them: a
        # tf.function's Python dispatch (matching the structured inputs to
        # its input signature) costs ~0.2 ms more per call, which TF
        # Serving never pays and which is 5 % of a cached call.
        request_fn = self.module.serving_default.get_concrete_function()
        cached_fn = self.module.score_with_state.get_concrete_function()
        user_fn = self.module.encode_user.get_concrete_function()
        state = user_fn(user)
        state_inputs = {**state, **cands}
        return {
            "request": lambda: request_fn(inputs),
            "cached": lambda: cached_fn(state_inputs),
            "user": lambda: user_fn(user),
        }

    def graph_ops(self) -> dict:
        """Op counts of the request and cached graphs (cost model)."""
        if self.direct:
            request = load_test.random_request(self.spec, 8, 4, 1)
            fns = self.functions(request)  # traces both on a small request
            del fns
            inputs = {k: tf.constant(v) for k, v in request.items()}
            state = self.user_fn(inputs)
            _, cands = grpc_client.split_request(inputs)
            return {
                "request": bc.graph_ops(
                    self.request_fn.get_concrete_function(inputs)),
                "cached": bc.graph_ops(
                    self.cached_fn.get_concrete_function(state, cands)),
            }
        return {
            "request": bc.graph_ops(
                self.module.serving_default.get_concrete_function()),
            "cached": bc.graph_ops(
                self.module.score_with_state.get_concrete_function()),
        }

    def cost(self, n: int, c: int, cached: bool) -> dict:
        """`flops.config_cost`: MACs and elementwise bytes per component."""
        return flops_lib.config_cost(self.cfg, n=n, c=c, cached=cached)


# ------------------------------------------------------------- breakdown
def _random(shape, seed=0):
    return tf.random.stateless_normal(shape, seed=[seed, 1])


def breakdown_parts(ranker: Ranker, request: dict) -> dict:
    """name -> (zero-argument fn, floor name or None) of the sub-parts of
    one request (R = 1), plus the floors, all on the model's own shapes."""
    model = ranker.model
    f = {k: tf.constant(v) for k, v in request.items()}
    ids = f["hist_item_ids"]  # [1, N]
    n = int(ids.shape[1])
    c = int(f["cand_item_ids"].shape[1])
    valid = tf.sequence_mask(f["hist_length"], n)  # [1, N]
    lookup = tf.function(lambda x: model.semantic_lookup(x))
    embed = tf.function(lambda: model.ranking_embedding(
        ids, f["hist_category_ids"], f["hist_behaviors"],
        f["hist_timestamps"], f["request_time"], training=False))
    sem = lookup(ids)
    h = embed()  # [1, N, D]
    d = int(h.shape[-1])
    ds = int(sem["latents"].shape[-1])
    parts = {
        "semantic_lookup": (lambda: lookup(ids), "gather_floor"),
        "ranking_embedding": (embed, "embedding_floor"),
    }
    codebooks = tf.concat(model.semantic_lookup.codebooks, axis=0)
    comp = model.compressor
    kwargs = dict(valid=valid, latents=sem["latents"], sids=sem["sids"],
                  has_sid=sem["has_sid"], timestamps=f["hist_timestamps"],
                  categories=f["hist_category_ids"], codebooks=codebooks,
                  training=False)
    compress = tf.function(lambda: comp(h, **kwargs))
    groups = compress()
    a = int(groups["group_mask"].shape[1])
    if isinstance(comp, HiSACCompressor):
        routable = tf.logical_and(valid, sem["has_sid"])  # [1, N]
        voting = tf.function(lambda: comp.voting(sem["sids"],
                                                 mask=routable))
        agents = voting()
        protos = tf.function(lambda: comp.prototypes(
            codebooks, agents["agent_sids"]))
        p = protos()  # [1, A, Ds]
        routing = tf.function(lambda: comp.routing(
            latents=sem["latents"], values=h, prototypes=p,
            history_mask=routable, agent_mask=agents["agent_mask"],
            item_sids=sem["sids"], agent_sids=agents["agent_sids"],
            training=False))
        parts["voting"] = (voting, None)
        parts["prototypes"] = (protos, None)
        parts["routing"] = (routing, "routing_floor")
    else:
        parts["compress"] = (compress, None)
    encode = tf.function(lambda: encode_groups(
        groups, model.attention, model.sid_embedding))
    state = encode()
    parts["encode"] = (encode, None)
    queries = _random([1, c, 3 * d])
    att_state = {k: state[k] for k in ("keys", "values", "bias", "mask")}
    attend = tf.function(lambda: model.attention.score(
        att_state, queries, training=False))
    parts["target_attention"] = (attend, "attention_floor")
    width = int(model.mlp[0].kernel.shape[0])
    x = _random([c, width])

    def head_fn():
        y = model.cross(x) if model.cross is not None else x
        for dense in model.mlp:
            y = dense(y)
        return model.logit(y)

    parts["head"] = (tf.function(head_fn), "head_floor")

    # Floors on the same shapes.
    heads, dk = (int(s) for s in (state["keys"].shape[1],
                                  state["keys"].shape[3]))
    if "routing" in parts:
        za, zb = _random([1, a, ds]), _random([1, n, ds])
        ra, rb = _random([1, a, n]), _random([1, n, d])
        parts["routing_floor"] = (tf.function(lambda: (
            tf.matmul(za, zb, transpose_b=True),  # [1, A, N]
            tf.matmul(ra, rb))), None)  # [1, A, D]
    q, k = _random([1, c, heads, dk]), _random([1, heads, a, dk])
    probs, v = _random([1, heads, c, a]), _random([1, heads, a, dk])
    att_floor = tf.function(lambda: (
        tf.einsum("bchk,bhak->bhca", q, k),  # [1, H, C, G]
        tf.einsum("bhca,bhak->bchk", probs, v)))  # [1, C, H, dk]
    kernels = ([model.cross._dense.kernel] if model.cross is not None
               else []) + [dense.kernel for dense in model.mlp] + [
                   model.logit.kernel]

    def head_floor():
        y = x
        outs = []
        for kernel in kernels:
            y = tf.matmul(y, kernel)
            outs.append(y)
        return outs

    table = _random([bc.NUM_ITEMS, ds])
    rows = tf.random.stateless_uniform([n], [0, 2], 0, bc.NUM_ITEMS,
                                       tf.int32)
    emb_table = _random([bc.NUM_ITEMS, d])
    gather = tf.function(lambda: tf.gather(table, rows))  # [N, Ds]
    emb_gather = tf.function(lambda: [
        tf.gather(emb_table, rows) for _ in range(4)])  # 4 x [N, D]
    parts.update({
        "attention_floor": (att_floor, None),
        "head_floor": (tf.function(head_floor), None),
        "gather_floor": (gather, None),
        "embedding_floor": (emb_gather, None),
    })
    return {"parts": parts, "groups": a, "n": n, "c": c}


# Breakdown part -> the cost model's components (flops.request_cost).
COMPONENTS = {
    "semantic_lookup": ("semantic_lookup",),
    "ranking_embedding": ("ranking_embedding",),
    "voting": ("voting",),
    "routing": ("compression",),
    "compress": ("compression",),
    "encode": ("group_sid_embedding", "keys_values"),
    "target_attention": ("target_attention",),
    "head": ("head",),
}


def measure_breakdown(ranker: Ranker, request: dict, rounds: int,
                      calls: int, seed: int, calibration: dict) -> dict:
    info = breakdown_parts(ranker, request)
    parts = info["parts"]
    fns = {name: fn for name, (fn, _) in parts.items()}
    for fn in fns.values():
        bc.time_ms(fn, 0, warmup=2)
    times = bc.interleaved_rounds(fns, rounds, calls, seed)
    p50 = {name: float(np.median(np.concatenate(t)))
           for name, t in times.items()}
    cost = ranker.cost(info["n"], info["c"], cached=False)["components"]
    predicted = bc.component_seconds(cost, calibration)
    rows = {}
    for name, (_, floor) in parts.items():
        rows[name] = {"p50_ms": p50[name], "floor": floor,
                      "x_floor": p50[name] / p50[floor] if floor else None}
        keys = COMPONENTS.get(name, ())
        if keys and all(k in predicted for k in keys):
            rows[name]["predicted_ms"] = 1000.0 * sum(
                predicted[k] for k in keys)
    out = {"groups": info["groups"], "n": info["n"], "c": info["c"],
           "parts": rows}
    if "routing" in p50:
        user = p50["voting"] + p50["prototypes"] + p50["routing"]
        out["voting_prototypes_routing_ms"] = user
        out["voting_prototypes_routing_x_floor"] = (
            user / p50["routing_floor"])
    return out


# -------------------------------------------------------------- the grid
def run_cell(rankers: dict, spec_n: int, c: int, r: int, with_user: bool,
             rounds: int, calls: int, seed: int) -> dict:
    """All methods and modes of one (N, C, R), interleaved."""
    any_spec = next(iter(rankers.values())).spec
    request = load_test.random_request(any_spec, spec_n, c, r, seed=seed)
    fns = {}
    for method, ranker in rankers.items():
        for mode, fn in ranker.functions(request).items():
            if mode == "user" and not with_user:
                continue
            fns[f"{method}/{mode}"] = fn
    for fn in fns.values():
        bc.time_ms(fn, 0, warmup=2)
    memory = {name: bc.peak_bytes(fn) for name, fn in fns.items()}
    times = bc.interleaved_rounds(fns, rounds, calls, seed)
    cell = {"n": spec_n, "c": c, "r": r, "methods": {}}
    for name, per_round in times.items():
        method, mode = name.split("/")
        row = bc.stats(np.concatenate(per_round))
        row["peak_bytes"] = memory[name]
        cell["methods"].setdefault(method, {})[mode] = row
    ratios = {}
    if "hisac" in rankers:
        base = times["hisac/request"]
        for method in rankers:
            if method != "hisac":
                ratios[f"{method}_request_over_hisac_request"] = (
                    bc.round_ratios(times[f"{method}/request"], base))
        if "full" in rankers:
            ratios["full_request_over_hisac_cached"] = bc.round_ratios(
                times["full/request"], times["hisac/cached"])
            ratios["full_over_hisac_peak_memory"] = (
                memory["full/request"] / max(1, memory["hisac/request"]))
    cell["ratios"] = ratios
    return cell


def predict_cells(cells: list, rankers_info: dict, calibration: dict):
    """Adds each (method, mode)'s predicted ms and error to the cells."""
    for cell in cells:
        n, c, r = cell["n"], cell["c"], cell["r"]
        for method, modes in cell["methods"].items():
            info = rankers_info[(method, n)]
            for mode, row in modes.items():
                if mode == "user":
                    continue
                cost = info["cost"][(c, mode == "cached")]
                seconds = bc.predict_seconds(cost, info["ops"][mode],
                                             calibration, requests=r)
                row["predicted_ms"] = 1000.0 * seconds
                row["prediction_error"] = (row["predicted_ms"]
                                           / row["p50_ms"] - 1.0)


def slopes(cells: list, methods) -> dict:
    """User-side ms vs N (linear fit) and per-candidate ms vs N."""
    out = {}
    ns = sorted({cell["n"] for cell in cells})
    for method in methods:
        user = {cell["n"]: cell["methods"][method]["user"]["p50_ms"]
                for cell in cells
                if cell["r"] == 1 and "user" in cell["methods"][method]}
        per_cand = {}
        for n in ns:
            pts = sorted((cell["c"], cell["methods"][method]["cached"][
                "p50_ms"]) for cell in cells
                if cell["n"] == n and cell["r"] == 1)
            if len(pts) >= 2:
                cs, ms = zip(*pts)
                per_cand[n] = float(np.polyfit(cs, ms, 1)[0])
        row = {"user_ms_by_n": user,
               "per_candidate_ms_by_n": per_cand}
        if len(user) >= 2:
            xs, ys = zip(*sorted(user.items()))
            slope, icpt = np.polyfit(xs, ys, 1)
            fit = np.polyval([slope, icpt], xs)
            ss = float(np.sum((np.asarray(ys) - np.mean(ys)) ** 2))
            row["user_ms_per_1000_items"] = float(slope * 1000)
            row["user_intercept_ms"] = float(icpt)
            row["user_fit_r2"] = (1.0 - float(np.sum((ys - fit) ** 2)) / ss
                                  if ss > 0 else 1.0)
        if len(per_cand) >= 2:
            xs, ys = zip(*sorted(per_cand.items()))
            row["per_candidate_us_per_1000_items"] = float(
                np.polyfit(xs, ys, 1)[0] * 1e6)
            row["per_candidate_max_over_min_n"] = (
                ys[-1] / ys[0] if ys[0] > 0 else None)
        out[method] = row
    return out


def _cell(cells, n, c, r=1):
    for cell in cells:
        if (cell["n"], cell["c"], cell["r"]) == (n, c, r):
            return cell
    return None


def targets(cells: list, breakdown: dict, slope: dict,
            gpu: bool) -> list:
    """The issue's targets with the measured ratio (None: not in grid)."""
    out = []

    def add(name, value, goal, higher_is_better=True):
        met = None
        if value is not None:
            met = value >= goal if higher_is_better else value <= goal
        out.append({"target": name, "measured": value, "goal": goal,
                    "met": met})

    def ratio(cell, key):
        if cell is None or key not in cell["ratios"]:
            return None
        value = cell["ratios"][key]
        return value["median"] if isinstance(value, dict) else value

    big = _cell(cells, 10_000, 1000)
    add("request N=10k C=1000: full/hisac p50", ratio(
        big, "full_request_over_hisac_request"), 5.0)
    add("request N=10k C=1000: full/hisac peak memory", ratio(
        big, "full_over_hisac_peak_memory"), 10.0)
    add("request N=10k C=100: full/hisac p50", ratio(
        _cell(cells, 10_000, 100), "full_request_over_hisac_request"), 2.0)
    add("N=10k C=500: full request / hisac cached", ratio(
        _cell(cells, 10_000, 500), "full_request_over_hisac_cached"), 25.0)
    routing = breakdown.get("hisac", {}).get(10_000, {})
    add("N=10k: (voting + prototypes + routing) / two-matmul floor",
        routing.get("voting_prototypes_routing_x_floor"), 1.5,
        higher_is_better=False)
    add("request N=10k C=1000: two_branch/hisac p50", ratio(
        big, "two_branch_request_over_hisac_request"), 1.3,
        higher_is_better=False)
    hisac = slope.get("hisac", {})
    add("hisac per-candidate cost, N max / N min (flat: ~1)",
        hisac.get("per_candidate_max_over_min_n"), 1.3,
        higher_is_better=False)
    if gpu:
        cell = _cell(cells, 10_000, 500)
        p99 = (cell["methods"]["hisac"]["request"]["p99_ms"]
               if cell and "hisac" in cell["methods"] else None)
        add("GPU request N=10k C=500 R=1: hisac p99 ms", p99, 10.0,
            higher_is_better=False)
    return out


def print_tables(result: dict) -> None:
    rows = []
    for cell in result["cells"]:
        for method, modes in cell["methods"].items():
            for mode, s in modes.items():
                rows.append([cell["n"], cell["c"], cell["r"], method, mode,
                             s["p50_ms"], s["p99_ms"],
                             s["peak_bytes"] / 2**20,
                             s.get("predicted_ms", "-")])
    print(bc.markdown_table(
        ["N", "C", "R", "method", "mode", "p50 ms", "p99 ms", "peak MiB",
         "predicted ms"], rows))
    print()
    rows = []
    for cell in result["cells"]:
        for key, v in cell["ratios"].items():
            if isinstance(v, dict):
                rows.append([cell["n"], cell["c"], cell["r"], key,
                             v["median"], f"{v['min']:.3g}-{v['max']:.3g}"])
            else:
                rows.append([cell["n"], cell["c"], cell["r"], key, v, "-"])
    print(bc.markdown_table(["N", "C", "R", "ratio", "median", "spread"],
                            rows))
    print()
    rows = []
    for method, by_n in result["breakdown"].items():
        for n, b in by_n.items():
            for part, v in b["parts"].items():
                rows.append([method, n, b["c"], part, v["p50_ms"],
                             v["x_floor"] if v["x_floor"] else "-",
                             v.get("predicted_ms", "-")])
    print(bc.markdown_table(["method", "N", "C", "part", "p50 ms",
                             "x floor", "predicted ms"], rows))
    print()
    print(bc.markdown_table(
        ["target", "measured", "goal", "met"],
        [[t["target"], t["measured"] if t["measured"] is not None else "-",
          t["goal"], t["met"]] for t in result["targets"]]))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny preset and sizes, one call (CI smoke)")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--n", type=bc.int_list, default=None)
    parser.add_argument("--c", type=bc.int_list, default=None)
    parser.add_argument("--r", type=bc.int_list, default=None)
    parser.add_argument("--methods", type=bc.method_list, default=METHODS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None,
                        help="timed calls of each method per round")
    parser.add_argument("--breakdown_c", type=int, default=None,
                        help="C of the breakdown (default: the largest)")
    parser.add_argument("--breakdown_n", type=bc.int_list, default=None,
                        help="N of the breakdown (default: every N)")
    parser.add_argument("--no_breakdown", action="store_true")
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_float16",
                                 "mixed_bfloat16"))
    parser.add_argument("--jit_compile", action="store_true",
                        help="XLA over the model (not the signatures)")
    parser.add_argument("--model_path", action="store_true",
                        help="time the model's own methods under "
                        "tf.function, not the export's signatures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output",
                        default=os.path.join(RESULTS, "serving_cost.json"))
    args = parser.parse_args(argv)
    tiny = TINY if args.tiny else {}
    preset = args.preset or tiny.get("preset", bc.PRESET)
    ns = args.n or tiny.get("n", (1000, 3000, 10000))
    cs = args.c or tiny.get("c", (100, 500, 1000))
    rs = args.r or tiny.get("r", (1, 8))
    rounds = args.rounds or tiny.get("rounds", 5)
    calls = args.calls or tiny.get("calls", 3)
    breakdown_c = args.breakdown_c or max(cs)
    if args.precision != "float32":
        tf.keras.mixed_precision.set_global_policy(args.precision)
    began = time.perf_counter()
    calibration = bc.calibrate(size=tiny.get("calibration_size", 1.0))
    tables: dict = {}
    cells, breakdown, rankers_info = [], {}, {}
    for n in ns:
        rankers = {m: Ranker(m, n, max(cs), preset, tables, args.seed,
                             args.jit_compile, args.model_path)
                   for m in args.methods}
        for m, ranker in rankers.items():
            rankers_info[(m, n)] = {
                "ops": ranker.graph_ops(),
                "cost": {(c, cached): ranker.cost(n, c, cached)
                         for c in cs for cached in (False, True)},
            }
        for r in rs:
            for i, c in enumerate(cs):
                cell = run_cell(rankers, n, c, r, i == 0, rounds, calls,
                                args.seed)
                cells.append(cell)
                print(f"N={n} C={c} R={r}: " + ", ".join(
                    f"{m} {v['request']['p50_ms']:.1f}"
                    for m, v in cell["methods"].items())
                    + f" ms ({time.perf_counter() - began:.0f} s)",
                    flush=True)
        if not args.no_breakdown and n in (args.breakdown_n or ns):
            request = load_test.random_request(
                rankers[args.methods[0]].spec, n, breakdown_c, 1,
                seed=args.seed)
            for m in ("hisac", "hisac_sparse", "full"):
                if m in rankers:
                    breakdown.setdefault(m, {})[n] = measure_breakdown(
                        rankers[m], request, rounds, calls, args.seed,
                        calibration)
        del rankers
    predict_cells(cells, rankers_info, calibration)
    slope = slopes(cells, args.methods)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    result = {
        "benchmark": "serving_cost",
        **bc.environment(),
        "preset": preset,
        "precision": args.precision,
        "jit_compile": args.jit_compile,
        "path": (f"model under tf.function(jit_compile="
                 f"{args.jit_compile})"
                 if args.jit_compile or args.model_path else
                 "ServingModule tf.functions (serving_default, "
                 "score_with_state, encode_user), in process"),
        "memory_method": (
            f"tf.config.experimental.get_memory_info('{bc.memory_device()}')"
            " peak after reset_memory_stats, minus the bytes live before "
            "the call"),
        "sizes": {"n": list(ns), "c": list(cs), "r": list(rs),
                  "rounds": rounds, "calls_per_round": calls,
                  "breakdown_c": breakdown_c},
        "methods": {m: list(bc.METHODS[m]) for m in args.methods},
        "calibration": calibration,
        "cells": cells,
        "breakdown": breakdown,
        "slopes": slope,
        "seconds": time.perf_counter() - began,
    }
    result["targets"] = targets(cells, breakdown, slope, gpu)
    bc.write_json(args.output, result)
    print_tables(result)
    print(f"wrote {args.output} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
