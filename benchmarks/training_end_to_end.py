"""Benchmark: training requests/s end to end, input pipeline included.

`benchmarks/training.py` times the step alone, on batches already in
memory, and the routing plan alone; this script times what a training
job gets: Keras `fit` (the trainer's `compile_for_training`, the
paper's Adagrad + Adam) reading GZIP TFRecords through the training
input pipeline (`hisac_tf.data.input_pipeline.request_dataset`), with
the routing plan as its `tf.data` map for the `*_pipeline` methods
(`hisac_tf.models.routing_plan.with_routing_plan`, `--plan_workers`
parallel calls: AUTOTUNE by default). The pipeline prefetches, so the
plan of the next batch runs beside the step, on whatever cores the
machine has left: requests/s here is min(step rate, pipeline rate).

Per method and round (methods interleaved, a new random order each
round): one `fit` of `--steps` steps after a warm-up `fit` (tracing);
requests/s = steps x batch / seconds. The JSON has every round, the
median and the per-round ratio to full.

    python -m benchmarks.training_end_to_end [--tiny] [--n=10000]
        [--methods=hisac_sparse_pipeline,hisac,full] [--batch=32]
        [--steps=4] [--rounds=2] [--plan_workers=0] [--output=PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time

# Imports hisac_tf before TensorFlow (Keras 2).
from benchmarks import bench_common as bc

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import input_pipeline as pipeline_bench  # noqa: E402
from hisac_tf.data import input_pipeline  # noqa: E402
from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402
from hisac_tf.models.build import build_optimizer  # noqa: E402
from hisac_tf.models.routing_plan import with_routing_plan  # noqa: E402
from hisac_tf.training.trainer import compile_for_training  # noqa: E402

RESULTS = os.path.join(bc.ROOT, "benchmarks", "results")
METHODS = ("hisac_sparse_pipeline", "hisac", "full")
TINY = {"preset": "tiny", "n": 20, "batch": 4, "steps": 2, "rounds": 1,
        "candidates": 6}


class Job:
    """One method's model and its training dataset, as a job runs it."""

    def __init__(self, method: str, n: int, c: int, preset: str,
                 tables: dict, files: list, batch: int, plan_workers: int,
                 seed: int):
        self.method = method
        self.cfg = bc.method_config(method, n, c, preset)
        if preset not in tables:
            tables[preset] = bc.random_tables(self.cfg, seed)
        self.spec, self.model = bc.build_ranker(self.cfg, tables[preset],
                                                seed)
        compile_for_training(self.model, build_optimizer(self.cfg,
                                                         self.model))
        self.pipeline = self.cfg.training.routing_in_input_pipeline
        ds = input_pipeline.request_dataset(
            files, self.spec, batch, num_parallel_reads=1,
            drop_remainder=True, repeat=True)
        if self.pipeline:
            ds = with_routing_plan(
                ds, self.model,
                num_parallel_calls=plan_workers or tf.data.AUTOTUNE)
        self.dataset = ds

    def fit_seconds(self, steps: int) -> float:
        """Seconds of one `fit` of `steps` steps (the dataset's iterator
        is made inside `fit`, as in a job)."""
        began = time.perf_counter()
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=steps,
                       verbose=0)
        return time.perf_counter() - began


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny preset and sizes (CI smoke)")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--methods", type=bc.method_list, default=METHODS)
    parser.add_argument("--plan_workers", type=int, default=0,
                        help="parallel calls of the plan map (0: AUTOTUNE)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(
        RESULTS, "training_end_to_end.json"))
    args = parser.parse_args(argv)
    tiny = TINY if args.tiny else {}

    def pick(name, default):  # the flag, else --tiny's, else the default
        given = getattr(args, name)
        return given if given is not None else tiny.get(name, default)

    preset = pick("preset", bc.PRESET)
    n = pick("n", 10_000)
    c = pick("candidates", 50)
    batch = pick("batch", 32)
    steps = pick("steps", 4)
    rounds = pick("rounds", 2)
    for name, value in (("n", n), ("candidates", c), ("batch", batch),
                        ("steps", steps), ("rounds", rounds)):
        if value < 1:
            parser.error(f"--{name} must be >= 1; received {value}")
    if args.plan_workers < 0:
        parser.error("--plan_workers must be >= 0 (0: AUTOTUNE); received "
                     f"{args.plan_workers}")
    tf.get_logger().setLevel("ERROR")
    began = time.perf_counter()
    tables: dict = {}
    seconds: dict = {m: [] for m in args.methods}
    with tempfile.TemporaryDirectory(prefix="hisac-e2e-bench-") as tmp:
        path = os.path.join(tmp, "train.tfrecord.gz")
        cfg = bc.method_config(args.methods[0], n, c, preset)
        pipeline_bench.write_records(
            path, FeatureSpec.from_config(cfg.data), batch * (steps + 2),
            c, np.random.default_rng(args.seed),
            num_items=bc.NUM_ITEMS)  # ids the semantic tables know
        jobs = {m: Job(m, n, c, preset, tables, [path], batch,
                       args.plan_workers, args.seed) for m in args.methods}
        for job in jobs.values():
            job.fit_seconds(2)  # warm-up: tracing, the pipeline's threads
        order = list(jobs)
        rng = random.Random(args.seed)
        for r in range(rounds):
            rng.shuffle(order)
            for m in order:
                seconds[m].append(jobs[m].fit_seconds(steps))
            print(f"round {r + 1}/{rounds}: " + ", ".join(
                f"{m} {steps * batch / seconds[m][-1]:.3g} requests/s"
                for m in args.methods), flush=True)
    methods = {}
    for m, secs in seconds.items():
        rates = [steps * batch / s for s in secs]
        methods[m] = {
            "routing_in_input_pipeline": jobs[m].pipeline,
            "requests_per_s": float(np.median(rates)),
            "requests_per_s_rounds": rates,
        }
    ratios = {}
    if "full" in seconds:
        for m in seconds:
            if m != "full":
                per_round = [f / s for f, s in zip(seconds["full"],
                                                   seconds[m])]
                ratios[f"{m}_over_full_requests_per_s"] = {
                    "median": float(np.median(per_round)),
                    "min": float(min(per_round)),
                    "max": float(max(per_round)), "rounds": rounds}
    result = {
        "benchmark": "training_end_to_end",
        **bc.environment(),
        "preset": preset,
        "sizes": {"n": n, "c": c, "batch": batch, "steps": steps,
                  "rounds": rounds, "plan_workers": args.plan_workers
                  or "AUTOTUNE"},
        "methods": methods,
        "ratios": ratios,
        "seconds": time.perf_counter() - began,
    }
    bc.write_json(args.output, result)
    rows = []
    for m, v in methods.items():
        ratio = ratios.get(f"{m}_over_full_requests_per_s")
        rows.append([m, v["requests_per_s"],
                     (f"{ratio['median']:.3g} ({ratio['min']:.3g}–"
                      f"{ratio['max']:.3g})") if ratio else "-"])
    print(bc.markdown_table(["method", "requests/s (fit, end to end)",
                             "× full (per round)"], rows))
    print(f"wrote {args.output} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
