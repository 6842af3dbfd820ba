"""Evaluation of a checkpoint on the eval split.

`evaluate(cfg) -> dict` restores the latest checkpoint of
`cfg.training.model_dir`, scores every valid candidate of the eval records
once, and reports AUC, GAUC (per-user AUC weighted by the user's
impressions; users whose impressions are all one class are skipped), log
loss and, when the records carry `true_ctr` (synthetic data), the
Bayes-optimal AUC/GAUC/log loss of the same impressions. Writes
`<model_dir>/eval.json`. Predictions are held in memory as three arrays of
one value per impression (about 20 bytes each).
"""

from __future__ import annotations

import json
import os
import sys

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import metrics
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.data.data_summary import has_true_ctr
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.training.checkpoints import restore_latest


def predict(cfg: Config, model, files, spec, progress: bool = True):
    """Scores the eval files; returns per-impression numpy arrays."""
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=cfg.data.batch_size,
        compression=cfg.data.compression, deterministic=True,
        num_parallel_reads=cfg.data.num_parallel_reads,
    )

    @tf.function
    def score(batch):
        return tf.sigmoid(model(batch, training=False))  # [B, C]

    users, labels, probs, truth = [], [], [], []
    bar = tf.keras.utils.Progbar(None, verbose=1 if progress else 0,
                                 unit_name="batch")
    batches = input_pipeline.iterate(ds, files, spec, cfg.data.compression)
    for i, batch in enumerate(batches):
        p = score(batch).numpy()
        count = batch["cand_count"].numpy()
        mask = np.arange(p.shape[1])[None, :] < count[:, None]  # [B, C]
        users.append(np.repeat(batch["user_id"].numpy(), count))
        labels.append(batch["labels"].numpy()[mask])
        probs.append(p[mask])
        if spec.with_true_ctr:
            truth.append(batch["true_ctr"].numpy()[mask])
        if (i + 1) % 25 == 0:
            bar.update(i + 1)
    bar.update(len(probs), finalize=True)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa
    return cat(users), cat(labels), cat(probs), cat(truth)


def report(users, labels, probs, truth=None) -> dict:
    """AUC, GAUC and log loss (and the Bayes-optimal figures)."""
    out = {
        "impressions": int(len(labels)),
        "users": int(len(np.unique(users))),
        "ctr": float(labels.mean()) if len(labels) else float("nan"),
        "auc": metrics.auc(labels, probs),
        "gauc": metrics.gauc(users, labels, probs),
        "log_loss": metrics.log_loss(labels, probs),
    }
    if truth is not None and len(truth):
        out["bayes_auc"] = metrics.auc(labels, truth)
        out["bayes_gauc"] = metrics.gauc(users, labels, truth)
        out["bayes_log_loss"] = metrics.log_loss(labels, truth)
    return out


def evaluate(cfg: Config, progress: bool = True) -> dict:
    """Scores the eval split with the latest checkpoint; writes eval.json."""
    files = input_pipeline.list_files(
        os.path.join(cfg.data.data_dir, cfg.data.eval_pattern)
    )
    spec = FeatureSpec.from_config(
        cfg.data,
        with_true_ctr=has_true_ctr(files[0], cfg.data.compression),
    )
    state, path, status = restore_latest(cfg, "evaluate")
    status.expect_partial()
    model, step = state.model, state.step
    users, labels, probs, truth = predict(cfg, model, files, spec, progress)
    results = report(users, labels, probs, truth if spec.with_true_ctr
                     else None)
    results["step"] = int(step.numpy())
    results["checkpoint"] = path
    path = os.path.join(cfg.training.model_dir, "eval.json")
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(results, f, indent=2)
    print(format_report(results), file=sys.stderr)
    return results


def format_report(r: dict) -> str:
    line = (
        f"eval @ step {r.get('step', '?')}: AUC {r['auc']:.4f}  "
        f"GAUC {r['gauc']:.4f}  log loss {r['log_loss']:.4f}"
    )
    if "bayes_auc" in r:
        line += (
            f"  | Bayes-optimal AUC {r['bayes_auc']:.4f}  "
            f"GAUC {r['bayes_gauc']:.4f}  log loss {r['bayes_log_loss']:.4f}"
        )
    return line
