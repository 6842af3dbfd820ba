"""Evaluation figures into TensorBoard beside training's curves.

`write_eval_summaries` writes to `<model_dir>/tensorboard/eval` at the
evaluated checkpoint's step: the global AUC, GAUC, log loss (and the
Bayes-optimal ones), calibration (mean prediction / CTR, ECE), every
measured slice as `slices/<dimension>/<slice>/<metric>` (`tag`), the slice table
as text and the reliability diagram as an image.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from hisac_tf.training.callbacks import summary_dir
from hisac_tf.evaluation.slices import format_slices

GLOBAL = ("auc", "gauc", "log_loss", "bayes_auc", "bayes_gauc",
          "bayes_log_loss")
PER_SLICE = ("auc", "gauc", "log_loss", "calibration", "ece", "bayes_auc")


def tag(slice_name: str) -> str:
    """A TensorBoard-safe tag of a slice name: <50 -> lt50, 50–200 ->
    50-200, ≥3k -> ge3k."""
    return (slice_name.replace("<", "lt").replace("≥", "ge")
            .replace("–", "-"))


def write_eval_summaries(model_dir: str, step: int, results: dict,
                         reliability: Optional[bytes] = None) -> str:
    """Writes the summaries (module doc); returns their directory."""
    log_dir = summary_dir(model_dir, "eval")
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default(step=step):
        for key in GLOBAL:
            if results.get(key) is not None:
                tf.summary.scalar(key, results[key])
        cal = results.get("calibration") or {}
        if cal.get("ratio") is not None:
            tf.summary.scalar("calibration/pred_over_observed", cal["ratio"])
        if cal.get("ece") is not None:
            tf.summary.scalar("calibration/ece", cal["ece"])
        rows = (results.get("slices") or {}).get("rows", [])
        for row in rows:
            if row["status"] != "ok" or row["dimension"] == "all":
                continue
            name = f"slices/{row['dimension']}/{tag(row['slice'])}"
            for key in PER_SLICE:
                if row.get(key) is not None:
                    tf.summary.scalar(f"{name}/{key}", row[key])
        if rows:
            tf.summary.text("slices", "```\n" + format_slices(rows)
                            + "\n```")
        if reliability is not None:
            image = tf.image.decode_png(reliability, channels=4)  # [H, W, 4]
            tf.summary.image("calibration/reliability", image[None])
    writer.close()
    return log_dir
