"""`import_logs_beam`: the import job as an Apache Beam pipeline.

Same inputs, config, records and summary as the single-process
`log_importer.import_logs` (tested record for record); the runner comes
from standard Beam pipeline options (`--runner=DirectRunner
--direct_num_workers=4 --direct_running_mode=multi_processing`, or a
Flink, Spark or Dataflow runner; docs/data_at_scale.md).

    files ─ ReadLogFile ─┬─ (user, raw events) ─ GroupByKey ─ UserEvents ─┐
                         ├─ raw timestamps ─ ConcatTimestamps ─ unit ──────┤
                         └─ read counts ─ SumCounts ──────┐                │
      valid events per user ─ UserRequests ─ WriteShards  │  (staged)      │
      popularity per user ─ MergePopularity ─ table, log_split (side ins.) │
      per-user counts, split plans ─ counts JSON ─ check_plans /           │
      check_written in the launcher (refused: nothing committed) ──────────┘

The log is cleaned as `log_reader.read_events` cleans it (unit by the
median of all raw timestamps, range filter, duplicates counted and
dropped inside each user's group, `user_events`); the split end is
`split_end` over all valid timestamps (`log_timestamps`), and an empty
or one-label split is refused with the single-process checks and
message, so the records and the summary (but `seconds`) are the same.

Differences from the single-process importer: records are the same per
split, but their order within a split and their shard (crc32 of the
record) differ (`shard_writer_fn`). Outputs are staged under
`data_dir/.staging-*` and moved into `data_dir` only when the pipeline
succeeded (`staged_output`). The user table is read by the launching
process and is a side input (it must fit a worker), as is the popularity
table (`popularity_combine`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from hisac_tf import json_io
from hisac_tf.config import Config, ImporterConfig
from hisac_tf.data.beam_import.count_combine import SumCounts
from hisac_tf.data.beam_import.log_file_events import (
    RAW_TIMESTAMPS,
    READ_COUNTS,
    ReadLogFile,
)
from hisac_tf.data.beam_import.log_timestamps import (
    ConcatTimestamps,
    log_split,
)
from hisac_tf.data.beam_import.popularity_combine import MergePopularity
from hisac_tf.data.beam_import.shard_writer_fn import WriteShards
from hisac_tf.data.beam_import.staged_output import StagedOutput
from hisac_tf.data.beam_import.user_events import (
    EVENT_COUNTS,
    OUT_OF_RANGE,
    POPULARITY,
    UserEvents,
)
from hisac_tf.data.beam_import.user_requests import (
    PLANS,
    STATS,
    UserRequests,
)
from hisac_tf.data.importers.import_summary import (
    format_summary,
    lossy_warnings,
)
from hisac_tf.data.importers.item_table import write_items
from hisac_tf.data.importers.log_importer import (
    SUMMARY_FILE,
    prepare_import,
    split_patterns,
)
from hisac_tf.data.importers.log_reader import expand_inputs
from hisac_tf.data.importers.popularity_table import PopularityTable
from hisac_tf.data.importers.request_builder import COUNTERS
from hisac_tf.data.importers.split_labels import (
    check_plans,
    check_written,
    merge_plans,
)
from hisac_tf.data.importers.time_split import SPLITS
from hisac_tf.data.importers.timestamps import detect_unit
from hisac_tf.data.importers.user_table import read_users
from hisac_tf.data.shard_writer import shard_name

COUNTS_FILE = "beam_counts.json"


def _log_counts(stats: dict, read: dict, events: dict, examples: list,
                table: PopularityTable, log_split: dict, plans: dict,
                unit: str) -> dict:
    """The pipeline's counts, in the summary's keys."""
    bounds = log_split["bounds"]
    return {
        "read": read, "requests": stats, "events": events, "plans": plans,
        "timestamp_unit": unit,
        "timestamps_out_of_range_examples": [
            raw for _, _, raw in sorted(examples)],
        "items_in_log": int(len(np.unique(table.items))),
        "time_range": [int(table.ts[0]), int(table.ts[-1])],
        "split_end_ts": log_split["split_end_ts"],
        "events_after_split_end": log_split["events_after_split_end"],
        "valid_start_ts": bounds.valid_start,
        "eval_start_ts": bounds.eval_start,
    }


def written_splits(imp: ImporterConfig) -> list[str]:
    """The splits written: valid only when configured."""
    if imp.valid_start_ts is None and imp.valid_days == 0:
        return ["train", "eval"]
    return list(SPLITS)


def _merge_plans(plans) -> dict:
    return functools.reduce(merge_plans, plans, {})


def build_pipeline(p: beam.Pipeline, cfg: Config, files: Sequence[str],
                   users: dict, out_dir: str) -> None:
    """Adds the import's transforms to `p`, writing into `out_dir`."""
    imp, data = cfg.importer, cfg.data
    read = (p | "Files" >> beam.Create(list(enumerate(files)))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(ReadLogFile(imp)).with_outputs(
                RAW_TIMESTAMPS, READ_COUNTS, main="events"))
    if imp.timestamp_unit == "auto":
        unit = (read[RAW_TIMESTAMPS]
                | "AllTimestamps" >> beam.CombineGlobally(ConcatTimestamps())
                | "Unit" >> beam.Map(detect_unit))
    else:
        unit = p | "Unit" >> beam.Create([imp.timestamp_unit])
    valid = (read.events | "ByUser" >> beam.GroupByKey()
             | "Clean" >> beam.ParDo(
                 UserEvents(imp), beam.pvalue.AsSingleton(unit)).with_outputs(
                     POPULARITY, EVENT_COUNTS, OUT_OF_RANGE, main="events"))
    table = valid[POPULARITY] | "Popularity" >> beam.CombineGlobally(
        MergePopularity())
    log_split_ = table | "Split" >> beam.Map(log_split, imp)
    user_table = p | "UserTable" >> beam.Create([users])
    requests = (
        valid.events | "Requests" >> beam.ParDo(
            UserRequests(cfg), beam.pvalue.AsSingleton(table),
            beam.pvalue.AsSingleton(log_split_),
            beam.pvalue.AsSingleton(user_table)).with_outputs(
                STATS, PLANS, *SPLITS))
    patterns = split_patterns(cfg)
    for split in written_splits(imp):
        _ = requests[split] | f"Write{split}" >> WriteShards(
            out_dir, patterns[split], imp.num_shards, data.compression)

    def single(name: str, pcoll, combine):
        return beam.pvalue.AsSingleton(pcoll | name >> beam.CombineGlobally(
            combine))

    _ = (requests[STATS] | "Counts" >> beam.CombineGlobally(SumCounts())
         | "LogCounts" >> beam.Map(
             _log_counts,
             single("ReadCounts", read[READ_COUNTS], SumCounts()),
             single("EventCounts", valid[EVENT_COUNTS], SumCounts()),
             single("Examples", valid[OUT_OF_RANGE],
                    beam.combiners.TopCombineFn(3, reverse=True)),
             beam.pvalue.AsSingleton(table),
             beam.pvalue.AsSingleton(log_split_),
             single("Plans", requests[PLANS], _merge_plans),
             beam.pvalue.AsSingleton(unit))
         | "Json" >> beam.Map(json.dumps)
         | "WriteCounts" >> beam.io.WriteToText(
             os.path.join(out_dir, COUNTS_FILE), num_shards=1,
             shard_name_template=""))


