"""Helpers shared by the benchmark scripts.

Besides `device_name`, the pieces that `serving_cost.py` and
`training.py` share (docs/performance.md):

* `METHODS`: the rankers compared, as config overrides of a preset;
* `random_tables` / `build_ranker`: a ranker on random semantic tables
  (latency does not depend on training);
* `time_ms`, `stats`, `interleaved_rounds`: timing, interleaved per round
  so that machine noise hits every method alike, and ratios per round;
* `peak_bytes`: peak tensor memory of one call, from the TF CPU (or GPU)
  allocator's statistics (`tf.config.experimental.get_memory_info`);
* `calibrate`, `graph_ops`, `predict_seconds`, `component_seconds`: the
  cost model's time prediction (re-exported from
  hisac_tf/compressors/flops.py, the one cost module);
* `environment`, `write_json`, `markdown_table`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from typing import Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf import config as config_lib  # noqa: E402
# The cost model's calibration and time prediction live in the one cost
# module; re-exported for the benchmark scripts.
from hisac_tf.compressors.flops import (  # noqa: E402,F401
    calibrate,
    component_seconds,
    graph_ops,
    predict_seconds,
)
from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402
from hisac_tf.models.build import build_model  # noqa: E402
from hisac_tf.tokenizer.semantic_tables import SemanticTables  # noqa: E402
from serving import load_test  # noqa: E402

# Each method: overrides of the preset's `model` section (docs/design.md
# §2.6, §3). The single-branch rankers have neither the short-term branch
# nor the match counts, so that they differ only in the compressor;
# `two_branch` is the shipped ranker (config defaults: HiSAC long-term
# branch, S = 50 short-term branch and the match counts).
METHODS = {
    "hisac": ("model.compressor=hisac", "model.short_term_length=0",
              "model.count_slots=0"),
    "full": ("model.compressor=full", "model.short_term_length=0",
             "model.count_slots=0"),
    "recent": ("model.compressor=recent", "model.short_term_length=0",
               "model.count_slots=0"),
    "short_only": ("model.compressor=none", "model.short_term_length=50",
                   "model.count_slots=0"),
    "two_branch": ("model.compressor=hisac", "model.short_term_length=50",
                   "model.count_slots=256"),
    # The two branches without the match counts (what the counts cost).
    "two_branch_no_counts": ("model.compressor=hisac",
                             "model.short_term_length=50",
                             "model.count_slots=0"),
    # HiSAC with sparse routing (each agent reads its m = 32 nearest
    # items) and with the routing plan computed by the training input
    # pipeline (training only; serving computes it in the request).
    "hisac_sparse": ("model.compressor=hisac", "model.short_term_length=0",
                     "model.count_slots=0", "model.routing_top_m=32"),
    "hisac_pipeline": ("model.compressor=hisac",
                       "model.short_term_length=0", "model.count_slots=0",
                       "training.routing_in_input_pipeline=true"),
    "hisac_sparse_pipeline": ("model.compressor=hisac",
                              "model.short_term_length=0",
                              "model.count_slots=0",
                              "model.routing_top_m=32",
                              "training.routing_in_input_pipeline=true"),
    # The same with m = 8: A m = 1,600 routed items at most, so the
    # taped part stops growing from N ~ 1,600 (docs/performance.md).
    "hisac_sparse8_pipeline": ("model.compressor=hisac",
                               "model.short_term_length=0",
                               "model.count_slots=0",
                               "model.routing_top_m=8",
                               "training.routing_in_input_pipeline=true"),
}
PRESET = "taobao_mm"
NUM_ITEMS = 100_000


def device_name() -> str:
    """The accelerator the run used, or the CPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)}"
    return f"CPU: {platform.processor() or platform.machine()}"


def memory_device() -> str:
    """The device whose allocator `peak_bytes` reads: GPU:0 or CPU:0."""
    return "GPU:0" if tf.config.list_physical_devices("GPU") else "CPU:0"


def environment() -> dict:
    """What the figures depend on, recorded with them."""
    return {
        "device": device_name(),
        "cpu_count": os.cpu_count(),
        "tensorflow": tf.__version__,
        # Other work on the machine skews every figure; recorded here.
        "load_average_1m": os.getloadavg()[0],
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    """The checkout's commit (+ "-dirty" with local changes), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "-uno"],
                               cwd=ROOT, capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def method_config(method: str, n: int, c: int, preset: str = PRESET,
                  extra: Sequence[str] = ()):
    """The `Config` of one method at history N and C candidates."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (choose from "
                         f"{', '.join(METHODS)})")
    return config_lib.load_config(preset, [
        f"data.max_history={n}", f"data.max_candidates={c}",
        *METHODS[method], *extra,
    ])


# Share of ||z||^2 left to the quantisation residual, as with a trained
# tokenizer (benchmarks/layer_floor.py): each item's latent lies near the
# sum of its SID's codewords, so agents' prototypes lie near their items.
RESIDUAL = 0.07


