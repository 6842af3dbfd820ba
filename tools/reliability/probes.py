"""Reliability probes: every bad input and fault tried, and what happened.

Re-runnable, bounded in time (a few minutes on 2 CPU cores), loopback
only. In a temporary directory it builds the `tiny` model and, as a
hostile or careless user would:

  faults    kill -9 during training (then train again: resumes), kill -9
            during export (then export again: the stale temporary
            directory is removed), two exports into one directory at once,
            a version copied in non-atomically (variables/ after
            saved_model.pb), a hot version swap under load;
  grpc      malformed, amplified and oversized requests, unknown names,
            non-finite state, undecodable examples: each call's status
            code and message, and that the server still answers;
  memory    the server's RSS growth for a 746-byte request declaring four
            [1, 20,000,000] int64 histories;
  overload  open-loop load at 2x and 4x the measured capacity with a 1 s
            deadline: goodput, codes, the latency of a small call once
            the overload has passed (`serving.load_test`);
  inputs    the rows of `tools/reliability/inputs.py`
            (`run_input_probes()`: importer, evaluation, config).
  round2    issue 22, serving: a cold-start user (empty history) on every
            signature; the server's RSS growth and seconds for the
            `predict_examples` amplifications (examples [1024] filled by
            one 1 MB string; 128 examples, one with a 100,000-item
            history) and the work request (R = 1024, C = 1024), each on a
            fresh server; absurd state (3e38 keys, count_lengths = -5);
            a second server on the same port, a missing export dir, port
            99999, a version dir `0004`, a models.config naming a missing
            version, a TLS certificate that is not PEM.

The server is `pipelines/serve.py` run as a subprocess from
`--server_root` (default this checkout; another checkout, e.g. the
commit before the hardening, gives the "before" figures). Writes
`benchmarks/results/reliability.json` and `docs/reliability.md` (with
`--before=<json of an earlier run>`, the memory and overload figures of
both).

    python -m tools.reliability.probes [--sections=faults,grpc,memory,
        overload,inputs,round2] [--server_root=PATH] [--export_dir=PATH]
        [--before=PATH] [--output=PATH] [--doc=PATH] [--quick]
        [--from_json=PATH]  (only rewrites the doc)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))  # the checkout (tools/reliability/..)

import hisac_tf  # noqa: E402,F401  (Keras 2: before TensorFlow)

# isort: split
import grpc  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.framework import tensor_pb2  # noqa: E402
from tensorflow_serving.apis import predict_pb2  # noqa: E402

from hisac_tf import config as config_lib  # noqa: E402
from hisac_tf.data import synthetic  # noqa: E402
from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402
from hisac_tf.data.request_values import impression_examples  # noqa: E402
from hisac_tf.export import exporter  # noqa: E402
from hisac_tf.testing.declared_tensor import declared  # noqa: E402
from pipelines import tokenize_items  # noqa: E402
from serving import grpc_client, load_test  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results", "reliability.json")
DOC = os.path.join(ROOT, "docs", "reliability.md")
SECTIONS = ("faults", "grpc", "memory", "overload", "inputs", "round2")
PY = sys.executable
OK = "OK"
HISTORY = ("hist_item_ids", "hist_category_ids", "hist_behaviors",
           "hist_timestamps")


# ----------------------------------------------------------------- helpers
def row(area: str, what: str, observed: str, ok: bool) -> dict:
    """One table row: the input or fault, what happened, as it should."""
    return {"area": area, "input": what, "observed": observed,
            "ok": bool(ok)}


def overrides(work: str) -> list[str]:
    return [
        f"data.data_dir={work}/data",
        f"tokenizer.output_dir={work}/tokenizer",
        "tokenizer.epochs=5",
        f"training.model_dir={work}/model",
        "training.train_steps=30",
        "training.checkpoint_every=5",
        "training.log_every=5",
        "training.mode=train",
        f"export.export_dir={work}/export",
    ]


def job(name: str, work: str, extra=(), cwd: str = ROOT):
    """A `python -m pipelines.<name>` subprocess over the work dir."""
    args = [PY, "-m", f"pipelines.{name}", "--config=tiny"]
    args += [f"--set={o}" for o in overrides(work)] + list(extra)
    env = dict(os.environ, PYTHONPATH=cwd, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout_s: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def finish(proc, timeout_s: float = 600) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=timeout_s)
    return proc.returncode, out or ""


def last_line(text: str, width: int = 160) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip()]
    return (lines[-1] if lines else "")[:width]


def kill9(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, amount, _ = line.split()
                values[key[:-1]] = int(amount) / 1024.0
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ faults
def build_model(work: str, rows: list) -> config_lib.Config:
    """Data, tokenizer, training (killed once, then resumed)."""
    cfg = config_lib.load_config("tiny", overrides(work))
    synthetic.generate(cfg, progress=False)
    tokenize_items.main(cfg, progress=False)
    ckpts = os.path.join(cfg.training.model_dir, "checkpoints")
    proc = job("train", work)
    first = wait_for(lambda: tf.train.latest_checkpoint(ckpts) is not None,
                     300, 0.1)
    before = tf.train.latest_checkpoint(ckpts)
    kill9(proc)
    code, out = finish(job("train", work))
    with open(os.path.join(cfg.training.model_dir,
                           "train_results.json")) as f:
        result = json.load(f)["train"]
    rows.append(row(
        "faults", "kill -9 during training, after its first checkpoint; "
        "then train again",
        f"killed with {os.path.basename(before or 'no checkpoint')} "
        f"written; rerun exit {code}, resumed at step "
        f"{result['resumed_at']}, finished at step {result['step']}",
        first and code == 0 and result["resumed_at"] > 0
        and result["step"] == cfg.training.train_steps))
    return cfg


def export_faults(cfg: config_lib.Config, work: str, rows: list) -> None:
    export_dir = cfg.export.export_dir
    os.makedirs(export_dir, exist_ok=True)

    def temp_dirs():
        return sorted(n for n in os.listdir(export_dir)
                      if n.startswith(exporter.TMP_PREFIX))

    proc = job("export", work)
    started = wait_for(lambda: any(
        os.path.exists(os.path.join(export_dir, n, "model"))
        or os.path.exists(os.path.join(export_dir, n, "saved_model.pb"))
        for n in temp_dirs()), 300, 0.05)
    kill9(proc)
    left = temp_dirs()
    code, out = finish(job("export", work))
    rows.append(row(
        "faults", "kill -9 during export (SavedModel half written); then "
        "export again",
        f"killed: versions {exporter.existing_versions(export_dir)}, left "
        f"{left}; next export exit {code}, versions "
        f"{exporter.existing_versions(export_dir)}, temporary dirs "
        f"{temp_dirs()}",
        started and code == 0 and left and not temp_dirs()
        and exporter.existing_versions(export_dir) == [1]))
    procs = [job("export", work) for _ in range(2)]
    results = [finish(p) for p in procs]
    served = config_versions(export_dir)
    rows.append(row(
        "faults", "two exports into one directory at once",
        f"exit codes {[c for c, _ in results]}, versions "
        f"{exporter.existing_versions(export_dir)}, temporary dirs "
        f"{temp_dirs()}; models.config serves {served}",
        all(c == 0 for c, _ in results)
        and exporter.existing_versions(export_dir) == [1, 2, 3]
        and not temp_dirs() and served == {"versions": [2, 3],
                                           "stable": 2, "canary": 3}))
    explicit = [job("export", work, ["--set=export.version=9"])
                for _ in range(2)]
    results = [finish(p) for p in explicit]
    codes = sorted(c for c, _ in results)
    loser = [out for c, out in results if c != 0]
    rows.append(row(
        "faults", "two exports asking for the same version 9 at once",
        f"exit codes {codes}; the other: "
        f"{last_line(loser[0]) if loser else 'none failed'}",
        codes[0] == 0 and codes[1] != 0
        and "version 9" in (loser[0] if loser else "")))


def config_versions(export_dir: str) -> dict:
    """The served versions and labels of the export's models.config."""
    from hisac_tf.export import tf_serving_config

    try:
        config = tf_serving_config.read(
            os.path.join(export_dir, tf_serving_config.MODELS_CONFIG))
    except Exception as e:  # Reported in the row.
        return {"error": str(e)[:80]}
    (entry,) = config.model_config_list.config
    return {"versions": list(entry.model_version_policy.specific.versions),
            **dict(entry.version_labels)}


