"""Benchmark: the serving cost of one declared feature at N = 10,000.

docs/design.md §4.1. Item features live once per item in the model (the
item table's columns, `ItemFeatureLookup`) and are looked up in the graph
for the candidates and every history position; event features travel in
the request, one value per history position. This benchmark adds ONE
feature of each kind to the same tiny ranker (the `tiny` model, random
weights and random semantic tables over V = 10,000 items: cost does not
depend on training) and measures, per variant, against the ranker without
declared features:

* latency of `serving_default` (`hisac_tf.export.signatures`, the served
  graph with its input checks) for one request with N = 10,000 history
  items and C = 20 candidates: the median over interleaved rounds (the
  variants run in a new random order each round, so a load spike hits
  them alike), and the median of the per-round ratios to the baseline;
* memory of one call: peak TensorFlow allocator bytes above what was live
  before it (intermediate tensors; weights excluded), the median of
  `--peaks` calls (the allocator's reuse makes one call's peak vary by a
  few hundred KiB). On a CPU the
  allocator keeps statistics only as a BFC allocator, so the script sets
  TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow loads;
* the request's bytes (TensorProtos of every input) and the model's
  weight bytes (the item table's columns for item features).

Writes benchmarks/results/feature_cost.json and prints a table.

    python -m benchmarks.feature_cost [--rounds=5] [--calls=5] [--peaks=3]
"""

from __future__ import annotations

import argparse
import os

# The CPU allocator's statistics (peak bytes) exist only with BFC.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_common import (
    environment,
    interleaved_rounds,
    markdown_table,
    peak_bytes,
    round_ratios,
    write_json,
)
from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.item_feature_values import ItemFeatureValues
from hisac_tf.export import signatures as sig
from hisac_tf.feature_config import FeatureConfig, default_features
from hisac_tf.models.build import build_model
from hisac_tf.tokenizer.semantic_tables import SemanticTables

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(ROOT, "benchmarks", "results", "feature_cost.json")
HISTORY = 10_000
CANDIDATES = 20
NUM_ITEMS = 10_000

# One declared feature per variant (besides the default user features).
VARIANTS = {
    "base": None,
    "item_categorical": FeatureConfig("shop", "item", hash_buckets=1000),
    "item_string": FeatureConfig("brand", "item", dtype="string",
                                 hash_buckets=1000),
    "item_multi": FeatureConfig("tags", "item", kind="multi_categorical",
                                hash_buckets=1000, max_values=3),
    "item_dense": FeatureConfig("price", "item", kind="dense",
                                transform="log1p"),
    "item_vector": FeatureConfig("content", "item", kind="vector", dim=16),
    "event_dense": FeatureConfig("dwell", "event", kind="dense",
                                 transform="log1p"),
    "event_categorical": FeatureConfig("channel", "event",
                                       hash_buckets=1000),
}


def item_values(rng) -> ItemFeatureValues:
    ids = np.arange(1, NUM_ITEMS + 1, dtype=np.int64)
    v = len(ids)
    return ItemFeatureValues(ids, {
        "shop": rng.integers(1, 500, v).astype(np.int64),
        "brand": np.array([f"brand{i}".encode()
                           for i in rng.integers(0, 300, v)], object),
        "tags": rng.integers(0, 50, (v, 3)).astype(np.int64),
        "price": rng.uniform(1, 500, v).astype(np.float32),
        "content": rng.normal(size=(v, 16)).astype(np.float32),
    })


def semantic_tables(cfg, rng) -> SemanticTables:
    sizes = tuple(cfg.tokenizer.codebook_sizes)
    dim = cfg.tokenizer.latent_dim
    return SemanticTables(
        item_ids=np.arange(1, NUM_ITEMS + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, NUM_ITEMS) for k in sizes],
                      1).astype(np.int32),
        latents=rng.normal(size=(NUM_ITEMS, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes))


