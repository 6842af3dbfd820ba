"""Reading the item table: files, tf.data batches, one statistics pass.

docs/design.md §2.1 and §4. The item table is GZIP (by default) TFRecords,
one `tf.train.Example` per item: item_id, category_id, content_embedding
[F] floats and, on synthetic data, subtopic_id. Reading streams it with
tf.data; only per-item scalars are kept in memory, never the content
embeddings of the whole table. A malformed record raises `DataError`
naming the file, the record and the field.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import dataclasses
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from hisac_tf.data import filesystems
from hisac_tf.data.feature_spec import (
    ITEM_CATEGORY,
    ITEM_EMBEDDING,
    ITEM_ID,
    ITEM_SUBTOPIC,
    DataError,
    item_table_parse_spec,
)

_DATA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


def list_item_files(pattern: str) -> list[str]:
    """Sorted files matching `pattern` (local, gs://, s3://, hdfs://)."""
    try:
        return filesystems.glob(pattern)
    except FileNotFoundError as e:
        raise DataError(f"item table: no file matches {pattern!r}") from e


def infer_content_dim(path: str, compression: str) -> int:
    """Length of content_embedding in the first record of `path`."""
    for record in tf.data.TFRecordDataset(path, compression_type=compression):
        example = tf.train.Example.FromString(record.numpy())
        feats = example.features.feature
        if ITEM_EMBEDDING not in feats:
            raise DataError(f"{path}:0: missing field {ITEM_EMBEDDING}")
        n = len(feats[ITEM_EMBEDDING].float_list.value)
        if n < 1:
            raise DataError(
                f"{path}:0: field {ITEM_EMBEDDING} must hold floats, got "
                f"{n} values")
        return n
    raise DataError(f"{path}: item-table file holds no record")


def item_dataset(
    files: Sequence[str],
    content_dim: int,
    batch_size: int,
    compression: str = "GZIP",
    shuffle_buffer: int = 0,
    seed: int = 0,
    num_parallel_reads: int = 4,
) -> tf.data.Dataset:
    """Batched parsed item records: dicts of [B] ids and [B, F] x.

    Unshuffled (shuffle_buffer 0) it keeps file and record order;
    shuffled, the order is a function of `seed` (reproducible runs).
    """
    ds = tf.data.Dataset.from_tensor_slices(list(files))
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda path: tf.data.TFRecordDataset(
            path, compression_type=compression),
        cycle_length=max(1, min(num_parallel_reads, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed,
                        reshuffle_each_iteration=True)
    spec = item_table_parse_spec(content_dim)
    ds = ds.batch(batch_size).map(
        lambda rec: tf.io.parse_example(rec, spec),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def diagnose_item_files(
    files: Sequence[str], content_dim: int, compression: str
) -> DataError | None:
    """Scans records one by one; returns the first breach (slow: errors)."""
    kinds = {ITEM_ID: ("int64_list", 1), ITEM_CATEGORY: ("int64_list", 1),
             ITEM_EMBEDDING: ("float_list", content_dim)}
    for path in files:
        index = -1
        try:
            records = tf.data.TFRecordDataset(
                path, compression_type=compression)
            for index, record in enumerate(records):
                feats = tf.train.Example.FromString(
                    record.numpy()).features.feature
                for name, (kind, size) in kinds.items():
                    if name not in feats:
                        return DataError(
                            f"{path}:{index}: missing field {name}")
                    got = feats[name].WhichOneof("kind")
                    if got != kind:
                        return DataError(
                            f"{path}:{index}: field {name} has type {got}, "
                            f"expected {kind}")
                    n = len(getattr(feats[name], kind).value)
                    if n != size:
                        return DataError(
                            f"{path}:{index}: field {name} must hold "
                            f"{size} values, got {n}")
        except tf.errors.OpError as e:
            return DataError(
                f"{path}: corrupt or truncated TFRecord file after record "
                f"{index} ({type(e).__name__})")
    return None


def checked_batches(
    ds: tf.data.Dataset, files: Sequence[str], content_dim: int,
    compression: str,
) -> Iterator[dict]:
    """Iterates `ds`; a data error is re-raised naming file and record."""
    iterator = iter(ds)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except _DATA_ERRORS as e:
            found = diagnose_item_files(files, content_dim, compression)
            if found is None:
                raise
            raise found from e
        yield batch


class Moments:
    """Streaming per-dimension mean and variance (Chan et al. merge)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros(dim, np.float64)

    def update(self, x: np.ndarray) -> None:
        """Adds the rows of x [B, dim]."""
        x = np.asarray(x, np.float64)
        nb = x.shape[0]
        if not nb:
            return
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * nb / n
        self.m2 = self.m2 + m2b + delta ** 2 * self.n * nb / n
        self.n = n

    @property
    def variance(self) -> np.ndarray:
        """[dim] population variance of the rows seen."""
        return self.m2 / max(self.n, 1)


def check_item_ids(item_ids: np.ndarray) -> None:
    """Raises DataError naming an id < 1 or a duplicated id."""
    ids = np.asarray(item_ids, np.int64)
    if ids.size == 0:
        raise DataError("item table holds no item")
    bad = np.flatnonzero(ids < 1)
    if bad.size:
        raise DataError(
            f"field {ITEM_ID} must be >= 1, got {int(ids[bad[0]])} "
            f"(record {int(bad[0])} of the table)")
    unique, counts = np.unique(ids, return_counts=True)
    dup = np.flatnonzero(counts > 1)
    if dup.size:
        raise DataError(
            f"field {ITEM_ID}: duplicate item id {int(unique[dup[0]])} "
            f"({int(counts[dup[0]])} records; {dup.size} ids duplicated)")


@dataclasses.dataclass(frozen=True)
class ItemTableScan:
    """What one pass over the item table gives, in table order.

    Attributes:
      files: the item-table files, sorted.
      content_dim: F.
      item_ids, categories, subtopics: [V] int64 (subtopic 0 when absent).
      mean, variance: [F] float64 moments of the content embeddings.
    """

    files: tuple[str, ...]
    content_dim: int
    item_ids: np.ndarray
    categories: np.ndarray
    subtopics: np.ndarray
    mean: np.ndarray
    variance: np.ndarray

    @property
    def num_items(self) -> int:
        return int(self.item_ids.size)


def scan_item_table(
    pattern: str,
    compression: str = "GZIP",
    batch_size: int = 1024,
    num_parallel_reads: int = 4,
    content_dim: int | None = None,
) -> ItemTableScan:
    """One streaming pass: ids, categories, sub-topics, moments of x.

    Raises:
      DataError: no file, unreadable records (naming file, record and
        field), a non-finite embedding (naming the item), duplicate ids
        or ids < 1 (naming the id).
    """
    files = list_item_files(pattern)
    if content_dim is None:
        content_dim = infer_content_dim(files[0], compression)
    ds = item_dataset(files, content_dim, batch_size, compression,
                      num_parallel_reads=num_parallel_reads)
    moments = Moments(content_dim)
    ids, cats, subs = [], [], []
    for batch in checked_batches(ds, files, content_dim, compression):
        x = batch[ITEM_EMBEDDING].numpy()
        if not np.all(np.isfinite(x)):
            row = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise DataError(
                f"field {ITEM_EMBEDDING} of item "
                f"{int(batch[ITEM_ID][row])} is not finite")
        moments.update(x)
        ids.append(batch[ITEM_ID].numpy())
        cats.append(batch[ITEM_CATEGORY].numpy())
        subs.append(batch[ITEM_SUBTOPIC].numpy())
    if not ids:
        raise DataError(f"item table {pattern!r} holds no item")
    item_ids = np.concatenate(ids)
    check_item_ids(item_ids)
    return ItemTableScan(
        files=tuple(files), content_dim=int(content_dim), item_ids=item_ids,
        categories=np.concatenate(cats), subtopics=np.concatenate(subs),
        mean=moments.mean, variance=moments.variance)
