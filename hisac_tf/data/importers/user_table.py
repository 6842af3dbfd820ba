"""The optional user table: user_id -> categorical user features.

CSV with a header `user_id,<user features>` (the names of
`data.user_features`, default `gender,age_bucket`; other columns are
ignored) or Parquet with the same integer columns. Feature ids are >= 1;
users missing from the table get `UNKNOWN_USER_FEATURE` for every feature.
"""

from __future__ import annotations

from typing import Sequence

from hisac_tf.data.importers.bad_rows import BadRows, BadValue
from hisac_tf.data.importers.csv_reader import csv_table_rows
from hisac_tf.data.importers.feature_columns import (column_name,
                                                     parse_feature_value)
from hisac_tf.data.importers.field_values import int_value
from hisac_tf.data.importers.log_reader import format_of
from hisac_tf.data.importers.parquet_reader import (
    check_column,
    is_int,
    parquet_schema,
    parquet_table_rows,
)
from hisac_tf.feature_config import FeatureConfig

UNKNOWN_USER_FEATURE = 1


def declared_user_features(cfg) -> tuple[FeatureConfig, ...]:
    """The user features of the `features` section (beyond
    data.user_features), in declaration order."""
    return tuple(f for f in cfg.features if f.location == "user")


def read_users(path: str, user_features: Sequence[str], delimiter: str,
               skip_bad_rows: bool,
               declared: Sequence[FeatureConfig] = ()
               ) -> tuple[dict[int, tuple], dict]:
    """({user_id: feature values in `user_features` order, then the
    `declared` user features' values}, counts).

    `declared`: user features of the `features` section, read from the
    columns named by their keys (feature_columns.py).

    An empty `path` gives an empty table. Raises DataError for a missing
    column and BadRowError (unless skipping) for a bad or duplicate row.
    """
    if not path:
        return {}, {"users_in_table": 0, "skipped_rows": 0}
    names = ("user_id",) + tuple(user_features) + tuple(
        column_name(f) for f in declared)
    bad = BadRows(skip_bad_rows, "user table")
    if format_of(path) == "parquet":
        schema = parquet_schema(path)
        for name in names[:1 + len(user_features)]:
            check_column(path, schema, name, is_int, "an integer type")
        rows = parquet_table_rows(path, names)
    else:
        rows = csv_table_rows(path, delimiter, "yes", names)
    table: dict[int, tuple[int, ...]] = {}
    for place, row in rows:
        try:
            if isinstance(row, BadValue):
                raise row
            user = int_value(row["user_id"], "user_id", 1)
            if user in table:
                raise BadValue("user_id", row["user_id"], "is a duplicate")
            table[user] = tuple(
                int_value(row[f], f, 1) for f in user_features) + tuple(
                parse_feature_value(f, row[column_name(f)])
                for f in declared)
        except BadValue as b:
            bad.add(path, place, b)
    return table, {"users_in_table": len(table), **bad.summary()}
