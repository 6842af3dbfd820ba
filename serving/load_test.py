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
candidate count (`random_request`), with valid values for every input of
the served model's signature (read from its metadata).
"""

from __future__ import annotations

import threading
import time
from typing import Mapping

import grpc

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np

from serving import grpc_client
from serving.request_loading import as_schema

MODES = ("predict", "two_step", "examples")
REQUEST_TIME = 1_700_000_000


def random_request(
    schema,
    history: int,
    candidates: int,
    requests: int = 1,
    seed: int = 0,
    num_items: int = 100_000,
    num_categories: int = 1_000,
    list_width: int = 3,
) -> dict[str, np.ndarray]:
    """R random padded requests with valid values for every input of the
    served model's `serving_default` signature.

    Args:
      schema: the served model's `ModelSchema` (`HisacClient.schema()`),
        or a `FeatureSpec` (offline).
      history: history length (full, hist_length = history).
      candidates: candidates per request (cand_count = candidates).
      list_width: the width of other list axes (multi-valued features).
    Returns:
      {input: array}: integer ids >= 1 (item ids up to `num_items`,
      category ids up to `num_categories`, behaviours 1..4, user_id up to
      10^6, other ints 1..9), request_time = 1.7e9, *timestamps sorted
      oldest first before it, floats in [0, 1), strings "s1".."s99";
      counts full.
    """
    schema = as_schema(schema)
    rng = np.random.default_rng(seed)
    specs = schema.request_inputs
    cands = set(schema.candidate_names)
    counts = {}
    for group in schema.groups:
        width = (candidates if set(group.members) <= cands
                 else history if group.keeps_newest else list_width)
        counts[group.count] = width
        for name in group.members:
            counts.setdefault(name, width)
    out = {}
    for name, spec in specs.items():
        if name in schema.count_names:
            out[name] = np.full([requests], counts[name], spec.numpy_dtype)
            continue
        rank = spec.rank or 1
        width = counts.get(
            name, candidates if name in cands else list_width)
        shape = [requests] + [width] * min(rank - 1, 1) \
            + [list_width] * max(rank - 2, 0)
        if spec.shape is not None:  # The signature's fixed widths.
            shape = [d if f is None else f
                     for d, f in zip(shape, (None,) + spec.shape[1:])]
        out[name] = _random_values(rng, spec, shape, num_items,
                                   num_categories)
    for name, spec in specs.items():  # Timestamps before request_time.
        if name.endswith("timestamps") and spec.rank == 2:
            now = out.get("request_time",
                          np.full([requests], REQUEST_TIME))
            gaps = np.sort(rng.integers(1, 30 * 86_400, out[name].shape),
                           axis=1)[:, ::-1]
            out[name] = (now[:, None] - gaps).astype(spec.numpy_dtype)
    return out


def _random_values(rng, spec, shape, num_items, num_categories):
    kind, name = spec.kind, spec.name
    if name == "request_time":
        return np.full(shape, REQUEST_TIME, spec.numpy_dtype)
    if kind == "float":
        return rng.random(shape).astype(spec.numpy_dtype)
    if kind == "bool":
        return rng.random(shape) < 0.5
    if kind == "string":
        words = [f"s{k}".encode() for k in range(1, 100)]
        return np.asarray(words, object)[rng.integers(0, 99, shape)]
    high = (num_items if "item" in name
            else num_categories if "categor" in name
            else 4 if "behavior" in name
            else 999_999 if name == "user_id" else 9)
    return rng.integers(1, high + 1, shape).astype(spec.numpy_dtype)


def _call_fn(client: grpc_client.HisacClient, features, mode: str):
    if mode == "predict":
        return lambda: client.predict(features)
    if mode == "two_step":
        user, cands = client.split_request(features)
        return lambda: client.score_with_state(client.encode_user(user),
                                               cands)
    if mode == "examples":
        examples = sum(client.impression_examples(features), [])
        return lambda: client.predict_examples(examples)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def run_load_test(
    target: str,
    features: Mapping[str, np.ndarray],
    *,
    spec=None,
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
      spec: unused (inputs follow the served model's metadata, read
        once and shared by the clients); kept for existing callers.
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
    with grpc_client.HisacClient(
        target, model_name=model_name, version=version,
        version_label=version_label, **extra,
    ) as probe:
        probe.wait_until_ready(ready_timeout_s)
        try:
            schema = probe.schema()
        except grpc_client.ServingError:
            schema = None  # Each client meets (and counts) the error.
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
            max_message_mb=max_message_mb, schema=schema, **extra,
        )
        try:
            with client:
                call = _call_fn(client, features, mode)
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
    requests = int(np.shape(next(iter(features.values())))[0])
    candidates = int(np.sum(features.get("cand_count", 0)))
    report = {
        "target": target,
        "mode": mode,
        "concurrency": concurrency,
        "duration_s": duration_s,
        "elapsed_s": elapsed,
        "requests_per_call": requests,
        "candidates_per_call": candidates,
        "history_length": (int(np.shape(features["hist_item_ids"])[1])
                           if "hist_item_ids" in features else None),
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
    spec=None,
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
      spec: unused (inputs follow the served model's metadata); kept for
        existing callers.
    Returns:
      {offered_qps, calls, ok, goodput_qps (OK calls per second of the
      window), codes (status name -> calls), ok_latency_ms, probe_ms}.
    """
    if rate_qps <= 0 or duration_s <= 0 or deadline_s <= 0:
        raise ValueError(
            f"rate_qps, duration_s and deadline_s must be > 0, got "
            f"{rate_qps}, {duration_s}, {deadline_s}")
    extra = dict(client_kwargs or {})
    clients = [
        grpc_client.HisacClient(
            target, model_name=model_name, retries=0,
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
