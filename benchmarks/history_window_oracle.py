"""How much of the synthetic click signal lies beyond the newest W behaviours?

An analysis of the generator (`hisac_tf/data/synthetic/`), not of a model:
for the eval requests of the first `--users` users of a preset, the true
click model is re-estimated from only the newest W behaviours before each
request (`hisac_tf.data.synthetic.oracle`, which documents what the oracle
knows and estimates). The generator writes the same curve for every split
into `summary.json` at the summary's windows; this script gives exact AUCs
at any windows on a subset of users. W runs over `--windows` and "all"
(the whole history); the Bayes row scores with the true click probability.

    python -m benchmarks.history_window_oracle --config=taobao_mm_hour \
        [--users=2000] [--windows=100,200,300,1000,3000]

Reads the data set's `summary.json` (its calibrated bias and eval split),
writes `benchmarks/results/history_window_oracle.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import time


import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402

from hisac_tf.config import load_config  # noqa: E402
from hisac_tf.data import synthetic  # noqa: E402


def main(cfg, users: int, windows: list[int]) -> dict:
    """The table for the first `users` users of `cfg`'s data (a Config)."""
    began = time.time()
    world = synthetic.build_world(cfg.synthetic)
    summary_path = os.path.join(cfg.data.data_dir, synthetic.SUMMARY_FILE)
    with open(summary_path) as f:
        summary = json.load(f)
    samples = (synthetic.simulate_user(world, cfg, user)
               for user in range(1, users + 1))
    table = synthetic.oracle_table(
        world, cfg, samples, summary["calibrated_bias"],
        summary["eval_split_time"], windows)
    hist = table["history_lengths"]
    return {
        "preset": cfg.name,
        "users": users,
        "eval_requests": table["eval_requests"],
        "impressions": table["impressions"],
        "history_at_request": {
            "mean": float(hist.mean()), "median": float(np.median(hist)),
            "share_over_200": float((hist > 200).mean()),
            "share_over_1000": float((hist > 1000).mean()),
        },
        "rows": table["rows"],
        "seconds": time.time() - began,
    }


def format_table(result: dict) -> str:
    lines = ["| newest W behaviours | oracle AUC | oracle GAUC |",
             "| --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['window']} | {r['auc']:.4f} | {r['gauc']:.4f} |")
    return "\n".join(lines)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="taobao_mm_hour")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--windows", default="100,200,300,1000,3000")
    parser.add_argument("--output", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        "history_window_oracle.json"))
    args = parser.parse_args()
    try:
        windows = [int(w) for w in args.windows.split(",")]
    except ValueError:
        parser.error(f"--windows must be ints, got {args.windows!r}")
    if args.users < 1 or any(w < 1 for w in windows):
        parser.error(f"--users and --windows must be >= 1, got "
                     f"{args.users!r} and {windows!r}")
    result = main(load_config(args.config), args.users, windows)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(format_table(result))
    print(f"history at request: {result['history_at_request']}; "
          f"{result['eval_requests']} eval requests, "
          f"{result['seconds']:.0f} s -> {args.output}")


if __name__ == "__main__":
    run()
