"""Job `hisac-import`: raw behaviour logs -> request-level TFRecords.

The work is `hisac_tf.data.importers.log_importer.import_logs` (its
docstring holds the contract). Settings come from the config's `importer`
and `data` sections (`--config`, `--set importer.valid_days=7`); the flags
below override them: `--output_dir`, `--max_history` and
`--max_candidates` set `data.data_dir`, `data.max_history` (N) and
`data.max_candidates` (C), the FeatureSpec that training reads the
records with; every other flag sets `importer.<flag>`.

    hisac-import --config=demo --input='logs/*.csv' --items=items.csv \
        --output_dir=runs/mylog/data --valid_days=1 --eval_days=1

`--engine=beam` runs the same import as an Apache Beam pipeline
(`hisac_tf.data.beam_import`, docs/data_at_scale.md), on the runner of
the standard Beam options `--runner`, `--direct_num_workers` and
`--direct_running_mode`, plus any others in `--beam_pipeline_args`:

    hisac-import --engine=beam --runner=DirectRunner --direct_num_workers=4 \
        --direct_running_mode=multi_processing --input='logs/*.parquet' ...
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
from absl import flags

from hisac_tf.config import Config
from hisac_tf.data.importers.log_importer import import_logs
from pipelines import cli

try:  # The `beam` extra (pip install hisac_tf[beam]).
    from hisac_tf.data.beam_import.beam_importer import import_logs_beam
except ImportError as missing:  # pragma: no cover
    import_logs_beam = None
    _BEAM_MISSING = str(missing)

# Flags that set `data.<key>`: the records' FeatureSpec and directory.
DATA_FLAGS = {"output_dir": "data_dir", "max_history": "max_history",
              "max_candidates": "max_candidates"}
_FLAG_HELP = {
    "input": (str, "Log file(s): comma-separated paths or glob patterns."),
    "format": (str, "csv, parquet or auto (by file extension)."),
    "items": (str, "Optional item table (.csv or .parquet)."),
    "users": (str, "Optional user table (.csv or .parquet)."),
    "output_dir": (str, "Output directory (data.data_dir)."),
    "header": (str, "CSV header row: auto, yes or no."),
    "delimiter": (str, "CSV field delimiter."),
    "max_history": (int, "N, newest history events kept (data.max_history)."),
    "max_candidates": (int, "C, candidates per request "
                            "(data.max_candidates)."),
    "request_window_s": (int, "Request window in seconds."),
    "negatives_per_request": (int, "Sampled negatives per request."),
    "exclude_history_from_negatives": (
        bool, "Never sample a negative from the user's history."),
    "positive_behaviors": (str, "Comma-separated positive behaviours."),
    "eval_days": (int, "Newest days of the log that go to eval (test)."),
    "eval_start_ts": (int, "Eval cut-off timestamp (overrides eval_days)."),
    "valid_days": (int, "Days before eval that go to valid (0: none)."),
    "valid_start_ts": (int, "Valid cut-off timestamp (overrides "
                            "valid_days)."),
    "min_history": (int, "Drop requests with a shorter history."),
    "num_shards": (int, "Shards per split."),
    "seed": (int, "Negative-sampling seed."),
    "skip_bad_rows": (bool, "Skip and count bad rows instead of failing."),
    "overwrite": (bool, "Replace outputs already in output_dir."),
    "timestamp_unit": (str, "Timestamp unit: auto, s, ms, us or ns."),
    "min_timestamp": (int, "Drop events before this time (seconds)."),
    "max_timestamp": (int, "Drop events after this time (seconds)."),
    "drop_duplicates": (bool, "Drop exact duplicate rows (first kept)."),
    "allow_single_class_split": (
        bool, "Write a split with one label only instead of failing."),
    "progress_every": (int, "Log progress every this many rows/requests."),
    "warn_share": (float, "Warn when more than this share is lost."),
    "warn_min_requests": (int, "Warn for a split with fewer requests."),
    "warn_min_impressions": (int, "Warn for a split with fewer "
                                  "impressions."),
}
# The engine and the Beam pipeline options it passes on (not config).
BEAM_FLAGS = {
    "engine": (str, "local (one process) or beam (Apache Beam pipeline)."),
    "runner": (str, "Beam runner: DirectRunner, FlinkRunner, SparkRunner, "
                    "DataflowRunner."),
    "direct_num_workers": (int, "DirectRunner workers (0: one per CPU)."),
    "direct_running_mode": (str, "DirectRunner mode: in_memory, "
                                 "multi_threading or multi_processing."),
    "beam_pipeline_args": (str, "Further Beam pipeline options, e.g. "
                                "'--project=p --region=r'."),
}


def define_flags() -> None:
    """Defines the importer's flags once (only when it is the CLI).

    Not at import time: the demo job imports every job, and flags such as
    --seed must not be defined twice in one process.
    """
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
                bool: flags.DEFINE_bool, float: flags.DEFINE_float}
    for name, (kind, text) in {**_FLAG_HELP, **BEAM_FLAGS}.items():
        if name not in flags.FLAGS:
            definers[kind](name, None, text)


def flag_names() -> list[str]:
    """The importer's flags (`hisac-inspect --raw` takes them too)."""
    return list(_FLAG_HELP)


def config_from_flags(cfg: Config, values: dict[str, Any]) -> Config:
    """`cfg` with the flags that were given (not None) applied."""
    data: dict[str, Any] = {}
    importer: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name in DATA_FLAGS:
            data[DATA_FLAGS[name]] = value
        elif name == "positive_behaviors":
            importer[name] = [v.strip() for v in value.split(",")
                              if v.strip()]
        else:
            importer[name] = value
    return cfg.replace(data=data, importer=importer)


def beam_args(values: dict[str, Any]) -> list[str]:
    """The Beam pipeline options among the given `BEAM_FLAGS`."""
    args = [f"--{name}={values[name]}" for name in
            ("runner", "direct_num_workers", "direct_running_mode")
            if values.get(name) is not None]
    return args + shlex.split(values.get("beam_pipeline_args") or "")


def main(cfg: Config) -> dict:
    """Imports with `cfg` and the flags; returns the summary."""
    if not flags.FLAGS["config"].present:
        print(f"note: no --config given: importing with the default preset "
              f"{flags.FLAGS.config!r} (its N, C and splits); pass the "
              "preset you will train with, e.g. --config=demo",
              file=sys.stderr, flush=True)
    values = {name: getattr(flags.FLAGS, name) for name in _FLAG_HELP}
    cfg = config_from_flags(cfg, values)
    engine = flags.FLAGS.engine or "local"
    if engine == "beam":
        if import_logs_beam is None:
            raise ImportError(
                f"--engine=beam needs Apache Beam ({_BEAM_MISSING}); "
                "pip install 'hisac_tf[beam]'")
        beam = {name: getattr(flags.FLAGS, name) for name in BEAM_FLAGS}
        return import_logs_beam(cfg, beam_args(beam))
    if engine != "local":
        raise ValueError(f"--engine must be local or beam, got {engine!r}")
    return import_logs(cfg)


def run() -> None:
    """`hisac-import`: --config/--set as every job, plus the flags above."""
    define_flags()
    cli.run(main)


if __name__ == "__main__":
    run()
