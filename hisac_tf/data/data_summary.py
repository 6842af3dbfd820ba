"""Read request-level TFRecords back and summarise them.

`summarize_data(cfg)` reads the train and eval shards of `cfg.data`
through the same input pipeline that training uses (parsing, contract
checks, truncation to the newest N, padding) and writes `inspect.json`
beside the data. A record that breaks the contract stops with an error
naming the file, the record and the field.
"""

from __future__ import annotations

import os
import re
import sys

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import DataError, FeatureSpec


def first_record(path: str, compression: str) -> bytes | None:
    """The first serialized record of `path`; None when it has none.

    Raises DataError naming `path` when it cannot be read as a TFRecord
    file of `compression` (random bytes, truncated, or a plain file named
    `.gz`).
    """
    try:
        for record in tf.data.TFRecordDataset(path, compression).take(1):
            return record.numpy()
    except tf.errors.OpError as e:
        raise DataError(
            f"{path}: not a readable TFRecord file with data.compression="
            f"{compression!r} (corrupt, truncated or compressed otherwise; "
            f"{type(e).__name__}: {_op_message(e)})"
        ) from None
    return None


def _op_message(error: tf.errors.OpError) -> str:
    """The first line of a TF error, without its op and function names."""
    text = error.message.strip().splitlines()[0] if error.message else ""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text)


def has_true_ctr(path: str, compression: str) -> bool:
    """Whether the first record of `path` carries `true_ctr` (DataError
    naming `path` when it is not a readable TFRecord file)."""
    record = first_record(path, compression)
    if record is None:
        return False
    example = tf.train.Example.FromString(record)
    return "true_ctr" in example.features.feature


def summarize_split(cfg: Config, pattern: str) -> dict:
    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, pattern)
    )
    spec = FeatureSpec.from_config(
        cfg.data, with_true_ctr=has_true_ctr(files[0], cfg.data.compression),
        features=cfg.all_features, statistics=False)
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=256, compression=cfg.data.compression,
        deterministic=True,
    )
    batches = input_pipeline.iterate(ds, files, spec, cfg.data.compression)
    summary = input_pipeline.summarize(batches)
    summary["files"] = len(files)
    return summary


def summarize_data(cfg: Config) -> dict:
    """Summaries of the train and eval splits; writes inspect.json."""
    results = {
        "train": summarize_split(cfg, cfg.data.train_pattern),
        "eval": summarize_split(cfg, cfg.data.eval_pattern),
        "max_history": cfg.data.max_history,
    }
    path = os.path.join(cfg.data.data_dir, "inspect.json")
    json_io.write_json(path, results)
    print(format_summary(results), file=sys.stderr)
    return results


def format_summary(results: dict) -> str:
    rows = ["split  requests  users  impressions  ctr     hist_mean  "
            "hist_max  truncated  empty"]
    for split in ("train", "eval"):
        s = results[split]
        rows.append(
            f"{split:<6} {s['requests']:>8}  {s['users']:>5}  "
            f"{s['impressions']:>11}  {s['ctr']:.4f}  "
            f"{s['history_length_mean']:>9.1f}  {s['history_length_max']:>8}"
            f"  {s['histories_truncated']:>9}  {s['histories_empty']:>5}"
        )
    return "\n".join(rows)
