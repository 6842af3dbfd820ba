"""CSV logs and side tables, on any filesystem, gzipped or not.

A header row is optional: `header="auto"` takes a first row whose first
field is not an integer as the header, and columns are then found by name
(case-insensitive); without one the columns are positional.

Bytes are decoded line by line as UTF-8 (a leading byte-order mark is
dropped), so a line that is not UTF-8 is a bad row naming its file and
line (skipped and counted with `skip_bad_rows`), like a row that the csv
module refuses (a NUL byte, an oversize field). A truncated or corrupt
`.gz` file stops the job with an error naming the file and the last line
read.
"""

from __future__ import annotations

import csv
import gzip
import io
import zlib
from typing import Any, BinaryIO, Iterator, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.data import filesystems
from hisac_tf.behaviors import is_integer
from hisac_tf.data.feature_spec import DataError
from hisac_tf.data.importers.bad_rows import BadRows, BadValue
from hisac_tf.data.importers.event_columns import EventColumns
from hisac_tf.data.importers.feature_columns import (column_name,
                                                     parse_feature_value)
from hisac_tf.data.importers.field_values import LOG_COLUMNS, parse_log_row
from hisac_tf.data.importers.gfile_stream import GFileStream
from hisac_tf.data.importers.progress import progress


BOM = "\ufeff"


def open_binary(path: str) -> BinaryIO:
    """A byte stream of `path` on any filesystem; `*.gz` is decompressed."""
    filesystems.ensure_filesystem(path)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    if filesystems.scheme(path) in ("", "file"):
        raw = open(path.removeprefix("file://"), "rb")
    else:
        raw = io.BufferedReader(GFileStream(path), buffer_size=1 << 20)
    if path.endswith(".gz"):
        raw = gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def open_text(path: str):
    """A text stream of `path` on any filesystem; `*.gz` is decompressed."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig",
                            newline="")


class _Lines:
    """The decoded lines of a byte stream, for `csv.reader`.

    A line that is not UTF-8 is passed on as a blank line and recorded in
    `bad` as (line number, BadValue); a gzip stream that ends early or is
    not gzip raises DataError naming the file and the last line read.
    """

    def __init__(self, path: str, stream: BinaryIO):
        self.path, self.stream = path, stream
        self.number = 0
        self.bad: list[tuple[int, BadValue]] = []

    def __iter__(self) -> Iterator[str]:
        while True:
            try:
                raw = self.stream.readline()
            except (EOFError, OSError, zlib.error) as e:
                raise DataError(
                    f"{self.path}: truncated or corrupt compressed file "
                    f"after line {self.number} ({type(e).__name__}: {e})"
                ) from None
            if not raw:
                return
            self.number += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                self.bad.append((self.number, BadValue(
                    "(row)", raw[:60], f"is not UTF-8 text (byte "
                    f"0x{raw[e.start]:02x} at byte {e.start + 1} of the "
                    "line)")))
                text = "\n"
            if self.number == 1:
                text = text.removeprefix(BOM)
            yield text


def _looks_like_header(row: Sequence[str]) -> bool:
    return not is_integer(row[0].strip())


def csv_rows(path: str, delimiter: str, header: str,
             columns: Sequence[str] | None
             ) -> Iterator[tuple[int, list[str] | None, list[str]]]:
    """Yields (line number, header or None, row) for each non-blank row.

    A line that is not UTF-8 or not CSV comes as the row `BadValue`.
    Raises DataError when the header lacks one of `columns`, or the file
    is a truncated or corrupt `.gz`.
    """
    with open_binary(path) as f:
        lines = _Lines(path, f)
        reader = csv.reader(iter(lines), delimiter=delimiter)
        names: list[str] | None = None
        first = True
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield lines.number, names, BadValue(
                    "(row)", None, f"is not valid CSV ({e})")
                continue
            while lines.bad:
                line, bad = lines.bad.pop(0)
                yield line, names, bad
            if not row or all(not v.strip() for v in row):
                continue
            if first:
                first = False
                if header == "yes" or (header == "auto"
                                       and _looks_like_header(row)):
                    names = [v.strip().lower() for v in row]
                    if columns is not None:
                        missing = [c for c in columns if c not in names]
                        if missing:
                            raise DataError(
                                f"{path}: header {row!r} lacks column(s) "
                                f"{missing} (expected {list(columns)})"
                            )
                    continue
            yield reader.line_num, names, row


def csv_log_events(path: str, delimiter: str, header: str, bad: BadRows,
                   out: EventColumns, progress_every: int) -> int:
    """Appends the valid events of one CSV log to `out`; returns rows."""
    rows = 0
    index: list[int] | None = None
    width = len(LOG_COLUMNS)
    for line, names, row in csv_rows(path, delimiter, header, LOG_COLUMNS):
        rows += 1
        if isinstance(row, BadValue):
            bad.add(path, f"line {line}", row)
            continue
        if index is None:
            index = ([names.index(c) for c in LOG_COLUMNS] if names
                     else list(range(width)))
            width = len(names) if names else width
            extra = _feature_index(path, names, out.features)
        try:
            if len(row) != width:
                missing = [c for c, i in zip(LOG_COLUMNS, index)
                           if i >= len(row)]
                if missing:
                    raise BadValue(
                        missing[0], None, f"is missing (the row has "
                        f"{len(row)} fields, expected {width})")
                raise BadValue("(row)", row, f"has {len(row)} fields, "
                               f"expected {width}")
            values = parse_log_row([row[i] for i in index])
            out.append(*values, extra=tuple(
                parse_feature_value(f, row[i], f"{column_name(f)} (feature "
                                    f"{f.name!r})")
                for f, i in zip(out.features, extra)))
        except BadValue as b:
            bad.add(path, f"line {line}", b)
        if rows % progress_every == 0:
            progress(f"{path}: {rows} rows read")
    return rows


def _feature_index(path: str, names: list[str] | None,
                   features) -> list[int]:
    """Column index of each event/context feature; DataError naming the
    feature when the log has no header or lacks its column."""
    if not features:
        return []
    if not names:
        raise DataError(
            f"{path}: features {[f.name for f in features]} are read from "
            "log columns by name; the log needs a header row")
    index = []
    for f in features:
        if column_name(f) not in names:
            raise DataError(
                f"{path}: header {names} lacks column {f.record_key!r} of "
                f"feature {f.name!r} ({f.location})")
        index.append(names.index(column_name(f)))
    return index


def csv_table_rows(path: str, delimiter: str, header: str,
                   columns: Sequence[str] | None
                   ) -> Iterator[tuple[str, dict[str, Any] | list[Any]
                                       | BadValue]]:
    """Rows of a side table as (place, {column: text} or [text, ...]).

    A row whose width differs from the header's is yielded as a BadValue.
    """
    for line, names, row in csv_rows(path, delimiter, header, columns):
        if isinstance(row, BadValue):
            yield f"line {line}", row
        elif names is None:
            yield f"line {line}", list(row)
        elif len(row) != len(names):
            yield f"line {line}", BadValue(
                "(row)", row, f"has {len(row)} fields, expected "
                f"{len(names)}")
        else:
            yield f"line {line}", dict(zip(names, row))
