"""Benchmark: parsed requests and candidates per second of the input pipeline.

Writes request-level GZIP TFRecords with full-length histories at
N = 1,000 and N = 10,000 (random ids, sorted timestamps) into a temporary
folder, then times the training input pipeline (interleave, batched
parsing, contract checks, truncation and padding) over them several times.
Reports medians and writes `benchmarks/results/input_pipeline.json` and a
table.

    python -m benchmarks.input_pipeline [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


import hisac_tf  # noqa: E402,F401
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402
from hisac_tf.data import input_pipeline  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def write_records(path, spec, requests, candidates, rng,
                  num_items: int = 10**7):
    """`requests` random full-length requests; item ids in [1,
    num_items) (the training benchmarks pass the semantic tables' size,
    so that histories have SIDs and HiSAC routes them, as in a log whose
    catalogue the tokenizer covers)."""
    n = spec.max_history
    with tf.io.TFRecordWriter(path, "GZIP") as writer:
        for r in range(requests):
            ts = np.sort(rng.integers(1, 10**9, n))
            request = {
                "user_id": r + 1,
                "request_time": int(ts[-1]) + 1,
                "gender": 1,
                "age_bucket": 2,
                "hist_item_ids": rng.integers(1, num_items, n),
                "hist_category_ids": rng.integers(1, 10**4, n),
                "hist_behaviors": rng.integers(1, 5, n),
                "hist_timestamps": ts,
                "cand_item_ids": rng.integers(1, num_items, candidates),
                "cand_category_ids": rng.integers(1, 10**4, candidates),
                "labels": rng.integers(0, 2, candidates),
            }
            writer.write(spec.to_example(request).SerializeToString())


def measure(files, spec, batch_size, repeats, validate=True):
    times = []
    for _ in range(repeats):
        ds = input_pipeline.request_dataset(
            files, spec, batch_size, validate=validate,
            num_parallel_reads=len(files),
        )
        began = time.perf_counter()
        requests = 0
        for batch in ds:
            requests += int(batch["user_id"].shape[0])
        times.append(time.perf_counter() - began)
    return requests, float(np.median(times)), times


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lengths = [100, 1000] if args.quick else [1000, 10000]
    candidates = 50
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in lengths:
            requests = 256 if args.quick else max(512, 2_000_000 // n)
            spec = FeatureSpec(max_history=n, max_candidates=candidates)
            files = []
            for shard in range(4):
                path = os.path.join(tmp, f"n{n}-{shard}.tfrecord.gz")
                write_records(path, spec, requests // 4, candidates, rng)
                files.append(path)
            size = sum(os.path.getsize(f) for f in files)
            for validate in (True, False):
                count, median, times = measure(
                    files, spec, 64, args.repeats, validate
                )
                rows.append({
                    "N": n,
                    "validate": validate,
                    "requests": count,
                    "candidates_per_request": candidates,
                    "gzip_bytes": size,
                    "median_seconds": median,
                    "seconds": times,
                    "requests_per_second": count / median,
                    "candidates_per_second": count * candidates / median,
                    "history_items_per_second": count * n / median,
                })
    result = {
        "benchmark": "input_pipeline",
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        "batch_size": 64,
        "repeats": args.repeats,
        "rows": rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    out = os.path.join(RESULTS, "input_pipeline.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'N':>6} {'checks':>6} {'requests/s':>11} {'cands/s':>10} "
          f"{'hist items/s':>13}")
    for r in rows:
        print(f"{r['N']:>6} {str(r['validate']):>6} "
              f"{r['requests_per_second']:>11.0f} "
              f"{r['candidates_per_second']:>10.0f} "
              f"{r['history_items_per_second']:>13.3g}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
