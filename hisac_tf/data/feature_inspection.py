"""Per-feature statistics of the records and the item table.

docs/design.md §4.1. For every declared feature `inspect_features` gives
  coverage     the share of values present: requests (user/context),
               history positions (event) or items of the item table
               (item) with a value that is not padding, empty or NaN;
  cardinality  distinct values (categorical kinds);
  oov_share    the share of present values outside the vocabulary file
               (vocabulary features; hashed ones have no OOV);
  dense        count, missing, mean, std, min, max (dense and vector).
`hisac-inspect` prints them (`format_feature_table`) and, with
`--write_stats`, writes the dense statistics of the train split to
`data_dir/feature_stats.json` (feature_stats.py).
"""

from __future__ import annotations

import collections
import os
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.feature_stats import DenseStatistics
from hisac_tf.data.item_feature_loader import load_item_features
from hisac_tf.data.vocabulary import read_vocabulary
from hisac_tf.feature_config import FeatureConfig


class _Column:
    """Accumulates one feature's values."""

    def __init__(self, f: FeatureConfig):
        self.f = f
        self.slots = 0  # requests / positions / items looked at
        self.present = 0
        self.values: collections.Counter = collections.Counter()
        self.counted = 0  # present categorical values
        self.dense = DenseStatistics()

    def add(self, values: np.ndarray, present: np.ndarray) -> None:
        """values [n, ...]; present [n] bool (the slot holds a value)."""
        self.slots += int(present.size)
        self.present += int(present.sum())
        if self.f.is_categorical:
            flat = np.asarray(values)[present].ravel()
            pad = b"" if self.f.dtype == "string" else 0
            flat = flat[flat != pad]
            self.counted += int(flat.size)
            self.values.update(flat.tolist())
        else:
            self.dense.add(np.asarray(values, np.float64)[present])

    def result(self) -> dict:
        f = self.f
        out = {"location": f.location, "kind": f.kind, "dtype": f.dtype,
               "key": f.record_key, "slots": self.slots,
               "coverage": self.present / self.slots if self.slots
               else None}
        if f.is_categorical:
            out["cardinality"] = len(self.values)
            out["oov_share"] = None
            if f.vocabulary_file and self.counted:
                vocab = set(read_vocabulary(f))
                oov = {v: n for v, n in self.values.items()
                       if (v.decode("utf-8", "replace") if isinstance(
                           v, bytes) else v) not in vocab}
                # The share of the present values (occurrences) outside
                # the vocabulary, and the most frequent of them.
                out["oov_share"] = sum(oov.values()) / self.counted
                out["oov_values"] = [
                    v.decode("utf-8", "replace") if isinstance(v, bytes)
                    else v for v, _ in collections.Counter(oov)
                    .most_common(5)]
        else:
            out["dense"] = self.dense.to_dict()
        return out


def _present(f: FeatureConfig, values: np.ndarray) -> np.ndarray:
    """[n] whether each slot holds a value (not padding, empty or NaN)."""
    if f.is_categorical:
        pad = b"" if f.dtype == "string" else 0
        v = values != pad
        return v.reshape(v.shape[0], -1).any(axis=1) if v.ndim > 1 else v
    v = ~np.isnan(np.asarray(values, np.float64))
    return v.reshape(v.shape[0], -1).all(axis=1) if v.ndim > 1 else v


def inspect_features(cfg, files: Sequence[str],
                     max_requests: int = 0) -> dict:
    """{feature name: statistics} over request `files` and the item table.

    Args:
      cfg: the config (declared features, data section).
      files: request TFRecords (e.g. the train split).
      max_requests: > 0 reads at most that many requests.
    """
    spec = FeatureSpec.from_config(cfg.data, features=cfg.all_features,
                                   statistics=False)
    columns = {f.name: _Column(f) for f in spec.features}
    ds = tf.data.TFRecordDataset(list(files), cfg.data.compression)
    if max_requests:
        ds = ds.take(max_requests)
    for serialized in ds.batch(256):
        raw = spec.parse(serialized)
        for f in spec.request_features:
            t = raw[f.batch_key]
            if f.location == "event":
                values = t.flat_values.numpy()  # [positions(, dim)]
                if f.kind == "vector":
                    values = values.reshape(-1, f.dim)
                columns[f.name].add(values, _present(f, values))
            elif f.kind == "multi_categorical":
                pad = b"" if f.dtype == "string" else 0
                values = t.to_tensor(pad).numpy()  # [B, max m]
                if values.shape[1] == 0:
                    values = np.full((values.shape[0], 1), pad, object
                                     if f.dtype == "string" else np.int64)
                columns[f.name].add(values, _present(f, values))
            else:
                values = t.numpy()
                columns[f.name].add(values, _present(f, values))
    if spec.item_features:
        items = load_item_features(cfg.data, spec.features)
        for f in spec.item_features:
            values = items.columns[f.name]
            columns[f.name].add(values, _present(f, values))
    return {name: c.result() for name, c in columns.items()}


def dense_statistics(report: dict) -> dict:
    """The `dense` entries of an `inspect_features` report (for
    feature_stats.json)."""
    return {name: r["dense"] for name, r in report.items() if "dense" in r}


def format_feature_table(report: dict) -> str:
    lines = [f"{'feature':16s} {'location':8s} {'kind':17s} {'coverage':>8s}"
             f" {'distinct':>8s} {'OOV':>6s}  dense mean/std [min, max]"]
    for name, r in report.items():
        cov = "-" if r["coverage"] is None else f"{r['coverage']:.3f}"
        card = str(r.get("cardinality", "-"))
        oov = r.get("oov_share")
        oov = "-" if oov is None else f"{oov:.3f}"
        dense = ""
        d = r.get("dense")
        if d and d["count"]:
            dense = (f"{d['mean']:.4g}/{d['std']:.4g} "
                     f"[{d['min']:.4g}, {d['max']:.4g}]")
        lines.append(f"{name:16s} {r['location']:8s} {r['kind']:17s} "
                     f"{cov:>8s} {card:>8s} {oov:>6s}  {dense}")
    return "\n".join(lines)


def split_paths(cfg, split: str = "train") -> list[str]:
    pattern = getattr(cfg.data, f"{split}_pattern")
    return input_pipeline.list_files(os.path.join(cfg.data.data_dir,
                                                  pattern))
