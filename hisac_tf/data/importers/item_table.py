"""The optional item table -> the item-table TFRecord (item_example).

Layouts:
* CSV `item_id,category_id,emb_0,...,emb_{d-1}`; with a header the
  columns are found by name, without one they are positional.
* Parquet with integer columns `item_id`, `category_id` and either flat
  number columns `emb_0`..`emb_{d-1}` or one list column (`emb`,
  `embedding` or `content_embedding`) of d numbers per row.
Every row holds the same d, ids are unique, values finite; a null is a bad
row naming the column (and the list element).
"""

from __future__ import annotations

import os
import re
from typing import Any

from typing import Sequence

from hisac_tf.data.feature_spec import (DataError, feature_values,
                                        item_example)
from hisac_tf.data.feature_stats import DenseStatistics
from hisac_tf.data.importers.feature_columns import (column_name,
                                                     parse_feature_value)
from hisac_tf.data.importers.bad_rows import BadRows, BadValue
from hisac_tf.data.importers.csv_reader import csv_table_rows
from hisac_tf.data.importers.field_values import float_value, int_value
from hisac_tf.data.importers.log_reader import format_of
from hisac_tf.data.importers.parquet_reader import (
    check_column,
    is_int,
    is_list,
    is_number,
    parquet_schema,
    parquet_table_rows,
)
from hisac_tf.data.shard_writer import ShardedWriter, shard_name
from hisac_tf.feature_config import FeatureConfig

EMBEDDING_LIST_COLUMNS = ("emb", "embedding", "content_embedding")
_FLAT = re.compile(r"emb_(\d+)")


def _parquet_columns(path: str, features=()) -> list[str]:
    """The columns to read; DataError when the embedding is not found."""
    schema = parquet_schema(path)
    lower = {n.lower(): n for n in schema.names}
    extra = []
    for f in features:
        if column_name(f) not in lower:
            raise DataError(f"{path}: no column {f.record_key!r} of item "
                            f"feature {f.name!r} (columns: {schema.names})")
        extra.append(lower[column_name(f)])
    for name in ("item_id", "category_id"):
        check_column(path, schema, name, is_int, "an integer type")
    flat = sorted((int(m.group(1)), name) for name in schema.names
                  if (m := _FLAT.fullmatch(name)))
    lists = [n for n in EMBEDDING_LIST_COLUMNS if n in schema.names]
    if flat and lists:
        raise DataError(
            f"{path}: both emb_0.. columns and the list column {lists[0]!r}; "
            "keep one embedding layout"
        )
    if len(lists) > 1:
        raise DataError(f"{path}: several embedding list columns {lists}; "
                        "keep one")
    if lists:
        check_column(path, schema, lists[0], is_number, "numbers",
                     as_list=True)
        return ["item_id", "category_id", lists[0]] + extra
    if not flat:
        nested = [n for n in schema.names if is_list(schema.field(n).type)]
        raise DataError(
            f"{path}: no embedding: expected number columns emb_0.."
            f"emb_{{d-1}} or one list column named one of "
            f"{list(EMBEDDING_LIST_COLUMNS)} (list columns found: {nested})"
        )
    if [d for d, _ in flat] != list(range(len(flat))):
        raise DataError(f"{path}: embedding columns {[n for _, n in flat]} "
                        "must be emb_0..emb_{d-1} without gaps")
    for _, name in flat:
        check_column(path, schema, name, is_number, "a number type")
    return ["item_id", "category_id"] + [n for _, n in flat] + extra