# ------------------------------------------------------------------ server
class Server:
    """`pipelines/serve.py` of `root` as a subprocess on a loopback port."""

    def __init__(self, root: str, work: str, export_dir: str,
                 extra=()):
        self.port = free_port()
        self.proc = job("serve", work, [
            f"--server_export_dir={export_dir}",
            f"--server_port={self.port}", "--server_host=127.0.0.1",
            "--server_poll_s=0.5", *extra], cwd=root)
        self.target = f"127.0.0.1:{self.port}"
        self.output: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.output.append(line)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill9(self.proc)


def call(client, request, timeout_s: float = 30.0) -> tuple[str, str]:
    """(status name, message) of one Predict."""
    try:
        client.prediction.Predict(request, timeout=timeout_s)
        return OK, ""
    except grpc.RpcError as e:
        return e.code().name, (e.details() or "")


def predict_request(signature: str, inputs: dict, name: str = "hisac",
                    version: int | None = None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    for key, value in inputs.items():
        request.inputs[key].CopyFrom(
            value if isinstance(value, tensor_pb2.TensorProto)
            else tf.make_tensor_proto(np.asarray(value)))
    return request


def grpc_probes(server: Server, spec: FeatureSpec, rows: list) -> None:
    """Bad requests; each row: status, message, the server still up."""
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=30)
    good = load_test.random_request(spec, spec.max_history, 4, 2, seed=1)
    user = {k: v for k, v in good.items() if not k.startswith("cand_")}
    cands = {k: good[k] for k in ("cand_item_ids", "cand_category_ids",
                                  "cand_count")}
    state = client.encode_user(user)
    n = spec.max_history

    def edit(**changes):
        return predict_request("serving_default", {**good, **changes})

    def state_with(name, value):
        bad = {k: v.copy() for k, v in state.items()}
        bad[name].reshape(-1)[0] = value
        return predict_request("score_with_state", {**bad, **cands})

    examples = sum(impression_examples(good, spec), [])
    probes = [
        ("float ids (wrong dtype)", edit(
            hist_item_ids=good["hist_item_ids"].astype(np.float32)),
         "INVALID_ARGUMENT"),
        ("hist_item_ids of rank 1", edit(
            hist_item_ids=good["hist_item_ids"][:, 0]), "INVALID_ARGUMENT"),
        ("hist_length past the history width", edit(
            hist_length=np.full([2], n + 1, np.int32)), "INVALID_ARGUMENT"),
        ("item id 0 within hist_length", edit(
            hist_item_ids=np.where(np.arange(n)[None] == 0, 0,
                                   good["hist_item_ids"])),
         "INVALID_ARGUMENT"),
        ("cand_count 0", edit(cand_count=np.zeros([2], np.int32)),
         "INVALID_ARGUMENT"),
        ("timestamps after request_time", edit(
            hist_timestamps=good["hist_timestamps"] + 10**9),
         "INVALID_ARGUMENT"),
        ("unknown signature", predict_request("nope", good), "NOT_FOUND"),
        ("unknown model name", predict_request(
            "serving_default", good, name="other"), "NOT_FOUND"),
        ("unknown version 99", predict_request(
            "serving_default", good, version=99), "NOT_FOUND"),
        ("missing input cand_count", predict_request(
            "serving_default", {k: v for k, v in good.items()
                                if k != "cand_count"}), "INVALID_ARGUMENT"),
        ("hist_* declare [1, 20000000], one value each (a request of a "
         "few hundred bytes)",
         edit(**{k: declared([1, 20_000_000]) for k in HISTORY},
              **{k: v[:1] for k, v in good.items() if k not in HISTORY}),
         "INVALID_ARGUMENT"),
        ("cand_* declare [2, 100000] (C past max_candidates)",
         edit(cand_item_ids=declared([2, 100_000]),
              cand_category_ids=declared([2, 100_000])),
         "INVALID_ARGUMENT"),
        ("user_id declares [50000000] (R past max_requests)",
         edit(user_id=declared([50_000_000])), "INVALID_ARGUMENT"),
        ("state keys declare [1, 64, 1024, 1024] float (256 MiB)",
         predict_request("score_with_state", {
             **state, **{k: v[:1] for k, v in cands.items()},
             **{k: v[:1] for k, v in state.items() if k != "keys"},
             "keys": declared([1, 64, 1024, 1024], tf.float32, 0.5)}),
         ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")),
        ("message of 300 MiB (past the gRPC limit)", None,
         "RESOURCE_EXHAUSTED"),
        ("model_fingerprint of another model", state_with(
            "model_fingerprint", 12345), "INVALID_ARGUMENT"),
        ("predict_examples: bytes 0xff x 100", predict_request(
            "predict_examples", {"examples": np.array(
                [examples[0], b"\xff" * 100], object)}),
         "INVALID_ARGUMENT"),
        ("predict_examples: empty string", predict_request(
            "predict_examples", {"examples": np.array([b""], object)}),
         "INVALID_ARGUMENT"),
    ]
    for name in ("keys", "values", "bias", "user_embedding"):
        for value in (np.nan, np.inf):
            if name in state:
                probes.append((f"score_with_state: {name} holds {value}",
                               state_with(name, value), "INVALID_ARGUMENT"))
    big_client = grpc_client.HisacClient(
        server.target, spec=spec, retries=0, timeout_s=60,
        max_message_mb=512)
    for what, request, want in probes:
        sender = client
        if request is None:  # The oversize message: built lazily.
            big = {**good, "hist_item_ids": np.ones(
                [1, 40_000_000], np.int64)}
            request = predict_request("serving_default", big)
            sender = big_client
        code, message = call(sender, request)
        request = None
        alive = call(client, predict_request("serving_default", good))[0]
        rows.append(row(
            "grpc", what, f"{code}: {message[:220]}"
            + ("" if alive == OK else f"; then a good call: {alive}"),
            code in ((want,) if isinstance(want, str) else want)
            and alive == OK))
    client.close()
    big_client.close()


def memory_probe(server: Server, spec: FeatureSpec) -> dict:
    """RSS of the server before/after the 746-byte amplified request."""
    good = load_test.random_request(spec, spec.max_history, 4, 1, seed=2)
    request = predict_request("serving_default", {
        **good, **{k: declared([1, 20_000_000]) for k in HISTORY}})
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=120)
    call(client, predict_request("serving_default", good))
    rss0, hwm0 = rss_mb(server.proc.pid)
    t0 = time.perf_counter()
    code, message = call(client, request, timeout_s=120)
    seconds = time.perf_counter() - t0
    time.sleep(0.5)
    rss1, hwm1 = rss_mb(server.proc.pid)
    client.close()
    return {
        "request_bytes": request.ByteSize(),
        "declared_history": [1, 20_000_000],
        "code": code, "message": message[:300], "seconds": seconds,
        "rss_before_mb": rss0, "rss_after_mb": rss1,
        "peak_before_mb": hwm0, "peak_after_mb": hwm1,
        "peak_growth_mb": hwm1 - hwm0, "rss_growth_mb": rss1 - rss0,
    }


