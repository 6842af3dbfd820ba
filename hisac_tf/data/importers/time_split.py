"""Train / valid / eval by request time (eval is the held-out test split).

eval holds the requests with `request_time >= eval_start`, valid those in
`[valid_start, eval_start)`, train the rest: eval is the newest stretch,
valid the one just before it, so a model is selected on valid and reported
on eval without either seeing the future of its training data.

The day-based boundaries count back from the log's end, taken robustly
(`split_end`): the newest timestamp within the outlier fence
`q99 + (q99 - q1)` (the 1 % and 99 % quantiles of the event times), so a
few stray future timestamps (under 1 % of the events) do not move the
splits and empty them; such events still land in eval and are counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hisac_tf.config import ConfigError, ImporterConfig

SECONDS_PER_DAY = 86400
SPLITS = ("train", "valid", "eval")
FENCE_QUANTILES = (0.01, 0.99)


def split_end(ts_sorted: np.ndarray) -> tuple[int, int]:
    """(robust end of the log, events after it) for [E] sorted times.

    The end is the newest timestamp <= q99 + (q99 - q1) (quantiles of the
    event times, `FENCE_QUANTILES`); the count is of the events beyond.
    """
    low, high = np.quantile(ts_sorted, FENCE_QUANTILES)
    fence = high + (high - low)
    inside = int(np.searchsorted(ts_sorted, fence, side="right"))
    return int(ts_sorted[inside - 1]), len(ts_sorted) - inside


@dataclasses.dataclass(frozen=True)
class SplitBoundaries:
    """First timestamps of valid and eval; None: that split is empty."""

    valid_start: int | None
    eval_start: int | None


def split_boundaries(cfg: ImporterConfig, last_ts: int) -> SplitBoundaries:
    """The boundaries of `cfg` for a log whose newest event is `last_ts`.

    eval_start = `eval_start_ts`, else `last_ts - eval_days` days (None
    when eval_days is 0). valid_start = `valid_start_ts`, else
    `valid_days` days before eval_start (before `last_ts` when there is
    no eval split; None when valid_days is 0).
    """
    if cfg.eval_start_ts is not None:
        eval_start = int(cfg.eval_start_ts)
    elif cfg.eval_days > 0:
        eval_start = int(last_ts) - cfg.eval_days * SECONDS_PER_DAY
    else:
        eval_start = None
    if cfg.valid_start_ts is not None:
        valid_start = int(cfg.valid_start_ts)
    elif cfg.valid_days > 0:
        end = eval_start if eval_start is not None else int(last_ts)
        valid_start = end - cfg.valid_days * SECONDS_PER_DAY
    else:
        valid_start = None
    if (valid_start is not None and eval_start is not None
            and valid_start > eval_start):
        raise ConfigError(
            f"importer.valid_start_ts ({valid_start}) must be <= the eval "
            f"start ({eval_start}, importer.eval_start_ts / eval_days)"
        )
    return SplitBoundaries(valid_start, eval_start)


def assign_splits(times: np.ndarray, bounds: SplitBoundaries
                  ) -> np.ndarray:
    """[R] request times -> [R] split index into `SPLITS` (0, 1 or 2)."""
    split = np.zeros(len(times), np.int64)
    if bounds.valid_start is not None:
        split[times >= bounds.valid_start] = 1
    if bounds.eval_start is not None:
        split[times >= bounds.eval_start] = 2
    return split
