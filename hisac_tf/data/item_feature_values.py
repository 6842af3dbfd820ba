"""`ItemFeatureValues`: the static item features of the item table.

docs/design.md §4.1: item features (brand, shop, price, tags, the content
vector) live once per item in the item table and are looked up in the
graph for candidates and every history position, so a 10,000-item history
never repeats them. This is the numpy side of that table: the model's
`ItemFeatureLookup` holds it as frozen weights.

Layout (V items):
    item_ids                     [V] int64, sorted ascending, unique, >= 1
    columns[name], per kind:
      categorical                [V] int64 or object (bytes)
      multi_categorical          [V, M] int64 (0 = none) or object (b"")
      dense                      [V] float32
      vector                     [V, dim] float32
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from hisac_tf.feature_config import FeatureConfig


class ItemFeatureError(ValueError):
    """Item-table feature values that break the layout; names the feature."""


@dataclasses.dataclass(frozen=True)
class ItemFeatureValues:
    """Per-item values of the declared item features (layout above)."""

    item_ids: np.ndarray
    columns: Mapping[str, np.ndarray]

    def check(self, features: Sequence[FeatureConfig]) -> "ItemFeatureValues":
        """Checks the layout against the item features; returns self."""
        ids = np.asarray(self.item_ids)
        if ids.ndim != 1 or ids.dtype != np.int64:
            raise ItemFeatureError(
                f"item_ids must be int64 [V], got {ids.dtype} {ids.shape}")
        if ids.size and (ids[0] < 1 or np.any(np.diff(ids) <= 0)):
            raise ItemFeatureError(
                "item_ids must be sorted, unique and >= 1")
        v = ids.shape[0]
        for f in features:
            if f.location != "item":
                continue
            if f.name not in self.columns:
                raise ItemFeatureError(
                    f"item feature {f.name!r} (column {f.record_key!r}) is "
                    "not in the item table")
            col = np.asarray(self.columns[f.name])
            want = {
                "categorical": (v,),
                "multi_categorical": (v, f.max_values),
                "dense": (v,),
                "vector": (v, f.dim),
            }[f.kind]
            if col.shape != want:
                raise ItemFeatureError(
                    f"item feature {f.name!r} must have shape {want}, got "
                    f"{col.shape}")
            if f.is_categorical:
                ok = (col.dtype == object if f.dtype == "string"
                      else col.dtype == np.int64)
            else:
                ok = col.dtype == np.float32 and bool(np.all(np.isfinite(
                    col)))
            if not ok:
                raise ItemFeatureError(
                    f"item feature {f.name!r} ({f.kind}, {f.dtype}) has "
                    f"values of dtype {col.dtype}"
                    + ("" if f.is_categorical else " or non-finite values"))
        return self

    @classmethod
    def empty(cls) -> "ItemFeatureValues":
        return cls(np.zeros([0], np.int64), {})