def overload(server: Server, spec: FeatureSpec, quick: bool) -> dict:
    """Capacity (closed loop), then 2x and 4x of it open-loop."""
    heavy = load_test.random_request(spec, spec.max_history, 6, 512,
                                     seed=3)
    duration = 3.0 if quick else 6.0
    base = load_test.run_load_test(
        server.target, heavy, spec=spec, concurrency=8,
        duration_s=duration, warmup_s=1.0, timeout_s=30.0)
    out = {"request": "R = 512 requests, N' = N, C = 6 (serving_default)",
           "capacity_qps": base["qps"], "capacity_latency_ms":
           base["latency_ms"], "deadline_s": 1.0}
    for multiple in (2, 4):
        out[f"{multiple}x"] = load_test.run_overload_test(
            server.target, heavy, multiple * base["qps"], spec=spec,
            duration_s=duration, deadline_s=1.0,
            probe_features={k: v[:1] for k, v in heavy.items()})
    return out


def version_faults(server: Server, spec: FeatureSpec, export_dir: str,
                   rows: list) -> None:
    """A version copied non-atomically; a hot swap under load."""
    config = os.path.join(export_dir, "models.config")
    if os.path.exists(config):  # The export's pins specific versions.
        os.remove(config)
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=30)
    newest = exporter.existing_versions(export_dir)[-1]
    source = os.path.join(export_dir, str(newest))
    slow = os.path.join(export_dir, str(newest + 1))
    os.makedirs(slow)
    shutil.copy(os.path.join(source, "saved_model.pb"), slow)
    time.sleep(2.0)  # Several polls see it incomplete.
    for name in ("variables", "assets", "assets.extra"):
        if os.path.exists(os.path.join(source, name)):
            shutil.copytree(os.path.join(source, name),
                            os.path.join(slow, name))

    def status_of(version):
        for s in client.status():
            if s["version"] == version:
                return s["state"]
        return None

    loaded = wait_for(lambda: status_of(newest + 1) == "AVAILABLE", 60, 0.2)
    rows.append(row(
        "faults", "version copied in non-atomically: saved_model.pb, "
        "variables/ 2 s later (models.config removed: latest 2 versions)",
        f"state {status_of(newest + 1)} after the copy completed",
        loaded))
    good = load_test.random_request(spec, spec.max_history, 6, 8, seed=4)
    report = {}

    def load():
        report.update(load_test.run_load_test(
            server.target, good, spec=spec, concurrency=6, duration_s=6.0,
            warmup_s=0.5, timeout_s=30.0))

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(2.0)
    swap = newest + 2
    tmp = os.path.join(export_dir, f".copy-{swap}")
    shutil.copytree(source, tmp)
    os.rename(tmp, os.path.join(export_dir, str(swap)))
    thread.join()
    swapped = wait_for(lambda: status_of(swap) == "AVAILABLE", 30, 0.2)
    rows.append(row(
        "faults", "hot swap to a new version under 6 clients",
        f"{report.get('calls')} calls, errors {report.get('errors')}, "
        f"version {swap} {'AVAILABLE' if swapped else 'not loaded'}",
        swapped and not report.get("errors")))
    client.close()


