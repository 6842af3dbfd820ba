"""Benchmark: training steps/s of HiSAC against its baselines, by stage.

For each history length N (default 1,000 and 10,000) and C = 50
candidates, the rankers hisac, hisac_sparse_pipeline (sparse routing,
m = 32, routing plan from the input pipeline), full, short_only (the
short-term branch alone) and two_branch (`bench_common.METHODS`; the
`taobao_mm` model
settings, random semantic tables) train on batches of B requests read by
the training input pipeline (`hisac_tf.data.input_pipeline`, GZIP
TFRecords of random full-length requests written to a temporary folder).
The step is TFRS's `train_step` (what `model.fit` runs: forward, loss,
gradients, the paper's Adagrad + Adam `apply_gradients`) in one
tf.function, on batches already in memory.

Stages, each timed alone (forward + backward where it trains):
  input      one batch from the input pipeline (parsing, checks, padding);
  user       `compress_user` (semantic lookup, ranking embedding, the
             compressor, the attention's key/value encode), with its
             gradients (loss: the sum of the state);
  candidate  `score` given a fixed user state (queries, target
             attention, match counts, head), with its gradients, less
             the head;
  head       cross layer + MLP + logit on [B * C, F], with gradients;
  optimiser  `apply_gradients` of precomputed gradients, as the step has
             them (IndexedSlices for the embedding tables: the sparse
             Adagrad update of the rows read).
And the step split where the time goes (issue 23), each against the cost
model's prediction (`flops.training_cost` + `flops.predict_training`:
multiply-adds at the calibrated matmul rate, bytes at the elementwise
bandwidth, sorts, binary searches, top-k selection and deduplication at
their measured rates, and the stage's graph ops (`graph_ops`) at the
per-op dispatch cost; `flops.calibrate` runs once per round at a random
place among the timed functions, so that it sees the same load, with the
median of its calls (as the stages' medians; `calls` calibrations a
round, as each stage), and the predictions use the median over all of
them; the sizes are the config's,
with the random tables' V and the plan's routed width U):
  plan       the routing plan alone (semantic lookup, voting, routing
             weights; `models/routing_plan.py`): for the `*_pipeline`
             methods the input pipeline's map computes it, so it is
             input time and not in their step; 0 for the others;
  forward    `compute_loss` (training=True) without a tape;
  backward   forward + gradients under the tape, less forward;
  taped      forward + backward: the part of the step under the tape.
Requests/s are from the step (the plan runs on input-pipeline workers
beside it); `serial_requests_per_s` adds the plan's time to the step, as
on a machine with no spare core for the pipeline.
Stages overlap (the pipeline prefetches) and share work, so they need
not add up to the step.

Methods are interleaved per round (a new random order each round); the
JSON has steps/s and requests/s (B x steps/s) from the median step, the
per-round ratios to full, each stage's median ms, and per method
`measured_vs_predicted` {stage: measured_ms, predicted_ms, ratio =
predicted / measured} with the graphs' op counts (`graph_ops`) and the
row's calibration.

    python -m benchmarks.training [--tiny] [--n=1000,10000] [--batch=32]
        [--rounds=3] [--calls=3] [--output=PATH]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

# Imports hisac_tf before TensorFlow (Keras 2).
from benchmarks import bench_common as bc

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import input_pipeline as pipeline_bench  # noqa: E402
from hisac_tf.compressors import flops as flops_lib  # noqa: E402
from hisac_tf.data import input_pipeline  # noqa: E402
from hisac_tf.models.build import build_optimizer  # noqa: E402
from hisac_tf.models.routing_plan import add_routing_plan  # noqa: E402
from hisac_tf.training.trainer import compile_for_training  # noqa: E402

RESULTS = os.path.join(bc.ROOT, "benchmarks", "results")
METHODS = ("hisac", "hisac_sparse_pipeline", "full", "short_only",
           "two_branch")
STAGES = ("step", "user", "candidate", "head", "optimiser", "plan",
          "forward", "taped")
TINY = {"preset": "tiny", "n": (20, 40), "batch": 4, "rounds": 1,
        "calls": 1, "candidates": 6}


def input_batches(tmp: str, spec, batch: int, batches: int,
                  rng) -> tuple[list, float]:
    """(`batches` batches read by the training pipeline, median ms per
    batch of a warm, repeating pipeline)."""
    path = os.path.join(tmp, f"n{spec.max_history}.tfrecord.gz")
    pipeline_bench.write_records(path, spec, batch * batches,
                                 spec.max_candidates, rng,
                                 num_items=bc.NUM_ITEMS)  # ids with SIDs
    ds = input_pipeline.request_dataset(
        [path], spec, batch, num_parallel_reads=1, drop_remainder=True,
        repeat=True)
    it = iter(ds)
    out = [next(it) for _ in range(batches)]  # warm
    return out, float(np.median(bc.time_ms(lambda: next(it), 2 * batches)))


class Trainer:
    """One method's model, optimiser and timed functions at one N."""

    def __init__(self, method: str, n: int, c: int, preset: str,
                 tables: dict, seed: int):
        self.cfg = bc.method_config(method, n, c, preset)
        if preset not in tables:
            tables[preset] = bc.random_tables(self.cfg, seed)
        self.spec, self.model = bc.build_ranker(self.cfg, tables[preset],
                                                seed)
        self.optimizer = build_optimizer(self.cfg, self.model)
        compile_for_training(self.model, self.optimizer)
        self.pipeline = self.cfg.training.routing_in_input_pipeline
        self.semantic_items = int(len(tables[preset].item_ids))  # V

    def functions(self, batch: dict) -> dict:
        """stage -> zero-argument callable on one batch."""
        model = self.model
        variables = model.trainable_variables
        step = tf.function(model.train_step)
        raw = batch
        plan_fn = (tf.function(add_routing_plan(model))
                   if self.pipeline else None)
        if plan_fn is not None:  # The step reads the pipeline's plan.
            batch = plan_fn(raw)
        # U, the routed positions the step embeds (sparse plan; a
        # property of the data the cost model takes as a size).
        self.routed_positions = (
            int(batch["routing_positions"].shape[1])
            if "routing_positions" in batch else 0)

        @tf.function
        def forward():
            return model.compute_loss(batch, training=True)

        @tf.function
        def taped():
            with tf.GradientTape() as tape:
                loss = model.compute_loss(batch, training=True)
            return tape.gradient(loss, variables)

        @tf.function
        def user():
            with tf.GradientTape() as tape:
                state = model.compress_user(batch, training=True)
                loss = tf.add_n([tf.reduce_sum(tf.cast(v, tf.float32))
                                 for v in state.values()
                                 if v.dtype.is_floating])
            return tape.gradient(loss, variables)

        state = {k: tf.stop_gradient(v) for k, v in
                 model.compress_user(batch, training=False).items()}
        labels = tf.cast(batch["labels"], tf.float32)

        @tf.function
        def candidate():
            with tf.GradientTape() as tape:
                logits = model.score(state, batch, training=True)
                loss = tf.reduce_mean(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels, logits))
            return tape.gradient(loss, variables)

        width = int(model.mlp[0].kernel.shape[0])
        rows = int(batch["cand_item_ids"].shape[0]) * int(
            batch["cand_item_ids"].shape[1])
        x = tf.random.stateless_normal([rows, width], [0, 1])
        head_vars = ((model.cross.trainable_variables if model.cross
                      else []) + [v for d in model.mlp
                                  for v in d.trainable_variables]
                     + model.logit.trainable_variables)

        @tf.function
        def head():
            with tf.GradientTape() as tape:
                y = model.cross(x) if model.cross is not None else x
                for dense in model.mlp:
                    y = dense(y)
                loss = tf.reduce_mean(model.logit(y))
            return tape.gradient(loss, head_vars)

        with tf.GradientTape() as tape:
            loss = model.compute_loss(batch, training=True)
        # The step's own gradients: IndexedSlices for the embedding
        # gathers (rows read), dense tensors for the rest.
        grads = [tf.zeros_like(v) if g is None else g
                 for g, v in zip(tape.gradient(loss, variables), variables)]

        @tf.function
        def optimiser():
            self.optimizer.apply_gradients(zip(grads, variables))
            return tf.constant(0)

        # The traced graphs, for their op counts (`count_ops`).
        self._graphs = {"plan": (plan_fn, (raw,)), "forward": (forward, ()),
                        "taped": (taped, ()), "optimiser": (optimiser, ())}
        return {"step": lambda: step(batch), "user": user,
                "candidate": candidate, "head": head,
                "optimiser": optimiser, "forward": forward,
                "taped": taped,
                "plan": ((lambda: plan_fn(raw)) if plan_fn is not None
                         else (lambda: tf.constant(0)))}

    def count_ops(self) -> dict:
        """Ops each timed graph runs (`flops.graph_ops`; call after the
        functions ran once): the dispatch term of the cost model's
        stages. 0 for a plan that is not in the input pipeline."""
        return {stage: (flops_lib.graph_ops(fn.get_concrete_function(*args))
                        if fn is not None else 0)
                for stage, (fn, args) in self._graphs.items()}

    def predicted_ms(self, batch_size: int, calibration: dict,
                     ops: dict) -> dict:
        """The cost model's ms per stage (`flops.training_cost` of the
        random tables' V, `flops.predict_training` with each timed
        graph's ops: the plan's as input, the forward's (routing
        included when in the step), taped - forward as backward, the
        optimiser's)."""
        sizes = flops_lib.RequestSizes.from_config(
            self.cfg, semantic_items=self.semantic_items).replace(
                routed_positions=self.routed_positions)
        cost = flops_lib.training_cost(sizes, batch_size,
                                       routing_in_pipeline=self.pipeline)
        seconds = flops_lib.predict_training(
            cost, calibration["matmul_macs_per_s"] * 2.0,
            calibration["elementwise_bytes_per_s"], rates=calibration,
            ops={"input": ops["plan"], "forward": ops["forward"],
                 "backward": max(0, ops["taped"] - ops["forward"]),
                 "optimizer": ops["optimiser"]},
            calls={"input": int(self.pipeline), "forward": 1,
                   "optimizer": 1})  # backward: taped - forward
        return {k: 1000.0 * v for k, v in seconds.items()}


