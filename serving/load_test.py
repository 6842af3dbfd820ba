"""Load test: concurrent gRPC clients for a fixed time, QPS and latency.

Each of `concurrency` threads owns a `HisacClient` (its own channel, so
the threads do not share one HTTP/2 connection) and sends the same request
back to back. Each client's first call (connection set-up, the server's
first run of the signature) and the calls started during the warm-up are
not counted; calls started in the measured window are, and the window
(`elapsed_s`) lasts until the last of them has ended, so QPS = calls /
elapsed_s. The report
(a dict, also written as JSON) holds the completed calls, the errors by
status code, QPS, candidates scored per second and the p50/p95/p99 latency
in milliseconds.

Overload (`run_overload_test`): an open loop that starts calls at a fixed
rate whatever the server answers (each with a deadline), as callers of a
real service do; `capacity_qps` of a closed-loop run gives the rate of
1x. It reports goodput (calls answered OK within their deadline, per
second), the calls by status code, and the latency of one small call sent
right after the last deadline has passed (work the server still does for
callers that have gone delays it).

The command line is `pipelines/load_test.py` (hisac-loadtest); without a
request file its request is a random one of the given history length and
candidate count (`random_request`).
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np

from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.request_values import impression_examples
from serving import grpc_client

MODES = ("predict", "two_step", "examples")


def random_request(
    spec: FeatureSpec,
    history: int,
    candidates: int,
    requests: int = 1,
    seed: int = 0,
    num_items: int = 100_000,
    num_categories: int = 1_000,
) -> dict[str, np.ndarray]:
    """R random padded requests, each with `history` items (full) and
    `candidates` candidates; ids >= 1, timestamps sorted, before the
    request time."""
    rng = np.random.default_rng(seed)
    r, n, c = requests, history, candidates
    request_time = np.full([r], 1_700_000_000, np.int64)
    out = {
        "user_id": rng.integers(1, 1_000_000, r),
        "request_time": request_time,
    }
    for name in spec.user_features:
        out[name] = rng.integers(1, 10, r)
    out["hist_item_ids"] = rng.integers(1, num_items + 1, (r, n))
    out["hist_category_ids"] = rng.integers(1, num_categories + 1, (r, n))
    out["hist_behaviors"] = rng.integers(1, 5, (r, n))
    gaps = np.sort(rng.integers(1, 30 * 86_400, (r, n)), axis=1)[:, ::-1]
    out["hist_timestamps"] = request_time[:, None] - gaps  # Oldest first.
    out["hist_length"] = np.full([r], n, np.int32)
    out["cand_item_ids"] = rng.integers(1, num_items + 1, (r, c))
    out["cand_category_ids"] = rng.integers(1, num_categories + 1, (r, c))
    out["cand_count"] = np.full([r], c, np.int32)
    return {
        k: v.astype(np.int32 if k in ("hist_length", "cand_count")
                    else np.int64)
        for k, v in out.items()
    }


def _call_fn(client: grpc_client.HisacClient, features, mode: str,
             spec: FeatureSpec):
    if mode == "predict":
        return lambda: client.predict(features)
    if mode == "two_step":
        user, cands = grpc_client.split_request(features)
        return lambda: client.score_with_state(client.encode_user(user),
                                               cands)
    if mode == "examples":
        examples = sum(impression_examples(features, spec), [])
        return lambda: client.predict_examples(examples)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def run_load_test(
    target: str,
    features: Mapping[str, np.ndarray],
    *,
    spec: FeatureSpec | None = None,
    mode: str = "predict",
    concurrency: int = 8,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
    model_name: str = "hisac",
    version: int | None = None,
    version_label: str | None = None,
    timeout_s: float = 10.0,
    max_message_mb: int = 256,
    ready_timeout_s: float = 60.0,
    client_kwargs: Mapping | None = None,
) -> dict:
    """Runs the load test; returns the report (see the module docstring).

    Args:
      target: "host:port".
      features: one padded request batch (model inputs), sent by every
        call.
      spec: the FeatureSpec of the inputs (default data config's).
      mode: "predict" (serving_default), "two_step" (encode_user then
        score_with_state, two round trips a call) or "examples"
        (predict_examples, one example per candidate).
      concurrency: client threads.
      duration_s: measured seconds (after `warmup_s`).
      ready_timeout_s: how long to wait for the server to serve the model
        before the clients start.
      client_kwargs: more `HisacClient` arguments (TLS files).
    """
    extra = dict(client_kwargs or {})
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    spec = spec or grpc_client.default_spec()
    with grpc_client.HisacClient(
        target, model_name=model_name, version=version,
        version_label=version_label, spec=spec, **extra,
    ) as probe:
        probe.wait_until_ready(ready_timeout_s)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    ends = [0.0] * concurrency  # When each thread's last counted call ended.
    errors: list[dict] = [{} for _ in range(concurrency)]
    clock = {}

    def set_clock():  # Runs once, when every client is ready.
        clock["start"] = time.perf_counter() + warmup_s
        clock["stop"] = clock["start"] + duration_s

    barrier = threading.Barrier(concurrency, action=set_clock)

    failures: list[BaseException] = []

    def worker(i):
        client = grpc_client.HisacClient(
            target, model_name=model_name, version=version,
            version_label=version_label, timeout_s=timeout_s, retries=0,
            max_message_mb=max_message_mb, spec=spec, **extra,
        )
        try:
            with client:
                call = _call_fn(client, features, mode, spec)
                try:
                    call()  # Connects; the server's first call is slow.
                except grpc_client.ServingError:
                    pass  # Counted when it happens again in the window.
                barrier.wait()
                start, stop = clock["start"], clock["stop"]
                while True:
                    t0 = time.perf_counter()
                    if t0 >= stop:
                        break
                    try:
                        call()
                        code = None
                    except grpc_client.ServingError as e:
                        code = e.code.name
                    t1 = time.perf_counter()
                    if t0 < start:
                        continue  # Warm-up: not counted.
                    ends[i] = t1
                    if code is None:
                        latencies[i].append(t1 - t0)
                    else:
                        errors[i][code] = errors[i].get(code, 0) + 1
        except BaseException as e:  # Reported by the main thread.
            failures.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    real = [e for e in failures
            if not isinstance(e, threading.BrokenBarrierError)]
    if real or failures:
        raise (real or failures)[0]
    lat = np.asarray(sum(latencies, []), np.float64) * 1000.0
    # Calls started in the window count; the window lasts until the last
    # of them ended (slow calls would otherwise be dropped at the end).
    elapsed = max([clock["stop"]] + ends) - clock["start"]
    error_counts: dict[str, int] = {}
    for e in errors:
        for code, n in e.items():
            error_counts[code] = error_counts.get(code, 0) + n
    requests = int(features["user_id"].shape[0])
    candidates = int(np.sum(features["cand_count"]))
    report = {
        "target": target,
        "mode": mode,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "elapsed_s": elapsed,
        "requests_per_call": requests,
        "candidates_per_call": candidates,
        "history_length": int(features["hist_item_ids"].shape[1]),
        "calls": int(lat.size),
        "errors": error_counts,
        "qps": lat.size / elapsed,
        "candidates_per_s": lat.size * candidates / elapsed,
        "latency_ms": _percentiles(lat),
    }
    return report


def _percentiles(lat_ms: np.ndarray) -> dict:
    if lat_ms.size == 0:
        return {"p50": None, "p95": None, "p99": None, "mean": None,
                "max": None}
    p50, p95, p99 = np.percentile(lat_ms, [50, 95, 99])
    return {
        "p50": float(p50), "p95": float(p95), "p99": float(p99),
        "mean": float(lat_ms.mean()), "max": float(lat_ms.max()),
    }


def run_overload_test(
    target: str,
    features: Mapping[str, np.ndarray],
    rate_qps: float,
    *,
    spec: FeatureSpec | None = None,
    duration_s: float = 5.0,
    deadline_s: float = 1.0,
    channels: int = 4,
    probe_features: Mapping[str, np.ndarray] | None = None,
    model_name: str = "hisac",
    max_message_mb: int = 256,
    ready_timeout_s: float = 60.0,
    client_kwargs: Mapping | None = None,
) -> dict:
    """Open-loop overload: `rate_qps` calls a second for `duration_s`.

    Args:
      features: the (heavy) request every call sends (serving_default).
      rate_qps: calls started per second, whatever the answers.
      deadline_s: each call's deadline.
      channels: client channels the calls are spread over.
      probe_features: the small request sent once all deadlines have
        passed (default: the first request of `features`).
    Returns:
      {offered_qps, calls, ok, goodput_qps (OK calls per second of the
      window), codes (status name -> calls), ok_latency_ms, probe_ms}.
    """
    if rate_qps <= 0 or duration_s <= 0 or deadline_s <= 0:
        raise ValueError(
            f"rate_qps, duration_s and deadline_s must be > 0, got "
            f"{rate_qps}, {duration_s}, {deadline_s}")
    spec = spec or grpc_client.default_spec()
    extra = dict(client_kwargs or {})
    clients = [
        grpc_client.HisacClient(
            target, model_name=model_name, spec=spec, retries=0,
            timeout_s=deadline_s, max_message_mb=max_message_mb, **extra)
        for _ in range(max(1, channels))
    ]
    try:
        clients[0].wait_until_ready(ready_timeout_s)
        request = clients[0].predict_request(features)
        for c in clients:
            c.prediction.Predict(request, timeout=60.0)  # Connect, warm.
        lock = threading.Lock()
        codes: dict[str, int] = {}
        ok_latency: list[float] = []
        n = max(1, int(round(rate_qps * duration_s)))
        all_done = threading.Event()

        def record(started, future):
            code = future.code()
            with lock:
                codes[code.name] = codes.get(code.name, 0) + 1
                if code == grpc.StatusCode.OK:
                    ok_latency.append(time.perf_counter() - started)
                if sum(codes.values()) == n:
                    all_done.set()

        start = time.perf_counter()
        pending = []
        for i in range(n):
            wait = start + i / rate_qps - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            started = time.perf_counter()
            future = clients[i % len(clients)].prediction.Predict.future(
                request, timeout=deadline_s)
            future.add_done_callback(
                lambda f, t=started: record(t, f))
            pending.append(future)
        all_done.wait(timeout=deadline_s + 30.0)
        window = time.perf_counter() - start
        probe = clients[0].predict_request(
            probe_features if probe_features is not None
            else {k: v[:1] for k, v in features.items()})
        t0 = time.perf_counter()
        try:
            clients[0].prediction.Predict(probe, timeout=60.0)
            probe_code = "OK"
        except grpc.RpcError as e:
            probe_code = e.code().name
        probe_ms = 1000.0 * (time.perf_counter() - t0)
    finally:
        for c in clients:
            c.close()
    ok = codes.get("OK", 0)
    return {
        "target": target,
        "offered_qps": rate_qps,
        "duration_s": duration_s,
        "deadline_s": deadline_s,
        "window_s": window,
        "calls": n,
        "ok": ok,
        "goodput_qps": ok / duration_s,
        "codes": dict(sorted(codes.items())),
        "ok_latency_ms": _percentiles(
            np.asarray(ok_latency, np.float64) * 1000.0),
        "probe_ms": probe_ms,
        "probe_code": probe_code,
    }