# ------------------------------------------------------------------ round2
def response_of(client, request, timeout_s: float = 300.0):
    """(status name, message, outputs as numpy or None) of one Predict."""
    try:
        out = client.prediction.Predict(request, timeout=timeout_s)
    except grpc.RpcError as e:
        return e.code().name, (e.details() or ""), None
    return OK, "", {k: tf.make_ndarray(v) for k, v in out.outputs.items()}


def cold_start_rows(server: Server, spec: FeatureSpec, rows: list) -> None:
    """An empty history (width 0) on every signature: finite scores."""
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=60)
    cold = load_test.random_request(spec, spec.max_history, 4, 2, seed=5)
    for name in HISTORY:
        cold[name] = cold[name][:, :0]  # [R, 0]
    cold["hist_length"] = np.zeros([2], np.int32)
    user = {k: v for k, v in cold.items() if not k.startswith("cand_")}
    cands = {k: v for k, v in cold.items() if k.startswith("cand_")}
    code, message, out = response_of(
        client, predict_request("serving_default", cold))
    results = [("serving_default", code, message, out)]
    code, message, state = response_of(
        client, predict_request("encode_user", user))
    if state is not None:
        code, message, out = response_of(client, predict_request(
            "score_with_state", {**state, **cands}))
    results.append(("encode_user + score_with_state", code, message,
                    out if state is not None else None))
    examples = sum(impression_examples(cold, spec), [])
    code, message, out = response_of(client, predict_request(
        "predict_examples", {"examples": np.array(examples, object)}))
    results.append(("predict_examples (every history empty)", code,
                    message, out))
    for what, code, message, out in results:
        ctr = None if out is None else out.get("ctr")
        finite = ctr is not None and bool(np.isfinite(ctr).all())
        rows.append(row(
            "round2", f"cold-start user (history width 0): {what}",
            f"{code}" + (f", ctr {np.round(ctr.ravel()[:3], 4).tolist()}"
                         if finite else f": {message[:200]}"),
            code == OK and finite))
    client.close()