def random_tables(cfg, seed: int = 0, num_items: int = NUM_ITEMS):
    """Random `SemanticTables` of `num_items` items for cfg's tokenizer:
    Zipf-distributed SIDs (a few popular codes per level), latents = the
    sum of the SID's codewords + a 7 % residual (unit mean square)."""
    rng = np.random.default_rng(seed)
    sizes = tuple(cfg.tokenizer.codebook_sizes)
    dim = cfg.tokenizer.latent_dim
    scale = ((1.0 - RESIDUAL) / len(sizes)) ** 0.5
    codebooks = tuple(rng.normal(scale=scale, size=(k, dim))
                      .astype(np.float32) for k in sizes)
    sids = []
    for k in sizes:
        zipf = np.arange(1, k + 1) ** -1.1
        sids.append(rng.choice(k, size=num_items, p=zipf / zipf.sum()))
    sids = np.stack(sids, 1).astype(np.int32)  # [items, L]
    latents = sum(cb[sids[:, i]] for i, cb in enumerate(codebooks))
    latents = latents + rng.normal(scale=RESIDUAL ** 0.5,
                                   size=latents.shape)  # [items, Ds]
    return SemanticTables(
        item_ids=np.arange(1, num_items + 1, dtype=np.int64),
        sids=sids,
        latents=latents.astype(np.float32),
        codebooks=codebooks,
    )


def build_ranker(cfg, tables, seed: int = 0):
    """(spec, model): the configured ranker, built on a small request."""


    spec = FeatureSpec.from_config(cfg.data)
    tf.keras.utils.set_random_seed(seed)
    model = build_model(cfg, spec, tables)
    batch = load_test.random_request(spec, 8, 4, 2, seed=seed)
    model({k: tf.constant(v) for k, v in batch.items()}, training=False)
    return spec, model


def _fetch(out):
    """Waits for every tensor of out (a call's result) to be computed."""
    for t in tf.nest.flatten(out):
        if hasattr(t, "numpy"):
            t.numpy()


def time_ms(fn: Callable, calls: int, warmup: int = 0) -> list:
    """Milliseconds of `calls` calls of fn (outputs fetched) after
    `warmup` untimed calls."""
    for _ in range(warmup):
        _fetch(fn())
    out = []
    for _ in range(calls):
        start = time.perf_counter()
        _fetch(fn())
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def stats(ms: Sequence[float]) -> dict:
    """p50 / p99 / mean / min of a list of milliseconds."""
    ms = np.asarray(ms, dtype=np.float64)
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()),
            "calls": int(ms.size)}


def interleaved_rounds(fns: dict, rounds: int, calls: int,
                       seed: int = 0) -> dict:
    """Times every fn in each round, in a new random order per round.

    Args:
      fns: name -> zero-argument callable (warmed up already).
      rounds, calls: rounds, and timed calls of each fn per round.
    Returns:
      name -> list (one per round) of lists of milliseconds.
    """
    if rounds < 1 or calls < 1:
        raise ValueError(f"rounds and calls must be >= 1, got {rounds}, "
                         f"{calls}")
    rng = np.random.default_rng(seed)
    names = list(fns)
    out = {name: [] for name in names}
    for _ in range(rounds):
        for i in rng.permutation(len(names)):
            out[names[i]].append(time_ms(fns[names[i]], calls))
    return out


def round_ratios(slow: list, fast: list) -> dict:
    """Per-round ratio of the round medians, slow / fast: the median over
    rounds and its spread (min, max)."""
    ratios = [float(np.median(s) / np.median(f))
              for s, f in zip(slow, fast)]
    return {"median": float(np.median(ratios)), "min": float(min(ratios)),
            "max": float(max(ratios)), "rounds": len(ratios)}


def peak_bytes(fn: Callable) -> int:
    """Peak allocator bytes of one call of fn above what was live before.

    Reads the TF allocator's statistics for the CPU (or first GPU):
    `reset_memory_stats`, then `get_memory_info(...)["peak"]` minus the
    bytes in use before the call (weights and inputs), i.e. the peak of
    the call's own intermediate tensors and outputs. Python objects and
    memory outside TensorFlow's allocator are not counted.
    """
    device = memory_device()
    _fetch(fn())  # traced and warm
    try:
        tf.config.experimental.reset_memory_stats(device)
    except ValueError as e:
        raise RuntimeError(
            f"no allocator statistics for {device}: set "
            "TF_CPU_ALLOCATOR_USE_BFC=true before TensorFlow loads (import "
            "benchmarks first, or export it)") from e
    before = tf.config.experimental.get_memory_info(device)["current"]
    _fetch(fn())
    peak = tf.config.experimental.get_memory_info(device)["peak"]
    return int(max(0, peak - before))


def write_json(path: str, result: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A markdown table; floats get 3 significant digits."""
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in rows]
    return "\n".join(lines)


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: "1000,10000" -> (1000, 10000), positive integers."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, got {text!r}")
    return values


def method_list(text: str) -> tuple[str, ...]:
    """argparse type: "hisac,full" -> names of `METHODS`."""
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in names if v not in METHODS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"unknown methods {unknown} in {text!r} (choose from "
            f"{', '.join(METHODS)})")
    return names
