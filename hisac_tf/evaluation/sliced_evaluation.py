"""The sliced part of an evaluation report (docs/design.md §2.5).

`sliced_evaluation` takes the scored impressions of `evaluation.predict`
and, before any global metric is computed, refuses bad predictions:
values outside [0, 1] (an error naming the count) and NaN (an error
naming each slice that holds them). It then returns what the report
adds: the slice rows (`slices.py`), overall calibration with its
reliability bins (`calibration.py`, the Bayes-optimal reference on
synthetic data), and the files beside the report: the per-impression
predictions for `--compare` (`eval_predictions.py`) and the reliability
diagram PNG (`eval_figures.py`, when matplotlib is installed).
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import numpy as np
import tensorflow as tf

from hisac_tf.config import Config
from hisac_tf.evaluation.calibration import calibration, check_probabilities
from hisac_tf.evaluation.eval_figures import reliability_png
from hisac_tf.evaluation.eval_predictions import save_predictions
from hisac_tf.evaluation.slices import (SliceKeys, SliceSettings,
                                      format_slices, slice_rows)

PREDICTIONS_FILE = "eval_predictions.npz"
RELIABILITY_FILE = "reliability.png"


class Sliced(NamedTuple):
    """The report's additions and the reliability diagram's PNG bytes."""

    report: dict
    png: Optional[bytes]


def item_has_sid(model, item_ids: np.ndarray) -> np.ndarray:
    """Whether each item [M] is in the model's semantic tables (all False
    for a model without `semantic_lookup`)."""
    lookup = getattr(model, "semantic_lookup", None)
    if lookup is None:
        return np.zeros(len(item_ids), bool)
    return np.isin(item_ids, lookup.item_ids.numpy())


def slice_keys(keys: dict, model) -> SliceKeys:
    """SliceKeys from `Predictions.keys` (`evaluation.impression_keys`)
    and the model's tables."""
    empty = np.zeros(0, np.int64)  # no batches: no impressions
    items = keys.get("item_ids", empty)
    return SliceKeys(keys.get("history_length", empty),
                     keys.get("recent_behaviours", empty), items,
                     item_has_sid(model, items))


def checked_rows(users, labels, probs, keys: SliceKeys,
                 settings: SliceSettings, truth=None) -> list[dict]:
    """`slice_rows`, after refusing predictions outside [0, 1]; NaN
    predictions are an error that names every slice holding them."""
    probs = check_probabilities(probs)
    rows = slice_rows(users, labels, probs, keys, settings, truth)
    if np.isnan(probs).any():
        bad = [r["message"] for r in rows
               if r["status"] == "nan_predictions"]
        raise ValueError("NaN predictions, by slice: " + "; ".join(bad))
    return rows


def sliced_evaluation(cfg: Config, users, labels, probs, truth,
                      keys: SliceKeys, title: str = "") -> Sliced:
    """Slices, calibration and the files beside `<model_dir>/eval.json`.

    Args:
      users, labels, probs: per impression [M]; truth: true_ctr [M] or
        None; keys: the impressions' SliceKeys.
    Returns:
      Sliced: report keys "slices" ({"settings", "rows"}), "calibration"
      (+ "bayes_calibration"), "predictions_file" and, with matplotlib,
      "reliability_png" (file names beside eval.json); the PNG bytes.
      Nothing without impressions (the global metrics refuse those).
    """
    if len(labels) == 0:  # The caller's global metrics say why.
        return Sliced({}, None)
    settings = SliceSettings.from_config(cfg.evaluation)
    if truth is not None and len(truth) == 0:
        truth = None
    rows = checked_rows(users, labels, probs, keys, settings, truth)
    model_dir = cfg.training.model_dir
    tf.io.gfile.makedirs(model_dir)
    out = {"slices": {"settings": settings.to_dict(), "rows": rows}}
    bins = settings.calibration_bins
    out["calibration"] = calibration(labels, probs, bins)
    bayes = calibration(labels, truth, bins) if truth is not None else None
    if bayes is not None:
        out["bayes_calibration"] = bayes
    save_predictions(os.path.join(model_dir, PREDICTIONS_FILE), users,
                     labels, probs, truth, keys)
    out["predictions_file"] = PREDICTIONS_FILE
    png = reliability_png(out["calibration"], title, bayes)
    if png is not None:
        with tf.io.gfile.GFile(os.path.join(model_dir, RELIABILITY_FILE),
                               "wb") as f:
            f.write(png)
        out["reliability_png"] = RELIABILITY_FILE
    return Sliced(out, png)


def format_sliced(report: dict) -> str:
    """The slice table, calibration, and why unmeasured slices have no
    numbers; "" for a report without slices."""
    if "slices" not in report:
        return ""
    rows = report["slices"]["rows"]
    cal = report["calibration"]
    ratio = cal["ratio"]
    lines = [format_slices(rows),
             f"calibration: mean prediction {cal['mean_prediction']:.4f} / "
             f"observed CTR {cal['observed_ctr']:.4f} = "
             f"{'–' if ratio is None else f'{ratio:.3f}'}, "
             f"ECE {cal['ece']:.4f}"]
    lines += [f"  note: {r['message']}" for r in rows
              if r.get("message") and r["status"] != "empty"]
    empty = [f"{r['dimension']}={r['slice']}" for r in rows
             if r["status"] == "empty"]
    if empty:
        lines.append(f"  note: no impressions in {', '.join(empty)}")
    return "\n".join(lines)
