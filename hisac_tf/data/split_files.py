"""The request shards of one split, or an error saying what was expected.

Jobs never make data up when it is missing (docs/design.md §4): training,
evaluation and inspection read `data.data_dir/data.<split>_pattern` and,
when nothing matches, stop with the directory, the pattern and the jobs
that write it. Synthetic data is generated only when asked
(`hisac-generate`, `hisac-demo`, `hisac-experiment
--experiment_generate_data`).
"""

from __future__ import annotations

import os

from hisac_tf.config import DataConfig
from hisac_tf.data import input_pipeline

SPLIT_PATTERNS = {"train": "train_pattern", "valid": "valid_pattern",
                  "eval": "eval_pattern"}


def split_files(data: DataConfig, split: str) -> list[str]:
    """Sorted files of `split` (train, valid or eval) under data.data_dir.

    Raises:
      ValueError: an unknown split.
      FileNotFoundError: nothing matches; names data.data_dir, the pattern
        and what should be there.
    """
    if split not in SPLIT_PATTERNS:
        raise ValueError(f"split must be one of {sorted(SPLIT_PATTERNS)}, "
                         f"got {split!r}")
    key = SPLIT_PATTERNS[split]
    pattern = getattr(data, key)
    path = os.path.join(data.data_dir, pattern)
    try:
        return input_pipeline.list_files(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"no {split} data: nothing matches {path!r} (data.data_dir="
            f"{data.data_dir!r}, data.{key}={pattern!r}); expected the "
            f"request-level TFRecord shards that hisac-import or "
            "hisac-generate write there. Check the path (--set "
            "data.data_dir=...); no data is generated in its place."
        ) from e