def _summary(cfg: Config, files: list[str], counts: dict,
             user_counts: dict, item_counts: dict | None) -> dict:
    """The single-process importer's summary from the pipeline's counts."""
    imp, out_dir = cfg.importer, cfg.data.data_dir
    read, req, events = counts["read"], counts["requests"], counts["events"]
    written = written_splits(imp)
    splits = {s: {"requests": 0, **req.get("splits", {}).get(s, {})}
              for s in written}
    paths = {s: [os.path.join(out_dir, shard_name(split_patterns(cfg)[s], k,
                                                  imp.num_shards))
                 for k in range(imp.num_shards)] for s in written}
    if item_counts:
        paths["items"] = [item_counts["file"]]
    totals = {key: sum(s.get(key, 0) for s in splits.values())
              for key in ("requests", "impressions", "positives")}
    return {
        "inputs": files, "rows_read": read.get("rows_read", 0),
        "events": events.get("events", 0),
        "skipped_rows": read.get("skipped_rows", 0),
        "skipped_by_reason": dict(sorted(
            read.get("skipped_by_reason", {}).items())),
        "timestamp_unit": counts["timestamp_unit"]
        if imp.timestamp_unit != "auto"
        else f"{counts['timestamp_unit']} (auto)",
        "timestamps_out_of_range": events.get("timestamps_out_of_range", 0),
        "timestamps_out_of_range_examples": counts[
            "timestamps_out_of_range_examples"],
        "duplicate_events": events.get("duplicate_events", 0),
        "duplicate_events_dropped": events.get("duplicate_events", 0)
        if imp.drop_duplicates else 0,
        "split_end_ts": counts["split_end_ts"],
        "events_after_split_end": counts["events_after_split_end"],
        "users": req.get("users", 0),
        "items_in_log": counts["items_in_log"],
        "time_range": counts["time_range"],
        "valid_start_ts": counts["valid_start_ts"],
        "eval_start_ts": counts["eval_start_ts"],
        **totals,
        "requests_dropped_short_history": req.get(
            "requests_dropped_short_history", 0),
        **{key: int(req.get(key, 0)) for key in COUNTERS},
        "splits": splits,
        "user_table": user_counts,
        "item_table": item_counts,
        "files": paths,
        "config": cfg.to_dict(),
    }