def item_row(row: Any) -> tuple[int, int, list[float]]:
    """(item_id, category_id, embedding) of one table row; BadValue."""
    if isinstance(row, BadValue):
        raise row
    if isinstance(row, dict):
        item, category = row.get("item_id"), row.get("category_id")
        lists = [k for k in EMBEDDING_LIST_COLUMNS if k in row]
        if lists:
            values = row[lists[0]]
            if values is None:
                raise BadValue(lists[0], None, "is missing")
            emb = [float_value(v, f"{lists[0]}[{i}]")
                   for i, v in enumerate(values)]
        else:
            dims = sorted((int(k[4:]), k) for k in row
                          if _FLAT.fullmatch(k))
            if [d for d, _ in dims] != list(range(len(dims))) or not dims:
                raise BadValue("emb_*", sorted(row),
                               "must be emb_0..emb_{d-1}")
            emb = [float_value(row[k], k) for _, k in dims]
    else:
        if len(row) < 3:
            names = ("item_id", "category_id", "emb_0")
            raise BadValue(names[len(row)], None, "is missing")
        item, category = row[0], row[1]
        emb = [float_value(v, f"emb_{i}") for i, v in enumerate(row[2:])]
    return (int_value(item, "item_id", 1),
            int_value(category, "category_id", 1), emb)


def write_items(path: str, out_dir: str, pattern: str, compression: str,
                header: str, delimiter: str, skip_bad_rows: bool,
                features: Sequence[FeatureConfig] = ()) -> dict:
    """Writes the item table as one TFRecord shard; returns its counts.

    `features`: the declared item features, each read from the column of
    its key (feature_columns.py; a CSV table then needs a header) and
    written under its key. Counts: `file`, `items`, `content_dim`,
    `skipped_rows`, `skipped_by_reason` and, with dense item features,
    `dense_statistics` ({feature: statistics (feature_stats.py)}).
    """
    features = [f for f in features if f.location == "item"
                and f.record_key not in ("content_embedding", "item_id",
                                         "category_id")]
    stats = {f.name: DenseStatistics() for f in features
             if f.kind == "dense"}
    if format_of(path) == "parquet":
        rows = parquet_table_rows(path, _parquet_columns(path, features))
    else:
        rows = csv_table_rows(path, delimiter, header,
                              ("item_id", "category_id"))
    bad = BadRows(skip_bad_rows, "item table")
    seen: set[int] = set()
    dim = None
    with ShardedWriter(out_dir, pattern, 1, 0, compression) as writer:
        for place, row in rows:
            try:
                if features and not isinstance(row, (dict, BadValue)):
                    raise DataError(
                        f"{path}: item features {[f.name for f in features]}"
                        " are read by column name; the table needs a header")
                item, category, emb = item_row(_without(row, features))
                values = {f: parse_feature_value(f, _cell(row, f))
                          for f in features}
                if dim is None:
                    dim = len(emb)
                if len(emb) != dim:
                    raise BadValue("emb_*", len(emb), f"must hold {dim} "
                                   "values like the first row")
                if item in seen:
                    raise BadValue("item_id", item, "is a duplicate")
            except BadValue as b:
                bad.add(path, place, b)
                continue
            seen.add(item)
            for f, value in values.items():
                if f.name in stats:
                    stats[f.name].add([value])
            writer.write(item_example(item, category, emb, features={
                f.record_key: feature_values(f, v)
                for f, v in values.items()}).SerializeToString())
    counts = {"file": os.path.join(out_dir, shard_name(pattern, 0, 1)),
              "items": len(seen), "content_dim": dim or 0, **bad.summary()}
    if stats:
        counts["dense_statistics"] = {k: v.to_dict()
                                      for k, v in stats.items()}
    return counts


def _cell(row: dict, f: FeatureConfig):
    if column_name(f) in row:
        return row[column_name(f)]
    for key, value in row.items():  # Parquet keeps the columns' case.
        if key.lower() == column_name(f):
            return value
    raise BadValue(f.record_key, None, f"is missing (feature {f.name!r})")


def _without(row, features):
    """The row without the feature columns (they are not embeddings)."""
    if not features or not isinstance(row, dict):
        return row
    drop = {column_name(f) for f in features}
    return {k: v for k, v in row.items() if k.lower() not in drop}
