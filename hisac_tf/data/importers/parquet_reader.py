"""Parquet logs and side tables, read with `pyarrow.parquet`.

Columns are found by name. Nulls are never misread: a null in a row is a
bad row ("field 'user_id' is missing, got None", with the file and the
1-based row), which stops the job or, with `skip_bad_rows`, is skipped and
counted like a bad CSV row.

The log is either one event per row (flat columns `user_id`, `item_id`,
`category_id`, `behavior_type`, `timestamp`) or one row per user and
stretch of events: a scalar `user_id` beside list columns `item_id`,
`category_id`, `behavior_type` and `timestamp` of equal length per row
(element j of each list is one event; a row whose lists differ in length
is a bad row). Ids are integer columns, `behavior_type` integers 1..4 or
strings pv/cart/fav/buy (plain or dictionary-encoded), `timestamp` integer
seconds or a Parquet TIMESTAMP (any unit, floored to whole seconds).

Paths may be local or on any filesystem `tf.io.gfile` knows (s3://,
hdfs://, gs://; `hisac_tf.data.filesystems`): remote files are read
through a GFile.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Callable, Iterator, Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import tensorflow as tf

from hisac_tf.data import filesystems
from hisac_tf.behaviors import behavior_id
from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.importers.bad_rows import BadRows, BadValue
from hisac_tf.data.importers.event_columns import EventColumns
from hisac_tf.data.importers.feature_columns import (column_name,
                                                     parse_feature_value)
from hisac_tf.data.importers.gfile_stream import GFileStream
from hisac_tf.data.importers.field_values import (
    INT64_MAX,
    LOG_COLUMNS,
    UNKNOWN_BEHAVIOR,
)
from hisac_tf.data.importers.progress import progress

BATCH_ROWS = 65536
_PER_SECOND = {"s": 1, "ms": 1000, "us": 10**6, "ns": 10**9}
_LIST_COLUMNS = LOG_COLUMNS[1:]  # Lists in the one-row-per-user layout.


@contextlib.contextmanager
def open_parquet(path: str) -> Iterator[pq.ParquetFile]:
    """The `pq.ParquetFile` of `path`; DataError when it is not Parquet."""
    filesystems.ensure_filesystem(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if filesystems.scheme(path) in ("", "file"):
        source = open(path.removeprefix("file://"), "rb")
    else:
        source = io.BufferedReader(GFileStream(path), buffer_size=1 << 20)
    try:
        try:
            parquet = pq.ParquetFile(source)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"{path} is not a Parquet file: {e}") from None
        yield parquet
    finally:
        source.close()


# ------------------------------------------------------------ column types
def is_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)
            or pa.types.is_fixed_size_list(kind))


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def is_int(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind)


def is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


_LOG_TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "user_id": (is_int, "an integer type"),
    "item_id": (is_int, "an integer type"),
    "category_id": (is_int, "an integer type"),
    "behavior_type": (lambda t: is_int(t) or _is_text(t),
                      "integers 1..4 or strings pv/cart/fav/buy"),
    "timestamp": (lambda t: is_int(t) or pa.types.is_timestamp(t),
                  "integer seconds or a timestamp"),
}


def check_column(path: str, schema: pa.Schema, name: str,
                 accepts: Callable[[pa.DataType], bool], expected: str,
                 as_list: bool = False) -> pa.DataType:
    """The column's (value) type; DataError when missing or of a bad type.

    With `as_list` the column must be a list column whose values `accepts`.
    """
    if name not in schema.names:
        raise DataError(
            f"{path}: Parquet file has no column {name!r} (columns: "
            f"{schema.names})"
        )
    kind = schema.field(name).type
    inner = kind.value_type if is_list(kind) else None
    if as_list and (inner is None or not accepts(inner)):
        raise DataError(
            f"{path}: column {name!r} has type {kind}, expected a list "
            f"column of {expected}"
        )
    if not as_list and not accepts(kind):
        raise DataError(
            f"{path}: column {name!r} has type {kind}, expected {expected}"
        )
    return inner if as_list else kind


# --------------------------------------------------------------- log rows
# A bad value found in a batch: ((row, element), place, what is wrong);
# element -1 for a problem of the whole row. Sorted, they come in file order.
_Problem = tuple[tuple[int, int], str, BadValue]


def _flatten_lists(batch: pa.RecordBatch, first_row: int
                   ) -> tuple[dict[str, pa.Array], np.ndarray, np.ndarray,
                              list[_Problem]]:
    """One-row-per-user batch -> (event columns, row of each, element,
    problems).

    Rows with a null list or lists of different lengths are bad rows.
    """
    problems: list[_Problem] = []
    lengths = {c: pc.list_value_length(batch.column(c)).fill_null(-1)
               .to_numpy(zero_copy_only=False) for c in _LIST_COLUMNS}
    good = np.ones(batch.num_rows, bool)
    for row in range(batch.num_rows):
        want = lengths["item_id"][row]
        for c in _LIST_COLUMNS:
            n = lengths[c][row]
            if n < 0 or n != want:
                good[row] = False
                problems.append(((first_row + row, -1),
                                 f"row {first_row + row + 1}", BadValue(
                    c, None if n < 0 else int(n), "is missing" if n < 0
                    else f"must hold as many values as item_id ({want})")))
                break
    kept = batch.filter(pa.array(good))
    parent = pc.list_parent_indices(kept.column("item_id"))
    columns = {c: kept.column(c).flatten() for c in _LIST_COLUMNS}
    columns["user_id"] = kept.column("user_id").take(parent)
    parent = parent.to_numpy(zero_copy_only=False)
    starts = np.searchsorted(parent, parent, "left")  # [E] sorted parents.
    element = np.arange(len(parent)) - starts
    rows = np.flatnonzero(good)[parent] + first_row
    return columns, rows, element, problems


def _int_column(array: pa.Array, minimum: int, per_second: int = 1
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, str]], pa.Array]:
    """(int64 values, [(bad mask, reason)] in check order, raw values)."""
    if pa.types.is_timestamp(array.type):
        array = array.cast(pa.int64())
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    values = array.fill_null(0).to_numpy(zero_copy_only=False)
    too_big = values > INT64_MAX if values.dtype == np.uint64 else (
        np.zeros(len(values), bool))
    values = np.where(too_big, 0, values).astype(np.int64) // per_second
    what = "an id >= 1" if minimum == 1 else f"an integer >= {minimum}"
    checks = [(nulls, "is missing"), (too_big, "does not fit in int64"),
              (values < minimum, f"must be {what}")]
    return values, checks, array


def _behavior_column(array: pa.Array
                     ) -> tuple[np.ndarray, list[tuple[np.ndarray, str]],
                                pa.Array]:
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    nulls = array.is_null().to_numpy(zero_copy_only=False)
    if is_int(array.type):
        raw = array.fill_null(0).to_numpy(zero_copy_only=False)
        ids = np.where((raw >= 1) & (raw <= 4), raw, 0).astype(np.int64)
    else:
        text = array.fill_null("").to_numpy(zero_copy_only=False)
        uniq, inverse = np.unique(text, return_inverse=True)
        known = np.array([behavior_id(u) or 0 for u in uniq], np.int64)
        ids = known[inverse]
    return ids, [(nulls, "is missing"), (~nulls & (ids == 0),
                                         UNKNOWN_BEHAVIOR)], array


def _check_events(columns: Mapping[str, pa.Array],
                  place: Callable[[int], tuple[tuple[int, int], str]],
                  per_second: int, also_bad: np.ndarray | None = None
                  ) -> tuple[dict[str, np.ndarray], list[_Problem],
                             np.ndarray]:
    """int64 columns of the valid events, the bad ones' problems and the
    kept mask.

    `place(i)` gives event i's (row, element) and its name for messages;
    `also_bad` [n] marks events dropped for another reason (their
    problems are the caller's).
    """
    parsed = {}
    for name in LOG_COLUMNS:
        if name == "behavior_type":
            parsed[name] = _behavior_column(columns[name])
        else:
            parsed[name] = _int_column(
                columns[name], 0 if name == "timestamp" else 1,
                per_second if name == "timestamp" else 1)
    n = len(parsed["user_id"][0])
    any_bad = np.zeros(n, bool)
    for _, checks, _ in parsed.values():
        for mask, _ in checks:
            any_bad |= mask
    problems: list[_Problem] = []
    for i in np.flatnonzero(any_bad):  # A row's first failure, in order.
        field, reason, raw = next(
            (name, reason, raw) for name, (_, checks, raw) in parsed.items()
            for mask, reason in checks if mask[i])
        problems.append((*place(int(i)),
                         BadValue(field, raw[int(i)].as_py(), reason)))
    keep = ~any_bad
    if also_bad is not None:
        keep &= ~also_bad
    events = {name: values[keep] for name, (values, _, _) in parsed.items()}
    return events, problems, keep


def _feature_names(path: str, schema: pa.Schema, features,
                   as_lists: bool) -> list[str]:
    """The Parquet columns of the event/context features (matched without
    case); DataError naming the feature when one is missing."""
    if not features:
        return []
    if as_lists:
        raise DataError(
            f"{path}: event and context features are read from a log with "
            "one event per row; this one holds lists of events per row")
    lower = {n.lower(): n for n in schema.names}
    out = []
    for f in features:
        if column_name(f) not in lower:
            raise DataError(
                f"{path}: no column {f.record_key!r} of feature {f.name!r} "
                f"({f.location}); columns: {schema.names}")
        out.append(lower[column_name(f)])
    return out


def _feature_values(batch, names: list[str], features, place
                    ) -> tuple[list[list], np.ndarray | None, list]:
    """Per feature the parsed values of the batch's rows, the rows whose
    value is bad, and their problems (feature_columns.py)."""
    if not features:
        return [], None, []
    bad = np.zeros(batch.num_rows, bool)
    problems = []
    values = []
    for f, name in zip(features, names):
        column = []
        for i, cell in enumerate(batch.column(name).to_pylist()):
            try:
                column.append(parse_feature_value(
                    f, cell, f"{name} (feature {f.name!r})"))
            except BadValue as b:
                column.append(None)
                if not bad[i]:
                    problems.append((*place(i), b))
                bad[i] = True
        values.append(column)
    return values, bad, problems


def parquet_log_events(path: str, bad: BadRows, out: EventColumns,
                       progress_every: int, batch_rows: int = BATCH_ROWS
                       ) -> int:
    """Appends the valid events of one Parquet log to `out`; returns rows.

    Raises DataError for a missing column or one of a wrong type, and
    BadRowError (unless `bad` skips) naming the row and field of a bad or
    null value.
    """
    with open_parquet(path) as parquet:
        schema = parquet.schema_arrow
        as_lists = ("item_id" in schema.names
                    and is_list(schema.field("item_id").type))
        kinds = {}
        for name, (accepts, expected) in _LOG_TYPES.items():
            kinds[name] = check_column(path, schema, name, accepts, expected,
                                       as_list=as_lists and name != "user_id")
        unit = getattr(kinds["timestamp"], "unit", "s")
        names = _feature_names(path, schema, out.features, as_lists)
        per_second = _PER_SECOND[unit]
        first_row = 0
        for batch in parquet.iter_batches(
                batch_size=batch_rows, columns=list(LOG_COLUMNS) + names):
            if as_lists:
                columns, rows, element, problems = _flatten_lists(
                    batch, first_row)

                def place(i, rows=rows, element=element):
                    return ((rows[i], element[i]), f"row {rows[i] + 1}, "
                            f"element {element[i] + 1}")
            else:
                columns = {c: batch.column(c) for c in LOG_COLUMNS}
                problems = []

                def place(i, first_row=first_row):
                    return (first_row + i, 0), f"row {first_row + i + 1}"
            values, feature_bad, feature_problems = _feature_values(
                batch, names, out.features, place)
            events, more, keep = _check_events(columns, place, per_second,
                                               feature_bad)
            core_bad = {q[0] for q in more}
            for _, where, value in sorted(problems + more + [
                    p for p in feature_problems if p[0] not in core_bad],
                    key=lambda p: p[0]):
                bad.add(path, where, value)
            out.extend(*(events[c] for c in LOG_COLUMNS), extra=tuple(
                [v for v, k in zip(column, keep) if k] for column in values))
            n = batch.num_rows
            first_row += n
            if first_row // progress_every != (first_row - n) \
                    // progress_every:
                progress(f"{path}: {first_row} rows read")
    return first_row


# ------------------------------------------------------------ side tables
def parquet_schema(path: str) -> pa.Schema:
    with open_parquet(path) as parquet:
        return parquet.schema_arrow


def parquet_table_rows(path: str, columns: Sequence[str]
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of a small side table as ("row i", {column: Python value}).

    Nulls come as None (the value parsers call them missing); list
    columns as Python lists.
    """
    with open_parquet(path) as parquet:
        row = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS,
                                          columns=list(columns)):
            lists = {c: batch.column(c).to_pylist() for c in columns}
            for i in range(batch.num_rows):
                row += 1
                yield f"row {row}", {c: v[i] for c, v in lists.items()}
