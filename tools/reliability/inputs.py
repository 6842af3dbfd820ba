"""Bad inputs, tried for real: CSV logs, data files, config, training.

`run_input_probes()` runs each careless or hostile input of issue 12
(items 8-11) and issue 22 (items 9-13) in a temporary directory, the way
a user would (the jobs as `python -m pipelines.<job>` subprocesses, each
under a time limit; config values through `load_config`), and returns
one row per input:

    {"area": "CSV", "input": "...", "observed": "exit 1: ...", "ok": True}

`ok` says the observed behaviour is the intended one (a clear error naming
the file, line, key or split; or a correct import with the problem
counted). `tools/reliability/probes.py` renders the rows into
docs/reliability.md; run alone, this script prints them as a table:

    python -m tools.reliability.inputs
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from typing import Callable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))  # the checkout (tools/reliability/..)

import hisac_tf  # noqa: E402,F401  (Keras 2 before TensorFlow)
import tensorflow as tf  # noqa: E402

from hisac_tf import config as config_lib  # noqa: E402
from hisac_tf.data.feature_spec import FeatureSpec  # noqa: E402

JOB_TIMEOUT_S = 180
EPOCH = 1_511_539_200  # 2017-11-25
HEADER = ["user_id", "item_id", "category_id", "behavior_type", "timestamp"]


# ------------------------------------------------------------------ helpers
def _job(module: str, args: Sequence[str], timeout_s: int = JOB_TIMEOUT_S
         ) -> tuple[int, str]:
    """Runs `python -m pipelines.<module> args`; (exit code, stderr)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
               TF_USE_LEGACY_KERAS="1", CUDA_VISIBLE_DEVICES="")
    try:
        proc = subprocess.run(
            [sys.executable, "-m", f"pipelines.{module}", *args], cwd=ROOT,
            env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout_s} s"
    return proc.returncode, proc.stderr