def state_rows(server: Server, spec: FeatureSpec, rows: list) -> None:
    """Finite but absurd states: 3e38 keys, count_lengths = -5."""
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=60)
    good = load_test.random_request(spec, spec.max_history, 4, 2, seed=6)
    user = {k: v for k, v in good.items() if not k.startswith("cand_")}
    cands = {k: v for k, v in good.items() if k.startswith("cand_")}
    state = client.encode_user(user)
    for name, value in (("keys", 3e38), ("values", -3e38),
                        ("count_lengths", -5.0)):
        if name not in state:
            continue
        bad = {k: v.copy() for k, v in state.items()}
        bad[name].reshape(-1)[0] = value
        code, message = call(client, predict_request(
            "score_with_state", {**bad, **cands}))
        rows.append(row(
            "round2", f"score_with_state: {name}[0] = {value:g} (finite)",
            f"{code}: {message[:200]}",
            code == "INVALID_ARGUMENT" and name in message))
    client.close()


def amplified_requests(spec: FeatureSpec) -> dict:
    """The issue's small requests that asked for much memory or work."""
    big = tf.train.Example()
    good = load_test.random_request(spec, spec.max_history, 1, 1, seed=7)
    small = sum(impression_examples(good, spec), [])[0]
    big.ParseFromString(small)
    big.features.feature["padding"].bytes_list.value.append(
        b"x" * (1 << 20))  # Unparsed by the signature: 1 MB of payload.
    one_mb = tensor_pb2.TensorProto(dtype=tf.string.as_datatype_enum)
    one_mb.tensor_shape.dim.add(size=1024)
    one_mb.string_val.append(big.SerializeToString())
    wide = load_test.random_request(spec, 100_000, 1, 1, seed=8)
    wide["hist_length"][:] = 100_000
    wide_example = sum(impression_examples(wide, spec), [])[0]
    examples = np.array([small] * 127 + [wide_example], object)
    r, c, n = 1024, 1024, spec.max_history
    work = {k: declared([r]) for k in (
        "user_id", "gender", "age_bucket")}
    work["request_time"] = declared([r], tf.int64, 10)
    work.update({k: declared([r, n]) for k in HISTORY})
    work["hist_length"] = declared([r], tf.int32, n)
    work.update({k: declared([r, c]) for k in (
        "cand_item_ids", "cand_category_ids")})
    work["cand_count"] = declared([r], tf.int32, c)
    return {
        "examples_1mb_x1024": (
            "predict_examples: examples [1024] filled by one 1 MB string",
            predict_request("predict_examples", {"examples": one_mb})),
        "examples_wide_history": (
            "predict_examples: 128 examples, one with a 100,000-item "
            "history", predict_request("predict_examples",
                                       {"examples": examples})),
        "work_r1024_c1024": (
            "serving_default: R = 1024, C = 1024, N' = N (declared shapes)",
            predict_request("serving_default", work)),
    }


