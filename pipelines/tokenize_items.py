"""Job: train the RQ-VAE item tokenizer and write the semantic tables.

docs/design.md §2.1. Reads the item table (GZIP TFRecords, one record per
item: item_id, category_id, content_embedding [F] floats and, on synthetic
data, subtopic_id), streaming it with tf.data:

    pass 0   ids, categories, sub-topics, mean/variance of x   (one pass)
    train    cfg.tokenizer.epochs epochs of Adam on shuffled batches;
             codebooks k-means initialised on the first batch, dead codes
             (usage over the previous epoch < dead_code_threshold)
             re-seeded on the first batch of every later epoch
    assign   one ordered pass: SID (c_1..c_L) and latent z of every item

Only per-item outputs (id, category, sub-topic, L codes, Ds latents, two
errors) are kept in memory, never the content embeddings of the whole
table. Writes into `output_dir` (default cfg.tokenizer.output_dir):

    semantic_tables.json, item_ids.npy, sids.npy, latents.npy,
    codebooks.npz          the SemanticTables
                           (hisac_tf.tokenizer.semantic_tables)
    config.json            the resolved config
    tokenizer_report.json  quality figures (see `quality_report`)
    rqvae/                 the RQ-VAE weights (TF checkpoint)

CLI: python -m pipelines.tokenize_items --config=tiny
       [--set tokenizer.epochs=30] [--tokenize_items=GLOB]
       [--tokenize_output_dir=DIR] [--tokenize_content_dim=F]
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import json
import os
import sys
import time
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import flags

from hisac_tf import config as config_lib
from hisac_tf.config import Config
from hisac_tf.data.feature_spec import (
    ITEM_CATEGORY,
    ITEM_EMBEDDING,
    ITEM_ID,
    ITEM_SUBTOPIC,
    DataError,
    item_table_parse_spec,
)
from hisac_tf.models.rqvae import RQVAE
from hisac_tf.tokenizer.semantic_tables import (
    SemanticTables,
    save_semantic_tables,
)
from hisac_tf.data import filesystems

REPORT = "tokenizer_report.json"
KMEANS_ITERATIONS = 10
_DATA_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


# ------------------------------------------------------------------ reading
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


def _batches(ds, files, content_dim, compression) -> Iterator[dict]:
    """Iterates `ds` as numpy dicts; data errors name file and record."""
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


class _Moments:
    """Streaming per-dimension mean and variance (Chan et al. merge)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim, np.float64)
        self.m2 = np.zeros(dim, np.float64)

    def update(self, x: np.ndarray) -> None:
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


# ------------------------------------------------------------------ metrics
def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum())


def _contingency(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    _, ai = np.unique(a, return_inverse=True, axis=0)
    _, bi = np.unique(b, return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1), np.int64)
    np.add.at(table, (ai.ravel(), bi.ravel()), 1)
    return table  # [clusters, labels]


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Σ_cluster max_label count / N (clusters: [N] or [N, L] rows)."""
    table = _contingency(clusters, labels)
    return float(table.max(axis=1).sum() / table.sum())


def nmi(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Normalised mutual information, 2 I(U;V) / (H(U) + H(V)).

    The arithmetic-mean normalisation (scikit-learn's default); 1.0 when
    both partitions are a single block.
    """
    table = _contingency(clusters, labels).astype(np.float64)
    n = table.sum()
    pu = table.sum(axis=1) / n
    pv = table.sum(axis=0) / n
    hu = _entropy(table.sum(axis=1))
    hv = _entropy(table.sum(axis=0))
    if hu + hv == 0:
        return 1.0
    nz = table > 0
    pij = table[nz] / n
    outer = (pu[:, None] * pv[None, :])[nz]
    mi = float((pij * np.log(pij / outer)).sum())
    return float(2.0 * mi / (hu + hv))


def code_usage(sids: np.ndarray, codebook_sizes: Sequence[int]) -> list:
    """Per level: codes used by >= 1 item, their fraction and perplexity."""
    out = []
    for level, k in enumerate(codebook_sizes):
        counts = np.bincount(sids[:, level], minlength=k)
        perplexity = float(np.exp(_entropy(counts)))
        out.append({
            "level": level + 1,
            "codebook_size": int(k),
            "codes_used": int((counts > 0).sum()),
            "fraction_used": float((counts > 0).mean()),
            "perplexity": perplexity,
            "normalized_perplexity": perplexity / k,
        })
    return out


def collision_stats(sids: np.ndarray) -> dict:
    """Full-SID collisions: items sharing their whole SID with another."""
    _, inverse, counts = np.unique(
        sids, axis=0, return_inverse=True, return_counts=True)
    per_item = counts[inverse.ravel()]
    return {
        "distinct_sids": int(counts.size),
        "collision_rate": float((per_item > 1).mean()),
        "max_items_per_sid": int(counts.max()),
        "mean_items_per_sid": float(counts.mean()),
    }


