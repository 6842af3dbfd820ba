"""Dense feature statistics: `data_dir/feature_stats.json`.

docs/design.md §4.1. A dense feature with `transform` standardize (or
log1p_standardize) is standardised inside the graph with a mean and std;
the config may give them, else they come from the statistics the importer
and the synthetic generator write beside the records, computed on the
train split only (so the valid and eval splits do not leak into the
model). `hisac-inspect` prints them again for any split.

File layout (strict JSON):

    {"split": "train",
     "features": {"<name>": {"count": int, "missing": int,
                             "mean": float, "std": float,
                             "min": float, "max": float,
                             "log1p_mean": float | null,
                             "log1p_std": float | null}}}

`log1p_*` are the statistics of log1p(x), null when some x <= -1.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import posixpath
from typing import Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.feature_config import FeatureConfig
from hisac_tf.json_io import write_json

FEATURE_STATS_FILE = "feature_stats.json"


class FeatureStatsError(ValueError):
    """Statistics a standardised feature needs but cannot get; names the
    feature and the file."""


class DenseStatistics:
    """Streaming count, mean, std, min and max of one dense feature.

    NaN values are counted as missing and left out of the moments; a
    vector feature counts each of its floats.
    """

    def __init__(self):
        self.count = 0
        self.missing = 0
        self._sum = 0.0
        self._sq = 0.0
        self._log_sum = 0.0
        self._log_sq = 0.0
        self._log_ok = True
        self.min = math.inf
        self.max = -math.inf

    def add(self, values) -> "DenseStatistics":
        x = np.asarray(values, np.float64).ravel()
        nan = np.isnan(x)
        self.missing += int(nan.sum())
        x = x[~nan]
        if not x.size:
            return self
        self.count += int(x.size)
        self._sum += float(x.sum())
        self._sq += float(np.square(x).sum())
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        if self._log_ok and float(x.min()) > -1.0:
            logs = np.log1p(x)
            self._log_sum += float(logs.sum())
            self._log_sq += float(np.square(logs).sum())
        else:
            self._log_ok = False
        return self

    @staticmethod
    def _moments(total: float, sq: float, n: int) -> tuple[float, float]:
        mean = total / n
        return mean, math.sqrt(max(sq / n - mean * mean, 0.0))

    def to_dict(self) -> dict:
        if not self.count:
            return {"count": 0, "missing": self.missing, "mean": None,
                    "std": None, "min": None, "max": None,
                    "log1p_mean": None, "log1p_std": None}
        mean, std = self._moments(self._sum, self._sq, self.count)
        out = {"count": self.count, "missing": self.missing, "mean": mean,
               "std": std, "min": self.min, "max": self.max,
               "log1p_mean": None, "log1p_std": None}
        if self._log_ok:
            out["log1p_mean"], out["log1p_std"] = self._moments(
                self._log_sum, self._log_sq, self.count)
        return out


def stats_path(data_dir: str) -> str:
    join = posixpath.join if "://" in data_dir else os.path.join
    return join(data_dir, FEATURE_STATS_FILE)


def write_feature_stats(out_dir: str,
                        stats: Mapping[str, DenseStatistics | dict],
                        split: str = "train") -> str:
    """Writes `feature_stats.json` into `out_dir`; returns its path."""
    body = {name: s.to_dict() if isinstance(s, DenseStatistics) else s
            for name, s in stats.items()}
    return write_json(stats_path(out_dir),
                      {"split": split, "features": body})


def read_feature_stats(data_dir: str) -> dict | None:
    """{feature: statistics} of `data_dir/feature_stats.json`, or None
    when there is no such file."""
    path = stats_path(data_dir)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        try:
            body = json.load(f)
        except ValueError as e:
            raise FeatureStatsError(f"{path} is not JSON: {e}") from None
    if not isinstance(body, dict) or not isinstance(
            body.get("features"), dict):
        raise FeatureStatsError(
            f"{path} must hold {{'features': {{name: statistics}}}}")
    return body["features"]


def resolve_statistics(features: Sequence[FeatureConfig],
                       data_dir: str) -> tuple[FeatureConfig, ...]:
    """Fills mean/std of standardised dense features from the statistics.

    A feature whose config gives both keeps them. A constant feature
    (std 0) gets std 1 (its standardised value is then 0). Raises
    FeatureStatsError naming the feature and the file when the file or
    the feature's entry is missing.
    """
    features = tuple(features)
    need = [f for f in features
            if f.uses_statistics and (f.mean is None or f.std is None)]
    if not need:
        return features
    path = stats_path(data_dir)
    stats = read_feature_stats(data_dir)
    out = []
    for f in features:
        if f not in need:
            out.append(f)
            continue
        if stats is None:
            raise FeatureStatsError(
                f"feature {f.name!r} ({f.transform}) needs its mean and "
                f"std: give them in the config, or write {path} "
                "(hisac-import, hisac-generate or hisac-inspect "
                "--write_stats)")
        entry = stats.get(f.name)
        prefix = "log1p_" if f.transform == "log1p_standardize" else ""
        mean = entry.get(prefix + "mean") if isinstance(entry, dict) else (
            None)
        std = entry.get(prefix + "std") if isinstance(entry, dict) else None
        if mean is None or std is None:
            raise FeatureStatsError(
                f"feature {f.name!r} ({f.transform}) has no {prefix}mean/"
                f"{prefix}std in {path} (entry: {entry!r})")
        out.append(dataclasses.replace(
            f, mean=float(f.mean if f.mean is not None else mean),
            std=float(f.std if f.std is not None else (std if std > 0
                                                       else 1.0))))
    return tuple(out)
