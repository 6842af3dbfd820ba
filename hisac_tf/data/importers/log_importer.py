"""The import job's body: raw behaviour logs -> request-level TFRecords.

`import_logs(cfg)` reads `cfg.importer` (what to read and how to form
requests) and `cfg.data` (N = `max_history`, C = `max_candidates`, the
user features, the file patterns, the compression and the output
directory `data_dir`, so training reads what was written). See
docs/design.md §4.

Input: behaviour logs in the Taobao UserBehavior layout

    user_id,item_id,category_id,behavior_type,timestamp

as CSV (`csv_reader`) or Parquet (`parquet_reader`, by extension .parquet,
.parq, .pq unless `importer.format` says). `behavior_type` is pv/cart/fav/
buy (any case) or the ids 1..4 they map to; ids are integers >= 1,
timestamps integer seconds >= 0. Several inputs: a comma-separated list of
paths or glob patterns; gzipped CSV (`*.gz`) is read as such. Paths may be
local, gs://, s3:// or hdfs:// (`hisac_tf.data.filesystems`). Optional
side tables: `importer.items` (`item_table`) and `importer.users`
(`user_table`).

Requests (`request_formation`): one per (user, request window), history =
the user's events before it (newest N), candidates = the window's distinct
items (at most C, positives first), label 1 when an event of the item in
the window has a behaviour in `importer.positive_behaviors` (default cart,
fav, buy; pv-only items are viewed-but-not-engaged impressions, label 0).
Requests with fewer than `importer.min_history` history events are
dropped (counted).

Negatives (`negative_sampler`): up to `importer.negatives_per_request`
items per request, label 0, drawn in proportion to their events before
`request_time` (all users), never an item of the window and, with
`importer.exclude_history_from_negatives` (default), never an item of the
user's whole history before the request; drawn from the stream of
(`importer.seed`, user, request_time), so a request's negatives do not
depend on the other requests (the Beam pipeline gives the same records,
`hisac_tf.data.beam_import`). They fill the candidate slots the window
leaves under C.

Timestamps (`timestamps`): integer seconds, milliseconds, microseconds
or nanoseconds (`importer.timestamp_unit`, "auto" by the median), read as
seconds; events outside `[importer.min_timestamp, importer.max_timestamp]`
are dropped and counted (`timestamps_out_of_range`). Exact duplicate rows
are counted (`duplicate_events`) and, with `importer.drop_duplicates`,
dropped.

Splits (`time_split`): eval (the held-out test split) is the newest
`eval_days` days (or from `eval_start_ts`), valid the `valid_days` days
before it (or from `valid_start_ts`), train the rest; the days count back
from a robust end of the log (`split_end`, quantiles, not the maximum). A
configured split that would be empty or hold one label only stops the
job before the old outputs are replaced (`split_labels`), unless
`importer.allow_single_class_split`.

Output in `data.data_dir`: `train-0000k-of-0000S.tfrecord.gz`, `valid-...`
(only when a valid split is configured), `eval-...` (S =
`importer.num_shards`; every shard is written, possibly empty; requests
are in time order across the shards of a split), `items-00000-of-00001
.tfrecord.gz` (when items are given) and `summary.json` with the counts per
split, the losses and the warnings (`import_summary`). Records follow
`FeatureSpec` with `with_true_ctr=False`. Existing outputs are replaced
only with `importer.overwrite`, and only once the input has been read.

Memory: events are kept as five int64 columns for the whole input (40
bytes per event; about 120 bytes per event at the peak, with the sorted
copies), because requests are written in global time order and negatives
are sampled from the popularity seen so far across users; plus, per user
with requests still to write, the set of their history items. Larger logs:
`hisac-import --engine=beam` (docs/data_at_scale.md).

Bad input: a row with a missing, empty or null field, a non-integer id or
timestamp, an id <= 0, a negative timestamp, an unknown behaviour, or a
CSV line that is not UTF-8 or not CSV stops the job with an error naming
the file, the line (CSV) or row (Parquet, 1-based), the field and the
value; with `importer.skip_bad_rows` such rows are skipped and counted. A
UTF-8 byte-order mark is accepted. Problems of a whole file (a missing
column, a column of a wrong type, not Parquet, a truncated or corrupt
`.gz`) always stop the job, naming the file.
"""

