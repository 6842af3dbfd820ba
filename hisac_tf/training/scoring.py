"""Scoring a split with a model: the probabilities and metrics that model
selection (the valid split, during training) and evaluation (the eval
split, of a checkpoint) share.

`scorer(model)` is the tf.function of one batch, `predict` runs it over
files and keeps one value per impression (about 20 bytes each) and the
per-request diagnostics, `report` turns them into AUC (exact, over every
impression), GAUC (per-user AUC weighted by the user's impressions; users
whose impressions are all one class are skipped), log loss and, with
`true_ctr` (synthetic data), the Bayes-optimal figures.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf import metrics
from hisac_tf.config import Config
from hisac_tf.data import input_pipeline
from hisac_tf.layers.routing_diagnostics import ROUTING_KEYS

# (batch, mask [B, C]) -> {name: [M] per impression}: what a caller keeps
# of each batch beside the scores (evaluation: its slice keys).
ImpressionKeys = Callable[[dict, np.ndarray], dict]


class Predictions(NamedTuple):
    """Per-impression arrays [M] and per-request diagnostics [R]."""

    users: np.ndarray
    labels: np.ndarray
    probs: np.ndarray
    truth: np.ndarray  # true_ctr; empty without it
    num_active: np.ndarray  # [R] groups in use per request
    # [R] per request, when the ranker reports them (ROUTING_KEYS).
    routing: Optional[dict] = None
    # [M] per impression, what `keys` of `predict` returned.
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
            score=None, keys: ImpressionKeys | None = None) -> Predictions:
    """Scores `files` with `model` (or a `scorer(model)` passed as score).

    Args:
      keys: called on each batch and its candidate mask [B, C]; the
        arrays it returns ([M] each) are concatenated into
        `Predictions.keys` ({} without it).
    """
    ds = input_pipeline.request_dataset(
        files, spec, batch_size=cfg.data.batch_size,
        compression=cfg.data.compression, deterministic=True,
        num_parallel_reads=cfg.data.num_parallel_reads,
    )
    score = score or scorer(model)
    users, labels, probs, truth, active = [], [], [], [], []
    routing: dict = {}
    kept: dict = {}
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
        if keys is not None:
            for key, value in keys(batch, mask).items():
                kept.setdefault(key, []).append(value)
        if (i + 1) % 25 == 0:
            bar.update(i + 1)
    bar.update(len(probs), finalize=True)
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa
    return Predictions(cat(users), cat(labels), cat(probs), cat(truth),
                       cat(active), {k: cat(v) for k, v in routing.items()},
                       {k: cat(v) for k, v in kept.items()})


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
