"""Benchmark: the import's events per second and peak memory, both engines.

Writes a synthetic UserBehavior log (Parquet, 8 files; Zipf-like users
with one heavy hitter holding 2% of the events, 9 days) of 1M (and with
`--events`, more) events into a temporary folder, then runs the
single-process importer and the Beam pipeline on the DirectRunner
(multi_processing, `--workers` processes) on it, each in a fresh
process. Memory, sampled every 0.2 s from /proc: the peak resident set
of the launching process (the single-process importer; for Beam the
DirectRunner's controller, which also holds the shuffled data between
stages), of the largest Beam worker, and of the whole process tree. Also checks
that both engines wrote the same records (sha256 of the sorted records
of each split). Writes `benchmarks/results/import_scale.json` and a
table.

    python -m benchmarks.import_scale [--events 1000000,10000000]
        [--workers 2] [--engines local,beam]
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import hisac_tf  # noqa: E402,F401
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.bench_common import device_name  # noqa: E402

RESULTS = os.path.join(os.path.dirname(__file__), "results")
FILES = 8
SETTINGS = ["--max_history=100", "--max_candidates=16",
            "--negatives_per_request=4", "--num_shards=4", "--eval_days=1",
            "--valid_days=1", "--warn_min_requests=0"]


def write_log(directory: str, events: int, seed: int = 0) -> str:
    """A synthetic log of `events` rows in FILES Parquet files."""
    rng = np.random.default_rng(seed)
    users = max(events // 500, 10)
    items = max(events // 20, 100)
    user = (rng.zipf(1.3, events) - 1) % users + 1
    user[rng.random(events) < 0.02] = users + 1  # The heavy hitter.
    item = (rng.zipf(1.2, events) - 1) % items + 1
    ts = rng.integers(1_700_000_000, 1_700_000_000 + 9 * 86400, events)
    beh = rng.choice(4, events, p=[.85, .05, .05, .05]) + 1
    for k, part in enumerate(np.array_split(np.arange(events), FILES)):
        pq.write_table(pa.table({
            "user_id": user[part], "item_id": item[part],
            "category_id": item[part] % 500 + 1,
            "behavior_type": beh[part].astype(np.int32),
            "timestamp": ts[part]}),
            os.path.join(directory, f"log-{k:02d}.parquet"))
    return os.path.join(directory, "log-*.parquet")


def _tree(root: int) -> list[int]:
    """RSS in bytes of `root` (first) and every descendant."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(
                int(stat.split("/")[2]))
        except (OSError, IndexError, ValueError):
            continue
    rss, todo = [], [root]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            with open(f"/proc/{pid}/statm") as f:
                rss.append(int(f.read().split()[1]) * page)
        except OSError:
            continue
    return rss


def run_engine(engine: str, pattern: str, out_dir: str, workers: int
               ) -> dict:
    """Runs one import in a fresh process; its time and peak memory."""
    cmd = [sys.executable, "-m", "pipelines.import_logs", "--config=tiny",
           f"--input={pattern}", f"--output_dir={out_dir}",
           "--progress_every=100000000", *SETTINGS]
    if engine == "beam":
        cmd += ["--engine=beam", "--runner=DirectRunner",
                f"--direct_num_workers={workers}",
                "--direct_running_mode=multi_processing"]
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    launcher = worker = total = 0
    while proc.poll() is None:
        rss = _tree(proc.pid) or [0]
        launcher = max(launcher, rss[0])
        worker = max([worker] + rss[1:])
        total = max(total, sum(rss))
        time.sleep(0.2)
    seconds = time.time() - started
    err = proc.stderr.read()
    if proc.returncode:
        raise RuntimeError(f"{engine} import failed:\n{err[-3000:]}")
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    return {"engine": engine, "seconds": round(seconds, 1),
            "events": summary["events"], "requests": summary["requests"],
            "events_per_s": round(summary["events"] / seconds),
            "peak_rss_launcher_mb": round(launcher / 2**20),
            "peak_rss_largest_worker_mb": round(worker / 2**20),
            "peak_rss_all_processes_mb": round(total / 2**20),
            "records_sha256": records_digest(out_dir)}


def records_digest(out_dir: str) -> str:
    """sha256 over each split's sorted serialized records."""
    digest = hashlib.sha256()
    for split in ("train", "valid", "eval"):
        records = sorted(
            r.numpy() for p in glob.glob(os.path.join(
                out_dir, f"{split}-*.tfrecord.gz"))
            for r in tf.data.TFRecordDataset(p, "GZIP"))
        for r in records:
            digest.update(hashlib.sha256(r).digest())
    return digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", default="1000000")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--engines", default="local,beam")
    args = parser.parse_args()
    rows = []
    for events in [int(e) for e in args.events.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            pattern = write_log(tmp, events)
            for engine in args.engines.split(","):
                row = run_engine(engine, pattern,
                                 os.path.join(tmp, engine), args.workers)
                rows.append(row)
                print(json.dumps(row), flush=True)
    digests = {}
    for row in rows:
        digests.setdefault(row["events"], set()).add(row["records_sha256"])
    result = {
        "benchmark": "import_scale", "device": device_name(),
        "cpus": os.cpu_count(), "direct_num_workers": args.workers,
        "settings": SETTINGS, "runs": rows,
        "same_records": all(len(d) == 1 for d in digests.values()),
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "import_scale.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"{'engine':8} {'events':>10} {'s':>7} {'events/s':>9} "
          f"{'launcher MB':>11} {'worker MB':>9} {'all MB':>7}")
    for r in rows:
        print(f"{r['engine']:8} {r['events']:>10} {r['seconds']:>7} "
              f"{r['events_per_s']:>9} {r['peak_rss_launcher_mb']:>11} "
              f"{r['peak_rss_largest_worker_mb']:>9} "
              f"{r['peak_rss_all_processes_mb']:>7}")
    print(f"same records: {result['same_records']}")


if __name__ == "__main__":
    main()
