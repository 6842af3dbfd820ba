"""`FeatureConfig`: one declared feature of the `features` config section.

docs/design.md §4.1. Beside the core request fields (user id, request
time, per history item its id, category, behaviour and timestamp, per
candidate its id and category), a log carries its own features. Each is
declared once, by name, and everything is derived from that declaration:
the record parse spec and padded batch (`FeatureSpec`), the importer's
columns, the model's embeddings and transforms, the serving signatures and
the request limits.

Where a feature lives (`location`) fixes where its values are found and
which part of the model sees it:

    location  values in the batch        model
    user      <name> [B] (or [B, M])     the head
    context   <name> [B] (or [B, M])     the head (the request's context)
    event     hist_<name> [B, N]         h_i of history items
    item      nothing: looked up in the  h_i of history items and the
              item table by item id      candidate embedding

Kinds:
    categorical        one id, int64 or string, hashed (`hash_buckets`)
                       or looked up in a vocabulary file (one value a
                       line; out-of-vocabulary values share one row and
                       are counted)
    multi_categorical  up to `max_values` ids, pooled (`combiner`)
    dense              one float, transformed in the graph (`transform`:
                       none, log1p, standardize, log1p_standardize, then
                       clipped to [clip_min, clip_max] when set)
    vector             `dim` floats, e.g. the item's content embedding;
                       the model uses it frozen, through a learned
                       projection

`table` names the embedding table; features naming the same table share
it (they must then agree on dtype, vocabulary and dimension). History and
candidate items always share an item feature's table.

`key` is the record key (request TFRecords) or column (CSV/Parquet, item
table) the values come from; it defaults to the name (`hist_<name>` for
event features), so a log's own names map onto features without renaming.

Config stops at the model boundary: layers take plain values, and this
module imports neither TensorFlow nor the model.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, Sequence

LOCATIONS = ("user", "context", "item", "event")
KINDS = ("categorical", "multi_categorical", "dense", "vector")
DTYPES = ("int64", "string")
TRANSFORMS = ("none", "log1p", "standardize", "log1p_standardize")
COMBINERS = ("mean", "sum")
# Buckets of a default user feature (data.user_features), as before the
# `features` section existed: exports and checkpoints keep their shapes.
DEFAULT_USER_FEATURE_BUCKETS = 128
# Names the core request fields use; a declared feature may not take them.
RESERVED_NAMES = frozenset({
    "user_id", "request_time", "item_id", "category_id", "behavior",
    "timestamp", "labels", "true_ctr", "hist_length", "hist_raw_length",
    "cand_count",
})
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class FeatureConfigError(ValueError):
    """A declared feature that cannot be used; names the feature and key."""


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """One declared feature (see the module docstring for the fields)."""

    name: str
    location: str
    kind: str = "categorical"
    dtype: str = "int64"
    key: str = ""
    hash_buckets: int = 0
    vocabulary_file: str = ""
    embedding_dim: int = 0  # 0: model.embedding_dim
    table: str = ""  # "": the feature's own table, named after it
    max_values: int = 0  # multi_categorical: values kept per row
    combiner: str = "mean"
    transform: str = "none"
    clip_min: float | None = None
    clip_max: float | None = None
    # Statistics of `standardize`; None: from the importer's or
    # hisac-inspect's feature statistics (data_dir/feature_stats.json).
    mean: float | None = None
    std: float | None = None
    # The value of a missing or NaN dense entry; None: such an entry is
    # an error naming the feature and the record.
    default: float | None = None
    dim: int = 1  # vector: width

    # ------------------------------------------------------------ derived
    @property
    def record_key(self) -> str:
        """The TFRecord key or column the values are read from."""
        if self.key:
            return self.key
        return f"hist_{self.name}" if self.location == "event" else self.name

    @property
    def batch_key(self) -> str:
        """The padded batch's (and the model inputs') name."""
        return f"hist_{self.name}" if self.location == "event" else self.name

    @property
    def table_name(self) -> str:
        return self.table or self.name

    @property
    def is_categorical(self) -> bool:
        return self.kind in ("categorical", "multi_categorical")

    @property
    def in_request(self) -> bool:
        """Whether requests carry the values (item features do not)."""
        return self.location != "item"

    @property
    def uses_statistics(self) -> bool:
        return self.kind == "dense" and "standardize" in self.transform

    def table_signature(self, default_dim: int) -> tuple:
        """What features sharing one table must agree on."""
        return (self.dtype, self.hash_buckets, self.vocabulary_file,
                self.embedding_dim or default_dim)

    # --------------------------------------------------------- validation
    def validate(self, where: str = "features") -> "FeatureConfig":
        """Checks every field; errors name `where[name].field`."""
        at = f"{where}[{self.name!r}]"

        def bad(field: str, what: str) -> None:
            raise FeatureConfigError(
                f"{at}.{field} {what}, got {getattr(self, field)!r}")

        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise FeatureConfigError(
                f"{where}: a feature name must match [A-Za-z][A-Za-z0-9_]*, "
                f"got {self.name!r}")
        if self.name in RESERVED_NAMES or self.name.startswith(
                ("hist_", "cand_")):
            raise FeatureConfigError(
                f"{where}: feature name {self.name!r} is reserved (core "
                "request fields and the hist_/cand_ prefixes)")
        if self.location not in LOCATIONS:
            bad("location", f"must be one of {list(LOCATIONS)}")
        if self.kind not in KINDS:
            bad("kind", f"must be one of {list(KINDS)}")
        if self.dtype not in DTYPES:
            bad("dtype", f"must be one of {list(DTYPES)}")
        if self.key and not self.key.strip():
            bad("key", "must be a record key or column name")
        for field in ("hash_buckets", "embedding_dim", "max_values"):
            if getattr(self, field) < 0:
                bad(field, "must be >= 0")
        if self.is_categorical:
            if bool(self.hash_buckets) == bool(self.vocabulary_file):
                raise FeatureConfigError(
                    f"{at} is {self.kind}: give exactly one of "
                    f"hash_buckets (> 1) or vocabulary_file, got "
                    f"hash_buckets={self.hash_buckets!r}, "
                    f"vocabulary_file={self.vocabulary_file!r}")
            if self.hash_buckets == 1:
                bad("hash_buckets", "must be >= 2 (row 0 is padding)")
            if self.combiner not in COMBINERS:
                bad("combiner", f"must be one of {list(COMBINERS)}")
        else:
            if self.dtype != "int64":
                bad("dtype", f"is for categorical kinds; a {self.kind} "
                             "feature holds floats (leave it out)")
            if self.hash_buckets or self.vocabulary_file:
                raise FeatureConfigError(
                    f"{at} is {self.kind}: hash_buckets and "
                    "vocabulary_file are for categorical kinds")
            if self.table:
                bad("table", f"is for categorical kinds, not {self.kind}")
        if self.kind == "multi_categorical":
            if self.max_values < 1:
                bad("max_values", "must be >= 1 for a multi_categorical "
                                  "feature")
            if self.location == "event":
                bad("kind", "multi_categorical is not supported for "
                            "event features (one value per history item)")
        elif self.max_values:
            bad("max_values", "is for multi_categorical features")
        if self.kind == "dense":
            if self.transform not in TRANSFORMS:
                bad("transform", f"must be one of {list(TRANSFORMS)}")
            if self.std is not None and not self.std > 0:
                bad("std", "must be > 0")
            for field in ("clip_min", "clip_max", "mean", "std", "default"):
                value = getattr(self, field)
                if value is not None and not math.isfinite(value):
                    bad(field, "must be a finite number")
            if (self.clip_min is not None and self.clip_max is not None
                    and self.clip_min >= self.clip_max):
                bad("clip_min", f"must be < clip_max ({self.clip_max})")
        else:
            for field in ("clip_min", "clip_max", "mean", "std"):
                if getattr(self, field) is not None:
                    bad(field, "is for dense features")
            if self.transform != "none":
                bad("transform", "is for dense features")
            if self.default is not None and self.kind != "vector":
                bad("default", "is for dense and vector features")
        if self.kind == "vector":
            if self.dim < 1:
                bad("dim", "must be >= 1")
        elif self.dim != 1:
            bad("dim", "is the width of a vector feature (leave it out)")
        return self


def default_features(user_features: Sequence[str]) -> tuple[FeatureConfig,
                                                             ...]:
    """The schema before `features` existed: `data.user_features`, each a
    categorical int64 user feature hashed into 128 buckets."""
    return tuple(
        FeatureConfig(name=name, location="user", kind="categorical",
                      dtype="int64",
                      hash_buckets=DEFAULT_USER_FEATURE_BUCKETS)
        for name in user_features
    )


def check_features(features: Sequence[FeatureConfig],
                   default_dim: int = 0,
                   where: str = "features") -> tuple[FeatureConfig, ...]:
    """Validates each feature and the set: unique names and record keys,
    shared tables that agree, and no two item features with one column."""
    features = tuple(f.validate(where) for f in features)
    seen: dict[str, FeatureConfig] = {}
    for f in features:
        if f.name in seen:
            raise FeatureConfigError(
                f"{where}: feature {f.name!r} is declared twice")
        seen[f.name] = f
    keys: dict[tuple[bool, str], str] = {}
    for f in features:
        # Item features read the item table; the others the requests.
        slot = (f.location == "item", f.record_key)
        if slot in keys:
            raise FeatureConfigError(
                f"{where}: features {keys[slot]!r} and {f.name!r} both "
                f"read key {f.record_key!r}")
        keys[slot] = f.name
    tables: dict[str, FeatureConfig] = {}
    for f in features:
        if not f.is_categorical:
            continue
        first = tables.setdefault(f.table_name, f)
        if first.table_signature(default_dim) != f.table_signature(
                default_dim):
            raise FeatureConfigError(
                f"{where}: features {first.name!r} and {f.name!r} share "
                f"table {f.table_name!r} but differ in dtype, "
                "hash_buckets, vocabulary_file or embedding_dim "
                f"({first.table_signature(default_dim)} vs "
                f"{f.table_signature(default_dim)})")
    return features


def features_from_list(values: Any,
                       where: str = "features") -> tuple[FeatureConfig, ...]:
    """The `features` config section (a JSON list of objects) -> features.

    Unknown keys, missing names and values of the wrong type are errors
    naming the feature and the key.
    """
    if not isinstance(values, (list, tuple)):
        raise FeatureConfigError(
            f"{where} must be a list of feature objects, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(FeatureConfig)}
    out = []
    for index, entry in enumerate(values):
        if isinstance(entry, FeatureConfig):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping):
            raise FeatureConfigError(
                f"{where}[{index}] must be an object, got {entry!r}")
        name = entry.get("name")
        at = f"{where}[{name!r}]" if isinstance(name, str) else (
            f"{where}[{index}]")
        for required in ("name", "location"):
            if required not in entry:
                raise FeatureConfigError(f"{at} needs a {required!r}")
        unknown = sorted(set(entry) - set(fields))
        if unknown:
            raise FeatureConfigError(
                f"unknown key {at}.{unknown[0]} (known keys of a feature: "
                f"{', '.join(sorted(fields))})")
        kwargs = {k: _coerce(f"{at}.{k}", fields[k].type, v)
                  for k, v in entry.items()}
        out.append(FeatureConfig(**kwargs))
    return tuple(out)


def _coerce(path: str, annotation: str, value: Any) -> Any:
    optional = annotation.endswith("| None")
    base = annotation.replace("| None", "").strip()
    if value is None and optional:
        return None
    if base == "str":
        if not isinstance(value, str):
            raise FeatureConfigError(f"{path} must be a string, got "
                                     f"{value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise FeatureConfigError(f"{path} must be an integer, got "
                                     f"{value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FeatureConfigError(f"{path} must be a number, got "
                                     f"{value!r}")
        return float(value)
    raise FeatureConfigError(f"{path}: unsupported type {annotation!r}")
