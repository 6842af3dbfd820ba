"""`train_tokenizer`: trains the RQ-VAE on the item table, writes the tables.

docs/design.md §2.1. Streams the item table (`item_table`) three times:

    scan     ids, categories, sub-topics, mean/variance of x   (one pass)
    fit      cfg.tokenizer.epochs epochs of `RQVAE.fit` on shuffled
             batches; callbacks: k-means codebook initialisation on the
             first batch, dead-code re-seeding at every later epoch,
             per-epoch figures (JSON rows and TensorBoard)
    assign   one ordered pass: SID (c_1..c_L) and latent z of every item

Writes into `output_dir` (default cfg.tokenizer.output_dir):

    semantic_tables.json, item_ids.npy, sids.npy, latents.npy,
    codebooks.npz          the SemanticTables (`semantic_tables`)
    config.json            the resolved config
    tokenizer_report.json  quality figures (`quality_report`), latent
                           scale (`latent_stats`) and per-epoch history
    tensorboard/           the per-epoch figures (`EpochFigures`)
    rqvae/                 the RQ-VAE weights (TF checkpoint)
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

# isort: split
import os
import sys
import time

import numpy as np
import tensorflow as tf

from hisac_tf import config as config_lib
from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.data import filesystems
from hisac_tf.data.feature_spec import ITEM_EMBEDDING, ITEM_ID, DataError
from hisac_tf.tokenizer.codebook_callbacks import (
    DeadCodeReseed,
    KMeansCodebookInit,
)
from hisac_tf.tokenizer.epoch_figures import EpochFigures
from hisac_tf.tokenizer.item_table import (
    ItemTableScan,
    checked_batches,
    item_dataset,
    scan_item_table,
)
from hisac_tf.tokenizer.quality_report import latent_stats, quality_report
from hisac_tf.tokenizer.rqvae import RQVAE
from hisac_tf.tokenizer.semantic_tables import (
    SemanticTables,
    save_semantic_tables,
)

REPORT = "tokenizer_report.json"
TENSORBOARD = "tensorboard"
KMEANS_ITERATIONS = 10


def _log(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def build_rqvae(cfg: Config, scan: ItemTableScan) -> RQVAE:
    """The RQ-VAE of cfg.tokenizer, standardising x with the scan's moments."""
    tok = cfg.tokenizer
    tf.keras.utils.set_random_seed(tok.seed)
    model = RQVAE(scan.content_dim, tok.latent_dim, tok.hidden_dims,
                  tok.codebook_sizes, beta=tok.beta, seed=tok.seed,
                  latent_norm=tok.latent_norm,
                  codebook_update=tok.codebook_update,
                  ema_decay=tok.ema_decay, name="rqvae")
    std = np.sqrt(scan.variance)
    floor = max(float(std.max()) * 1e-6, 1e-12)
    model.set_input_normalization(scan.mean, np.maximum(std, floor))
    return model


def fit_rqvae(
    model: RQVAE, cfg: Config, scan: ItemTableScan, log_dir: str | None,
    progress: bool,
) -> list:
    """Trains `model` through `fit`; returns the per-epoch rows."""
    tok = cfg.tokenizer
    shuffle = min(scan.num_items, max(cfg.data.shuffle_buffer,
                                      8 * tok.batch_size))
    train_ds = item_dataset(
        scan.files, scan.content_dim, tok.batch_size, cfg.data.compression,
        shuffle_buffer=shuffle, seed=tok.seed,
        num_parallel_reads=cfg.data.num_parallel_reads,
    ).map(lambda b: b[ITEM_EMBEDDING])
    reseed = DeadCodeReseed(train_ds, tok.dead_code_threshold, tok.seed)
    figures = EpochFigures(tok.epochs, reseed, log_dir, progress)
    model.compile(optimizer=tf.keras.optimizers.Adam(tok.learning_rate))
    model.fit(
        train_ds, epochs=tok.epochs, verbose=0,
        callbacks=[KMeansCodebookInit(train_ds, KMEANS_ITERATIONS, tok.seed),
                   reseed, figures],
    )
    return figures.history


