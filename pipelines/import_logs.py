"""Job: raw behaviour logs -> request-level TFRecords (docs/design.md §4).

Input: behaviour logs in the Taobao UserBehavior layout

    user_id,item_id,category_id,behavior_type,timestamp

as CSV (header row optional: `header="auto"` takes a first row whose first
field is not an integer as the header; columns are then found by name) or
Parquet (columns by name, read through tensorflow-io's Parquet kernels).
`behavior_type` is pv/cart/fav/buy (any case) or the ids 1..4 they map to
(pv=1, cart=2, fav=3, buy=4); ids are integers >= 1, timestamps integer
seconds >= 0. Several inputs: a comma-separated list of paths or glob
patterns; gzipped CSV (`*.gz`) is read as such. Paths may be local, gs://,
s3:// or hdfs:// (`hisac_tf.data.filesystems`).

Optional side tables (CSV or Parquet by file extension: .parquet, .parq,
.pq):
* items (`--items`): CSV `item_id,category_id,emb_0,...,emb_{d-1}` (header
  optional; without it the columns are positional) or Parquet with flat
  columns `item_id`, `category_id`, `emb_0`..`emb_{d-1}`, written as the
  item-table TFRecord (`feature_spec.item_example`). A Parquet list column
  (`emb: list<float>`) is refused with an explanation: tensorflow-io
  0.37.1 reads list columns wrongly (measured: one value per row, taken
  from the flattened leaf values, not each row's list).
* users (`--users`): CSV with a header `user_id,<user features>` (default
  `gender,age_bucket`) or the same Parquet columns; categorical ids >= 1.
  Users missing from it, or every user when there is none, get 1 for every
  user feature: 1 means "unknown".

Request formation (documented contract):
* Each user's events are cut into requests by aligned time windows of
  `request_window_s` seconds (window = timestamp // request_window_s, in
  UTC epoch seconds; 3600 = clock hours). One request per (user, window)
  with at least one event; `request_time` = its earliest event's time.
* History: every event of that user strictly before `request_time` (so
  from earlier windows only), oldest first (ties keep input order), all
  behaviour types, truncated to the newest `max_history`; requests with
  fewer than `min_history` history events are dropped (counted).
* Candidates: the distinct items the user interacted with in the window,
  in order of first interaction, with the category of that first event;
  label 1 if any of the item's events in the window has a behaviour in
  `positive_behaviors` (default cart, fav, buy: add-to-cart, favourite or
  purchase count as engagement; pv-only items are viewed-but-not-engaged
  impressions, label 0). Use `positive_behaviors=("pv","cart","fav","buy")`
  for click-style labels where every interaction is positive.
* Plus up to `negatives_per_request` sampled negatives, label 0: items
  drawn in proportion to their number of events strictly before
  `request_time` (all users: the catalogue's popularity as seen so far,
  never the future), never an item the user interacted with in that window
  and without repeats; seeded by `seed`. Early requests can get fewer
  (counted as `negatives_short`).
* At most `max_candidates` candidates: interacted items first (positives
  kept before pv-only ones when they do not all fit; dropped items are
  counted as `truncated_candidates`), sampled negatives fill the rest.
* Split by time: requests with `request_time >= eval_start_ts` go to
  eval, the rest to train; by default `eval_start_ts` = last timestamp -
  `eval_days` days (`eval_days=0`: no eval requests).

Output in `output_dir`: `train-0000k-of-0000S.tfrecord.gz`, `eval-...`
(S = `num_shards`; every shard is written, possibly empty; requests are in
time order across the shards of a split: shard k holds the k-th slice),
`items-00000-of-00001.tfrecord.gz` (when items are given) and
`summary.json` with the counts. Records follow `FeatureSpec` with
`with_true_ctr=False`.

Memory: events are read row by row (CSV) or in batches (Parquet) but kept
as five int64 columns for the whole input (40 bytes per event; about 120
bytes per event at the peak, with the sorted copies: ~12 GB for the full
~100M-event Taobao UserBehavior log), because requests are written in
global time order and negatives are sampled from the popularity seen so
far across users. Larger logs: split them by user into several runs (each
run then samples negatives from its own users' popularity). Records are
serialised and written one at a time. Measured on 2 cores: 1M events
(10k users, 800k requests) in ~2 minutes, ~0.8 GB resident.

Bad input: a row with a missing or empty field, a non-integer id or
timestamp, an id <= 0, a negative timestamp or an unknown behaviour
stops the job with an error naming the file, the line (CSV; Parquet: the
row, 1-based), the field and the value; with `skip_bad_rows` such rows are
skipped and counted ("skipped 3 bad rows"). Problems that concern a whole
file (missing column, wrong Parquet column type, nulls in a Parquet column,
which tensorflow-io 0.37.1 would silently misread) always stop the job.
"""

from __future__ import annotations  # noqa: I001

import collections
import csv
import dataclasses
import gzip
import io
import json
import math
import os
import struct
import sys
import time
from typing import Any, Iterator, Mapping, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf
from absl import flags, logging

from hisac_tf import config as config_lib
from hisac_tf.data.feature_spec import DataError, FeatureSpec, item_example
from hisac_tf.data import filesystems

LOG_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type",
               "timestamp")
BEHAVIOR_IDS = {"pv": 1, "cart": 2, "fav": 3, "buy": 4}
UNKNOWN_USER_FEATURE = 1
SUMMARY_FILE = "summary.json"
SECONDS_PER_DAY = 86400
_INT64_MAX = 2**63 - 1
_PARQUET_BATCH_ROWS = 65536
_LOGGED_BAD_ROWS = 5


def _progress(message: str) -> None:
    """A progress line on stderr (jobs run with absl logging at WARNING)."""
    print(f"import_logs: {message}", file=sys.stderr, flush=True)


class BadRowError(DataError):
    """One bad input row; names the file, line or row, field and value."""

    def __init__(self, path: str, where: str, field: str, value: Any,
                 reason: str):
        self.path, self.where, self.field = path, where, field
        self.value, self.reason = value, reason
        super().__init__(
            f"{path}, {where}: field {field!r} {reason}, got {value!r}"
        )


class _Bad(Exception):
    """Raised by the row parsers; turned into BadRowError with the place."""

    def __init__(self, field: str, value: Any, reason: str):
        super().__init__(reason)
        self.field, self.value, self.reason = field, value, reason