def measured_vs_predicted(stages_ms: dict, predicted: dict,
                          pipeline: bool) -> dict:
    """{stage: dict(measured_ms, predicted_ms, ratio = predicted /
    measured, None when measured <= 0)} for the plan (input pipeline
    methods only), the forward (the routing's prediction added when it
    runs in the step), the backward and the optimiser."""
    pairs = {
        "forward": (stages_ms["forward"],
                    predicted["forward"] + predicted["routing"]),
        "backward": (stages_ms["backward"], predicted["backward"]),
        "optimizer": (stages_ms["optimiser"], predicted["optimizer"]),
    }
    if pipeline:
        pairs = {"plan": (stages_ms["plan"], predicted["input"]), **pairs}
    return {stage: {"measured_ms": m, "predicted_ms": p,
                    "ratio": p / m if m > 0 else None}
            for stage, (m, p) in pairs.items()}


def median_calibration(calibrations: list) -> dict:
    """Per key, the median of several `calibrate` results' numbers."""
    keys = [k for k, v in calibrations[0].items()
            if isinstance(v, (int, float))]
    return {k: float(np.median([c[k] for c in calibrations]))
            for k in keys}


def run_n(methods, n: int, c: int, batch_size: int, preset: str,
          rounds: int, calls: int, seed: int, tables: dict,
          tmp: str, calibration_size: float = 1.0,
          calibration_calls: int = 3) -> dict:
    trainers = {m: Trainer(m, n, c, preset, tables, seed) for m in methods}
    spec = next(iter(trainers.values())).spec
    batches, input_ms = input_batches(tmp, spec, batch_size,
                                      max(2, calls), np.random.default_rng(
                                          seed))
    batch = batches[0]
    fns = {}
    for m, trainer in trainers.items():
        for stage, fn in trainer.functions(batch).items():
            fns[f"{m}/{stage}"] = fn
    # The machine is shared: its throughputs are measured inside the
    # rounds, at a random place in each (as if one more method), and the
    # predictions use their median over the rounds.
    calibrations = []

    def calibrate_in_round():
        calibrations.append(bc.calibrate(
            calls=calibration_calls, size=calibration_size,
            statistic="median"))  # as the stages' median ms
        return tf.constant(0)

    for fn in fns.values():
        bc.time_ms(fn, 0, warmup=2)
    ops = {m: trainer.count_ops() for m, trainer in trainers.items()}
    fns["calibration"] = calibrate_in_round
    times = bc.interleaved_rounds(fns, rounds, calls, seed)
    del times["calibration"]
    calibration = median_calibration(calibrations)
    out = {"n": n, "c": c, "batch": batch_size, "input_ms_per_batch":
           input_ms, "methods": {}, "ratios": {},
           "calibration": calibration,
           "calibrations_per_round": calibrations}
    for m, trainer in trainers.items():
        med = {stage: float(np.median(np.concatenate(
            times[f"{m}/{stage}"]))) for stage in STAGES}
        plan = med["plan"] if trainer.pipeline else 0.0
        predicted = trainer.predicted_ms(batch_size, calibration, ops[m])
        out["methods"][m] = {
            "step_ms": med["step"],
            "steps_per_s": 1000.0 / med["step"],
            "requests_per_s": 1000.0 * batch_size / med["step"],
            "serial_requests_per_s": 1000.0 * batch_size / (
                med["step"] + plan),
            "routing_in_input_pipeline": trainer.pipeline,
            "graph_ops": ops[m],
            # The sizes the prediction took from the run itself.
            "semantic_items": trainer.semantic_items,
            "routed_positions": trainer.routed_positions,
            "taped_ms": med["taped"],
            "stages_ms": {
                "input": input_ms,
                "plan": plan,
                "forward": med["forward"],
                "backward": med["taped"] - med["forward"],
                "user": med["user"],
                "candidate": med["candidate"] - med["head"],
                "head": med["head"],
                "optimiser": med["optimiser"],
            },
            # The cost model: input = the plan when in the pipeline,
            # routing = the same work inside the step otherwise.
            "predicted_ms": predicted,
        }
        out["methods"][m]["measured_vs_predicted"] = measured_vs_predicted(
            out["methods"][m]["stages_ms"], predicted, trainer.pipeline)
    if "full" in trainers:
        for m in trainers:
            if m != "full":
                # Requests/s ratio m / full = step time full / m.
                out["ratios"][f"{m}_over_full_requests_per_s"] = (
                    bc.round_ratios(times["full/step"], times[f"{m}/step"]))
    return out


