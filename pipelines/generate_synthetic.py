"""Job `hisac-generate`: writes the synthetic data set of a config.

    hisac-generate --config=demo --set synthetic.num_users=500 \
        --output_dir=/tmp/demo_data

Writes train/(valid/)eval request shards, the item table, `summary.json` and the
resolved `config.json` into `--output_dir` (default `data.data_dir`) and
prints the Bayes-optimal AUC/GAUC and the history-window oracle curve of
each split (see hisac_tf/data/synthetic/ for the world it simulates).

With `--format=userbehavior` it writes the same world as a raw log instead,
the input of `hisac-import`: events.csv (user_id,item_id,category_id,
behavior_type,timestamp), items.csv and users.csv into `--output_dir`
(default `<data.data_dir>/../raw_log`); see
hisac_tf/data/synthetic/raw_log.py.

    hisac-generate --config=tiny --format=userbehavior --output_dir=raw
"""

from __future__ import annotations

import os
import sys

from absl import flags

from hisac_tf.config import Config
from hisac_tf.data import synthetic
from hisac_tf.data.synthetic.raw_log import format_raw_log, write_raw_log
from pipelines import cli

_FLAGS = {
    "output_dir": (str, None, "Output directory (default: data.data_dir)."),
    "progress": (bool, True, "Print a progress line every ~5% of users."),
    "format": (str, "records", "records: request TFRecords for training; "
               "userbehavior: a raw CSV log (events, items, users) for "
               "hisac-import."),
}
FORMATS = ("records", "userbehavior")
RAW_LOG_DIR = "raw_log"  # Beside data.data_dir by default.


def _define_flags() -> None:
    """Defines this job's flags once (only when it is the CLI)."""
    definers = {str: flags.DEFINE_string, bool: flags.DEFINE_bool}
    for name, (kind, default, text) in _FLAGS.items():
        if name not in flags.FLAGS:
            definers[kind](name, default, text)


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def format_summary(summary: dict) -> str:
    """A few lines: counts, CTR and the Bayes-optimal AUC/GAUC per split."""
    lines = [
        f"synthetic data in {summary['output_dir']} "
        f"({summary['seconds']:.1f} s): {summary['users']} users, "
        f"{summary['items']} items, {summary['subtopics']} sub-topics",
        f"  history at request: mean {summary['history_mean']:.1f}, "
        f"median {summary['history_median']:.0f}, max "
        f"{summary['history_max']}, {summary['histories_over_max_history']}"
        f" longer than max_history={summary['max_history']}",
    ]
    for split in ("train", "valid", "eval"):
        if split not in summary:  # No valid split unless valid_fraction.
            continue
        s = summary[split]
        lines.append(
            f"  {split:5s}: {s['requests']} requests, {s['impressions']} "
            f"impressions, CTR {s['ctr']:.3f}; Bayes-optimal AUC "
            f"{_fmt(s['bayes_auc'])}, GAUC {_fmt(s['bayes_gauc'])}"
        )
        if "bayes_auc_without_side_features" in s:
            lines.append(
                "         Bayes AUC without the side-feature terms "
                f"{_fmt(s['bayes_auc_without_side_features'])}")
        curve = ", ".join(f"{r['window']}: {_fmt(r['auc'])}"
                          for r in s["history_window_oracle"])
        lines.append(f"         oracle AUC, newest W behaviours: {curve}")
    return "\n".join(lines)


def main(cfg: Config, output_dir: str | None = None,
         progress: bool = True) -> dict:
    """Generates the data set and prints its summary; returns the summary."""
    summary = synthetic.generate(cfg, output_dir, progress=progress)
    print(format_summary(summary), file=sys.stdout, flush=True)
    return summary


def main_raw_log(cfg: Config, output_dir: str | None = None,
                 progress: bool = True) -> dict:
    """Writes the world as a raw UserBehavior log; returns its summary."""
    out = output_dir or os.path.join(
        os.path.dirname(cfg.data.data_dir.rstrip("/")), RAW_LOG_DIR)
    summary = write_raw_log(cfg, out, progress=progress)
    print(format_raw_log(summary), file=sys.stdout, flush=True)
    return summary


def _main_from_flags(cfg: Config) -> dict | int:
    fl = flags.FLAGS
    if fl.format not in FORMATS:
        print(f"--format must be one of {FORMATS}, got {fl.format!r}",
              file=sys.stderr)
        return 2
    if fl.format == "userbehavior":
        return main_raw_log(cfg, fl.output_dir or None, fl.progress)
    return main(cfg, fl.output_dir or None, fl.progress)


def run() -> None:
    """`hisac-generate`: --config/--set as every job, plus the flags above."""
    _define_flags()
    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
