"""The per-impression predictions beside an evaluation report (.npz).

`--compare` needs per-user data to bootstrap over users, and slices of
two reports must be cut the same way, so `evaluate` keeps, per scored
impression [M], what the metrics and the slices need, compressed:

    users int64, labels int8, probs float32, truth float32 ([0] without
    true_ctr), history_length int32, recent_behaviours int32,
    item_ids int64, has_sid bool

about 30 bytes an impression before compression (docs/design.md §2.5).
The report names the file (`predictions_file`, beside the report).
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow as tf

from hisac_tf.evaluation.slices import SliceKeys

FIELDS = {"users": np.int64, "labels": np.int8, "probs": np.float32,
          "truth": np.float32, "history_length": np.int32,
          "recent_behaviours": np.int32, "item_ids": np.int64,
          "has_sid": bool}


def save_predictions(path: str, users, labels, probs, truth,
                     keys: SliceKeys) -> None:
    """Writes the arrays (see the module doc) to `path` (any filesystem)."""
    values = {"users": users, "labels": labels, "probs": probs,
              "truth": truth if truth is not None else np.zeros(0),
              **keys._asdict()}
    sizes = {k: len(v) for k, v in values.items() if k != "truth"}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"per-impression arrays differ in length: {sizes}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{
        k: np.asarray(v).astype(FIELDS[k]) for k, v in values.items()})
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def load_predictions(path: str) -> dict:
    """{field: array} as written by `save_predictions`; ValueError naming
    the file and the field when one is missing."""
    if not tf.io.gfile.exists(path):
        raise ValueError(f"{path}: predictions file is missing")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = np.load(io.BytesIO(f.read()))
        out = {k: data[k] for k in data.files}
    missing = sorted(set(FIELDS) - set(out))
    if missing:
        raise ValueError(f"{path}: no {missing[0]!r} array (has "
                         f"{sorted(out)})")
    return out


def slice_keys(arrays: dict) -> SliceKeys:
    """The SliceKeys of loaded predictions."""
    return SliceKeys(arrays["history_length"], arrays["recent_behaviours"],
                     arrays["item_ids"], arrays["has_sid"].astype(bool))
