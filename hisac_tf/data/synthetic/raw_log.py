"""Writes the synthetic world as a raw log, the importer's input layout.

`write_raw_log(cfg, output_dir)` writes what `hisac-import` reads
(docs/design.md §4), so the import path can be tried without a private
log:

* `events.csv`: `user_id,item_id,category_id,behavior_type,timestamp`
  (Taobao UserBehavior, with a header), users in id order, each user's
  events in time order. A user's rows are their behaviour log (pv, cart,
  fav, buy as simulated) and, at each request time, one row per shown
  candidate: `buy` when the simulated label is 1, `pv` otherwise. The
  importer cuts these back into requests by time window; a window also
  holds the behaviours of that hour, so its requests are not the
  generator's requests one for one.
* `items.csv`: `item_id,category_id,emb_0,...,emb_{d-1}` (content
  embeddings, d = `synthetic.content_dim`).
* `users.csv`: `user_id,<data.user_features>` (gender, age_bucket).

Memory holds one user at a time; the files are written as streams
(local, gs://, s3://, hdfs:// through `tf.io.gfile`).
"""

from __future__ import annotations

import os
import sys
import time

import tensorflow as tf  # This module never touches tf.keras.

from hisac_tf.behaviors import BEHAVIOR_IDS
from hisac_tf.config import Config
from hisac_tf.data import filesystems
from hisac_tf.data.synthetic.requests import (UserSample, calibrate_bias,
                                              request_dicts, simulate_user)
from hisac_tf.data.synthetic.world import (ITEM_CHUNK, build_world,
                                           item_embeddings)
from hisac_tf.data.synthetic.writer import check_config

EVENTS_FILE = "events.csv"
ITEMS_FILE = "items.csv"
USERS_FILE = "users.csv"
EVENT_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type",
                 "timestamp")
_NAMES = {v: k for k, v in BEHAVIOR_IDS.items()}  # 1..4 -> pv..buy
CLICK, NO_CLICK = "buy", "pv"


def user_events(sample: UserSample, bias: float
                ) -> tuple[list[tuple[int, int, int, str, int]], int]:
    """(rows, clicks): one user's raw rows (user, item, category,
    behaviour, timestamp) in time order, the behaviour log and the
    candidates of each request (label 1 -> `CLICK`, 0 -> `NO_CLICK`) at
    its request time; clicks = the labels 1 among them."""
    rows = [(int(i), int(c), _NAMES[int(b)], int(t)) for i, c, b, t in zip(
        sample.hist_item_ids, sample.hist_category_ids,
        sample.hist_behaviors, sample.hist_timestamps)]
    clicks = 0
    for record, labels, _ in request_dicts(sample, bias):
        t = record["request_time"]
        clicks += int(labels.sum())
        rows += [(int(i), int(c), CLICK if y else NO_CLICK, t)
                 for i, c, y in zip(record["cand_item_ids"],
                                    record["cand_category_ids"], labels)]
    order = sorted(range(len(rows)), key=lambda k: (rows[k][3], k))
    return [(sample.user_id, *rows[k]) for k in order], clicks


def write_raw_log(cfg: Config, output_dir: str,
                  progress: bool = True) -> dict:
    """Writes events.csv, items.csv and users.csv of `cfg`'s world.

    Returns {"output_dir", "events", "users", "items", "clicks",
    "impressions", "time_range", "files", "seconds"}.
    Raises ConfigError for a synthetic setting the generator cannot use.
    """
    check_config(cfg)
    syn, features = cfg.synthetic, tuple(cfg.data.user_features)
    started = time.time()
    out_dir = filesystems.ensure_filesystem(output_dir)
    tf.io.gfile.makedirs(out_dir)
    world = build_world(syn)
    paths = {name: os.path.join(out_dir, name)
             for name in (EVENTS_FILE, ITEMS_FILE, USERS_FILE)}
    with tf.io.gfile.GFile(paths[ITEMS_FILE], "w") as f:
        f.write(",".join(["item_id", "category_id"] + [
            f"emb_{k}" for k in range(syn.content_dim)]) + "\n")
        for first in range(1, world.num_items + 1, ITEM_CHUNK):
            stop = min(first + ITEM_CHUNK, world.num_items + 1)
            emb = item_embeddings(world, syn, first, stop)  # [n, D]
            f.write("".join(
                f"{item},{int(world.item_category[item])},"
                + ",".join(f"{x:.6g}" for x in emb[k]) + "\n"
                for k, item in enumerate(range(first, stop))))
    bias = calibrate_bias(world, cfg)
    counts = {"events": 0, "clicks": 0, "impressions": 0}
    first_ts, last_ts = None, None
    with tf.io.gfile.GFile(paths[EVENTS_FILE], "w") as events, \
            tf.io.gfile.GFile(paths[USERS_FILE], "w") as users:
        events.write(",".join(EVENT_COLUMNS) + "\n")
        users.write(",".join(("user_id",) + features) + "\n")
        for user_id in range(1, syn.num_users + 1):
            sample = simulate_user(world, cfg, user_id)
            users.write(",".join(str(v) for v in (
                user_id, *(sample.features[k] for k in features))) + "\n")
            rows, clicks = user_events(sample, bias)
            events.write("".join(",".join(map(str, r)) + "\n"
                                 for r in rows))
            counts["events"] += len(rows)
            counts["impressions"] += int(sample.cand_item_ids.size)
            counts["clicks"] += clicks
            if rows:
                first_ts = rows[0][4] if first_ts is None else min(
                    first_ts, rows[0][4])
                last_ts = rows[-1][4] if last_ts is None else max(
                    last_ts, rows[-1][4])
            if progress and user_id % max(1, syn.num_users // 10) == 0:
                print(f"raw log: {user_id}/{syn.num_users} users, "
                      f"{counts['events']} events", file=sys.stderr,
                      flush=True)
    return {"output_dir": out_dir, "users": syn.num_users,
            "items": world.num_items, **counts,
            "time_range": [first_ts, last_ts],
            "files": {k: paths[k] for k in paths},
            "seconds": round(time.time() - started, 3)}


def format_raw_log(summary: dict) -> str:
    """A few lines: what was written and the import command to try."""
    files = summary["files"]
    return "\n".join([
        f"raw log in {summary['output_dir']} ({summary['seconds']:.1f} s): "
        f"{summary['events']} events of {summary['users']} users "
        f"({summary['impressions']} shown candidates, {summary['clicks']} "
        f"clicked), {summary['items']} items, time range "
        f"{summary['time_range']}",
        f"  {files[EVENTS_FILE]}  (user_id,item_id,category_id,"
        "behavior_type,timestamp)",
        f"  {files[ITEMS_FILE]}  (item_id,category_id,emb_0..)",
        f"  {files[USERS_FILE]}  (user_id,<data.user_features>)",
        f"  next: hisac-inspect --raw --input={files[EVENTS_FILE]}",
    ])