def measured(server: Server, spec: FeatureSpec, request) -> dict:
    """Status, seconds and the server's RSS growth for one request."""
    client = grpc_client.HisacClient(server.target, spec=spec, retries=0,
                                     timeout_s=300)
    good = load_test.random_request(spec, spec.max_history, 4, 1, seed=2)
    call(client, predict_request("serving_default", good))
    rss0, hwm0 = rss_mb(server.proc.pid)
    t0 = time.perf_counter()
    code, message = call(client, request, timeout_s=300)
    seconds = time.perf_counter() - t0
    time.sleep(0.5)
    rss1, hwm1 = rss_mb(server.proc.pid)
    client.close()
    return {"request_bytes": request.ByteSize(), "code": code,
            "message": message[:300], "seconds": seconds,
            "rss_growth_mb": rss1 - rss0, "peak_growth_mb": hwm1 - hwm0}


def exits(work: str, root: str, extra: list, wait_s: float = 400.0):
    """(exit code, or None once it says it is serving, output) of a
    hisac-serve run; stopped once serving (or after wait_s: None)."""
    proc = job("serve", work, extra, cwd=root)
    lines: list[str] = []
    serving = threading.Event()

    def drain():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving "):
                serving.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    deadline = time.monotonic() + wait_s
    while (proc.poll() is None and not serving.is_set()
           and time.monotonic() < deadline):
        time.sleep(0.2)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            kill9(proc)
        reader.join(5)
        return None, "".join(lines)
    reader.join(5)
    return proc.returncode, "".join(lines)


