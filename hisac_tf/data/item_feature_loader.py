"""`load_item_features`: the item table's feature columns as numpy.

docs/design.md §4.1. Item features live once per item in the item table
(`data.data_dir/data.item_table_pattern`, one `tf.train.Example` per
item), each under its record key (`features[...].key`, default the
name): int64 or bytes for categorical ones, a list for multi_categorical,
one float for dense, `dim` floats for vector. The importer and the
synthetic generator write those columns; the model looks them up for
candidates and every history position (`ItemFeatureValues`).
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import ITEM_ID, DataError
from hisac_tf.data.item_feature_values import ItemFeatureValues
from hisac_tf.feature_config import FeatureConfig

_KINDS = {"int64": "int64_list", "string": "bytes_list"}


def load_item_features(data_cfg, features: Sequence[FeatureConfig],
                       files: Sequence[str] | None = None
                       ) -> ItemFeatureValues:
    """Reads the item features of `features` from the item table.

    Args:
      data_cfg: `cfg.data` (data_dir, item_table_pattern, compression).
      features: the declared features (others than item ones are skipped).
      files: the item table files (default: the pattern under data_dir).
    Returns:
      the `ItemFeatureValues` (empty when no item feature is declared),
      checked against `features`.
    Raises:
      DataError: a missing column, a wrong dtype or length, a NaN dense
        value without a default, or an item id twice; names the feature,
        its key, the file and the record.
    """
    item_features = [f for f in features if f.location == "item"]
    if not item_features:
        return ItemFeatureValues.empty()
    if files is None:
        files = input_pipeline.list_files(os.path.join(
            data_cfg.data_dir, data_cfg.item_table_pattern))
    ids: list[int] = []
    columns: dict[str, list] = {f.name: [] for f in item_features}
    first_seen: dict[int, str] = {}
    for path in files:
        records = tf.data.TFRecordDataset(
            path, compression_type=data_cfg.compression)
        for index, record in enumerate(records.as_numpy_iterator()):
            where = f"{path}:{index}"
            feats = tf.train.Example.FromString(record).features.feature
            if ITEM_ID not in feats or len(
                    feats[ITEM_ID].int64_list.value) != 1:
                raise DataError(f"{where}: the item table needs one int64 "
                                f"{ITEM_ID!r} per record")
            item = int(feats[ITEM_ID].int64_list.value[0])
            if item in first_seen:
                raise DataError(f"{where}: item {item} is already in "
                                f"{first_seen[item]}")
            first_seen[item] = where
            ids.append(item)
            for f in item_features:
                columns[f.name].append(_value(f, feats, where))
    order = np.argsort(np.asarray(ids, np.int64), kind="stable")
    out = {}
    for f in item_features:
        col = columns[f.name]
        if f.is_categorical and f.dtype == "string":
            arr = np.empty((len(col),) + (
                (f.max_values,) if f.kind == "multi_categorical" else ()),
                object)
            for i, v in enumerate(col):
                arr[i] = v
        elif f.is_categorical:
            arr = np.asarray(col, np.int64).reshape(
                (len(col), f.max_values) if f.kind == "multi_categorical"
                else (len(col),))
        else:
            arr = np.asarray(col, np.float32).reshape(
                (len(col), f.dim) if f.kind == "vector" else (len(col),))
        out[f.name] = arr[order]
    values = ItemFeatureValues(np.asarray(ids, np.int64)[order], out)
    return values.check(features)


def _value(f: FeatureConfig, feats, where: str):
    """One item's value of feature `f`, in the column's layout."""
    what = f"feature {f.name!r} (key {f.record_key!r})"
    if f.record_key not in feats:
        if f.kind in ("dense", "vector") and f.default is not None:
            return [f.default] * f.dim if f.kind == "vector" else f.default
        raise DataError(f"{where}: missing item {what}")
    want = _KINDS[f.dtype] if f.is_categorical else "float_list"
    kind = feats[f.record_key].WhichOneof("kind")
    if kind != want:
        raise DataError(f"{where}: item {what} has type {kind}, expected "
                        f"{want}")
    values = list(getattr(feats[f.record_key], want).value)
    if f.kind == "multi_categorical":
        pad = b"" if f.dtype == "string" else 0
        values = values[:f.max_values]
        return values + [pad] * (f.max_values - len(values))
    width = f.dim if f.kind == "vector" else 1
    if len(values) != width:
        raise DataError(f"{where}: item {what} must hold {width} value(s), "
                        f"got {len(values)}")
    if not f.is_categorical:
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            if f.default is None:
                raise DataError(
                    f"{where}: item {what} is {bad[0]} and the feature has "
                    "no default")
            values = [f.default if not math.isfinite(v) else v
                      for v in values]
    return values if f.kind == "vector" else values[0]

