"""Declared features as importer columns (docs/design.md §4.1).

Each declared feature is read from the column named by its record key
(`features[...].key`, default its name; header names are matched
case-insensitively):

    location  table                       value in the records
    event     the log row (--input)       hist_<name>: one per history event
    context   the log row (--input)       <name>: the request's first event
    item      the item table (--items)    the item table, looked up later
    user      the user table (--users)    <name>: the user's row

Cell values:
    categorical int64   an integer (empty: 0, "none")
    categorical string  any text, kept as UTF-8 bytes (empty: b"")
    multi_categorical   values separated by "|" in CSV, a list in Parquet
    dense               a number; empty, null or NaN is the feature's
                        `default`, or a bad row naming the column when
                        there is none
    vector              `dim` numbers separated by "|" (CSV) or a list
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from hisac_tf.data.importers.bad_rows import BadValue
from hisac_tf.data.importers.field_values import int_value
from hisac_tf.feature_config import FeatureConfig

SEPARATOR = "|"


def column_name(f: FeatureConfig) -> str:
    """The column a feature reads (lower case: headers are matched so)."""
    return f.record_key.lower()


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _parts(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    text = _text(value).strip()
    return [p.strip() for p in text.split(SEPARATOR)] if text else []


def _one(f: FeatureConfig, value: Any, column: str):
    if f.dtype == "string":
        return _text(value).strip().encode("utf-8")
    if value is None or not _text(value).strip():
        return 0
    return int_value(value, column, 0)


def parse_feature_value(f: FeatureConfig, value: Any, column: str = ""):
    """One cell -> the feature's plain value (`feature_values` takes it).

    Raises BadValue naming the column (and the feature) for a value that
    does not fit the feature.
    """
    column = column or f"{column_name(f)} (feature {f.name!r})"
    if f.kind == "categorical":
        return _one(f, value, column)
    if f.kind == "multi_categorical":
        values = [_one(f, v, column) for v in _parts(value)]
        pad = b"" if f.dtype == "string" else 0
        return [v for v in values if v != pad][:f.max_values]
    if f.kind == "dense":
        text = _text(value).strip()
        number = math.nan
        if text and not isinstance(value, (int, float)):
            try:
                number = float(text)
            except ValueError:
                raise BadValue(column, value, "is not a number") from None
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        if not math.isfinite(number):
            if f.default is None:
                raise BadValue(column, value, "is missing or not finite "
                               "and the feature has no default")
            number = float(f.default)
        return number
    # vector
    parts = _parts(value)
    if not parts and f.default is not None:
        return [float(f.default)] * f.dim
    try:
        numbers = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise BadValue(column, value, "is not a list of numbers") from None
    if len(numbers) != f.dim or not all(map(math.isfinite, numbers)):
        raise BadValue(column, value, f"must hold {f.dim} finite numbers")
    return numbers


def missing_value(f: FeatureConfig):
    """The value of a row that lacks the feature (e.g. a user not in the
    user table): padding for categorical kinds, the default or NaN for
    dense and vector ones (NaN without a default stops training with an
    error naming the feature and the record)."""
    if f.kind == "categorical":
        return b"" if f.dtype == "string" else 0
    if f.kind == "multi_categorical":
        return []
    fill = math.nan if f.default is None else float(f.default)
    return fill if f.kind == "dense" else [fill] * f.dim


def log_features(features: Sequence[FeatureConfig]
                 ) -> tuple[FeatureConfig, ...]:
    """The features read from the log rows (event and context)."""
    return tuple(f for f in features if f.location in ("event", "context"))


def as_array(f: FeatureConfig, values: list) -> np.ndarray:
    """A column of parsed values as [E] (int64, float64 or object)."""
    if f.kind == "categorical" and f.dtype == "int64":
        return np.asarray(values, np.int64)
    if f.kind == "dense":
        return np.asarray(values, np.float64)
    out = np.empty(len(values), object)
    for i, v in enumerate(values):
        out[i] = v
    return out
