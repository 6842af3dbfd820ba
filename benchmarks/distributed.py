"""Benchmark: training examples per second, one process vs local clusters.

Trains the `tiny` preset's model (synthetic data and tokenizer written to a
temporary folder) three ways on this machine:

- one process (`cluster.strategy=default`),
- 2 workers, `multi_worker_mirrored` (each step is 2 x batch_size
  requests, the gradients all-reduced between the two processes),
- 2 workers + 2 PS, `parameter_server` (each step is one worker's
  batch_size requests; the coordinator is a third process),

each through `hisac-cluster`'s library (`run_local_cluster`) as separate
processes on loopback. The rate is measured between the first and the last
train summary (`tensorboard/train`, wall time of the events), so start-up
and the first step's tracing are left out. Writes
`benchmarks/results/distributed.json` and prints a table. On a machine
with few cores, the processes share them: the figure is the overhead of
the distributed machinery, not a speed-up (docs/distributed.md).

    python -m benchmarks.distributed [--quick] [--batch_size 32]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time


import hisac_tf  # noqa: E402,F401
import tensorflow as tf  # noqa: E402

from benchmarks.bench_common import device_name  # noqa: E402
from hisac_tf import config as config_lib  # noqa: E402
from hisac_tf.data import synthetic  # noqa: E402
from hisac_tf.distribute.local_cluster import run_local_cluster  # noqa: E402
from pipelines import tokenize_items  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
SETUPS = (
    # name, strategy, workers, PS, requests per step per batch_size
    ("1 process", "default", 0, 0, 1),
    ("2 workers, multi_worker_mirrored", "multi_worker_mirrored", 2, 0, 2),
    ("2 workers + 2 PS, parameter_server", "parameter_server", 2, 2, 1),
)


def summary_times(log_dir: str) -> dict[int, float]:
    """{step: wall time} of the `loss` summaries under `log_dir`."""
    times = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            if any(v.tag == "loss" for v in event.summary.value):
                times[event.step] = event.wall_time
    return times


def run_setup(root: str, name: str, strategy: str, workers: int, ps: int,
              per_step: int, steps: int, log_every: int,
              batch_size: int) -> dict:
    model_dir = os.path.join(root, strategy)
    sets = [
        f"data.data_dir={root}/data",
        f"tokenizer.output_dir={root}/tokenizer",
        f"training.model_dir={model_dir}",
        "training.mode=train",
        f"cluster.strategy={strategy}",
        f"training.train_steps={steps}",
        f"training.checkpoint_every={steps}",
        f"training.log_every={log_every}",
        f"data.batch_size={batch_size}",
        "cluster.ps_min_shard_bytes=1024",
    ]
    command = [sys.executable, "-m", "pipelines.train", "--config=tiny"] + [
        f"--set={s}" for s in sets]
    began = time.time()
    if workers:
        code = run_local_cluster(command, workers, ps, timeout_s=1800,
                                 sink=open(os.devnull, "w"), cwd=ROOT)
    else:
        code = subprocess.run(command, cwd=ROOT,
                              capture_output=True).returncode
    wall = time.time() - began
    if code != 0:
        raise RuntimeError(f"{name} failed with code {code}")
    times = summary_times(os.path.join(model_dir, "tensorboard", "train"))
    first, last = min(times), max(times)
    seconds = times[last] - times[first]
    examples = (last - first) * batch_size * per_step
    return {
        "setup": name,
        "strategy": strategy,
        "workers": workers or 1,
        "ps": ps,
        "requests_per_step": batch_size * per_step,
        "measured_steps": last - first,
        "seconds": seconds,
        "examples_per_second": examples / seconds,
        "wall_seconds_with_startup": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args()
    steps, log_every = (25, 5) if args.quick else (105, 5)
    with tempfile.TemporaryDirectory() as root:
        cfg = config_lib.load_config("tiny", [
            f"data.data_dir={root}/data",
            f"tokenizer.output_dir={root}/tokenizer",
        ])
        synthetic.generate(cfg, progress=False)
        tokenize_items.main(cfg, progress=False)
        rows = [run_setup(root, *setup, steps=steps, log_every=log_every,
                          batch_size=args.batch_size) for setup in SETUPS]
    base = rows[0]["examples_per_second"]
    for row in rows:
        row["relative_to_1_process"] = row["examples_per_second"] / base
    result = {
        "benchmark": "distributed",
        "device": device_name(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "preset": "tiny",
        "examples": "requests (each with up to C candidates)",
        "train_steps": steps,
        "rows": rows,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "distributed.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"{'setup':40s} {'examples/s':>11s} {'x 1 proc':>9s}")
    for row in rows:
        print(f"{row['setup']:40s} {row['examples_per_second']:11.1f} "
              f"{row['relative_to_1_process']:9.2f}")


if __name__ == "__main__":
    main()