def _error_line(stderr: str) -> str:
    """The job's own error line (`error: ...`, `config error: ...`)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith(("error: ", "config error: ")):
            return line
    return lines[-1] if lines else ""


def _short(text: str, limit: int = 230) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _log_rows(seed: int = 0, events: int = 600) -> list[tuple]:
    """A six-day log of 30 users in epoch seconds."""
    rng = random.Random(seed)
    rows = []
    for _ in range(events):
        item = rng.randint(1, 40)
        rows.append((rng.randint(1, 30), item, 1 + item % 5,
                     rng.choices(["pv", "cart", "fav", "buy"],
                                 [0.7, 0.1, 0.1, 0.1])[0],
                     EPOCH + rng.randrange(6 * 86400)))
    return rows


def _write_csv(path: str, rows, header: bool = True) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(HEADER)
        writer.writerows(rows)
    return path


def _import(tmp: str, name: str, path: str, *flags: str
            ) -> tuple[int, str, dict | None]:
    out = os.path.join(tmp, "out-" + name)
    rc, err = _job("import_logs", [f"--input={path}", f"--output_dir={out}",
                                   "--eval_days=1", *flags])
    summary = None
    if rc == 0:
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
    return rc, err, summary


def _failure(area: str, what: str, rc: int, err: str, pattern: str) -> dict:
    line = _error_line(err)
    return {"area": area, "input": what,
            "observed": _short(f"exit {rc}: {line}"),
            "ok": rc != 0 and rc != 124 and re.search(pattern, line)
            is not None}


# ---------------------------------------------------------------- CSV logs
def _csv_probes(tmp: str) -> list[dict]:
    rows = _log_rows()
    good = _write_csv(os.path.join(tmp, "good.csv"), rows)
    out = []
    rc, err, base = _import(tmp, "good", good)
    base_eval = base["splits"]["eval"] if base else {}

    path = _write_csv(os.path.join(tmp, "outlier.csv"),
                      rows + [(3, 12, 2, "pv", 99999999999)])
    rc, err, s = _import(tmp, "outlier", path)
    ev = s["splits"]["eval"] if s else {}
    out.append({
        "area": "CSV", "input": "good log + one row `3,12,2,pv,99999999999`"
        " (year 5138)",
        "observed": _short(
            f"exit {rc}: {s['timestamps_out_of_range']} event out of range "
            f"dropped and counted; eval {ev['requests']} requests, "
            f"{ev['positives']} positives (same as without the row)"
            if s else f"exit {rc}: {_error_line(err)}"),
        "ok": bool(s) and s["timestamps_out_of_range"] == 1
        and ev == base_eval})

    path = _write_csv(os.path.join(tmp, "ms.csv"), [
        (u, i, c, b, t * 1000 + 123) for u, i, c, b, t in rows])
    rc, err, s = _import(tmp, "ms", path)
    out.append({
        "area": "CSV", "input": "the same log in millisecond timestamps",
        "observed": _short(
            f"exit {rc}: unit {s['timestamp_unit']}; {s['requests']} "
            f"requests, eval {s['splits']['eval']['requests']} (seconds "
            f"log: {base['requests']}, eval {base_eval['requests']})"
            if s and base else f"exit {rc}: {_error_line(err)}"),
        "ok": bool(s and base) and s["timestamp_unit"] == "ms (auto)"
        and s["splits"] == base["splits"]})

    one_label = [r if r[4] < EPOCH + 5 * 86400 else r[:3] + ("pv",) + r[4:]
                 for r in rows]
    path = _write_csv(os.path.join(tmp, "one_label.csv"), one_label)
    rc, err, _ = _import(tmp, "one-label", path,
                         "--negatives_per_request=0")
    out.append(_failure(
        "CSV", "eval day holds only `pv` (no positive label)", rc, err,
        r"split eval would hold no positive label .*"
        r"--allow_single_class_split"))

    path = os.path.join(tmp, "noise.csv")
    with open(path, "wb") as f:
        f.write(random.Random(1).randbytes(4096))
    rc, err, _ = _import(tmp, "noise", path)
    out.append(_failure("CSV", "4 KB of random bytes", rc, err,
                        r"noise.csv, line \d+: field '\(row\)' is not "
                        r"(UTF-8 text|valid CSV)"))

    path = os.path.join(tmp, "latin1.csv")
    lines = open(good, "rb").read().split(b"\n")
    lines[5] = b"7,12,2,p\xe9,1511539300"
    with open(path, "wb") as f:
        f.write(b"\n".join(lines))
    rc, err, _ = _import(tmp, "latin1", path)
    out.append(_failure("CSV", "one Latin-1 (non-UTF-8) row on line 6", rc,
                        err, r"latin1.csv, line 6: .*not UTF-8 text"))

    path = os.path.join(tmp, "cut.csv.gz")
    data = gzip.compress(open(good, "rb").read())
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    rc, err, _ = _import(tmp, "cut", path)
    out.append(_failure("CSV", "`.csv.gz` cut in half", rc, err,
                        r"cut.csv.gz: truncated or corrupt compressed file "
                        r"after line \d+"))

    path = os.path.join(tmp, "bom.csv")
    with open(path, "wb") as f:
        f.write(b"\xef\xbb\xbf" + open(good, "rb").read())
    rc, err, s = _import(tmp, "bom", path)
    out.append({
        "area": "CSV", "input": "CSV starting with a UTF-8 byte-order mark",
        "observed": _short(f"exit {rc}: imported {s['events']} events"
                           if s else f"exit {rc}: {_error_line(err)}"),
        "ok": bool(s and base) and s["events"] == base["events"]})

    items = os.path.join(tmp, "items.csv")
    with open(items, "w") as f:
        f.write("item_id,category_id,emb_0,emb_1\n" + "".join(
            f"{i},{1 + i % 5},0.5,{'1e39' if i == 2 else '1.0'}\n"
            for i in range(1, 41)))
    rc, err, _ = _import(tmp, "items-1e39", good, f"--items={items}")
    out.append(_failure(
        "CSV", "item table whose line 3 has `emb_1` = 1e39 (finite in "
        "float64, inf in float32; issue 22 item 12)", rc, err,
        r"items.csv, line 3: field 'emb_1' does not fit in float32 .*"
        r"got '1e39'"))

    path = _write_csv(os.path.join(tmp, "dups.csv"), rows + [rows[0]] * 200)
    rc, err, s = _import(tmp, "dups", path)
    rc2, err2, d = _import(tmp, "dups-dropped", path, "--drop_duplicates")
    out.append({
        "area": "CSV", "input": "200 exact duplicate rows (then with "
        "--drop_duplicates)",
        "observed": _short(
            f"exit {rc}: {s['duplicate_events']} duplicates counted in "
            f"the summary; with --drop_duplicates exit {rc2}: "
            f"{d['duplicate_events_dropped']} dropped, {d['events']} "
            "events" if s and d else f"exit {rc}/{rc2}: "
            f"{_error_line(err or err2)}"),
        "ok": bool(s and d and base) and s["duplicate_events"] >= 200
        and d["events"] == base["events"] - base["duplicate_events"]})
    return out


# ------------------------------------------------------------- data files
def _records(path: str, records: Sequence[bytes], compression: str) -> None:
    with tf.io.TFRecordWriter(path, compression) as writer:
        for record in records:
            writer.write(record)


def _request(spec: FeatureSpec, labels: Sequence[int]) -> bytes:
    return spec.to_example(dict(
        user_id=1, request_time=100, gender=1, age_bucket=1,
        hist_item_ids=[1], hist_category_ids=[1], hist_behaviors=[1],
        hist_timestamps=[5], cand_item_ids=[3, 4], cand_category_ids=[1, 1],
        labels=list(labels))).SerializeToString()


def _file_probes(tmp: str) -> list[dict]:
    spec = FeatureSpec(10, 4, with_true_ctr=False)
    out = []

    def evaluate(name: str, write: Callable[[str], None]) -> tuple[int, str]:
        data = os.path.join(tmp, "eval-" + name)
        os.makedirs(data)
        write(data)
        return _job("evaluate", [
            f"--set=data.data_dir={data}", f"--set=training.model_dir="
            f"{data}/model", "--set=data.max_history=10",
            "--set=data.max_candidates=4"])

    name = "eval-00000-of-00001.tfrecord.gz"
    rc, err = evaluate("noise", lambda d: open(os.path.join(d, name), "wb")
                       .write(random.Random(2).randbytes(3000)))
    out.append(_failure("files", "hisac-evaluate on a random-bytes shard",
                        rc, err, rf"{name}: not a readable TFRecord file"))
    rc, err = evaluate("plain", lambda d: _records(
        os.path.join(d, name), [_request(spec, [0, 1])] * 3, ""))
    out.append(_failure("files", "hisac-evaluate on an uncompressed file "
                        "named `.gz`", rc, err,
                        rf"{name}: not a readable TFRecord file"))
    rc, err = evaluate("empty", lambda d: _records(
        os.path.join(d, name), [], "GZIP"))
    out.append(_failure("files", "hisac-evaluate on an empty eval split",
                        rc, err, r"the eval split is empty"))

    zero = "eval-00001-of-00002.tfrecord.gz"

    def good_and_zero_byte(d: str) -> None:
        _records(os.path.join(d, "eval-00000-of-00002.tfrecord.gz"),
                 [_request(spec, [0, 1])] * 3, "GZIP")
        open(os.path.join(d, zero), "wb").close()

    rc, err = evaluate("zero-byte", good_and_zero_byte)
    out.append(_failure("files", "hisac-evaluate on an eval split of a good"
                        " shard and a 0-byte shard (issue 22 item 9)", rc,
                        err, rf"{zero}: is 0 bytes: not a GZIP TFRecord"))

    data = os.path.join(tmp, "labels")
    os.makedirs(data)
    for split in ("train", "eval"):
        _records(os.path.join(data, f"{split}-00000-of-00001.tfrecord.gz"),
                 [_request(spec, [0, 1]), _request(spec, [0, 2])], "GZIP")
    rc, err = _job("inspect_data", [
        f"--set=data.data_dir={data}", "--set=data.max_history=10",
        "--set=data.max_candidates=4"])
    out.append(_failure("files", "a record with label 2 (hisac-inspect)", rc,
                        err, r"tfrecord.gz:1: field labels must be 0 or 1; "
                        r"got 2$"))
    return out


# ------------------------------------------------------------------ config
CONFIG_PROBES = (
    "training.dense_learning_rate=NaN", "training.embedding_learning_rate=-1",
    "model.vote_temperature=NaN", "model.routing_temperature=Infinity",
    "tokenizer.learning_rate=-5", "tokenizer.beta=NaN",
    "model.top_k=[100, 100]", "model.mlp_dims=[0, -3]",
    "tokenizer.hidden_dims=[-1]", "export.grpc_port=99999",
    'training.model_dir=""', 'export.model_name=""',
    "export.model_name=../../etc", "model.user_vocab_buckets=1",
)


def _config_probes() -> list[dict]:
    out = []
    for override in CONFIG_PROBES:
        key, value = override.split("=", 1)
        try:
            config_lib.load_config("tiny", [override])
            observed, ok = "accepted", False
        except config_lib.ConfigError as e:
            observed = f"ConfigError: {e}"
            ok = key in str(e)
        out.append({"area": "config", "input": f"`--set {override}`",
                    "observed": _short(observed), "ok": ok})
    return out


def _config_file_probes(tmp: str) -> list[dict]:
    """`--config=<bad file>` to a job: exit 2, the file named, no
    traceback (issue 22 item 11)."""
    base = os.path.join(tmp, "config-files")
    os.makedirs(base)
    missing = os.path.join(base, "missing.json")
    directory = os.path.join(base, "directory.json")
    os.makedirs(directory)
    a_list = os.path.join(base, "list.json")
    with open(a_list, "w") as f:
        json.dump([{"model": {}}], f)
    latin1 = os.path.join(base, "latin1.json")
    with open(latin1, "wb") as f:
        f.write('{"name": "caf\xe9"}'.encode("latin-1"))
    out = []
    for what, path, pattern in (
            ("a missing file", missing, "does not exist"),
            ("a directory", directory, "is a directory, not a JSON file"),
            ("a JSON list", a_list, "must hold a JSON object .*got a list"),
            ("a Latin-1 (non-UTF-8) file", latin1, "is not UTF-8 text")):
        rc, err = _job("evaluate", [f"--config={path}"])
        line = _error_line(err)
        out.append({
            "area": "config", "input": f"hisac-evaluate --config=<{what}>",
            "observed": _short(f"exit {rc}, traceback: "
                               f"{'Traceback' in err}; {line}"),
            "ok": rc == 2 and "Traceback" not in err and re.search(
                rf"config error: config file {re.escape(path)} {pattern}",
                line) is not None})
    return out


# ---------------------------------------------------------------- training
def _training_probes(tmp: str) -> list[dict]:
    root = os.path.join(tmp, "train")
    sets = [f"--set=data.data_dir={root}/data",
            f"--set=tokenizer.output_dir={root}/tok",
            f"--set=training.model_dir={root}/model",
            "--set=tokenizer.epochs=2", "--set=training.train_steps=12",
            "--set=training.checkpoint_every=3", "--set=training.log_every=3",
            "--set=training.mode=train"]
    out = []
    rc, err = _job("train", sets + ["--set=training.dense_learning_rate=NaN"])
    out.append(_failure("training", "hisac-train with a NaN learning rate",
                        rc, err, r"training.dense_learning_rate must be a "
                        r"finite number, got nan"))
    for module, args in (("generate_synthetic", ["--noprogress"]),
                         ("tokenize_items", [])):
        rc, err = _job(module, sets[:4] + args)
        if rc:
            out.append({"area": "training", "input": f"setup: {module}",
                        "observed": _short(f"exit {rc}: {_error_line(err)}"),
                        "ok": False})
            return out
    rc, err = _job("train", sets + ["--set=training.dense_learning_rate=1e38",
                                    "--set=training.embedding_learning_rate"
                                    "=1e38"])
    model = os.path.join(root, "model")
    saved = [n for n in os.listdir(os.path.join(model, "checkpoints"))
             if n.startswith("ckpt-")] if os.path.isdir(
                 os.path.join(model, "checkpoints")) else []
    row = _failure("training", "hisac-train diverging (learning rates 1e38:"
                   " loss becomes NaN)", rc, err,
                   r"NonFiniteLossError: training stopped at step \d+: the "
                   r"loss is not finite")
    results = os.path.exists(os.path.join(model, "train_results.json"))
    row["observed"] = _short(
        f"{len(saved)} checkpoint files, train_results.json written: "
        f"{results}; exit {rc}: {_error_line(err)}", 300)
    row["ok"] = row["ok"] and not saved
    out.append(row)

    # Learning rates of 1.0: the loss explodes but stays finite.
    lr1 = f"{root}/model-lr1"
    rc, err = _job("train", sets[:4] + [
        f"--set=training.model_dir={lr1}", "--set=training.train_steps=30",
        "--set=training.checkpoint_every=2", "--set=training.log_every=3",
        "--set=training.mode=train", "--set=training.dense_learning_rate=1",
        "--set=training.embedding_learning_rate=1"])
    results = os.path.exists(os.path.join(lr1, "train_results.json"))
    row = _failure("training", "hisac-train for 30 steps with learning "
                   "rates 1.0 (loss huge but finite; issue 22 item 10), "
                   "then hisac-export without --force", rc, err,
                   r"DivergenceError: training stopped at step \d+: the "
                   r"loss diverged")
    rc2, err2 = _job("export", sets[:4] + [
        f"--set=training.model_dir={lr1}",
        f"--set=export.export_dir={root}/export-lr1"])
    exported = [n for n in os.listdir(f"{root}/export-lr1")
                if n.isdigit()] if os.path.isdir(f"{root}/export-lr1") else []
    row["observed"] = _short(
        f"train exit {rc}: {_short(_error_line(err), 150)}; "
        f"train_results.json written: {results}; export exit {rc2}: "
        f"{_short(_error_line(err2), 250)}", 500)
    row["ok"] = (row["ok"] and not results and rc2 not in (0, 124)
                 and not exported and re.search(
                     r"is from a diverged run .*pass --force",
                     _error_line(err2)) is not None)
    out.append(row)
    return out


def run_input_probes() -> list[dict]:
    """Runs every bad-input probe in a temporary directory; the rows.

    Each row: {"area", "input", "observed", "ok"}. Every job runs under
    `JOB_TIMEOUT_S`; the whole takes a few minutes on two CPU cores.
    """
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="hisac-reliability-") as tmp:
        rows += _csv_probes(tmp)
        rows += _file_probes(tmp)
        rows += _config_probes()
        rows += _config_file_probes(tmp)
        rows += _training_probes(tmp)
    for row in rows:
        row["ok"] = bool(row["ok"])
    return rows


def main() -> None:
    began = time.time()
    rows = run_input_probes()
    print("| area | input | observed | ok |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['area']} | {r['input']} | "
              f"{r['observed'].replace('|', '/')} | "
              f"{'yes' if r['ok'] else 'NO'} |")
    print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} as intended, "
          f"{time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
