"""SID and latent of every item of a large item table, on Apache Beam.

The tokenizer's assignment pass (`trainer.assign_items`) at scale: each
worker loads the trained RQ-VAE once (`DoFn.setup`, `load_rqvae`), reads
whole item-table files in batches (`item_dataset`, the tokenizer's own
reader) and runs `RQVAE.tokenize` on each batch; items go to shard
`item_id mod S`, and each shard is written sorted by item id as
`sid_table-0000k-of-0000S.npz` (arrays item_ids [V_k] int64, sids
[V_k, L] int32, latents [V_k, Ds] float32). With `merge` the shards are
also joined into the `SemanticTables` files that the ranker loads
(`save_semantic_tables`), equal to the single-process tables.
Outputs are staged and moved into the output directory only on success.

Codebook training at scale does not read the whole table: a uniform,
seeded sample of `tokenizer.train_sample_items` items
(`sample_item_table_beam`: the items with the smallest hash of (seed,
item id)) is written as one item-table file, the tokenizer trains on
it, and this pipeline assigns every item. docs/data_at_scale.md.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import io
import os
import zlib
from typing import Iterable, Iterator, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from hisac_tf.data.beam_import.staged_output import StagedOutput
from hisac_tf.data.feature_spec import ITEM_EMBEDDING, ITEM_ID, DataError
from hisac_tf.data.shard_writer import shard_name
from hisac_tf.tokenizer.item_table import item_dataset, list_item_files
from hisac_tf.tokenizer.saved_rqvae import load_rqvae
from hisac_tf.tokenizer.semantic_tables import (
    MANIFEST,
    SemanticTables,
    save_semantic_tables,
)

SID_SHARDS = "sid_table-*.npz"
SAMPLE_FILE = "items-sample-00000-of-00001.tfrecord.gz"


class AssignFileSids(beam.DoFn):
    """Item-table file -> (shard, (ids [B], sids [B, L], latents [B, Ds]))."""

    def __init__(self, tokenizer_dir: str, batch_size: int, compression: str,
                 shards: int):
        self.tokenizer_dir, self.batch_size = tokenizer_dir, batch_size
        self.compression, self.shards = compression, shards

    def setup(self) -> None:
        model = load_rqvae(self.tokenizer_dir)  # Once per worker.
        spec = tf.TensorSpec([None, model.content_dim], tf.float32)
        self.content_dim = model.content_dim
        self.tokenize = tf.function(model.tokenize, input_signature=[spec])

    def process(self, path: str) -> Iterator:
        ds = item_dataset([path], self.content_dim, self.batch_size,
                          self.compression, num_parallel_reads=1)
        try:
            for batch in ds:
                out = self.tokenize(batch[ITEM_EMBEDDING])
                ids = batch[ITEM_ID].numpy()  # [B]
                codes = out["codes"].numpy().astype(np.int32)  # [B, L]
                latents = out["z"].numpy().astype(np.float32)  # [B, Ds]
                beam.metrics.Metrics.counter("hisac_sids", "items").inc(
                    len(ids))
                shard = ids % self.shards  # [B]
                for k in np.unique(shard).tolist():
                    m = shard == k
                    yield k, (ids[m], codes[m], latents[m])
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
            raise DataError(f"{path}: unreadable item record ({e.message})"
                            ) from None


class WriteSidShard(beam.DoFn):
    """(shard k, parts) -> `sid_table-k-of-S.npz`, sorted by item id."""

    def __init__(self, out_dir: str, shards: int):
        self.out_dir, self.shards = out_dir, shards

    def process(self, element: tuple[int, Iterable]) -> Iterator[str]:
        shard, parts = element
        parts = [p for p in parts if p is not None]
        ids, sids, latents = (
            np.concatenate([p[i] for p in parts]) if parts else None
            for i in range(3))
        if ids is None:
            ids = np.zeros(0, np.int64)
            sids, latents = np.zeros((0, 0), np.int32), np.zeros(
                (0, 0), np.float32)
        order = np.argsort(ids, kind="stable")
        ids, sids, latents = ids[order], sids[order], latents[order]
        dup = np.flatnonzero(ids[1:] == ids[:-1])
        if dup.size:
            raise DataError(f"item table: duplicate item_id {ids[dup[0]]}")
        path = os.path.join(self.out_dir,
                            shard_name(SID_SHARDS, shard, self.shards))
        buffer = io.BytesIO()
        np.savez(buffer, item_ids=ids.astype(np.int64),
                 sids=sids.astype(np.int32),
                 latents=latents.astype(np.float32))
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(buffer.getvalue())
        yield path


def load_sid_shards(directory: str) -> tuple[np.ndarray, np.ndarray,
                                             np.ndarray]:
    """The shards of `directory` joined: item_ids [V], sids, latents."""
    parts = []
    for path in tf.io.gfile.glob(os.path.join(directory, SID_SHARDS)):
        with tf.io.gfile.GFile(path, "rb") as f:
            with np.load(io.BytesIO(f.read()), allow_pickle=False) as z:
                if len(z["item_ids"]):
                    parts.append((z["item_ids"], z["sids"], z["latents"]))
    if not parts:
        raise DataError(f"{directory}: no SID shard holds an item")
    ids, sids, latents = (np.concatenate([p[i] for p in parts])
                          for i in range(3))
    order = np.argsort(ids, kind="stable")
    return ids[order], sids[order], latents[order]


def assign_sids_beam(tokenizer_dir: str, items_pattern: str, output_dir: str,
                     shards: int = 1, batch_size: int = 1024,
                     compression: str = "GZIP", merge: bool = True,
                     pipeline_args: Sequence[str] = ()) -> dict:
    """Assigns every item of `items_pattern`; returns the counts.

    Writes `sid_table-*.npz` shards into `output_dir` and, with `merge`,
    the `SemanticTables` files (codebooks from the trained model).
    """
    files = list_item_files(items_pattern)
    tf.io.gfile.makedirs(output_dir)
    staged = StagedOutput(output_dir)
    try:
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as p:
            parts = (p | "Files" >> beam.Create(files)
                     | "Spread" >> beam.Reshuffle()
                     | "Assign" >> beam.ParDo(AssignFileSids(
                         tokenizer_dir, batch_size, compression, shards)))
            every = p | "EveryShard" >> beam.Create(
                [(k, None) for k in range(shards)])
            _ = ((parts, every) | "Union" >> beam.Flatten()
                 | "Group" >> beam.GroupByKey()
                 | "Write" >> beam.ParDo(WriteSidShard(staged.path, shards)))
        ids, sids, latents = load_sid_shards(staged.path)
        if merge:
            model = load_rqvae(tokenizer_dir)
            save_semantic_tables(SemanticTables(
                ids, sids, latents,
                tuple(b.numpy() for b in model.quantizer.codebooks)),
                staged.path)
        staged.commit(last=MANIFEST)
    finally:
        staged.discard()
    return {"items": int(len(ids)), "files": len(files), "shards": shards,
            "output_dir": output_dir, "merged": merge}


def _hash_key(seed: int):
    return lambda item: zlib.crc32(f"{seed}:{item[0]}".encode())


def sample_item_table_beam(items_pattern: str, sample_items: int, seed: int,
                           output_dir: str, compression: str = "GZIP",
                           pipeline_args: Sequence[str] = ()) -> str:
    """Writes a seeded uniform sample of the item table; returns its path.

    The `sample_items` items with the smallest crc32 of (seed, item id):
    the same sample on every runner and rerun.
    """
    files = list_item_files(items_pattern)
    tf.io.gfile.makedirs(output_dir)
    staged = StagedOutput(output_dir)
    try:
        with beam.Pipeline(options=PipelineOptions(list(pipeline_args))) as p:
            _ = (p | "Files" >> beam.Create(files)
                 | "Read" >> beam.FlatMap(_file_records, compression)
                 | "Sample" >> beam.combiners.Top.Of(
                     sample_items, key=_hash_key(seed), reverse=True)
                 | "Write" >> beam.Map(_write_records, os.path.join(
                     staged.path, SAMPLE_FILE), compression))
        staged.commit()
    finally:
        staged.discard()
    return os.path.join(output_dir, SAMPLE_FILE)


def _file_records(path: str, compression: str) -> Iterator[tuple]:
    """(item id, serialized record) of every record of one file."""
    for record in tf.data.TFRecordDataset(path, compression_type=compression):
        raw = record.numpy()
        item = tf.train.Example.FromString(raw).features.feature[ITEM_ID]
        yield int(item.int64_list.value[0]), raw


def _write_records(items: list[tuple], path: str, compression: str) -> str:
    options = tf.io.TFRecordOptions(compression_type=compression)
    with tf.io.TFRecordWriter(path, options) as writer:
        for _, raw in sorted(items):
            writer.write(raw)
    return path
