"""Evaluation of a checkpoint on the eval split.

`evaluate(cfg) -> dict` restores the checkpoint that
`training.evaluate_checkpoint` names (the best by valid AUC when one
exists, else the latest; `select_checkpoint`), scores every valid
candidate of the eval records once, and reports AUC (exact, over every
impression), GAUC (per-user AUC weighted by the user's impressions; users
whose impressions are all one class are skipped), log loss and, when the
records carry `true_ctr` (synthetic data), the Bayes-optimal
AUC/GAUC/log loss of the same impressions, with the checkpoint used
(`checkpoint`, `checkpoint_kind`). Writes `<model_dir>/eval.json`.
Predictions are held in memory as a few arrays of one value per
impression (about 20 bytes each). The same `predict` and `report` score
the valid split during training (`ModelSelection`).
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple, Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import json_io, metrics
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.data.data_summary import first_record, has_true_ctr
from hisac_tf.data.feature_spec import DataError, FeatureSpec
from hisac_tf.data.split_files import split_files
from hisac_tf.layers.routing_diagnostics import ROUTING_KEYS
from hisac_tf.training.checkpoints import (
    restore_latest,
    select_checkpoint,
)
from hisac_tf.training.eval_summaries import write_eval_summaries
from hisac_tf.training.slices import batch_keys
from hisac_tf.training.sliced_evaluation import (
    format_sliced,
    slice_keys,
    sliced_evaluation,
)

# Batch features the slices read (`slices.batch_keys`).
SLICE_FEATURES = ("hist_raw_length", "hist_timestamps", "request_time",
                  "cand_item_ids")


class Predictions(NamedTuple):
    """Per-impression arrays [M] and per-request diagnostics [R]."""

    users: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    truth: np.ndarray  # true_ctr; empty without it
    num_active: np.ndarray  # [R] groups in use per request
    # [R] per request, when the ranker reports them (ROUTING_KEYS).
    routing: Optional[dict] = None
    # [M] per impression, what the slices need (`slices.batch_keys`).
    keys: Optional[dict] = None


def scorer(model, diagnostics: bool = False):
    """tf.function batch -> (probabilities [B, C], diagnostics).

    One user-side pass (`compress_user`) feeds both the scores (`score`,
    as `call` does) and the per-request diagnostics: num_active [B]
    always, the routing ones (`ROUTING_KEYS`, [B] each) with
    `diagnostics` when the ranker reports them.
    """

    @tf.function(reduce_retracing=True)
    def score(batch):
        state = model.compress_user(batch, training=False,
                                    diagnostics=diagnostics)
        logits = model.score(state, batch, training=False)  # [B, C]
        diag = {k: state[k] for k in ("num_active",) + ROUTING_KEYS
                if k in state}
        return tf.sigmoid(logits), diag

    return score


def predict(cfg: Config, model, files, spec, progress: bool = True,
            score=None) -> Predictions:
    """Scores `files` with `model` (or a `scorer(model)` passed as score)."""
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=cfg.data.batch_size,
        compression=cfg.data.compression, deterministic=True,
        num_parallel_reads=cfg.data.num_parallel_reads,
    )
    score = score or scorer(model)
    users, labels, probs, truth, active = [], [], [], [], []
    routing: dict = {}
    keys: dict = {}
    bar = tf.keras.utils.Progbar(None, verbose=1 if progress else 0,
                                 unit_name="batch")
    batches = input_pipeline.iterate(ds, files, spec, cfg.data.compression)
    for i, batch in enumerate(batches):
        p, diag = score(batch)
        num_active = diag["num_active"]
        for key in ROUTING_KEYS:
            if key in diag:
                routing.setdefault(key, []).append(diag[key].numpy())
        p = p.numpy()
        count = batch["cand_count"].numpy()
        mask = np.arange(p.shape[1])[None, :] < count[:, None]  # [B, C]
        users.append(np.repeat(batch["user_id"].numpy(), count))
        labels.append(batch["labels"].numpy()[mask])
        probs.append(p[mask])
        active.append(num_active.numpy())
        if spec.with_true_ctr:
            truth.append(batch["true_ctr"].numpy()[mask])
        for key, value in batch_keys(
                {k: batch[k].numpy() for k in SLICE_FEATURES}, mask,
                cfg.training.eval_activity_days).items():
            keys.setdefault(key, []).append(value)
        if (i + 1) % 25 == 0:
            bar.update(i + 1)
    bar.update(len(probs), finalize=True)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa
    return Predictions(cat(users), cat(labels), cat(probs), cat(truth),
                       cat(active), {k: cat(v) for k, v in routing.items()},
                       {k: cat(v) for k, v in keys.items()})


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
    """Scores the eval split with the chosen checkpoint; writes eval.json."""
    files = split_files(cfg.data, "eval")
    spec = FeatureSpec.from_config(
        cfg.data, features=cfg.all_features,
        with_true_ctr=has_true_ctr(files[0], cfg.data.compression),
    )
    # One record of each file: unreadable files are named here, before a
    # checkpoint is looked for, and an empty split is said to be empty.
    firsts = [first_record(f, cfg.data.compression) for f in files]
    if all(record is None for record in firsts):
        raise DataError(
            f"the eval split is empty: the {len(files)} file(s) matching "
            f"{cfg.data.eval_pattern!r} in {cfg.data.data_dir!r} hold no "
            "requests (import with a wider eval split: importer.eval_days "
            "/ importer.eval_start_ts)")
    kind, chosen = select_checkpoint(cfg)
    state, path, status = restore_latest(cfg, "evaluate", path=chosen)
    status.expect_partial()
    model, step = state.model, state.step
    print(f"evaluating the {kind} checkpoint {path}", file=sys.stderr)
    p = predict(cfg, model, files, spec, progress)
    sliced = sliced_evaluation(
        cfg, p.users, p.labels, p.probs,
        p.truth if spec.with_true_ctr else None, slice_keys(p.keys, model),
        title=f"{cfg.name} @ step {int(step.numpy())}")
    results = report(p.users, p.labels, p.probs,
                     p.truth if spec.with_true_ctr else None)
    results.update(sliced.report)
    results["step"] = int(step.numpy())
    results["checkpoint"] = path
    results["checkpoint_kind"] = kind
    path = os.path.join(cfg.training.model_dir, "eval.json")
    json_io.write_json(path, results)
    print(format_report(results), file=sys.stderr)
    print(format_sliced(results), file=sys.stderr)
    write_eval_summaries(cfg.training.model_dir, results["step"], results,
                         sliced.png)
    return results


def format_report(r: dict) -> str:
    kind = f" ({r['checkpoint_kind']})" if "checkpoint_kind" in r else ""
    line = (
        f"eval @ step {r.get('step', '?')}{kind}: AUC {r['auc']:.4f}  "
        f"GAUC {r['gauc']:.4f}  log loss {r['log_loss']:.4f}"
    )
    if "bayes_auc" in r:
        line += (
            f"  | Bayes-optimal AUC {r['bayes_auc']:.4f}  "
            f"GAUC {r['bayes_gauc']:.4f}  log loss {r['bayes_log_loss']:.4f}"
        )
    return line
