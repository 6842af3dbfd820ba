"""tf.data input pipeline for request-level TFRecords (docs/design.md §4).

    files ─ interleave(TFRecordDataset, tagged "file:record") ─ shuffle ─
    repeat ─ batch ─ parse + contract checks + truncate/pad ─ prefetch

Every batch is the padded layout of `FeatureSpec.pad_batch`: histories keep
their newest N items (truncation is counted through `hist_raw_length`),
candidates are padded to C with `cand_count`. Records that break the data
contract stop the pipeline with an error naming the field, the file and the
record (`path:index`); low-level TensorFlow errors (corrupt or truncated
files, missing features, wrong dtypes) are turned into a `DataError` that
names the first bad file, record and field by `diagnose_files`.

Paths may be local, `gs://` (TensorFlow) or `s3://` / `hdfs://`
(tensorflow-io, registered by `hisac_tf.data.filesystems`).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data import filesystems
from hisac_tf.data.schema_check import record_problems


def list_files(patterns: str | Sequence[str]) -> list[str]:
    """Expands one or more glob patterns (any supported filesystem)."""
    if isinstance(patterns, str):
        patterns = [patterns]
    files: list[str] = []
    for pattern in patterns:
        files.extend(filesystems.glob(pattern))
    return files


def request_dataset(
    patterns: str | Sequence[str],
    spec: FeatureSpec,
    batch_size: int,
    *,
    compression: str = "GZIP",
    shuffle_buffer: int = 0,
    repeat: bool = False,
    deterministic: bool = False,
    seed: int = 0,
    num_parallel_reads: int = 4,
    validate: bool = True,
    drop_remainder: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """Builds the batched, parsed, padded dataset of request records.

    Args:
      patterns: file glob(s) or file paths of TFRecord shards.
      spec: the `FeatureSpec` (N, C, user features).
      batch_size: requests per batch (B).
      compression: "GZIP", "ZLIB" or "" for plain TFRecords.
      shuffle_buffer: 0 disables shuffling (file order and records).
      repeat: repeat forever (training).
      deterministic: fixed order and seeds, for reproducible runs.
      seed: shuffle seed.
      num_parallel_reads: files read at once.
      validate: run the in-graph data-contract checks.
      drop_remainder: drop a last partial batch (static batch dimension).
      num_shards, shard_index: this input pipeline's part of the data
        (one per worker under a multi-worker strategy): every
        `num_shards`-th file from `shard_index` when there are at least
        `num_shards` files, else every `num_shards`-th record (read in a
        fixed order, so the parts are disjoint). tf.data's own
        auto-sharding is turned off: the parts are made here.

    Returns:
      a `tf.data.Dataset` of dicts (see `FeatureSpec.pad_batch`); batch
      tensors have shape [B, ...].
    """
    files = list_files(patterns)
    if not 0 <= shard_index < num_shards:
        raise ValueError(
            f"shard_index must be in [0, {num_shards}), got {shard_index}")
    by_record = num_shards > 1 and len(files) < num_shards
    if num_shards > 1 and not by_record:
        files = files[shard_index::num_shards]  # sharded by file
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle_buffer:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read_file(path):
        records = tf.data.TFRecordDataset(path, compression_type=compression)
        # Tag each record with "path:index" for error messages.
        return records.enumerate().map(
            lambda i, rec: (
                tf.strings.join([path, tf.strings.as_string(i)], ":"),
                rec,
            )
        )

    ds = ds.interleave(
        read_file,
        cycle_length=max(1, min(num_parallel_reads, len(files))),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic or by_record,
    )
    if by_record:
        ds = ds.shard(num_shards, shard_index)  # sharded by record
    if shuffle_buffer:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    def parse(where, serialized):
        raw = spec.parse(serialized)
        if not validate:
            return spec.pad_batch(raw)
        with tf.control_dependencies(spec.check_ops(raw, where)):
            out = spec.pad_batch(raw)
            return {k: tf.identity(v) for k, v in out.items()}

    ds = ds.map(
        parse,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    options = tf.data.Options()
    options.deterministic = deterministic
    if num_shards > 1:
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
    ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


def diagnose_files(
    files: Sequence[str], spec: FeatureSpec, compression: str = "GZIP"
) -> DataError | None:
    """Scans files record by record; returns the first contract breach.

    Slow (one record at a time) and meant for error reporting: the returned
    `DataError` names the file, the record index and the field.
    """
    parse_one = _single_record_parser(spec)
    for path in files:
        index = -1
        try:
            records = tf.data.TFRecordDataset(path, compression)
            for index, record in enumerate(records):
                message = parse_one(record)
                if message:
                    return DataError(f"{path}:{index}: {message}")
        except tf.errors.OpError as e:
            return DataError(
                f"{path}: corrupt or truncated TFRecord file after record "
                f"{index} ({type(e).__name__}: {_first_line(e.message)})"
            )
    return None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text


def _assert_text(text: str) -> str:
    """A failed `tf.debugging.Assert`'s data on one line.

    "Expected ... to be true. Summarized data: b'field labels must be 0 or
    1; got'\n2\nb'in'\nb'record'" -> "field labels must be 0 or 1; got 2
    in record" (the first line alone would lose the value).
    """
    _, found, data = text.partition("Summarized data: ")
    if not found:
        return " ".join(text.split())
    parts = []
    for part in data.strip().splitlines():
        part = part.strip()
        if part[:2] in ("b'", 'b"') and part[-1:] == part[1]:
            part = part[2:-1]
        if part:
            parts.append(part)
    return " ".join(parts)


def _single_record_parser(spec: FeatureSpec):

    def parse_one(record: tf.Tensor) -> str | None:
        example = tf.train.Example.FromString(record.numpy())
        problems = record_problems(spec, example, first_only=True)
        if problems:
            return problems[0]
        try:
            raw = spec.parse(record[tf.newaxis])
            where = tf.constant(["record"])
            for check in spec.check_ops(raw, where):
                del check  # Eager asserts raise on construction.
        except tf.errors.InvalidArgumentError as e:
            return _assert_text(e.message).removesuffix(" in record")
        return None

    return parse_one


@contextlib.contextmanager
def diagnosed(files: Sequence[str], spec: FeatureSpec, compression: str):
    """Re-raises TensorFlow data errors as a `DataError` naming the record."""
    try:
        yield
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        found = diagnose_files(files, spec, compression)
        if found is None:
            raise
        raise found from e


def iterate(
    ds: tf.data.Dataset,
    files: Sequence[str],
    spec: FeatureSpec,
    compression: str = "GZIP",
) -> Iterator[dict]:
    """Iterates `ds`, turning data errors into a named `DataError`."""
    iterator = iter(ds)
    while True:
        with diagnosed(files, spec, compression):
            try:
                batch = next(iterator)
            except StopIteration:
                return
        yield batch


def summarize(batches: Iterator[dict]) -> dict:
    """Summary statistics over padded batches (read-back check)."""
    requests = impressions = clicks = 0
    truncated = empty = 0
    hist_lengths: list[np.ndarray] = []
    users: set[int] = set()
    true_ctr_sum = 0.0
    has_true_ctr = False
    for batch in batches:
        count = batch["cand_count"].numpy()
        mask = np.arange(batch["labels"].shape[1])[None, :] < count[:, None]
        requests += len(count)
        impressions += int(count.sum())
        clicks += int(batch["labels"].numpy()[mask].sum())
        raw = batch["hist_raw_length"].numpy()
        kept = batch["hist_length"].numpy()
        truncated += int((raw > kept).sum())
        empty += int((raw == 0).sum())
        hist_lengths.append(raw)
        users.update(batch["user_id"].numpy().tolist())
        if "true_ctr" in batch:
            has_true_ctr = True
            true_ctr_sum += float(batch["true_ctr"].numpy()[mask].sum())
    lengths = np.concatenate(hist_lengths) if hist_lengths else np.zeros(0)
    out = {
        "requests": requests,
        "users": len(users),
        "impressions": impressions,
        "ctr": clicks / impressions if impressions else float("nan"),
        "history_length_mean": float(lengths.mean()) if requests else 0.0,
        "history_length_median": float(np.median(lengths)) if requests
        else 0.0,
        "history_length_max": int(lengths.max()) if requests else 0,
        "histories_truncated": truncated,
        "histories_empty": empty,
    }
    if has_true_ctr:
        out["true_ctr_mean"] = true_ctr_sum / max(impressions, 1)
    return out
