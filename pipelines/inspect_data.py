"""Job `hisac-inspect`: statistics of request records, or of a raw log.

Default: calls `hisac_tf.data.data_summary.summarize_data`: the train and
eval shards of `data` are read through the training input pipeline and
summarised into `<data_dir>/inspect.json`.

`--raw`: calls `hisac_tf.data.importers.raw_log_stats.raw_log_stats` on the
raw log that `hisac-import` would read (the importer's flags apply:
`--input`, `--eval_days`, `--min_history`, ...) and prints, for a few
request windows and C values, the requests per split and the candidates
kept and truncated, to choose `--request_window_s` and `--max_candidates`
before importing:

    hisac-inspect --config=demo --raw --input=raw/events.csv \
        [--raw_windows=600,3600,86400] [--raw_candidates=10,20,50]

With declared features (the config's `features` section) the default run
also prints per feature its coverage, cardinality, OOV share and dense
statistics on the train split (`hisac_tf.data.feature_inspection`);
`--write_stats` writes those dense statistics to
`<data_dir>/feature_stats.json` (for records that came with none).

`--schema`: checks every record of the train, valid and eval files (or
`--schema_files`) against the config (data.record_keys, the features and
their keys) and names every missing or mistyped field or feature with its
first file and record and how many records share it; exits with an error
when there is any (`hisac_tf.data.schema_check`):

    hisac-inspect --config=my.json --schema [--schema_files='x/*.gz']
"""

from __future__ import annotations

import sys

from absl import flags

from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.data.data_summary import summarize_data
from hisac_tf.data.feature_inspection import (dense_statistics,
                                              format_feature_table,
                                              inspect_features, split_paths)
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data.feature_stats import write_feature_stats
from hisac_tf.data.schema_check import check_schema as check_records
from hisac_tf.data.importers.raw_log_stats import (format_raw_log_stats,
                                                   raw_log_stats)
from pipelines import cli, import_logs

_FLAGS = {
    "raw": (flags.DEFINE_bool, False,
            "Statistics of the raw log --input instead of the records."),
    "raw_windows": (flags.DEFINE_list, None,
                    "Request windows (s) to try with --raw (default: 600, "
                    "3600, 86400 and importer.request_window_s)."),
    "raw_candidates": (flags.DEFINE_list, None,
                       "C values to try with --raw (default: C/2, C, 2C, "
                       "4C)."),
    "schema": (flags.DEFINE_bool, False,
               "Check the records against the config's keys and types."),
    "schema_files": (flags.DEFINE_list, None,
                     "Files or globs to check with --schema (default: the "
                     "train, valid and eval files of data.data_dir)."),
    "write_stats": (flags.DEFINE_bool, False,
                    "Write the dense features' train statistics to "
                    "<data_dir>/feature_stats.json."),
}


def main(cfg: Config, write_stats: bool = False) -> dict:
    summary = summarize_data(cfg)
    if cfg.features or write_stats:
        report = inspect_features(cfg, split_paths(cfg, "train"))
        print("features (train split; item features: the item table):\n"
              + format_feature_table(report), file=sys.stdout, flush=True)
        summary["features"] = report
        if write_stats:
            path = write_feature_stats(cfg.data.data_dir,
                                       dense_statistics(report))
            print(f"wrote {path}", file=sys.stdout, flush=True)
    return summary


def check_schema(cfg: Config, files: list[str] | None = None,
                 raise_errors: bool = False) -> list[str]:
    """Prints and returns the schema problems of `files` (default: every
    split's files); raises DataError with them when `raise_errors`."""
    if files is None:
        files = []
        for split in ("train", "valid", "eval"):
            try:
                files += split_paths(cfg, split)
            except FileNotFoundError:
                continue
    if not files:
        raise FileNotFoundError(
            f"no request files to check under {cfg.data.data_dir!r}")
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features,
                                   statistics=False)
    problems = check_records(spec, files, cfg.data.compression)
    head = (f"schema: {len(files)} file(s) checked against the config: "
            + (f"{len(problems)} problem(s)" if problems else "all fit"))
    print("\n  ".join([head, *problems]), file=sys.stdout, flush=True)
    if problems and raise_errors:
        raise DataError("records do not fit the config:\n  "
                        + "\n  ".join(problems))
    return problems


def main_raw(cfg: Config, windows: list[int] | None = None,
             candidates: list[int] | None = None) -> dict:
    """Prints and returns the raw log's request statistics."""
    stats = raw_log_stats(cfg, windows, candidates)
    print(format_raw_log_stats(stats), file=sys.stdout, flush=True)
    return stats


def _ints(values: list[str] | None, name: str) -> list[int] | None:
    try:
        return [int(v) for v in values] if values else None
    except ValueError:
        raise ValueError(f"--{name} must be integers, got {values}") from None


def _main_from_flags(cfg: Config) -> dict:
    fl = flags.FLAGS
    if fl.schema:
        files = (input_pipeline.list_files(fl.schema_files)
                 if fl.schema_files else None)
        return {"problems": check_schema(cfg, files, raise_errors=True)}
    if not fl.raw:
        return main(cfg, write_stats=fl.write_stats)
    values = {name: getattr(fl, name) for name in import_logs.flag_names()}
    return main_raw(import_logs.config_from_flags(cfg, values),
                    _ints(fl.raw_windows, "raw_windows"),
                    _ints(fl.raw_candidates, "raw_candidates"))


def run():
    """`hisac-inspect`: --config/--set as every job, plus the flags above."""
    import_logs.define_flags()
    for name, (define, default, text) in _FLAGS.items():
        if name not in flags.FLAGS:
            define(name, default, text)
    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