from __future__ import annotations

import collections
import os
import sys
import time

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config, ConfigError
from hisac_tf.data import filesystems
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data.importers.import_summary import (
    format_boundaries,
    format_settings,
    format_summary,
    lossy_warnings,
)
from hisac_tf.data.importers.item_table import write_items
from hisac_tf.data.importers.log_reader import read_events
from hisac_tf.data.importers.negative_sampler import NegativeSampler
from hisac_tf.data.importers.progress import progress
from hisac_tf.data.importers.request_builder import (
    COUNTERS,
    EVENT_FIELDS,
    RequestBuilder,
)
from hisac_tf.data.importers.request_formation import form_requests
from hisac_tf.data.importers.split_labels import (
    check_planned,
    check_written,
    window_labels,
)
from hisac_tf.data.importers.time_split import (
    SPLITS,
    assign_splits,
    split_boundaries,
    split_end,
)
from hisac_tf.data.feature_stats import (FEATURE_STATS_FILE,
                                         DenseStatistics,
                                         write_feature_stats)
from hisac_tf.data.importers.event_columns import feature_column
from hisac_tf.data.importers.feature_columns import log_features
from hisac_tf.data.importers.user_table import (declared_user_features,
                                                read_users)
from hisac_tf.data.shard_writer import ShardedWriter, shard_name
from hisac_tf.data.vocabulary import read_vocabulary

SUMMARY_FILE = "summary.json"


def split_patterns(cfg: Config) -> dict[str, str]:
    """Split name -> file pattern (`data.*_pattern`)."""
    data = cfg.data
    return {"train": data.train_pattern, "valid": data.valid_pattern,
            "eval": data.eval_pattern}


def _existing_outputs(cfg: Config) -> list[str]:
    found = []
    patterns = list(split_patterns(cfg).values())
    for pattern in patterns + [cfg.data.item_table_pattern, SUMMARY_FILE,
                               FEATURE_STATS_FILE]:
        found += tf.io.gfile.glob(os.path.join(cfg.data.data_dir, pattern))
    return sorted(found)


class _UserHistories:
    """The items each user interacted with before their current request.

    Requests of one user must come in time order; a user's set grows with
    each request and is freed after their last one.
    """

    def __init__(self, items: np.ndarray, users: np.ndarray):
        self.items = items  # [E] sorted by (user, time).
        self.left = collections.Counter(users.tolist())  # Requests to go.
        self.sets: dict[int, tuple[set[int], list[int]]] = {}

    def before(self, user: int, user_start: int, start: int) -> set[int]:
        items, upto = self.sets.setdefault(user, (set(), [user_start]))
        items.update(self.items[upto[0]:start].tolist())
        upto[0] = start
        self.left[user] -= 1
        if not self.left[user]:
            del self.sets[user]
        return items


def prepare_import(cfg: Config, engine: str = "local") -> list[str]:
    """What both engines do before reading: checks the input, N, C and the
    file patterns, prints the resolved settings, makes `data.data_dir`;
    returns the outputs already there (FileExistsError unless
    `importer.overwrite`). Declared features are imported by the local
    engine only (ConfigError for another `engine`)."""
    imp, data = cfg.importer, cfg.data
    if cfg.features and engine != "local":
        raise ConfigError(
            f"the {engine} engine does not import declared features yet "
            f"({[f.name for f in cfg.features]}); use --engine=local")
    if not imp.input.strip():
        raise ConfigError(
            "importer.input must name at least one file or pattern "
            f"(--input), got {imp.input!r}")
    FeatureSpec(data.max_history, data.max_candidates,  # Checks them.
                with_true_ctr=False, features=cfg.all_features,
                record_keys=tuple(data.record_keys))
    for f in cfg.all_features:  # Missing or repeated vocabulary lines.
        if f.vocabulary_file:
            read_vocabulary(f)
    for pattern in list(split_patterns(cfg).values()) + [
            data.item_table_pattern]:
        shard_name(pattern, 0, imp.num_shards)  # Checks the pattern.
    print(format_settings(cfg), file=sys.stderr, flush=True)
    out_dir = data.data_dir
    filesystems.ensure_filesystem(out_dir)
    tf.io.gfile.makedirs(out_dir)
    stale = _existing_outputs(cfg)
    if stale and not imp.overwrite:
        raise FileExistsError(
            f"data.data_dir {out_dir!r} already holds outputs ({stale[0]}, "
            f"... {len(stale)} files); pass --overwrite "
            "(importer.overwrite=true) to replace them"
        )
    return stale


