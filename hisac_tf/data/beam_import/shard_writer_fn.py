"""Records -> S TFRecord shards, named and compressed as the importer's.

Each record goes to shard `hash(record) mod S` (a stable hash, so reruns
write the same shards), the shards are grouped and each is written by
one worker with `tf.io.TFRecordWriter` under `shard_name(pattern, k, S)`,
so a reader's glob and the compression are the single-process
importer's. Every shard is written, possibly empty. Within a shard the
records come in the runner's order (training shuffles; the single-process
importer's shards are in time order).
"""

from __future__ import annotations

import os
import zlib
from typing import Iterable, Iterator

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import apache_beam as beam
import tensorflow as tf

from hisac_tf.data.shard_writer import shard_name


def shard_of(record: bytes, shards: int) -> int:
    """The shard of a record: crc32 mod S (stable across processes)."""
    return zlib.crc32(record) % shards


class WriteShard(beam.DoFn):
    """(shard k, records) -> writes `out_dir/shard_name(pattern, k, S)`.

    Yields the path written.
    """

    def __init__(self, out_dir: str, pattern: str, shards: int,
                 compression: str):
        self.out_dir, self.pattern = out_dir, pattern
        self.shards, self.compression = shards, compression

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[str]:
        shard, records = element
        path = os.path.join(self.out_dir,
                            shard_name(self.pattern, shard, self.shards))
        options = tf.io.TFRecordOptions(compression_type=self.compression)
        written = 0
        with tf.io.TFRecordWriter(path, options) as writer:
            for record in records:
                if record is not None:  # The empty shard marker.
                    writer.write(record)
                    written += 1
        beam.metrics.Metrics.counter("hisac_import", "records_written").inc(
            written)
        yield path


class WriteShards(beam.PTransform):
    """PCollection of serialized records -> S shards in `out_dir`.

    Empty shards are created too (the shard keys are unioned with one
    empty element per shard).
    """

    def __init__(self, out_dir: str, pattern: str, shards: int,
                 compression: str):
        super().__init__()
        self.out_dir, self.pattern = out_dir, pattern
        self.shards, self.compression = shards, compression

    def expand(self, records):
        shards = self.shards
        keyed = records | "Key" >> beam.Map(
            lambda r: (shard_of(r, shards), r))
        every = (records.pipeline | "EveryShard" >> beam.Create(
            [(k, None) for k in range(shards)]))
        return ((keyed, every) | "Union" >> beam.Flatten()
                | "Group" >> beam.GroupByKey()
                | "Write" >> beam.ParDo(WriteShard(
                    self.out_dir, self.pattern, shards, self.compression)))