# ------------------------------------------------------------------ config
@dataclasses.dataclass(frozen=True)
class ImportConfig:
    """Everything the importer needs; see the module docstring."""

    input: str
    output_dir: str
    format: str = "auto"
    items: str = ""
    users: str = ""
    header: str = "auto"
    delimiter: str = ","
    max_history: int = 200
    max_candidates: int = 20
    user_features: tuple[str, ...] = ("gender", "age_bucket")
    request_window_s: int = 3600
    positive_behaviors: tuple[str, ...] = ("cart", "fav", "buy")
    negatives_per_request: int = 4
    eval_days: int = 1
    eval_start_ts: int | None = None
    min_history: int = 0
    skip_bad_rows: bool = False
    num_shards: int = 1
    seed: int = 0
    compression: str = "GZIP"
    train_pattern: str = "train-*.tfrecord.gz"
    eval_pattern: str = "eval-*.tfrecord.gz"
    item_table_pattern: str = "items-*.tfrecord.gz"
    progress_every: int = 1_000_000
    overwrite: bool = False

    def __post_init__(self):
        for name in ("user_features", "positive_behaviors"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = tuple(v.strip() for v in value.split(",") if v)
            object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        def bad(name, what):
            raise ValueError(
                f"import config {name} {what}, got {getattr(self, name)!r}"
            )

        if not isinstance(self.input, str) or not self.input.strip():
            bad("input", "must name at least one file or pattern")
        if not isinstance(self.output_dir, str) or not self.output_dir:
            bad("output_dir", "must be a directory path")
        if self.format not in ("auto", "csv", "parquet"):
            bad("format", "must be 'auto', 'csv' or 'parquet'")
        if self.header not in ("auto", "yes", "no"):
            bad("header", "must be 'auto', 'yes' or 'no'")
        if len(self.delimiter) != 1:
            bad("delimiter", "must be one character")
        for name in ("max_history", "max_candidates", "request_window_s",
                     "num_shards", "progress_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 1:
                bad(name, "must be an integer >= 1")
        for name in ("negatives_per_request", "eval_days", "min_history"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) \
                    or value < 0:
                bad(name, "must be an integer >= 0")
        if self.eval_start_ts is not None and (
                isinstance(self.eval_start_ts, bool)
                or not isinstance(self.eval_start_ts, int)):
            bad("eval_start_ts", "must be an integer timestamp or None")
        if not self.positive_behaviors:
            bad("positive_behaviors", "must name at least one behaviour")
        for b in self.positive_behaviors:
            if _behavior_id(b) is None:
                bad("positive_behaviors",
                    f"must hold behaviours out of {sorted(BEHAVIOR_IDS)} "
                    f"or 1..4 (bad: {b!r})")
        if self.compression not in ("", "GZIP", "ZLIB"):
            bad("compression", "must be '', 'GZIP' or 'ZLIB'")
        for name in ("train_pattern", "eval_pattern", "item_table_pattern"):
            if getattr(self, name).count("*") != 1:
                bad(name, "must hold exactly one '*' for the shard number")
        FeatureSpec(self.max_history, self.max_candidates,
                    self.user_features)  # Checks the feature names.

    @property
    def positive_ids(self) -> frozenset[int]:
        return frozenset(_behavior_id(b) for b in self.positive_behaviors)

    def feature_spec(self) -> FeatureSpec:
        return FeatureSpec(self.max_history, self.max_candidates,
                           self.user_features, with_true_ctr=False)

    @classmethod
    def from_config(cls, cfg: config_lib.Config, **fields) -> "ImportConfig":
        """Takes N, C, user features, patterns and data_dir from `cfg`."""
        data = cfg.data
        base = dict(
            output_dir=data.data_dir, max_history=data.max_history,
            max_candidates=data.max_candidates,
            user_features=tuple(data.user_features),
            compression=data.compression, train_pattern=data.train_pattern,
            eval_pattern=data.eval_pattern,
            item_table_pattern=data.item_table_pattern,
        )
        base.update({k: v for k, v in fields.items() if v is not None})
        return coerce_config(base)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def coerce_config(cfg_like: ImportConfig | Mapping[str, Any]) -> ImportConfig:
    """An ImportConfig from itself or a mapping of its fields."""
    if isinstance(cfg_like, ImportConfig):
        return cfg_like
    if not isinstance(cfg_like, Mapping):
        raise TypeError(
            "import config must be an ImportConfig or a mapping of its "
            f"fields, got {type(cfg_like).__name__}"
        )
    known = {f.name for f in dataclasses.fields(ImportConfig)}
    unknown = sorted(set(cfg_like) - known)
    if unknown:
        raise ValueError(
            f"unknown import config key {unknown[0]!r} (known: "
            f"{', '.join(sorted(known))})"
        )
    return ImportConfig(**cfg_like)


def _behavior_id(value: Any) -> int | None:
    """pv/cart/fav/buy (any case) or 1..4 -> 1..4; None when unknown."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value) if 1 <= value <= 4 else None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).strip().lower()
    if text in BEHAVIOR_IDS:
        return BEHAVIOR_IDS[text]
    if _is_integer(text) and 1 <= int(text) <= 4:
        return int(text)
    return None


def _is_integer(text: str) -> bool:
    """Whether `text` is a plain ASCII integer such as 12, -3 or +7."""
    digits = text[1:] if text[:1] in ("+", "-") else text
    return digits.isascii() and digits.isdigit()


# ------------------------------------------------------ counting bad rows
class _BadRows:
    """Raises on the first bad row, or counts them in skip mode."""

    def __init__(self, skip: bool, what: str):
        self.skip, self.what = skip, what
        self.count = 0
        self.by_reason: collections.Counter = collections.Counter()

    def add(self, path: str, where: str, bad: _Bad) -> None:
        error = BadRowError(path, where, bad.field, bad.value, bad.reason)
        if not self.skip:
            raise error
        self.count += 1
        self.by_reason[f"{bad.field} {bad.reason}"] += 1
        if self.count <= _LOGGED_BAD_ROWS:
            logging.warning("skipping bad %s row: %s", self.what, error)

    def summary(self) -> dict:
        return {"skipped_rows": self.count,
                "skipped_by_reason": dict(sorted(self.by_reason.items()))}


def _int_value(value: Any, field: str, minimum: int) -> int:
    """One integer field from CSV text or a Parquet value."""
    if value is None:
        raise _Bad(field, None, "is missing")
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        number = int(value)
    else:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        text = str(value).strip()
        if not text:
            raise _Bad(field, value, "is empty")
        if not _is_integer(text):
            raise _Bad(field, value, "is not an integer")
        number = int(text)
    if number < minimum:
        what = "an id >= 1" if minimum == 1 else f"an integer >= {minimum}"
        raise _Bad(field, value, f"must be {what}")
    if number > _INT64_MAX:
        raise _Bad(field, value, "does not fit in int64")
    return number


def _float_value(value: Any, field: str) -> float:
    if value is None:
        raise _Bad(field, None, "is missing")
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        raise _Bad(field, value, "is not a number") from None
    if not math.isfinite(number):
        raise _Bad(field, value, "must be finite")
    return number


def _parse_log_row(values: Sequence[Any]) -> tuple[int, int, int, int, int]:
    """(user, item, category, behaviour, timestamp) from 5 raw values."""
    for name, value in zip(LOG_COLUMNS, values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise _Bad(name, value, "is missing" if value is None
                       else "is empty")
    user = _int_value(values[0], "user_id", 1)
    item = _int_value(values[1], "item_id", 1)
    category = _int_value(values[2], "category_id", 1)
    behavior = _behavior_id(values[3])
    if behavior is None:
        raise _Bad("behavior_type", values[3],
                   "is not a known behaviour (pv, cart, fav, buy or 1..4)")
    timestamp = _int_value(values[4], "timestamp", 0)
    return user, item, category, behavior, timestamp


# ------------------------------------------------------------- CSV reading
class _GFileRaw(io.RawIOBase):
    """A `tf.io.gfile.GFile` opened "rb" as an io raw stream."""

    def __init__(self, gfile):
        super().__init__()
        self._gfile = gfile

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._gfile.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._gfile.close()
        super().close()


def _open_text(path: str):
    """A text stream of `path` on any filesystem; `*.gz` is decompressed."""
    filesystems.ensure_filesystem(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if filesystems.scheme(path) in ("", "file"):
        raw = open(path.removeprefix("file://"), "rb")
    else:
        raw = io.BufferedReader(_GFileRaw(tf.io.gfile.GFile(path, "rb")),
                                buffer_size=1 << 20)
    if path.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")


def _looks_like_header(row: Sequence[str]) -> bool:
    return not _is_integer(row[0].strip().lstrip("\ufeff"))


def _csv_rows(path: str, delimiter: str, header: str,
              columns: Sequence[str] | None
              ) -> Iterator[tuple[int, list[str] | None, list[str]]]:
    """Yields (line number, header or None, row) for each non-blank row."""
    with _open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        names: list[str] | None = None
        first = True
        for row in reader:
            if not row or all(not v.strip() for v in row):
                continue
            if first:
                first = False
                if header == "yes" or (header == "auto"
                                       and _looks_like_header(row)):
                    names = [v.strip().lstrip("\ufeff").lower() for v in row]
                    if columns is not None:
                        missing = [c for c in columns if c not in names]
                        if missing:
                            raise DataError(
                                f"{path}: header {row!r} lacks column(s) "
                                f"{missing} (expected {list(columns)})"
                            )
                    continue
            yield reader.line_num, names, row


def _csv_log_events(path: str, cfg: ImportConfig, bad: _BadRows,
                    out: "_EventColumns") -> int:
    """Appends the valid events of one CSV log to `out`; returns rows."""
    rows = 0
    index: list[int] | None = None
    width = len(LOG_COLUMNS)
    for line, names, row in _csv_rows(path, cfg.delimiter, cfg.header,
                                      LOG_COLUMNS):
        rows += 1
        if index is None:
            index = ([names.index(c) for c in LOG_COLUMNS] if names
                     else list(range(width)))
            width = len(names) if names else width
        try:
            if len(row) != width:
                missing = [c for c, i in zip(LOG_COLUMNS, index)
                           if i >= len(row)]
                if missing:
                    raise _Bad(missing[0], None,
                               f"is missing (the row has {len(row)} fields, "
                               f"expected {width})")
                raise _Bad("(row)", row, f"has {len(row)} fields, expected "
                           f"{width}")
            out.append(*_parse_log_row([row[i] for i in index]))
        except _Bad as b:
            bad.add(path, f"line {line}", b)
        if rows % cfg.progress_every == 0:
            _progress(f"{path}: {rows} rows read")
    return rows


# --------------------------------------------------------- Parquet reading
_PARQUET_TYPES = {0: "BOOLEAN", 1: "INT32", 2: "INT64", 3: "INT96",
                  4: "FLOAT", 5: "DOUBLE", 6: "BYTE_ARRAY",
                  7: "FIXED_LEN_BYTE_ARRAY"}
_INT_TYPES = ("INT32", "INT64")


class _CompactThrift:
    """Minimal Thrift compact-protocol decoder (Parquet's footer)."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def _varint(self) -> int:
        shift = result = 0
        while True:
            b = self._byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def _zigzag(self) -> int:
        n = self._varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int) -> Any:
        if kind in (1, 2):
            return kind == 1
        if kind == 3:
            b = self._byte()
            return b - 256 if b > 127 else b
        if kind in (4, 5, 6):
            return self._zigzag()
        if kind == 7:
            (v,) = struct.unpack_from("<d", self.data, self.pos)
            self.pos += 8
            return v
        if kind == 8:
            n = self._varint()
            v = bytes(self.data[self.pos:self.pos + n])
            self.pos += n
            return v
        if kind in (9, 10):
            head = self._byte()
            size, elem = head >> 4, head & 0x0F
            if size == 15:
                size = self._varint()
            if elem in (1, 2):
                return [self._byte() == 1 for _ in range(size)]
            return [self.value(elem) for _ in range(size)]
        if kind == 11:
            size = self._varint()
            if not size:
                return []
            head = self._byte()
            return [(self.value(head >> 4), self.value(head & 0x0F))
                    for _ in range(size)]
        if kind == 12:
            return self.struct()
        raise ValueError(f"unknown thrift type {kind}")

    def struct(self) -> dict:
        out, field = {}, 0
        while True:
            head = self._byte()
            if head == 0:
                return out
            delta = head >> 4
            field = field + delta if delta else self._zigzag()
            out[field] = self.value(head & 0x0F)


@dataclasses.dataclass(frozen=True)
class ParquetColumn:
    name: str
    physical_type: str | None  # None for a group (nested) column.
    repeated: bool
    null_count: int | None  # None: some row group has no statistics.
    per_second: int = 0  # Timestamp columns: units per second (1000: ms).


def parquet_columns(path: str) -> tuple[int, dict[str, ParquetColumn]]:
    """Number of rows and the top-level columns of a Parquet file.

    Reads the file's footer (also checks the PAR1 magic: tensorflow-io
    crashes the process on a file that is not Parquet).
    """
    filesystems.ensure_filesystem(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(4)
        if size < 12 or head != b"PAR1":
            raise DataError(f"{path} is not a Parquet file (no PAR1 magic)")
        f.seek(size - 8)
        tail = f.read(8)
        (length,) = struct.unpack("<I", tail[:4])
        if tail[4:] != b"PAR1" or length > size - 12:
            raise DataError(f"{path} is not a Parquet file (bad footer)")
        f.seek(size - 8 - length)
        meta = _CompactThrift(f.read(length)).struct()
    schema = meta.get(2, [])
    columns: dict[str, ParquetColumn] = {}
    i = 1
    while i < len(schema):
        element = schema[i]
        name = element.get(4, b"").decode("utf-8", "replace")
        children = element.get(5, 0)
        columns[name] = ParquetColumn(
            name, None if children else _PARQUET_TYPES.get(element.get(1)),
            element.get(3) == 2, None, _units_per_second(element))
        i += 1 + _descendants(schema, i)
    nulls: dict[str, int | None] = {}
    for group in meta.get(4, []):
        if not group.get(3):  # An empty row group holds no nulls.
            continue
        for chunk in group.get(1, []):
            info = chunk.get(3, {})
            name = b".".join(info.get(3, [])).decode("utf-8", "replace")
            count = info.get(12, {}).get(3)
            if name in nulls and nulls[name] is None:
                continue
            nulls[name] = None if count is None else nulls.get(name, 0) + count
    for name, column in columns.items():
        columns[name] = dataclasses.replace(
            column, null_count=nulls.get(name, 0 if column.physical_type
                                         else None))
    return int(meta.get(3, 0)), columns


def _units_per_second(element: dict) -> int:
    """1000/10**6/10**9 for a millis/micros/nanos timestamp column, else 0."""
    unit = element.get(10, {}).get(8, {}).get(2)  # LogicalType.TIMESTAMP.
    if unit:
        return {1: 1000, 2: 10**6, 3: 10**9}.get(min(unit), 0)
    return {9: 1000, 10: 10**6}.get(element.get(6), 0)  # ConvertedType.


def _descendants(schema: list, index: int) -> int:
    """How many schema elements follow `schema[index]` inside its group."""
    count = 0
    for _ in range(schema[index].get(5, 0)):
        count += 1
        count += _descendants(schema, index + count)
    return count


def _check_parquet_columns(path: str, columns: Mapping[str, ParquetColumn],
                           wanted: Mapping[str, tuple[str, ...]]) -> None:
    """Every wanted column exists, is flat, of an allowed type, no nulls."""
    for name, types in wanted.items():
        if name not in columns:
            raise DataError(
                f"{path}: Parquet file has no column {name!r} (columns: "
                f"{sorted(columns)})"
            )
        column = columns[name]
        if column.physical_type is None or column.repeated:
            raise DataError(
                f"{path}: column {name!r} is a nested/list column; "
                "tensorflow-io 0.37.1 reads list columns wrongly, so write "
                "one flat column per value (e.g. emb_0..emb_{d-1})"
            )
        if column.physical_type not in types:
            raise DataError(
                f"{path}: column {name!r} has Parquet type "
                f"{column.physical_type}, expected one of {list(types)}"
            )
        if column.null_count:
            raise DataError(
                f"{path}: column {name!r} holds {column.null_count} null "
                "value(s); tensorflow-io 0.37.1 misreads nulls (shifts the "
                "values), so fill or drop them before importing"
            )
        if column.null_count is None:
            logging.warning(
                "%s: column %r has no null statistics; nulls, if any, "
                "would be misread by tensorflow-io", path, name)


def _tfio():
    try:
        import tensorflow_io as tfio
    except Exception as e:
        raise filesystems.FilesystemError(
            "reading Parquet needs tensorflow-io, which failed to load: "
            f"{type(e).__name__}: {e}"
        ) from e
    return tfio


def _parquet_batches(path: str, names: Sequence[str],
                     batch_rows: int = _PARQUET_BATCH_ROWS
                     ) -> Iterator[dict[str, np.ndarray]]:
    """Column batches of a Parquet file, read by tensorflow-io.

    Slices of `tfio.IOTensor.from_parquet` columns: ~10x faster than
    re-batching the element-wise `tfio.IODataset.from_parquet`.
    """
    table = _tfio().IOTensor.from_parquet(path)
    columns = [table(name) for name in names]
    rows = int(columns[0].shape[0]) if columns else 0
    for start in range(0, rows, batch_rows):
        yield {name: column[start:start + batch_rows].numpy()
               for name, column in zip(names, columns)}


def _parquet_log_events(path: str, cfg: ImportConfig, bad: _BadRows,
                        out: "_EventColumns") -> int:
    """Appends the valid events of one Parquet log to `out`; returns rows."""
    num_rows, columns = parquet_columns(path)
    wanted = {c: _INT_TYPES for c in LOG_COLUMNS}
    wanted["behavior_type"] = _INT_TYPES + ("BYTE_ARRAY",)
    _check_parquet_columns(path, columns, wanted)
    per_second = columns["timestamp"].per_second
    first_row = 0
    for batch in _parquet_batches(path, LOG_COLUMNS):
        n = len(batch["user_id"])
        beh = batch["behavior_type"]
        if beh.dtype == object:
            uniq, inverse = np.unique(beh, return_inverse=True)
            ids = np.array([_behavior_id(u) or 0 for u in uniq], np.int64)
            beh_ids = ids[inverse]
        else:
            beh_ids = np.where((beh >= 1) & (beh <= 4), beh, 0)
        cols = {c: batch[c].astype(np.int64) for c in LOG_COLUMNS
                if c != "behavior_type"}
        if per_second:  # A TIMESTAMP column: whole seconds, like the CSV.
            cols["timestamp"] = cols["timestamp"] // per_second
        cols["behavior_type"] = beh_ids.astype(np.int64)
        checks = [  # In column order: a row's first failure is reported.
            ("user_id", cols["user_id"] < 1, "must be an id >= 1"),
            ("item_id", cols["item_id"] < 1, "must be an id >= 1"),
            ("category_id", cols["category_id"] < 1, "must be an id >= 1"),
            ("behavior_type", cols["behavior_type"] == 0,
             "is not a known behaviour (pv, cart, fav, buy or 1..4)"),
            ("timestamp", cols["timestamp"] < 0, "must be an integer >= 0"),
        ]
        any_bad = np.zeros(n, bool)
        for _, mask, _ in checks:
            any_bad |= mask
        for row in np.flatnonzero(any_bad):
            field, _, reason = next(c for c in checks if c[1][row])
            value = batch[field][row]
            value = value.decode("utf-8", "replace") if isinstance(
                value, bytes) else value.item()
            bad.add(path, f"row {first_row + row + 1}",
                    _Bad(field, value, reason))
        keep = ~any_bad
        out.extend(*(cols[c][keep] for c in LOG_COLUMNS))
        first_row += n
        if first_row // cfg.progress_every != (first_row - n) \
                // cfg.progress_every:
            _progress(f"{path}: {first_row} rows read")
    if first_row != num_rows:
        raise DataError(
            f"{path}: tensorflow-io returned {first_row} rows, the footer "
            f"says {num_rows}"
        )
    return first_row


def _table_rows(path: str, fmt: str, header: str, delimiter: str,
                columns: Sequence[str] | None, parquet_types: Mapping
                ) -> Iterator[tuple[str, dict[str, Any] | list[Any]]]:
    """Rows of a small side table as (place, {column: value} or list)."""
    if fmt == "parquet":
        _, found = parquet_columns(path)
        names = [n for n in found if n in parquet_types
                 or any(n.startswith(p) for p in parquet_types
                        if p.endswith("_"))]
        wanted = {}
        for name in names:
            key = name if name in parquet_types else next(
                p for p in parquet_types if p.endswith("_")
                and name.startswith(p))
            wanted[name] = parquet_types[key]
        for required in columns or ():
            wanted.setdefault(required, parquet_types[required])
        nested = sorted(n for n, c in found.items()
                        if c.physical_type is None or c.repeated)
        prefixes = [p for p in parquet_types if p.endswith("_")]
        if nested and prefixes and not any(
                n.startswith(p) for p in prefixes for n in wanted):
            raise DataError(
                f"{path}: no {prefixes[0]}0.. columns, and the nested/list "
                f"column(s) {nested} cannot be used: tensorflow-io 0.37.1 "
                "reads list columns wrongly; write one flat column per "
                "value (emb_0..emb_{d-1})"
            )
        _check_parquet_columns(path, found, wanted)
        row = 0
        for batch in _parquet_batches(path, list(wanted)):
            lists = {k: v.tolist() for k, v in batch.items()}
            for i in range(len(next(iter(lists.values())))):
                row += 1
                yield f"row {row}", {k: v[i] for k, v in lists.items()}
        return
    for line, names, row in _csv_rows(path, delimiter, header, columns):
        if names is None:
            yield f"line {line}", list(row)
        else:
            if len(row) != len(names):
                yield f"line {line}", _Bad(
                    "(row)", row, f"has {len(row)} fields, expected "
                    f"{len(names)}")
                continue
            yield f"line {line}", dict(zip(names, row))


def _format_of(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    return "parquet" if path.lower().endswith((".parquet", ".parq",
                                                ".pq")) else "csv"


# ------------------------------------------------------------------ events
class _EventColumns:
    """Growing int64 columns of the events read so far."""

    def __init__(self):
        self.parts: list[list[np.ndarray]] = [[] for _ in LOG_COLUMNS]
        self.pending: list[list[int]] = [[] for _ in LOG_COLUMNS]

    def append(self, *values: int) -> None:
        for column, v in zip(self.pending, values):
            column.append(v)
        if len(self.pending[0]) >= 1 << 16:
            self._flush()

    def extend(self, *arrays: np.ndarray) -> None:
        self._flush()
        for column, a in zip(self.parts, arrays):
            column.append(np.asarray(a, np.int64))

    def _flush(self) -> None:
        if self.pending[0]:
            for column, values in zip(self.parts, self.pending):
                column.append(np.array(values, np.int64))
            self.pending = [[] for _ in LOG_COLUMNS]

    def arrays(self) -> dict[str, np.ndarray]:
        self._flush()
        return {
            name: (np.concatenate(parts) if parts else np.zeros(0, np.int64))
            for name, parts in zip(LOG_COLUMNS, self.parts)
        }


def expand_inputs(spec: str) -> list[str]:
    """Comma-separated paths or glob patterns -> sorted unique files."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(ch in part for ch in "*?["):
            files.extend(filesystems.glob(part))
        else:
            filesystems.ensure_filesystem(part)
            if not tf.io.gfile.exists(part):
                raise FileNotFoundError(f"input file {part!r} does not exist")
            files.append(part)
    return sorted(dict.fromkeys(files))


def read_events(cfg: ImportConfig) -> tuple[dict[str, np.ndarray], dict]:
    """All valid events of the inputs as int64 columns, and the counts."""
    files = expand_inputs(cfg.input)
    bad = _BadRows(cfg.skip_bad_rows, "log")
    out = _EventColumns()
    rows = 0
    for path in files:
        fmt = _format_of(path, cfg.format)
        _progress(f"reading {path} ({fmt})")
        reader = _parquet_log_events if fmt == "parquet" else _csv_log_events
        rows += reader(path, cfg, bad, out)
    events = out.arrays()
    counts = {"inputs": files, "rows_read": rows,
              "events": int(len(events["user_id"])), **bad.summary()}
    return events, counts


# ------------------------------------------------------------ side tables
def read_users(cfg: ImportConfig) -> tuple[dict[int, tuple[int, ...]], dict]:
    """user_id -> user feature values, from the optional user table."""
    if not cfg.users:
        return {}, {"users_in_table": 0, "skipped_rows": 0}
    names = ("user_id",) + tuple(cfg.user_features)
    bad = _BadRows(cfg.skip_bad_rows, "user table")
    path = cfg.users
    fmt = _format_of(path)
    header = "yes" if fmt == "csv" else "auto"
    table: dict[int, tuple[int, ...]] = {}
    for place, row in _table_rows(path, fmt, header, cfg.delimiter, names,
                                  {n: _INT_TYPES for n in names}):
        try:
            if isinstance(row, _Bad):
                raise row
            user = _int_value(row["user_id"], "user_id", 1)
            if user in table:
                raise _Bad("user_id", row["user_id"], "is a duplicate")
            table[user] = tuple(
                _int_value(row[f], f, 1) for f in cfg.user_features)
        except _Bad as b:
            bad.add(path, place, b)
    return table, {"users_in_table": len(table), **bad.summary()}


def _item_row(row: Any) -> tuple[int, int, list[float]]:
    if isinstance(row, _Bad):
        raise row
    if isinstance(row, dict):
        dims = sorted((int(k[4:]), k) for k in row
                      if k.startswith("emb_") and k[4:].isdigit())
        if [d for d, _ in dims] != list(range(len(dims))) or not dims:
            raise _Bad("emb_*", sorted(row), "must be emb_0..emb_{d-1}")
        item, category = row.get("item_id"), row.get("category_id")
        emb = [_float_value(row[k], k) for _, k in dims]
    else:
        if len(row) < 3:
            names = ("item_id", "category_id", "emb_0")
            raise _Bad(names[len(row)], None, "is missing")
        item, category = row[0], row[1]
        emb = [_float_value(v, f"emb_{i}") for i, v in enumerate(row[2:])]
    return (_int_value(item, "item_id", 1),
            _int_value(category, "category_id", 1), emb)


def write_items(cfg: ImportConfig, out_dir: str) -> dict:
    """Writes the item table TFRecord; returns its counts."""
    path = cfg.items
    fmt = _format_of(path)
    bad = _BadRows(cfg.skip_bad_rows, "item table")
    out_path = os.path.join(out_dir, shard_name(cfg.item_table_pattern, 0, 1))
    seen: set[int] = set()
    dim = None
    options = tf.io.TFRecordOptions(compression_type=cfg.compression)
    with tf.io.TFRecordWriter(out_path, options) as writer:
        for place, row in _table_rows(
                path, fmt, cfg.header, cfg.delimiter,
                ("item_id", "category_id"),
                {"item_id": _INT_TYPES, "category_id": _INT_TYPES,
                 "emb_": ("FLOAT", "DOUBLE")}):
            try:
                item, category, emb = _item_row(row)
                if dim is None:
                    dim = len(emb)
                if len(emb) != dim:
                    raise _Bad("emb_*", len(emb), f"must hold {dim} values "
                               "like the first row")
                if item in seen:
                    raise _Bad("item_id", item, "is a duplicate")
            except _Bad as b:
                bad.add(path, place, b)
                continue
            seen.add(item)
            writer.write(item_example(item, category, emb)
                         .SerializeToString())
    return {"file": out_path, "items": len(seen), "content_dim": dim or 0,
            **bad.summary()}


# ---------------------------------------------------------------- requests
@dataclasses.dataclass
class Requests:
    """Requests over events sorted by (user, time, input order)."""

    start: np.ndarray  # [R] first event of the request's window.
    end: np.ndarray  # [R] one past its last event.
    user_start: np.ndarray  # [R] the user's first event.
    time: np.ndarray  # [R] request_time.
    user: np.ndarray  # [R]


def form_requests(events: Mapping[str, np.ndarray], window_s: int
                  ) -> tuple[dict[str, np.ndarray], Requests]:
    """Sorts the events by (user, time) and cuts them into requests."""
    n = len(events["user_id"])
    order = np.lexsort((np.arange(n), events["timestamp"], events["user_id"]))
    ev = {k: v[order] for k, v in events.items()}  # [E] each, sorted.
    user, ts = ev["user_id"], ev["timestamp"]
    window = ts // window_s  # [E]
    new_user = np.ones(n, bool)
    new_user[1:] = user[1:] != user[:-1]
    new_request = new_user.copy()
    new_request[1:] |= window[1:] != window[:-1]
    start = np.flatnonzero(new_request)  # [R]
    end = np.append(start[1:], n)  # [R]
    user_first = np.flatnonzero(new_user)  # [U]
    user_start = user_first[np.searchsorted(user_first, start, "right") - 1]
    return ev, Requests(start, end, user_start, ts[start], user[start])


def shard_name(pattern: str, index: int, count: int) -> str:
    """`train-*.tfrecord.gz` -> `train-00001-of-00004.tfrecord.gz`."""
    return pattern.replace("*", f"{index:05d}-of-{count:05d}")


class _ShardedWriter:
    """Writes n records in order: shard k holds the k-th contiguous slice."""

    def __init__(self, out_dir: str, pattern: str, shards: int, total: int,
                 compression: str):
        self.paths = [os.path.join(out_dir, shard_name(pattern, k, shards))
                      for k in range(shards)]
        self.total, self.written = total, 0
        self.options = tf.io.TFRecordOptions(compression_type=compression)
        self.current, self.writer = -1, None

    def _open(self, shard: int) -> None:
        while self.current < shard:
            if self.writer is not None:
                self.writer.close()
            self.current += 1
            self.writer = tf.io.TFRecordWriter(self.paths[self.current],
                                               self.options)

    def write(self, record: bytes) -> None:
        self._open(self.written * len(self.paths) // max(self.total, 1))
        self.writer.write(record)
        self.written += 1

    def close(self) -> None:
        self._open(len(self.paths) - 1)  # Every shard exists, maybe empty.
        self.writer.close()
        self.writer = None


class NegativeSampler:
    """Items in proportion to their number of events before a time.

    Drawing a uniformly random past event and taking its item samples the
    catalogue's popularity as seen so far. Uniform numbers are drawn in
    blocks from one seeded generator, so the output depends only on the
    seed and the order of the calls.
    """

    _BLOCK = 1 << 16

    def __init__(self, items_by_time: np.ndarray, cats_by_time: np.ndarray,
                 ts_by_time: np.ndarray, seed: int):
        self.items = items_by_time  # [E] item of each event, time order.
        self.cats = cats_by_time  # [E]
        self.ts = ts_by_time  # [E] sorted.
        self.rng = np.random.default_rng(seed)
        self.uniform: list[float] = []
        self.next = 0

    def _draw(self) -> float:
        if self.next == len(self.uniform):
            self.uniform = self.rng.random(self._BLOCK).tolist()
            self.next = 0
        self.next += 1
        return self.uniform[self.next - 1]

    def sample(self, k: int, before: int, exclude: set[int]
               ) -> tuple[list[int], list[int]]:
        """Up to k distinct items seen before `before`, none in `exclude`.

        Gives up after 32 * k draws (a catalogue seen so far with too few
        other items): the caller counts the shortfall.
        """
        items: list[int] = []
        cats: list[int] = []
        seen = int(np.searchsorted(self.ts, before, "left"))
        if k <= 0 or seen <= 0:
            return items, cats
        taken = set(exclude)
        for _ in range(32 * k):
            event = int(self._draw() * seen)  # Uniform over past events.
            item = int(self.items[event])
            if item not in taken:
                taken.add(item)
                items.append(item)
                cats.append(int(self.cats[event]))
                if len(items) == k:
                    break
        return items, cats


def request_example(spec: FeatureSpec, request: Mapping[str, Any]
                    ) -> tf.train.Example:
    """`spec.to_example` for values known to be Python ints, faster.

    The importer writes one record per request; `FeatureSpec.to_example`
    converts and checks every field through numpy, which dominated the
    import time. Gives a message equal to `spec.to_example` (tested).
    """
    example = tf.train.Example()
    feature = example.features.feature
    for name in spec.scalar_features:
        feature[name].int64_list.value.append(request[name])
    for name in spec.list_features:
        feature[name].int64_list.value.extend(request[name])
    return example


def _window_candidates(items: list[int], cats: list[int], behs: list[int],
                       positive: frozenset[int], cap: int
                       ) -> tuple[list[int], list[int], list[int], int]:
    """Distinct items of one window -> (items, cats, labels, dropped)."""
    first: dict[int, list[int]] = {}
    for item, cat, beh in zip(items, cats, behs):
        entry = first.setdefault(item, [cat, 0])
        if beh in positive:
            entry[1] = 1
    keys = list(first)
    dropped = max(0, len(keys) - cap)
    if dropped:
        ranked = sorted(range(len(keys)), key=lambda i: (-first[keys[i]][1], i))
        keep = sorted(ranked[:cap])
        keys = [keys[i] for i in keep]
    return (keys, [first[k][0] for k in keys], [first[k][1] for k in keys],
            dropped)


def _existing_outputs(cfg: ImportConfig) -> list[str]:
    found = []
    for pattern in (cfg.train_pattern, cfg.eval_pattern,
                    cfg.item_table_pattern, SUMMARY_FILE):
        found += tf.io.gfile.glob(os.path.join(cfg.output_dir, pattern))
    return sorted(found)


def main(cfg_like: ImportConfig | Mapping[str, Any]) -> dict:
    """Imports the logs of `cfg_like`; returns (and writes) the summary."""
    cfg = coerce_config(cfg_like)
    started = time.time()
    spec = cfg.feature_spec()
    out_dir = cfg.output_dir
    filesystems.ensure_filesystem(out_dir)
    tf.io.gfile.makedirs(out_dir)
    stale = _existing_outputs(cfg)
    if stale and not cfg.overwrite:
        raise FileExistsError(
            f"output_dir {out_dir!r} already holds outputs ({stale[0]}, "
            f"... {len(stale)} files); pass overwrite=True to replace them"
        )

    events, summary = read_events(cfg)
    users, user_counts = read_users(cfg)
    if not len(events["user_id"]):
        raise DataError(f"no valid events in {cfg.input!r}")
    for path in stale:  # Only once the input has been read and checked.
        tf.io.gfile.remove(path)
    item_counts = write_items(cfg, out_dir) if cfg.items else None
    ev, req = form_requests(events, cfg.request_window_s)
    del events
    ts = ev["timestamp"]
    t_order = np.lexsort((np.arange(len(ts)), ts))  # Stable time order.
    ts_by_time = ts[t_order]
    items_by_time = ev["item_id"][t_order]
    cats_by_time = ev["category_id"][t_order]
    del t_order

    hist_len = req.start - req.user_start  # [R] events before the request.
    keep = hist_len >= cfg.min_history
    if cfg.eval_start_ts is not None:
        eval_start = int(cfg.eval_start_ts)
    elif cfg.eval_days > 0:
        eval_start = int(ts_by_time[-1]) - cfg.eval_days * SECONDS_PER_DAY
    else:
        eval_start = None
    is_eval = (req.time >= eval_start if eval_start is not None
               else np.zeros(len(req.time), bool))
    order = np.lexsort((req.user, req.time))  # Requests in time order.
    order = order[keep[order]]
    split_of = {"train": order[~is_eval[order]], "eval": order[is_eval[order]]}

    sampler = NegativeSampler(items_by_time, cats_by_time, ts_by_time,
                              cfg.seed)
    positive = cfg.positive_ids
    unknown = (UNKNOWN_USER_FEATURE,) * len(cfg.user_features)
    counters = collections.Counter()
    splits: dict[str, dict] = {}
    files: dict[str, list[str]] = {}
    columns = {k: ev[k] for k in ("item_id", "category_id", "behavior_type",
                                  "timestamp")}
    starts, ends = req.start.tolist(), req.end.tolist()
    user_starts, times = req.user_start.tolist(), req.time.tolist()
    request_users = req.user.tolist()
    done = 0
    for split, pattern in (("train", cfg.train_pattern),
                           ("eval", cfg.eval_pattern)):
        rows = split_of[split]
        writer = _ShardedWriter(out_dir, pattern, cfg.num_shards, len(rows),
                                cfg.compression)
        stats = collections.Counter(requests=len(rows))
        for r in rows.tolist():
            s, e, u0 = starts[r], ends[r], user_starts[r]
            h0 = max(u0, s - cfg.max_history)
            counters["histories_truncated"] += h0 > u0
            window = {k: v[s:e].tolist() for k, v in columns.items()}
            items, cats, labels, dropped = _window_candidates(
                window["item_id"], window["category_id"],
                window["behavior_type"], positive, cfg.max_candidates)
            counters["truncated_candidates"] += dropped
            want = min(cfg.negatives_per_request,
                       cfg.max_candidates - len(items))
            neg_items, neg_cats = sampler.sample(
                want, times[r], set(window["item_id"]))
            counters["negatives_sampled"] += len(neg_items)
            counters["negatives_short"] += want - len(neg_items)
            counters["negatives_truncated"] += (
                cfg.negatives_per_request - want)
            user = request_users[r]
            request = {
                "user_id": user,
                "request_time": times[r],
                **dict(zip(cfg.user_features, users.get(user, unknown))),
                "hist_item_ids": columns["item_id"][h0:s].tolist(),
                "hist_category_ids": columns["category_id"][h0:s].tolist(),
                "hist_behaviors": columns["behavior_type"][h0:s].tolist(),
                "hist_timestamps": columns["timestamp"][h0:s].tolist(),
                "cand_item_ids": items + neg_items,
                "cand_category_ids": cats + neg_cats,
                "labels": labels + [0] * len(neg_items),
            }
            writer.write(request_example(spec, request).SerializeToString())
            stats["impressions"] += len(items) + len(neg_items)
            stats["positives"] += sum(labels)
            done += 1
            if done % cfg.progress_every == 0:
                _progress(f"{done} of {len(order)} requests written")
        writer.close()
        files[split] = writer.paths
        splits[split] = dict(stats)

    if item_counts:
        files["items"] = [item_counts["file"]]
    totals = {key: sum(s.get(key, 0) for s in splits.values())
              for key in ("requests", "impressions", "positives")}
    summary.update({
        "users": int(len(np.unique(ev["user_id"]))),
        "items_in_log": int(len(np.unique(ev["item_id"]))),
        "time_range": [int(ts_by_time[0]), int(ts_by_time[-1])],
        "eval_start_ts": eval_start,
        **totals,
        "requests_dropped_short_history": int((~keep).sum()),
        "histories_truncated": int(counters["histories_truncated"]),
        "truncated_candidates": int(counters["truncated_candidates"]),
        "negatives_sampled": int(counters["negatives_sampled"]),
        "negatives_short": int(counters["negatives_short"]),
        "negatives_truncated": int(counters["negatives_truncated"]),
        "splits": splits,
        "user_table": user_counts,
        "item_table": item_counts,
        "files": files,
        "config": cfg.to_dict(),
        "seconds": round(time.time() - started, 3),
    })
    with tf.io.gfile.GFile(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    print(format_summary(summary), file=sys.stderr)
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    lines = [
        f"imported {summary['events']} events of {summary['users']} users "
        f"({summary['rows_read']} rows, skipped {summary['skipped_rows']} "
        "bad rows)",
    ]
    for split, s in summary["splits"].items():
        lines.append(
            f"  {split}: {s.get('requests', 0)} requests, "
            f"{s.get('impressions', 0)} impressions, "
            f"{s.get('positives', 0)} positives")
    lines.append(
        f"  truncated candidates {summary['truncated_candidates']}, "
        f"truncated histories {summary['histories_truncated']}, "
        f"negatives sampled {summary['negatives_sampled']} "
        f"(short {summary['negatives_short']})")
    for split in ("train", "eval"):
        if not summary["splits"].get(split, {}).get("requests") and (
                split == "train" or summary["eval_start_ts"] is not None):
            lines.append(f"  warning: no {split} requests (time range "
                         f"{summary['time_range']}, eval_start_ts "
                         f"{summary['eval_start_ts']})")
    if summary.get("item_table"):
        t = summary["item_table"]
        lines.append(f"  items: {t['items']} (content_dim "
                     f"{t['content_dim']}, skipped {t['skipped_rows']} bad "
                     "rows)")
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI
_FLAG_HELP = {
    "input": (str, "Log file(s): comma-separated paths or glob patterns."),
    "format": (str, "csv, parquet or auto (by file extension)."),
    "items": (str, "Optional item table (.csv or .parquet)."),
    "users": (str, "Optional user table (.csv or .parquet)."),
    "output_dir": (str, "Output directory (default: data.data_dir)."),
    "header": (str, "CSV header row: auto, yes or no."),
    "max_history": (int, "N, newest history events kept."),
    "max_candidates": (int, "C, candidates per request."),
    "request_window_s": (int, "Request window in seconds."),
    "negatives_per_request": (int, "Sampled negatives per request."),
    "positive_behaviors": (str, "Comma-separated positive behaviours."),
    "eval_days": (int, "Last days of the log that go to eval."),
    "eval_start_ts": (int, "Eval cut-off timestamp (overrides eval_days)."),
    "min_history": (int, "Drop requests with a shorter history."),
    "num_shards": (int, "Shards per split."),
    "seed": (int, "Negative-sampling seed."),
    "skip_bad_rows": (bool, "Skip and count bad rows instead of failing."),
    "overwrite": (bool, "Replace outputs already in output_dir."),
    "progress_every": (int, "Log progress every this many rows/requests."),
}


def _define_flags() -> None:
    """Defines the importer's flags once (only when it is the CLI)."""
    definers = {str: flags.DEFINE_string, int: flags.DEFINE_integer,
                bool: flags.DEFINE_bool}
    for name, (kind, text) in _FLAG_HELP.items():
        if name not in flags.FLAGS:
            definers[kind](name, None, text)


def _main_from_flags(cfg: config_lib.Config) -> dict:
    fields = {name: getattr(flags.FLAGS, name) for name in _FLAG_HELP}
    if not fields["input"]:
        raise ValueError("--input is required (log file paths or patterns)")
    return main(ImportConfig.from_config(cfg, **fields))


def run() -> None:
    """`hisac-import`: --config/--set as every job, plus the flags above."""
    _define_flags()
    from pipelines import cli

    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