STAGING_DIR = ".hisac-import-staging"


def import_logs(cfg: Config) -> dict:
    """Imports the logs of `cfg.importer`; returns (and writes) the summary.

    Every output is written into a staging directory inside
    `data.data_dir` and moved into place only once the import has
    succeeded, so a failed import leaves no half-written split, item
    table or statistics (and the outputs of an earlier import stay).

    Raises ConfigError for settings that cannot be used, FileExistsError
    when `data.data_dir` holds outputs and `importer.overwrite` is off,
    FileNotFoundError for a missing input, DataError (BadRowError) for bad
    input.
    """
    stale = prepare_import(cfg)
    final_dir = cfg.data.data_dir
    staging = os.path.join(final_dir, STAGING_DIR)
    if tf.io.gfile.exists(staging):  # Left by a killed import.
        tf.io.gfile.rmtree(staging)
    tf.io.gfile.makedirs(staging)
    try:
        summary = _import_into(cfg, staging)
        for path in stale:  # Only once the whole import has succeeded.
            tf.io.gfile.remove(path)
        for name in sorted(tf.io.gfile.listdir(staging)):
            tf.io.gfile.rename(os.path.join(staging, name),
                               os.path.join(final_dir, name), overwrite=True)
    finally:
        if tf.io.gfile.exists(staging):
            tf.io.gfile.rmtree(staging)
    print(format_summary(summary), file=sys.stderr, flush=True)
    return summary


def _final_paths(files: dict, staging: str, final_dir: str) -> dict:
    return {k: [os.path.join(final_dir, os.path.relpath(p, staging))
                for p in v] for k, v in files.items()}


