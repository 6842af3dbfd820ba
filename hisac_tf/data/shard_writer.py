"""The one writer of sharded TFRecord files, and the one shard namer.

A split of n records goes to S shards `<prefix>-0000k-of-0000S<suffix>`;
shard k holds the k-th contiguous slice, so records written in time order
stay in time order across the shards. Every shard is created, possibly
empty, so a reader's glob sees the whole split.
"""

from __future__ import annotations

import fnmatch
import os

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import ConfigError


def shard_name(pattern: str, index: int, count: int) -> str:
    """`train-*.tfrecord.gz` -> `train-00001-of-00004.tfrecord.gz`.

    Raises ConfigError when `pattern` does not hold exactly one `*`, when
    `index` is not in [0, count), or when the name would not match the
    pattern it came from (a reader globbing the pattern would miss it).
    """
    if pattern.count("*") != 1:
        raise ConfigError(
            f"file pattern must hold exactly one '*' for the shard number, "
            f"got {pattern!r}"
        )
    if not 0 <= index < count:
        raise ConfigError(
            f"shard index must be in [0, {count}) for {pattern!r}, got "
            f"{index!r}"
        )
    name = pattern.replace("*", f"{index:05d}-of-{count:05d}")
    if not fnmatch.fnmatch(name, pattern):
        raise ConfigError(f"shard name {name!r} does not match {pattern!r}")
    return name


class ShardedWriter:
    """Writes `total` records in order into `shards` TFRecord files.

    Args:
      out_dir: the directory (any filesystem `tf.io.gfile` knows).
      pattern: file pattern with one `*`, e.g. `train-*.tfrecord.gz`.
      shards: S >= 1.
      total: how many records will be written (sets the slices); a writer
        with more records than `total` puts the rest into the last shard.
      compression: "", "GZIP" or "ZLIB".

    Example:
      with ShardedWriter("/tmp/d", "train-*.tfrecord.gz", 2, 10, "GZIP") as w:
          for record in records:
              w.write(record)
    """

    def __init__(self, out_dir: str, pattern: str, shards: int, total: int,
                 compression: str):
        if shards < 1:
            raise ConfigError(f"shards must be >= 1, got {shards!r}")
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
        shard = self.written * len(self.paths) // max(self.total, 1)
        self._open(min(shard, len(self.paths) - 1))
        self.writer.write(record)
        self.written += 1

    def close(self) -> None:
        """Creates the remaining (empty) shards and closes the last one."""
        self._open(len(self.paths) - 1)
        self.writer.close()
        self.writer = None

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        elif self.writer is not None:
            self.writer.close()
            self.writer = None