def _agreement(sids: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "full_sid": {"purity": purity(sids, labels),
                     "nmi": nmi(sids, labels)},
        "level_1": {"purity": purity(sids[:, :1], labels),
                    "nmi": nmi(sids[:, :1], labels)},
        "num_labels": int(np.unique(labels).size),
    }


def quality_report(
    sids: np.ndarray,
    codebook_sizes: Sequence[int],
    sq_error: np.ndarray,
    sq_error_unquantized: np.ndarray,
    total_variance: float,
    content_dim: int,
    categories: np.ndarray,
    subtopics: np.ndarray,
    subtopics_per_topic: int | None = None,
) -> dict:
    """The tokenizer's quality figures (all plain JSON types).

    reconstruction_mse: mean over items and dimensions of (x - xhat)^2
    through the quantiser; relative_mse: Σ||x - xhat||^2 / Σ||x - mean||^2
    (1.0 = predicting the mean); *_unquantized: the same decoding z
    itself. Agreement with the true sub-topic (and topic, when
    `subtopics_per_topic` is given and sub-topics are numbered 1.. topic
    by topic) is reported when every item has a subtopic_id; agreement
    with category_id always.
    """
    v = sids.shape[0]
    report = {
        "num_items": int(v),
        "reconstruction_mse": float(sq_error.sum() / (v * content_dim)),
        "relative_mse": float(sq_error.sum() / max(
            total_variance * v, 1e-30)),
        "reconstruction_mse_unquantized": float(
            sq_error_unquantized.sum() / (v * content_dim)),
        "relative_mse_unquantized": float(sq_error_unquantized.sum() / max(
            total_variance * v, 1e-30)),
        "code_usage": code_usage(sids, codebook_sizes),
        "full_sid": collision_stats(sids),
        "vs_category": _agreement(sids, categories),
    }
    if np.all(subtopics > 0):
        report["vs_subtopic"] = _agreement(sids, subtopics)
        if subtopics_per_topic:
            topics = (subtopics - 1) // subtopics_per_topic + 1
            report["vs_topic"] = _agreement(sids, topics)
    elif np.any(subtopics > 0):
        report["subtopic_note"] = (
            f"only {int((subtopics > 0).sum())} of {v} items carry "
            f"{ITEM_SUBTOPIC}: sub-topic agreement not computed")
    return report