def _import_into(cfg: Config, out_dir: str) -> dict:
    """The import itself, every output into `out_dir` (the staging dir)."""
    imp, data = cfg.importer, cfg.data
    started = time.time()
    patterns = split_patterns(cfg)
    if any(f.location == "item" for f in cfg.features) and not imp.items:
        raise ConfigError(
            "item features "
            f"{[f.name for f in cfg.features if f.location == 'item']} are "
            "read from the item table: give it (--items, importer.items)")

    events, summary = read_events(imp, cfg.all_features)
    users, user_counts = read_users(imp.users, data.user_features,
                                    imp.delimiter, imp.skip_bad_rows,
                                    declared_user_features(cfg))
    if not len(events["user_id"]):
        raise DataError(f"no valid events in {imp.input!r}")
    ev, req = form_requests(events, imp.request_window_s)
    del events
    ts = ev["timestamp"]
    t_order = np.lexsort((np.arange(len(ts)), ts))  # Stable time order.
    ts_by_time = ts[t_order]
    sampler = NegativeSampler(ev["item_id"][t_order],
                              ev["category_id"][t_order], ts_by_time,
                              imp.seed)
    del t_order

    end_ts, past_end = split_end(ts_by_time)
    bounds = split_boundaries(imp, end_ts)
    progress(format_boundaries(bounds.valid_start, bounds.eval_start,
                               int(ts_by_time[-1])))
    hist_len = req.start - req.user_start  # [R] events before the request.
    keep = hist_len >= imp.min_history
    split_index = assign_splits(req.time, bounds)  # [R]
    order = np.lexsort((req.user, req.time))  # Requests in time order.
    order = order[keep[order]]
    written = ["train", "valid", "eval"]
    if bounds.valid_start is None:
        written.remove("valid")
    rows_of = {s: order[split_index[order] == SPLITS.index(s)]
               for s in written}
    configured = {"train"} | {s for s, start in (
        ("valid", bounds.valid_start), ("eval", bounds.eval_start))
        if start is not None}
    check_planned(rows_of, configured, *window_labels(
        ev["item_id"], ev["behavior_type"], req.start, req.end,
        imp.positive_ids, data.max_candidates), imp, req.time)
    item_counts = (write_items(imp.items, out_dir, data.item_table_pattern,
                               data.compression, imp.header, imp.delimiter,
                               imp.skip_bad_rows, cfg.all_features)
                   if imp.items else None)
    dense = (item_counts.pop("dense_statistics", {}) if item_counts
             else {})
    dense.update(_log_statistics(cfg, ev, bounds, users))
    if dense:
        write_feature_stats(out_dir, dense, split="train")

    histories = _UserHistories(ev["item_id"], req.user[order])
    builder = RequestBuilder(cfg, sampler, users)
    splits: dict[str, dict] = {}
    files: dict[str, list[str]] = {}
    columns = {k: ev[k] for k in EVENT_FIELDS}
    columns.update({feature_column(f): ev[feature_column(f)]
                    for f in log_features(cfg.all_features)})
    starts, ends = req.start.tolist(), req.end.tolist()
    user_starts, times = req.user_start.tolist(), req.time.tolist()
    request_users = req.user.tolist()
    done = 0
    for split in written:
        rows = rows_of[split]
        stats = collections.Counter(requests=len(rows))
        with ShardedWriter(out_dir, patterns[split], imp.num_shards,
                           len(rows), data.compression) as writer:
            for r in rows.tolist():
                s, u0, user = starts[r], user_starts[r], request_users[r]
                built = builder.build(columns, s, ends[r], u0, user,
                                      times[r], histories.before(user, u0, s))
                writer.write(built.record)
                stats["impressions"] += built.impressions
                stats["positives"] += built.positives
                done += 1
                if done % imp.progress_every == 0:
                    progress(f"{done} of {len(order)} requests written")
        files[split] = writer.paths
        splits[split] = dict(stats)

    try:
        check_written(splits, configured, imp)
    except DataError:
        for paths in files.values():  # Refused: nothing half-written stays.
            for path in paths:
                tf.io.gfile.remove(path)
        if item_counts:
            tf.io.gfile.remove(item_counts["file"])
        raise
    if item_counts:
        files["items"] = [item_counts["file"]]
    files = _final_paths(files, out_dir, data.data_dir)
    if item_counts:
        item_counts["file"] = files["items"][0]
    totals = {key: sum(s.get(key, 0) for s in splits.values())
              for key in ("requests", "impressions", "positives")}
    summary.update({
        "users": int(len(np.unique(ev["user_id"]))),
        "items_in_log": int(len(np.unique(ev["item_id"]))),
        "time_range": [int(ts_by_time[0]), int(ts_by_time[-1])],
        "split_end_ts": end_ts,
        "events_after_split_end": past_end,
        "valid_start_ts": bounds.valid_start,
        "eval_start_ts": bounds.eval_start,
        **totals,
        "requests_dropped_short_history": int((~keep).sum()),
        **{key: int(builder.counters[key]) for key in COUNTERS},
        "splits": splits,
        "user_table": user_counts,
        "item_table": item_counts,
        "files": files,
        "config": cfg.to_dict(),
    })
    summary["warnings"] = lossy_warnings(summary, cfg)
    summary["seconds"] = round(time.time() - started, 3)
    json_io.write_json(os.path.join(out_dir, SUMMARY_FILE), summary,
                       sort_keys=True)
    return summary


def _log_statistics(cfg: Config, ev: dict, bounds, users: dict) -> dict:
    """DenseStatistics of the dense event/context features over the train
    period's events (before the valid or eval start) and of the dense
    declared user features over the user table."""
    out = {}
    end = min([b for b in (bounds.valid_start, bounds.eval_start)
               if b is not None], default=None)
    train = (np.ones(len(ev["timestamp"]), bool) if end is None
             else ev["timestamp"] < end)
    for f in log_features(cfg.features):
        if f.kind == "dense":
            out[f.name] = DenseStatistics().add(
                ev[feature_column(f)][train])
    declared = declared_user_features(cfg)
    offset = len(cfg.data.user_features)
    for k, f in enumerate(declared):
        if f.kind == "dense":
            out[f.name] = DenseStatistics().add(
                [row[offset + k] for row in users.values()])
    return out