def taped_growth(rows: list) -> dict:
    """Per method: its taped ms at the largest N over the smallest."""
    if len(rows) < 2:
        return {}
    lo, hi = min(rows, key=lambda r: r["n"]), max(rows, key=lambda r: r["n"])
    return {m: hi["methods"][m]["taped_ms"] / v["taped_ms"]
            for m, v in lo["methods"].items() if m in hi["methods"]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true",
                        help="tiny preset and sizes, one call (CI smoke)")
    parser.add_argument("--preset", default=None)
    parser.add_argument("--n", type=bc.int_list, default=None)
    parser.add_argument("--candidates", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--methods", type=bc.method_list, default=METHODS)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--calls", type=int, default=None)
    parser.add_argument("--precision", default="float32",
                        choices=("float32", "mixed_float16",
                                 "mixed_bfloat16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output",
                        default=os.path.join(RESULTS, "training.json"))
    args = parser.parse_args(argv)
    tiny = TINY if args.tiny else {}
    preset = args.preset or tiny.get("preset", bc.PRESET)
    ns = args.n or tiny.get("n", (1000, 10000))
    c = args.candidates or tiny.get("candidates", 50)
    batch = args.batch or tiny.get("batch", 32)
    rounds = args.rounds or tiny.get("rounds", 3)
    calls = args.calls or tiny.get("calls", 3)
    if args.precision != "float32":
        tf.keras.mixed_precision.set_global_policy(args.precision)
    tf.get_logger().setLevel("ERROR")  # one train_step trace per model
    began = time.perf_counter()
    tables: dict = {}
    rows = []
    with tempfile.TemporaryDirectory(prefix="hisac-train-bench-") as tmp:
        for n in ns:
            rows.append(run_n(args.methods, n, c, batch, preset, rounds,
                              calls, args.seed, tables, tmp,
                              calibration_size=0.05 if args.tiny else 1))
            print(f"N={n}: " + ", ".join(
                f"{m} {v['steps_per_s']:.2f} steps/s"
                for m, v in rows[-1]["methods"].items())
                + f" ({time.perf_counter() - began:.0f} s)", flush=True)
    result = {
        "benchmark": "training",
        **bc.environment(),
        "preset": preset,
        "precision": args.precision,
        "sizes": {"n": list(ns), "c": c, "batch": batch, "rounds": rounds,
                  "calls_per_round": calls},
        "methods": {m: list(bc.METHODS[m]) for m in args.methods},
        "rows": rows,
        "taped_largest_over_smallest_n": taped_growth(rows),
        "seconds": time.perf_counter() - began,
    }
    bc.write_json(args.output, result)
    table, where = [], []
    for row in rows:
        for m, v in row["methods"].items():
            s = v["stages_ms"]
            ratio = row["ratios"].get(f"{m}_over_full_requests_per_s")
            table.append([row["n"], m, v["steps_per_s"],
                          v["requests_per_s"], v["serial_requests_per_s"],
                          ratio["median"] if ratio else "-",
                          s["input"], s["user"], s["candidate"], s["head"],
                          s["optimiser"]])
            # measured ms (predicted ms, predicted / measured) per stage.
            cells = []
            for stage in ("plan", "forward", "backward", "optimizer"):
                q = v["measured_vs_predicted"].get(stage)
                cells.append("-" if q is None else (
                    f"{q['measured_ms']:.3g} ({q['predicted_ms']:.3g}, "
                    + ("-)" if q["ratio"] is None
                       else f"{q['ratio']:.2f}x)")))
            where.append([row["n"], m, *cells, v["taped_ms"]])
    print(bc.markdown_table(
        ["N", "method", "steps/s", "requests/s", "serial requests/s",
         "x full", "input ms", "user ms", "candidate ms", "head ms",
         "optimiser ms"], table))
    print()
    print(bc.markdown_table(
        ["N", "method", "plan ms (pred., ratio)",
         "forward ms (pred., ratio)", "backward ms (pred., ratio)",
         "optimiser ms (pred., ratio)", "taped ms"], where))
    growth = result["taped_largest_over_smallest_n"]
    if growth:
        print("taped ms, largest N / smallest N: " + ", ".join(
            f"{m} {g:.2f}" for m, g in growth.items()))
    print(f"wrote {args.output} in {result['seconds']:.0f} s")
    return result


if __name__ == "__main__":
    main()
