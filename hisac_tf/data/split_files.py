"""The request shards of one split, or an error saying what was expected.

Jobs never make data up when it is missing (docs/design.md §4): training,
evaluation and inspection read `data.data_dir/data.<split>_pattern` and,
when nothing matches, stop with the directory, the pattern and the jobs
that write it. Synthetic data is generated only when asked
(`hisac-generate`, `hisac-demo`, `hisac-experiment
--experiment_generate_data`).

Every shard of a split must hold a record (`check_shards`): TensorFlow
reads a 0-byte GZIP file as no records, so a lost or truncated shard
would otherwise shrink the split silently. A 0-byte GZIP or ZLIB file is
always refused (an empty compressed TFRecord file written by TensorFlow
is 20 or 8 bytes); a record-less shard unless `data.allow_empty_shards`
names the split; a split whose shards are all empty is refused as empty.
Each file's first record is read, not the whole file.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import DataConfig
from hisac_tf.data import input_pipeline
from hisac_tf.data.data_summary import first_record
from hisac_tf.data.feature_spec import DataError

SPLIT_PATTERNS = {"train": "train_pattern", "valid": "valid_pattern",
                  "eval": "eval_pattern"}


def split_files(data: DataConfig, split: str) -> list[str]:
    """Sorted files of `split` (train, valid or eval) under data.data_dir.

    Raises:
      ValueError: an unknown split.
      FileNotFoundError: nothing matches; names data.data_dir, the pattern
        and what should be there.
      DataError: an unreadable or empty shard (`check_shards`).
    """
    if split not in SPLIT_PATTERNS:
        raise ValueError(f"split must be one of {sorted(SPLIT_PATTERNS)}, "
                         f"got {split!r}")
    key = SPLIT_PATTERNS[split]
    pattern = getattr(data, key)
    path = os.path.join(data.data_dir, pattern)
    try:
        files = input_pipeline.list_files(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"no {split} data: nothing matches {path!r} (data.data_dir="
            f"{data.data_dir!r}, data.{key}={pattern!r}); expected the "
            f"request-level TFRecord shards that hisac-import or "
            "hisac-generate write there. Check the path (--set "
            "data.data_dir=...); no data is generated in its place."
        ) from e
    check_shards(files, data, split)
    return files


# What to change when a whole split holds no requests.
_EMPTY_SPLIT_HINTS = {
    "train": "import or generate the data again",
    "valid": "import with a wider valid split: importer.valid_days / "
             "importer.valid_start_ts, or set training.valid_every=0",
    "eval": "import with a wider eval split: importer.eval_days / "
            "importer.eval_start_ts",
}


def check_shards(files: Sequence[str], data: DataConfig,
                 split: str) -> None:
    """Refuses an unreadable or empty shard of `split`, naming it.

    Reads each file's first record (a few files at once). A 0-byte file
    under data.compression GZIP or ZLIB is refused always, a shard
    without records unless data.allow_empty_shards holds `split` (then
    they are listed on stderr), and a split without any record always.

    Raises:
      DataError: naming the file, what is wrong, and how many of the
        split's files are affected.
    """
    files = list(files)
    with concurrent.futures.ThreadPoolExecutor(
            max(1, min(16, len(files)))) as pool:
        firsts = list(pool.map(
            lambda f: first_record(f, data.compression), files))
    empty = [f for f, record in zip(files, firsts) if record is None]
    if not empty:
        return
    of_split = (f"({len(empty)} of the {len(files)} file(s) of the {split} "
                "split hold no records)")
    if data.compression in ("GZIP", "ZLIB"):
        for path in empty:
            if tf.io.gfile.stat(path).length == 0:
                raise DataError(
                    f"{path}: is 0 bytes: not a {data.compression} TFRecord "
                    "file (an empty one written by TensorFlow is not 0 "
                    "bytes), so a failed or interrupted write; write it "
                    f"again or remove it {of_split}")
    if len(empty) == len(files):
        pattern = getattr(data, SPLIT_PATTERNS[split])
        raise DataError(
            f"the {split} split is empty: the {len(files)} file(s) matching "
            f"{pattern!r} in {data.data_dir!r} hold no requests "
            f"({_EMPTY_SPLIT_HINTS[split]})")
    if split not in data.allow_empty_shards:
        raise DataError(
            f"{empty[0]}: holds no records {of_split}; a lost or truncated "
            "shard would shrink the split silently. If the split is meant "
            "to have empty shards (an import with more shards than "
            f"requests), set data.allow_empty_shards=[\"{split}\"]")
    print(f"note: {len(empty)} record-less shard(s) of the {split} split "
          f"accepted (data.allow_empty_shards): {', '.join(empty)}",
          file=sys.stderr)