# ---------------------------------------------------------------------- job
def _log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def main(
    cfg: Config,
    items_pattern: str | None = None,
    output_dir: str | None = None,
    progress: bool = True,
    content_dim: int | None = None,
) -> dict:
    """Trains the tokenizer on the item table and writes its outputs.

    Args:
      cfg: the resolved config (its `tokenizer` and `data` sections).
      items_pattern: glob of the item-table files; default
        cfg.data.data_dir / cfg.data.item_table_pattern.
      output_dir: default cfg.tokenizer.output_dir.
      progress: print one line per epoch (to stderr).
      content_dim: F; default inferred from the first record.
    Returns:
      the report written to tokenizer_report.json.
    Raises:
      DataError: unreadable records (naming file, record and field),
        duplicate item ids or ids < 1 (naming the id).
    """
    began = time.time()
    tok = cfg.tokenizer
    compression = cfg.data.compression
    pattern = items_pattern or os.path.join(
        cfg.data.data_dir, cfg.data.item_table_pattern)
    out_dir = filesystems.ensure_filesystem(output_dir or tok.output_dir)
    files = list_item_files(pattern)
    if content_dim is None:
        content_dim = infer_content_dim(files[0], compression)
    reads = cfg.data.num_parallel_reads

    # Pass 0: ids and statistics, one streaming pass.
    scan = item_dataset(files, content_dim, max(tok.batch_size, 1024),
                        compression, num_parallel_reads=reads)
    moments = _Moments(content_dim)
    ids, cats, subs = [], [], []
    for batch in _batches(scan, files, content_dim, compression):
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
    item_ids = np.concatenate(ids)
    check_item_ids(item_ids)
    num_items = item_ids.size
    _log(progress, f"  item table: {num_items} items, content_dim "
                   f"{content_dim}, {len(files)} file(s)")

    # Model.
    tf.keras.utils.set_random_seed(tok.seed)
    model = RQVAE(content_dim, tok.latent_dim, tok.hidden_dims,
                  tok.codebook_sizes, beta=tok.beta, seed=tok.seed,
                  name="rqvae")
    std = np.sqrt(moments.variance)
    floor = max(float(std.max()) * 1e-6, 1e-12)
    model.set_input_normalization(moments.mean, np.maximum(std, floor))
    model.compile(optimizer=tf.keras.optimizers.Adam(tok.learning_rate))
    x_spec = tf.TensorSpec([None, content_dim], tf.float32)
    step = tf.function(model.train_step, input_signature=[x_spec])

    shuffle = min(num_items, max(cfg.data.shuffle_buffer,
                                 8 * tok.batch_size))
    train_ds = item_dataset(files, content_dim, tok.batch_size, compression,
                            shuffle_buffer=shuffle, seed=tok.seed,
                            num_parallel_reads=reads).map(
        lambda b: b[ITEM_EMBEDDING])
    history = []
    for epoch in range(tok.epochs):
        t0 = time.time()
        for metric in model.metrics:
            metric.reset_state()
        reseeded = [0] * len(tok.codebook_sizes)
        for i, x in enumerate(train_ds):
            if epoch == 0 and i == 0:
                model.initialize_codebooks(
                    x, KMEANS_ITERATIONS, seed=tok.seed)
            elif epoch > 0 and i == 0:
                reseeded = model.reseed_dead_codes(
                    x, tok.dead_code_threshold, seed=tok.seed + epoch)
            logs = step(x)
        row = {"epoch": epoch + 1,
               **{k: float(v) for k, v in logs.items()},
               "reseeded_codes": reseeded,
               "seconds": round(time.time() - t0, 3)}
        history.append(row)
        _log(progress,
             f"  epoch {epoch + 1}/{tok.epochs}: loss {row['loss']:.4f} "
             f"(reconstruction {row['reconstruction_loss']:.4f}, "
             f"commitment {row['commitment_loss']:.4f}), re-seeded "
             f"{reseeded}, {row['seconds']:.1f} s")

    # Assignment pass, file order.
    tokenize = tf.function(model.tokenize, input_signature=[x_spec])
    assign_ds = item_dataset(files, content_dim, max(tok.batch_size, 1024),
                             compression, num_parallel_reads=reads)
    ids, codes, latents, err, err_z = [], [], [], [], []
    for batch in _batches(assign_ds, files, content_dim, compression):
        out = tokenize(batch[ITEM_EMBEDDING])
        ids.append(batch[ITEM_ID].numpy())
        codes.append(out["codes"].numpy())
        latents.append(out["z"].numpy())
        err.append(out["sq_error"].numpy())
        err_z.append(out["sq_error_unquantized"].numpy())
    assigned = np.concatenate(ids)
    if not np.array_equal(assigned, item_ids):
        raise DataError(
            f"item table {pattern!r} changed while the tokenizer ran "
            f"({item_ids.size} items in the first pass, {assigned.size} "
            "in the last)")
    order = np.argsort(item_ids, kind="stable")
    tables = SemanticTables(
        item_ids=item_ids[order].astype(np.int64),
        sids=np.concatenate(codes)[order].astype(np.int32),
        latents=np.concatenate(latents)[order].astype(np.float32),
        codebooks=tuple(b.numpy() for b in model.quantizer.codebooks),
    )
    report = quality_report(
        tables.sids, tok.codebook_sizes, np.concatenate(err)[order],
        np.concatenate(err_z)[order], float(moments.variance.sum()),
        content_dim, np.concatenate(cats)[order],
        np.concatenate(subs)[order],
        subtopics_per_topic=cfg.synthetic.subtopics_per_topic,
    )
    report = {
        "items": pattern,
        "output_dir": out_dir,
        "content_dim": int(content_dim),
        "data_total_variance": float(moments.variance.sum()),
        **report,
        "history": history,
        "model": model.get_config(),
        "seconds": round(time.time() - began, 3),
    }

    save_semantic_tables(tables, out_dir)
    model.save_weights(os.path.join(out_dir, "rqvae", "weights"))
    config_lib.write_resolved(cfg, out_dir)
    with tf.io.gfile.GFile(os.path.join(out_dir, REPORT), "w") as f:
        f.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    usage = ", ".join(
        f"L{u['level']} {u['codes_used']}/{u['codebook_size']}"
        for u in report["code_usage"])
    _log(progress,
         f"  relative MSE {report['relative_mse']:.3f}, codes used {usage}, "
         f"full-SID collision rate "
         f"{report['full_sid']['collision_rate']:.3f} -> {out_dir}")
    return report


# ---------------------------------------------------------------------- CLI
flags.DEFINE_string(
    "tokenize_items", None,
    "Item-table glob (default: data.data_dir/data.item_table_pattern).")
flags.DEFINE_string(
    "tokenize_output_dir", None,
    "Output directory (default: tokenizer.output_dir).")
flags.DEFINE_integer(
    "tokenize_content_dim", None,
    "Content-embedding width (default: read from the first record).")


def _main_from_flags(cfg: Config) -> int:
    fl = flags.FLAGS
    main(cfg, fl.tokenize_items, fl.tokenize_output_dir,
         content_dim=fl.tokenize_content_dim)
    return 0


def run() -> None:
    from pipelines import cli

    cli.run(_main_from_flags)


if __name__ == "__main__":
    run()
