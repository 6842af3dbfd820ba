"""Evaluation of a checkpoint on the eval split.

`evaluate(cfg) -> dict` restores the checkpoint that
`evaluation.checkpoint` names (by default the best by valid AUC when one
exists, else the latest; `select_checkpoint`), scores every valid
candidate of the eval records once, and reports AUC (exact, over every
impression), GAUC (per-user AUC weighted by the user's impressions; users
whose impressions are all one class are skipped), log loss and, when the
records carry `true_ctr` (synthetic data), the Bayes-optimal
AUC/GAUC/log loss of the same impressions, with the checkpoint used
(`checkpoint`, `checkpoint_kind`). Writes `<model_dir>/eval.json`.
Scoring is `hisac_tf.training.scoring` (`predict`, `report`), the same
that scores the valid split during training (`ModelSelection`); this
module adds the slices, the checkpoint choice and the files.
"""

from __future__ import annotations

import os
import sys

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)

from hisac_tf import json_io
from hisac_tf.config import Config
from hisac_tf.data.data_summary import first_record, has_true_ctr
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.split_files import split_files
from hisac_tf.evaluation.eval_summaries import write_eval_summaries
from hisac_tf.evaluation.sliced_evaluation import (
    format_sliced,
    slice_keys,
    sliced_evaluation,
)
from hisac_tf.evaluation.slices import batch_keys
from hisac_tf.training.checkpoints import (
    restore_checkpoint,
    select_checkpoint,
)
from hisac_tf.training.scoring import predict, report

# Batch features the slices read (`slices.batch_keys`).
SLICE_FEATURES = ("hist_raw_length", "hist_timestamps", "request_time",
                  "cand_item_ids")


def impression_keys(cfg: Config):
    """`predict`'s keys: the slice keys of each impression
    (`slices.batch_keys`, activity over `evaluation.activity_days`)."""

    def keys(batch, mask):
        return batch_keys({k: batch[k].numpy() for k in SLICE_FEATURES},
                          mask, cfg.evaluation.activity_days)

    return keys


def evaluate(cfg: Config, progress: bool = True) -> dict:
    """Scores the eval split with the chosen checkpoint; writes eval.json."""
    # Unreadable, empty (or all-empty) shards are named here, before a
    # checkpoint is looked for (split_files.check_shards).
    files = split_files(cfg.data, "eval")
    first = next(f for f in files
                 if first_record(f, cfg.data.compression) is not None)
    spec = FeatureSpec.from_config(
        cfg.data, features=cfg.all_features,
        with_true_ctr=has_true_ctr(first, cfg.data.compression))
    kind, path = select_checkpoint(cfg, cfg.evaluation.checkpoint)
    state, status = restore_checkpoint(cfg, path)
    status.expect_partial()
    model, step = state.model, state.step
    print(f"evaluating the {kind} checkpoint {path}", file=sys.stderr)
    p = predict(cfg, model, files, spec, progress,
                keys=impression_keys(cfg))
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
