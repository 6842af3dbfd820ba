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
"""

from __future__ import annotations

import sys

from absl import flags

from hisac_tf.config import Config
from hisac_tf.data.data_summary import summarize_data
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
}


def main(cfg: Config) -> dict:
    return summarize_data(cfg)


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
    if not fl.raw:
        return main(cfg)
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