def _check_splits(cfg: Config, counts: dict) -> None:
    """Refuses an empty or one-label split as the single-process importer
    (`check_plans`, then `check_written`): DataError, nothing committed."""
    imp = cfg.importer
    written = written_splits(imp)
    bounds = {"valid": counts["valid_start_ts"],
              "eval": counts["eval_start_ts"]}
    configured = {"train"} | {s for s, b in bounds.items() if b is not None}
    check_plans(counts["plans"], written, configured, imp)
    splits = counts["requests"].get("splits", {})
    check_written({s: splits.get(s, {}) for s in written}, configured, imp)


def import_logs_beam(cfg: Config, pipeline_args: Sequence[str] = ()
                     ) -> dict:
    """Imports `cfg.importer`'s logs on Beam; returns (writes) the summary.

    `pipeline_args`: Beam pipeline options (`--runner=...`); default the
    DirectRunner. Raises as `import_logs` (ConfigError, FileExistsError,
    FileNotFoundError, DataError) and leaves no output when it fails.
    """
    imp, data = cfg.importer, cfg.data
    started = time.time()
    stale = prepare_import(cfg, engine="beam")
    out_dir = data.data_dir
    files = expand_inputs(imp.input)
    users, user_counts = read_users(imp.users, data.user_features,
                                    imp.delimiter, imp.skip_bad_rows)
    staged = StagedOutput(out_dir)
    try:
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as p:
            build_pipeline(p, cfg, files, users, staged.path)
        counts_path = os.path.join(staged.path, COUNTS_FILE)
        with tf.io.gfile.GFile(counts_path) as f:
            counts = json.loads(f.read())
        tf.io.gfile.remove(counts_path)
        _check_splits(cfg, counts)
        item_counts = None
        if imp.items:
            item_counts = write_items(
                imp.items, staged.path, data.item_table_pattern,
                data.compression, imp.header, imp.delimiter,
                imp.skip_bad_rows)
            item_counts["file"] = os.path.join(
                out_dir, os.path.basename(item_counts["file"]))
        summary = _summary(cfg, files, counts, user_counts, item_counts)
        summary["warnings"] = lossy_warnings(summary, cfg)
        summary["seconds"] = round(time.time() - started, 3)
        json_io.write_json(os.path.join(staged.path, SUMMARY_FILE), summary,
                           sort_keys=True)
        for path in stale:  # Only once the pipeline succeeded.
            tf.io.gfile.remove(path)
        staged.commit(last=SUMMARY_FILE)
    finally:
        staged.discard()
    print(format_summary(summary), file=sys.stderr, flush=True)
    return summary