def ops_rows(root: str, work: str, export_dir: str, spec: FeatureSpec,
             rows: list) -> None:
    """Startup and operations: port in use, missing export dir, port
    99999, a `0004` version dir, models.config naming a missing version,
    a TLS certificate that is not PEM."""
    export = os.path.join(work, "round2_export")
    shutil.copytree(export_dir, export)
    config = os.path.join(export, "models.config")
    if os.path.exists(config):
        os.remove(config)
    server = Server(root, work, export)
    try:
        client = grpc_client.HisacClient(server.target, spec=spec,
                                         retries=0, timeout_s=60)
        client.wait_until_ready(300)
        code, out = exits(work, root, [
            f"--server_export_dir={export}",
            f"--server_port={server.port}"])
        rows.append(row(
            "round2", "a second hisac-serve on the port of a running one",
            f"started serving: {last_line(out)}" if code is None
            else f"exit {code}: {last_line(out)}", code not in (None, 0)))
        newest = exporter.existing_versions(export)[-1]
        shutil.copytree(os.path.join(export, str(newest)),
                        os.path.join(export, "0004"))
        time.sleep(2.0)
        states = {s["version"]: s["state"] for s in client.status()}
        rows.append(row(
            "round2", "a version directory named 0004",
            f"versions seen {states}", 4 not in states))
        shutil.rmtree(os.path.join(export, "0004"))
        with open(config, "w") as f:
            f.write('model_config_list { config { name: "hisac" '
                    'base_path: "/unused" model_platform: "tensorflow" '
                    'model_version_policy { specific { versions: 7 } } } }')
        time.sleep(2.0)
        good = load_test.random_request(spec, spec.max_history, 4, 1,
                                        seed=9)
        code, message = call(client, predict_request("serving_default",
                                                     good))
        warned = any("[7], not found" in line for line in server.output)
        rows.append(row(
            "round2", "models.config naming a missing version 7",
            f"a call: {code} {message[:120]}; warning naming 7: "
            f"{'yes' if warned else 'no'}", code == OK and warned))
        client.close()
    finally:
        server.stop()
    code, out = exits(work, root, [
        f"--server_export_dir={os.path.join(work, 'no_such_export')}",
        f"--server_port={free_port()}"])
    rows.append(row(
        "round2", "hisac-serve with a missing --server_export_dir",
        f"started serving: {last_line(out)}" if code is None
        else f"exit {code}: {last_line(out)}",
        code not in (None, 0) and "no export directory" in out))
    code, out = exits(work, root, [f"--server_export_dir={export}",
                                   "--server_port=99999"])
    rows.append(row(
        "round2", "hisac-serve --server_port=99999",
        f"started serving: {last_line(out)}" if code is None
        else f"exit {code}: {last_line(out)}",
        code not in (None, 0) and "99999" in out))
    junk = os.path.join(work, "junk.pem")
    with open(junk, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n")
    code, out = exits(work, root, [
        f"--server_export_dir={export}", f"--server_port={free_port()}",
        f"--server_tls_cert={junk}", f"--server_tls_key={junk}"])
    rows.append(row(
        "round2", "hisac-serve with a TLS certificate that is not PEM",
        f"started serving: {last_line(out)}" if code is None
        else f"exit {code}: {last_line(out)}",
        code not in (None, 0) and f"tls_cert {junk}" in out))


def round2(root: str, work: str, export_dir: str, spec: FeatureSpec,
           rows: list) -> dict:
    """Issue 22's serving probes; returns the measured requests."""
    server = Server(root, work, export_dir)
    try:
        client = grpc_client.HisacClient(server.target, spec=spec)
        client.wait_until_ready(300)
        client.close()
        cold_start_rows(server, spec, rows)
        state_rows(server, spec, rows)
    finally:
        server.stop()
    out = {}
    for key, (what, request) in amplified_requests(spec).items():
        server = Server(root, work, export_dir)  # Fresh: RSS of its own.
        try:
            client = grpc_client.HisacClient(server.target, spec=spec)
            client.wait_until_ready(300)
            client.close()
            m = out[key] = {"input": what, **measured(server, spec,
                                                      request)}
        finally:
            server.stop()
        rows.append(row(
            "round2", f"{what} ({m['request_bytes']} bytes)",
            f"{m['code']} in {m['seconds']:.2f} s, RSS +"
            f"{m['rss_growth_mb']:.0f} MiB (peak +"
            f"{m['peak_growth_mb']:.0f}): {m['message'][:300]}",
            m["code"] in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")
            and m["peak_growth_mb"] < 64))
    ops_rows(root, work, export_dir, spec, rows)
    return out


# ------------------------------------------------------------------ inputs
def input_rows() -> list:
    from tools.reliability import inputs

    return list(inputs.run_input_probes())


# -------------------------------------------------------------------- doc
def write_doc(path: str, result: dict, before: dict | None) -> None:
    lines = [
        "# Reliability: every bad input and fault tried",
        "",
        "Produced by `python -m tools.reliability.probes` (loopback "
        "only, a few minutes on 2 CPU cores; JSON in "
        "`benchmarks/results/reliability.json`). Each row: the input or "
        "fault, the behaviour observed, and whether it is the intended "
        "one (a clear error naming the input, or the job recovering, and "
        "the server still answering).",
        "",
        f"Run: {result['when']}, {result['device']}, server from "
        f"{_root_text(result['server_root'])}"
        + (f"; before: the server of {_root_text(before['server_root'])} "
           f"(run {before.get('when')}, over a `tiny` export of its own)"
           if before else "") + ".",
        "",
    ]
    memory = result.get("memory")
    if memory:
        lines += ["## Memory amplification", "",
                  f"A {memory['request_bytes']}-byte PredictRequest whose "
                  "four `hist_*` inputs declare shape [1, 20000000] with "
                  "one value each (one value fills the shape).", "",
                  "| server | status | peak RSS growth (MiB) | "
                  "seconds |", "|---|---|---|---|"]
        for label, m in (("before", (before or {}).get("memory")),
                         ("after", memory)):
            if m:
                lines.append(f"| {label} | {m['code']} | "
                             f"{m['peak_growth_mb']:.0f} | "
                             f"{m['seconds']:.2f} |")
        lines.append("")
    r2 = result.get("round2")
    if r2:
        lines += ["## Small requests that asked for much (issue 22)", "",
                  "Each on a fresh server: status, seconds, the server's "
                  "RSS growth and peak RSS growth (MiB).", "",
                  "| server | request | bytes | status | seconds | RSS + | "
                  "peak + |", "|---|---|---|---|---|---|---|"]
        for label, rr in (("before", (before or {}).get("round2")),
                          ("after", r2)):
            for m in (rr or {}).values():
                lines.append(
                    f"| {label} | {m['input']} | {m['request_bytes']} | "
                    f"{m['code']} | {m['seconds']:.2f} | "
                    f"{m['rss_growth_mb']:.0f} | "
                    f"{m['peak_growth_mb']:.0f} |")
        lines.append("")
    over = result.get("overload")
    if over:
        lines += ["## Overload", "",
                  f"Request: {over['request']}; open loop at 2x and 4x "
                  "the closed-loop capacity, each call with a "
                  f"{over['deadline_s']} s deadline; goodput = calls "
                  "answered OK within their deadline per second; probe = "
                  "one small call once the overload has passed.", "",
                  "| server | capacity (calls/s) | load | offered/s | "
                  "goodput/s | codes | probe (ms) |",
                  "|---|---|---|---|---|---|---|"]
        for label, o in (("before", (before or {}).get("overload")),
                         ("after", over)):
            if not o:
                continue
            for k in ("2x", "4x"):
                r = o[k]
                lines.append(
                    f"| {label} | {o['capacity_qps']:.1f} | {k} | "
                    f"{r['offered_qps']:.1f} | {r['goodput_qps']:.1f} | "
                    f"{r['codes']} | {r['probe_ms']:.0f} |")
        lines.append("")
    lines += ["## Every input and fault tried", "",
              "| area | input | observed | as intended |",
              "|---|---|---|---|"]
    for r in result["rows"]:
        observed = str(r["observed"]).replace("|", "\\|").replace("\n", " ")
        what = str(r["input"]).replace("|", "\\|")
        lines.append(f"| {r['area']} | {what} | {observed} | "
                     f"{'yes' if r['ok'] else '**no**'} |")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def _root_text(root: str) -> str:
    return ("this checkout" if root in (".", ROOT) else f"{root}")


class _Skip(Exception):
    """No section needs the shared server."""


# ------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--server_root", default=ROOT)
    parser.add_argument("--export_dir", default=None,
                        help="serve this export (skips training/export)")
    parser.add_argument("--before", default=None)
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--doc", default=DOC)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--from_json", default=None,
                        help="only rewrite --doc from this result JSON")
    args = parser.parse_args(argv)
    if args.from_json:
        with open(args.from_json) as f:
            result = json.load(f)
        before = None
        if args.before:
            with open(args.before) as f:
                before = json.load(f)
        write_doc(args.doc, result, before)
        return result
    sections = set(args.sections.split(","))
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit(f"--sections: unknown {sorted(unknown)}; known "
                         f"{list(SECTIONS)}")
    began = time.time()
    work = tempfile.mkdtemp(prefix="hisac-reliability-")
    cfg = config_lib.load_config("tiny", overrides(work))
    spec = FeatureSpec.from_config(cfg.data)
    rows: list = []
    result = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "device": f"{os.cpu_count()} CPU cores",
              "server_root": (
                  "." if os.path.abspath(args.server_root) == ROOT
                  else args.server_root), "rows": rows}
    export_dir = args.export_dir
    try:
        if export_dir is None:
            cfg = build_model(work, rows) if "faults" in sections else None
            if cfg is None:
                raise SystemExit("without --export_dir the faults section "
                                 "builds the model; add it")
            export_faults(cfg, work, rows)
            export_dir = cfg.export.export_dir
        needs_server = sections & {"grpc", "memory", "faults", "overload"}
        server = (Server(args.server_root, work, export_dir)
                  if needs_server else None)
        try:
            if server is None:
                raise _Skip
            client = grpc_client.HisacClient(server.target, spec=spec)
            client.wait_until_ready(120)
            client.close()
            if "memory" in sections:
                result["memory"] = memory_probe(server, spec)
                m = result["memory"]
                rows.append(row(
                    "grpc", f"memory: the {m['request_bytes']}-byte "
                    "request declaring four [1, 20000000] histories",
                    f"{m['code']}; peak RSS growth "
                    f"{m['peak_growth_mb']:.0f} MiB in "
                    f"{m['seconds']:.2f} s", m["peak_growth_mb"] < 64))
            if "grpc" in sections:
                grpc_probes(server, spec, rows)
            if "faults" in sections:
                version_faults(server, spec, export_dir, rows)
            if "overload" in sections:
                result["overload"] = over = overload(server, spec,
                                                     args.quick)
                for k in ("2x", "4x"):
                    r = over[k]
                    rows.append(row(
                        "overload", f"{k} the capacity "
                        f"({over['capacity_qps']:.0f} calls/s), 1 s "
                        "deadlines",
                        f"goodput {r['goodput_qps']:.1f}/s, codes "
                        f"{r['codes']}, small call after: "
                        f"{r['probe_ms']:.0f} ms",
                        r["goodput_qps"] >= 0.5 * over["capacity_qps"]
                        and r["probe_ms"] < 1000))
            rows.append(row("grpc", "server alive after every probe",
                            "yes" if server.alive() else "no (exited)",
                            server.alive()))
        except _Skip:
            pass
        finally:
            if server is not None:
                server.stop()
        if "round2" in sections:
            result["round2"] = round2(args.server_root, work, export_dir,
                                      spec, rows)
        if "inputs" in sections:
            rows.extend(input_rows())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = time.time() - began
    before = None
    if args.before:
        with open(args.before) as f:
            before = json.load(f)
        result["before"] = {k: before.get(k) for k in (
            "memory", "overload", "round2", "server_root")}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True, allow_nan=False)
        f.write("\n")
    if args.doc:
        write_doc(args.doc, result, before)
    bad = [r for r in rows if not r["ok"]]
    print(f"{len(rows)} probes, {len(bad)} not as intended, "
          f"{result['seconds']:.0f} s -> {args.output}")
    for r in bad:
        print(f"  NOT OK: {r['area']}: {r['input']}: {r['observed']}")
    return result


if __name__ == "__main__":
    main()
