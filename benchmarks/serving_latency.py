"""Benchmark: request-level serving vs one example per candidate.

docs/design.md §6 exports `serving_default` (one request: the user's history is
compressed once, then C candidates are scored) and `predict_examples` (one
per-impression tf.Example per candidate: the history travels and is
compressed C times). This benchmark builds a HiSAC ranker with the
`taobao_mm` model settings (A = 200 agents, K = 200 x 200, D = 32;
random weights and random semantic tables over 100,000 items: latency does
not depend on training), exports it with `hisac_tf.export.signatures` as
`<tmp>/export/1`, and measures:

1. same process, the loaded SavedModel's signatures called directly, for
   C = 100 and 500 candidates at N = 1,000: p50/p99 latency of
   serving_default, of predict_examples with C examples, their ratio, and
   of score_with_state on a cached state (encode_user run once before);
2. through gRPC, the load test (`serving.load_test`) against the local
   server (`pipelines/serve.py`, started as a subprocess on a loopback
   port): QPS and p50/p95/p99 latency of `concurrency` clients for a fixed
   time, request-level and per-example, at C = 100, N = 1,000.

Writes `benchmarks/results/serving.json` and prints a table.

    python -m benchmarks.serving_latency [--quick] [--repeats=20]
        [--output=PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.bench_common import device_name  # noqa: E402
import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from hisac_tf import config as config_lib  # noqa: E402
from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402
from hisac_tf.data.request_values import impression_examples  # noqa: E402,E501
from hisac_tf.models.build import build_model  # noqa: E402
from hisac_tf.tokenizer.semantic_tables import SemanticTables  # noqa: E402
from serving import grpc_client, load_test  # noqa: E402
from hisac_tf.export import signatures as sig  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
PRESET = "taobao_mm"
HISTORY = 1000
CANDIDATES = (100, 500)
NUM_ITEMS = 100_000


def build_export(export_dir: str, seed: int) -> tuple[FeatureSpec, dict]:
    """Builds the ranker on random tables and exports it as version 1."""
    cfg = config_lib.load_config(PRESET, [
        f"data.max_history={HISTORY}",
        f"data.max_candidates={max(CANDIDATES)}",
    ])
    spec = FeatureSpec.from_config(cfg.data)
    rng = np.random.default_rng(seed)
    sizes = tuple(cfg.tokenizer.codebook_sizes)
    dim = cfg.tokenizer.latent_dim
    tables = SemanticTables(
        item_ids=np.arange(1, NUM_ITEMS + 1, dtype=np.int64),
        sids=np.stack([rng.integers(0, k, NUM_ITEMS) for k in sizes], 1)
        .astype(np.int32),
        latents=rng.normal(size=(NUM_ITEMS, dim)).astype(np.float32),
        codebooks=tuple(rng.normal(size=(k, dim)).astype(np.float32)
                        for k in sizes),
    )
    model = build_model(cfg, spec, tables)
    batch = load_test.random_request(spec, 8, 4, 2, seed=seed)
    model({k: tf.constant(v) for k, v in batch.items()}, training=False)
    module = sig.ServingModule(model, spec, version=1)
    path = os.path.join(export_dir, "1")
    start = time.perf_counter()
    tf.saved_model.save(module, path, signatures=module.signatures())
    info = {
        "preset": PRESET,
        "num_agents": cfg.model.num_agents,
        "codebook_sizes": list(sizes),
        "embedding_dim": cfg.model.embedding_dim,
        "num_heads": cfg.model.num_heads,
        "mlp_dims": list(cfg.model.mlp_dims),
        "export_seconds": time.perf_counter() - start,
    }
    return spec, info


def _times(fn, repeats: int, warmup: int) -> np.ndarray:
    """Milliseconds of `repeats` calls of fn (outputs fetched) after
    `warmup` calls."""
    for _ in range(warmup):
        tf.nest.map_structure(lambda t: t.numpy(), fn())
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        out.append(time.perf_counter() - start)
    return np.asarray(out) * 1000.0


def _stats(ms: np.ndarray) -> dict:
    p50, p99 = np.percentile(ms, [50, 99])
    return {"p50_ms": float(p50), "p99_ms": float(p99),
            "mean_ms": float(ms.mean()), "calls": int(ms.size)}


def measure_in_process(path: str, spec: FeatureSpec, candidates: int,
                       repeats: int, example_repeats: int, warmup: int,
                       seed: int) -> dict:
    """Signatures of the loaded SavedModel on one request of C candidates."""
    loaded = tf.saved_model.load(path)
    fns = loaded.signatures
    request = load_test.random_request(spec, HISTORY, candidates, 1,
                                       seed=seed)
    inputs = {k: tf.constant(v) for k, v in request.items()}
    examples = tf.constant(
        np.asarray(impression_examples(request, spec)[0],
                   dtype=object))
    user, cands = grpc_client.split_request(inputs)
    state = fns[sig.ENCODE_USER](**user)
    state_inputs = {**state, **cands}

    request_ms = _times(lambda: fns[sig.SERVING_DEFAULT](**inputs),
                        repeats, warmup)
    examples_ms = _times(
        lambda: fns[sig.PREDICT_EXAMPLES](examples=examples),
        example_repeats, min(warmup, 1))
    cached_ms = _times(lambda: fns[sig.SCORE_WITH_STATE](**state_inputs),
                       repeats, warmup)
    # Same scores either way (a benchmark of wrong answers is no use).
    ctr = fns[sig.SERVING_DEFAULT](**inputs)[sig.CTR].numpy()[0]
    per_example = fns[sig.PREDICT_EXAMPLES](examples=examples)[
        sig.CTR].numpy()
    cached = fns[sig.SCORE_WITH_STATE](**state_inputs)[sig.CTR].numpy()[0]
    diff = max(float(np.max(np.abs(ctr - per_example))),
               float(np.max(np.abs(ctr - cached))))
    row = {
        "history": HISTORY,
        "candidates": candidates,
        "serving_default": _stats(request_ms),
        "predict_examples": _stats(examples_ms),
        "score_with_state_cached": _stats(cached_ms),
        "max_abs_score_diff": diff,
    }
    row["examples_over_request_p50"] = (
        row["predict_examples"]["p50_ms"] / row["serving_default"]["p50_ms"])
    row["examples_over_request_p99"] = (
        row["predict_examples"]["p99_ms"] / row["serving_default"]["p99_ms"])
    return row


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_grpc(export_dir: str, spec: FeatureSpec, candidates: int,
                 concurrency: int, duration_s: float, seed: int) -> list:
    """Load tests against a local server subprocess."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.serve",
         f"--server_export_dir={export_dir}", f"--server_port={port}",
         "--server_host=127.0.0.1", "--server_poll_s=0",
         f"--server_max_workers={max(4, concurrency)}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    target = f"localhost:{port}"
    try:
        with grpc_client.HisacClient(target, spec=spec) as client:
            client.wait_until_ready(timeout_s=300)
        request = load_test.random_request(spec, HISTORY, candidates, 1,
                                           seed=seed)
        rows = []
        for mode in ("predict", "two_step", "examples"):
            rows.append(load_test.run_load_test(
                target, request, spec=spec, mode=mode,
                concurrency=concurrency, duration_s=duration_s,
                warmup_s=min(2.0, duration_s / 2), timeout_s=120))
        return rows
    finally:
        server.terminate()
        server.wait(60)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true",
                        help="few repeats and a 3 s load test (smoke test)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed serving_default calls per C")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--duration_s", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output",
                        default=os.path.join(RESULTS, "serving.json"))
    args = parser.parse_args(argv)
    if args.quick:
        repeats, duration = args.repeats or 5, args.duration_s or 3.0
    else:
        repeats, duration = args.repeats or 30, args.duration_s or 10.0
    example_repeats = max(2, repeats // 3)
    if repeats < 1 or args.warmup < 0 or duration <= 0:
        parser.error("--repeats >= 1, --warmup >= 0, --duration_s > 0")

    with tempfile.TemporaryDirectory(prefix="hisac-serving-bench-") as tmp:
        export_dir = os.path.join(tmp, "export")
        spec, model_info = build_export(export_dir, args.seed)
        path = os.path.join(export_dir, "1")
        rows = [
            measure_in_process(path, spec, c, repeats, example_repeats,
                               args.warmup, args.seed)
            for c in CANDIDATES
        ]
        load = measure_grpc(export_dir, spec, CANDIDATES[0],
                            args.concurrency, duration, args.seed)
    result = {
        "benchmark": "serving",
        "quick": args.quick,
        "device": device_name(),
        "cpu_count": os.cpu_count(),
        # Other work on the machine skews every figure; recorded here.
        "load_average_1m_at_end": os.getloadavg()[0],
        "tensorflow": tf.__version__,
        "model": model_info,
        "history": HISTORY,
        "repeats": repeats,
        "example_repeats": example_repeats,
        "warmup": args.warmup,
        "in_process": rows,
        "grpc_load_test": load,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    print(f"device: {result['device']} ({result['cpu_count']} cores)  "
          f"tensorflow {tf.__version__}  N = {HISTORY}")
    print(f"{'in process':<26}{'C':>5}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'x request':>11}")
    for r in rows:
        base = r["serving_default"]["p50_ms"]
        for name in ("serving_default", "predict_examples",
                     "score_with_state_cached"):
            s = r[name]
            print(f"{name:<26}{r['candidates']:>5}{s['p50_ms']:>10.1f}"
                  f"{s['p99_ms']:>10.1f}{s['p50_ms'] / base:>11.2f}")
    print(f"{'gRPC load test':<26}{'C':>5}{'QPS':>10}{'cand/s':>10}"
          f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in load:
        lat = r["latency_ms"]
        fmt = (lambda v: f"{v:>9.1f}") if lat["p50"] is not None else (
            lambda v: f"{'-':>9}")
        print(f"{r['mode'] + ' x' + str(r['concurrency']):<26}"
              f"{r['candidates_per_call']:>5}{r['qps']:>10.1f}"
              f"{r['candidates_per_s']:>10.0f}{fmt(lat['p50'])}"
              f"{fmt(lat['p95'])}{fmt(lat['p99'])}"
              f"{sum(r['errors'].values()):>8}")
    print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main()