def request(spec: FeatureSpec, feature, rng) -> dict:
    """One request (R = 1) with N = 10,000 history items, C candidates."""
    n, c = HISTORY, CANDIDATES
    out = {
        "user_id": np.array([7], np.int64),
        "request_time": np.array([10**9], np.int64),
        "hist_item_ids": rng.integers(1, NUM_ITEMS + 1, (1, n)),
        "hist_category_ids": rng.integers(1, 40, (1, n)),
        "hist_behaviors": rng.integers(1, 4, (1, n)),
        "hist_timestamps": np.sort(rng.integers(
            10**9 - 10**7, 10**9, (1, n))),
        "hist_length": np.array([n], np.int32),
        "cand_item_ids": rng.integers(1, NUM_ITEMS + 1, (1, c)),
        "cand_category_ids": rng.integers(1, 40, (1, c)),
        "cand_count": np.array([c], np.int32),
    }
    for name in spec.user_features:
        out[name] = np.array([1], np.int64)
    if feature is not None and feature.location == "event":
        if feature.kind == "dense":
            out[feature.batch_key] = rng.uniform(0, 60, (1, n)).astype(
                np.float32)
        else:
            out[feature.batch_key] = rng.integers(1, 20, (1, n))
    return {k: tf.constant(v) for k, v in out.items()}


def variant(cfg, tables, values, feature, rng) -> dict:
    features = default_features(cfg.data.user_features) + (
        (feature,) if feature is not None else ())
    spec = FeatureSpec(max_history=HISTORY, max_candidates=CANDIDATES,
                       features=features)
    model = build_model(cfg, spec, tables, values)
    inputs = request(spec, feature, rng)
    model(inputs)
    module = sig.ServingModule(model, spec, version=1)
    names = module.serving_default.input_signature[0]
    fn = module.serving_default.get_concrete_function()
    feed = {k: inputs[k] for k in names}

    def call():
        return fn(**feed)

    call()  # traced and warm
    return {
        "call": call,
        "request_bytes": int(sum(
            tf.make_tensor_proto(v.numpy()).ByteSize()
            for v in feed.values())),
        "weight_bytes": int(sum(
            v.dtype.size * int(np.prod(v.shape)) if v.dtype != tf.string
            else int(sum(len(x) for x in v.numpy().ravel()))
            for v in model.variables)),
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--peaks", type=int, default=3)
    parser.add_argument("--output", default=OUTPUT)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    cfg = config_lib.load_config("tiny", [f"data.max_history={HISTORY}"])
    tables = semantic_tables(cfg, rng)
    values = item_values(rng)
    built = {}
    for name, feature in VARIANTS.items():
        tf.keras.utils.set_random_seed(0)
        built[name] = variant(cfg, tables, values, feature, rng)
        print(f"built {name}", flush=True)
    rounds = interleaved_rounds(
        {name: b["call"] for name, b in built.items()},
        rounds=args.rounds, calls=args.calls)
    base = built["base"]
    base_ms = float(np.median(np.concatenate(rounds["base"])))

    def peak(call) -> int:
        return int(np.median([peak_bytes(call) for _ in range(args.peaks)]))

    base_peak = peak(base["call"])
    rows, result = [], {"environment": environment(), "history": HISTORY,
                        "candidates": CANDIDATES, "num_items": NUM_ITEMS,
                        "rounds": args.rounds, "calls": args.calls,
                        "peaks": args.peaks,
                        "variants": {}}
    for name, b in built.items():
        ms = float(np.median(np.concatenate(rounds[name])))
        peak_b = base_peak if name == "base" else peak(b["call"])
        ratio = round_ratios(rounds[name], rounds["base"])
        entry = {
            "median_ms": ms,
            "added_ms": ms - base_ms,
            "ratio_to_base": ratio,
            "peak_bytes": peak_b,
            "added_peak_bytes": peak_b - base_peak,
            "request_bytes": b["request_bytes"],
            "added_request_bytes": b["request_bytes"]
            - base["request_bytes"],
            "added_weight_bytes": b["weight_bytes"] - base["weight_bytes"],
        }
        result["variants"][name] = entry
        rows.append([name, ms, entry["added_ms"], ratio["median"],
                     f"{ratio['min']:.2f}-{ratio['max']:.2f}",
                     entry["added_peak_bytes"] / 2**20,
                     entry["added_request_bytes"] / 2**10,
                     entry["added_weight_bytes"] / 2**10])
    table = markdown_table(
        ["variant", "median ms", "added ms", "ratio (median)",
         "ratio range", "added peak MiB", "added request KiB",
         "added weights KiB"], rows)
    result["table"] = table
    print(table)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs: the machine was shared; compare the "
          "ratios, not the absolute times")
    write_json(args.output, result)
    return result


if __name__ == "__main__":
    main()