def assign_items(model: RQVAE, cfg: Config, scan: ItemTableScan,
                 pattern: str) -> tuple:
    """(SemanticTables, sq_error [V], sq_error_unquantized [V], order [V]).

    One ordered pass; `order` sorts the scan's table order by item id.
    """
    tok = cfg.tokenizer
    compression = cfg.data.compression
    x_spec = tf.TensorSpec([None, scan.content_dim], tf.float32)
    tokenize = tf.function(model.tokenize, input_signature=[x_spec])
    ds = item_dataset(scan.files, scan.content_dim,
                      max(tok.batch_size, 1024), compression,
                      num_parallel_reads=cfg.data.num_parallel_reads)
    ids, codes, latents, err, err_z = [], [], [], [], []
    for batch in checked_batches(ds, scan.files, scan.content_dim,
                                 compression):
        out = tokenize(batch[ITEM_EMBEDDING])
        ids.append(batch[ITEM_ID].numpy())
        codes.append(out["codes"].numpy())
        latents.append(out["z"].numpy())
        err.append(out["sq_error"].numpy())
        err_z.append(out["sq_error_unquantized"].numpy())
    assigned = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    if not np.array_equal(assigned, scan.item_ids):
        raise DataError(
            f"item table {pattern!r} changed while the tokenizer ran "
            f"({scan.num_items} items in the first pass, {assigned.size} "
            "in the last)")
    order = np.argsort(scan.item_ids, kind="stable")
    tables = SemanticTables(
        item_ids=scan.item_ids[order].astype(np.int64),
        sids=np.concatenate(codes)[order].astype(np.int32),
        latents=np.concatenate(latents)[order].astype(np.float32),
        codebooks=tuple(b.numpy() for b in model.quantizer.codebooks),
    )
    return (tables, np.concatenate(err)[order],
            np.concatenate(err_z)[order], order)


def train_tokenizer(
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
    pattern = items_pattern or os.path.join(
        cfg.data.data_dir, cfg.data.item_table_pattern)
    out_dir = filesystems.ensure_filesystem(output_dir or tok.output_dir)
    scan = scan_item_table(
        pattern, cfg.data.compression, max(tok.batch_size, 1024),
        cfg.data.num_parallel_reads, content_dim)
    _log(progress, f"  item table: {scan.num_items} items, content_dim "
                   f"{scan.content_dim}, {len(scan.files)} file(s)")

    model = build_rqvae(cfg, scan)
    history = fit_rqvae(model, cfg, scan, os.path.join(out_dir, TENSORBOARD),
                        progress)
    tables, err, err_z, order = assign_items(model, cfg, scan, pattern)
    total_variance = float(scan.variance.sum())
    report = quality_report(
        tables.sids, tok.codebook_sizes, err, err_z, total_variance,
        scan.content_dim, scan.categories[order], scan.subtopics[order],
        subtopics_per_topic=cfg.synthetic.subtopics_per_topic,
    )
    report = {
        "items": pattern,
        "output_dir": out_dir,
        "content_dim": int(scan.content_dim),
        "data_total_variance": total_variance,
        **report,
        "latent": latent_stats(tables.latents, tables.codebooks,
                               tables.sids),
        "history": history,
        "model": model.get_config(),
        "seconds": round(time.time() - began, 3),
    }

    save_semantic_tables(tables, out_dir)
    model.save_weights(os.path.join(out_dir, "rqvae", "weights"))
    config_lib.write_resolved(cfg, out_dir)
    json_io.write_json(os.path.join(out_dir, REPORT), report,
                       sort_keys=True)
    usage = ", ".join(
        f"L{u['level']} {u['codes_used']}/{u['codebook_size']}"
        for u in report["code_usage"])
    _log(progress,
         f"  relative MSE {report['relative_mse']:.3f}, codes used {usage}, "
         f"full-SID collision rate "
         f"{report['full_sid']['collision_rate']:.3f}, latent rms "
         f"{report['latent']['latent_rms']:.3f} -> {out_dir}")
    return report
