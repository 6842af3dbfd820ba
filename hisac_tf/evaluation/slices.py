"""Sliced evaluation: AUC, GAUC, log loss and calibration per slice.

Each impression falls into one slice of every dimension (docs/design.md
§2.5):

* `history_length`: the user's behaviours before the request (the whole
  record's history, before truncation to N), in buckets with upper edges
  `evaluation.history_buckets`: (50, 200, 1000, 3000) gives <50,
  50–200, 200–1k, 1k–3k, ≥3k.
* `user_activity`: behaviours in the `evaluation.activity_days` days
  before the request, counted in the newest N kept (so at most N), in
  buckets with upper edges `evaluation.activity_buckets`.
* `item_popularity`: the candidate item's impressions in the evaluated
  split; items ordered by impressions, the most shown ones that together
  take the first third of impressions are `head`, the next third
  `torso`, the rest `tail`.
* `semantic_id`: whether the candidate item has a semantic ID in the
  model's tokenizer tables (`has_sid`, `no_sid`: OOV items take no part in
  voting or routing).

Plus `all`, every impression. A slice gets numbers only when it can be
measured; otherwise its `status` says why and `message` names the slice:
`empty` (no impressions), `nan_predictions` (some predictions are NaN),
`single_class` (all clicked or none: AUC undefined), `too_small` (fewer
than `evaluation.min_slice_impressions` impressions; `all` is
measured whatever its size). With `true_ctr`
(synthetic data) each measured slice also has the Bayes-optimal AUC, GAUC
and log loss of its impressions.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import numpy as np

from hisac_tf import metrics
from hisac_tf.evaluation.calibration import calibration

ALL = "all"
DIMENSIONS = ("history_length", "user_activity", "item_popularity",
              "semantic_id")
POPULARITY = ("head", "torso", "tail")
SEMANTIC_ID = ("has_sid", "no_sid")
DAY_S = 86_400
METRICS = ("auc", "gauc", "log_loss")


@dataclasses.dataclass(frozen=True)
class SliceSettings:
    """How impressions are sliced (see the module doc); the report keeps
    them so that `--compare` slices every report the same way."""

    history_buckets: tuple[int, ...] = (50, 200, 1000, 3000)
    activity_buckets: tuple[int, ...] = (5, 20, 50)
    activity_days: float = 7.0
    min_impressions: int = 100
    calibration_bins: int = 10

    @classmethod
    def from_config(cls, evaluation) -> "SliceSettings":
        """From the `evaluation` config section."""
        return cls(tuple(evaluation.history_buckets),
                   tuple(evaluation.activity_buckets),
                   float(evaluation.activity_days),
                   int(evaluation.min_slice_impressions),
                   int(evaluation.calibration_bins))

    @classmethod
    def from_dict(cls, values: dict) -> "SliceSettings":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        if unknown:
            raise ValueError(f"unknown slice setting {unknown[0]!r}")
        out = dict(values)
        for key in ("history_buckets", "activity_buckets"):
            if key in out:
                out[key] = tuple(out[key])
        return cls(**out)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in out.items()}


class SliceKeys(NamedTuple):
    """What an impression is sliced by, one value per impression [M]."""

    history_length: np.ndarray  # int, behaviours before the request
    recent_behaviours: np.ndarray  # int, in the last activity_days days
    item_ids: np.ndarray  # int64, the candidate item
    has_sid: np.ndarray  # bool, the item has a semantic ID


def batch_keys(batch: dict, mask: np.ndarray, activity_days: float
               ) -> dict:
    """Per-impression keys of one padded batch (numpy values).

    Args:
      batch: hist_raw_length [B], hist_timestamps [B, N], request_time
        [B], cand_item_ids [B, C] (as `FeatureSpec.pad_batch` makes them).
      mask: valid candidates [B, C].
      activity_days: the window of `recent_behaviours`.
    Returns:
      {"history_length", "recent_behaviours", "item_ids"}, each [M].
    """
    count = mask.sum(axis=1)  # [B]
    ts = np.asarray(batch["hist_timestamps"])  # [B, N], 0 = padding
    now = np.asarray(batch["request_time"])[:, None]  # [B, 1]
    recent = ((ts > 0) & (ts >= now - activity_days * DAY_S)
              & (ts <= now)).sum(axis=1)  # [B]
    return {
        "history_length": np.repeat(
            np.asarray(batch["hist_raw_length"]), count),
        "recent_behaviours": np.repeat(recent, count),
        "item_ids": np.asarray(batch["cand_item_ids"])[mask],
    }


def bucket_name(edges, index: int) -> str:
    """Name of bucket `index` of upper `edges`: <e0, e0–e1, ..., ≥e_last."""
    def short(v: int) -> str:
        if v >= 1000 and v % 100 == 0:
            return f"{v / 1000:g}k"
        return str(v)
    if index == 0:
        return f"<{short(edges[0])}"
    if index == len(edges):
        return f"≥{short(edges[-1])}"
    return f"{short(edges[index - 1])}–{short(edges[index])}"


def popularity_index(item_ids: np.ndarray) -> np.ndarray:
    """0 (head), 1 (torso) or 2 (tail) per impression [M]: items ordered by
    impressions (most first, ties by id); an item is in the third of the
    impressions where its first impression falls."""
    items, index, counts = np.unique(item_ids, return_inverse=True,
                                     return_counts=True)
    order = np.lexsort((items, -counts))  # most shown first
    before = np.zeros(items.size)
    before[order] = np.cumsum(counts[order]) - counts[order]
    share = before / max(item_ids.size, 1)  # [I] impressions before it
    bucket = np.minimum((share * 3).astype(np.int64), 2)  # [I]
    return bucket[index]


def assign(keys: SliceKeys, settings: SliceSettings) -> dict:
    """{dimension: (slice names, slice index per impression [M])}."""
    h = np.searchsorted(settings.history_buckets, keys.history_length,
                        side="right")
    a = np.searchsorted(settings.activity_buckets, keys.recent_behaviours,
                        side="right")
    return {
        "history_length": (
            [bucket_name(settings.history_buckets, i)
             for i in range(len(settings.history_buckets) + 1)], h),
        "user_activity": (
            [bucket_name(settings.activity_buckets, i)
             for i in range(len(settings.activity_buckets) + 1)], a),
        "item_popularity": (list(POPULARITY),
                            popularity_index(keys.item_ids)),
        "semantic_id": (list(SEMANTIC_ID),
                        np.where(keys.has_sid, 0, 1)),
    }


def slice_row(dimension: str, name: str, users, labels, probs,
              truth: Optional[np.ndarray], settings: SliceSettings) -> dict:
    """One slice's counts and, when measurable, its metrics and
    calibration (mean prediction / CTR, ECE)."""
    n = int(labels.size)
    positives = int(labels.sum())
    row = {"dimension": dimension, "slice": name, "impressions": n,
           "positives": positives,
           "users": int(np.unique(users).size)}
    where = f"slice {dimension}={name}"
    min_impressions = settings.min_impressions
    nan = int(np.isnan(probs).sum())
    if n == 0:
        status, message = "empty", f"{where} is empty: no impressions"
    elif nan:
        status, message = "nan_predictions", (
            f"{where}: {nan} of {n} predictions are NaN")
    elif positives in (0, n):
        status, message = "single_class", (
            f"{where} has {n} impressions, "
            f"{'all clicked' if positives else 'none clicked'}: AUC is "
            "undefined")
    elif n < min_impressions and dimension != ALL:
        status, message = "too_small", (
            f"{where} has {n} impressions ({positives} clicked), fewer "
            f"than the {min_impressions} needed")
    else:
        status, message = "ok", ""
    row["status"] = status
    if message:
        row["message"] = message
        return row
    mean = float(probs.mean())
    ctr = positives / n
    row.update(ctr=ctr, mean_prediction=mean, calibration=mean / ctr,
               ece=calibration(labels, probs,
                               settings.calibration_bins)["ece"],
               auc=metrics.auc(labels, probs),
               gauc=_none_if_nan(metrics.gauc(users, labels, probs)),
               log_loss=metrics.log_loss(labels, probs))
    if truth is not None:
        row.update(bayes_auc=metrics.auc(labels, truth),
                   bayes_gauc=_none_if_nan(metrics.gauc(users, labels,
                                                        truth)),
                   bayes_log_loss=metrics.log_loss(labels, truth))
    return row


def _none_if_nan(value: float) -> Optional[float]:
    return None if np.isnan(value) else float(value)


def slice_rows(users, labels, probs, keys: SliceKeys,
               settings: SliceSettings,
               truth: Optional[np.ndarray] = None) -> list[dict]:
    """The `all` row, then one row per slice of every dimension.

    Args:
      users, labels (0/1), probs: per impression [M]; probs in [0, 1] or
        NaN (NaN slices are reported, not measured).
      keys: the impressions' `SliceKeys`.
      truth: true click probabilities [M] (synthetic data) or None.
    """
    users = np.asarray(users)
    labels = np.asarray(labels)
    probs = np.asarray(probs, dtype=np.float64)
    if truth is not None and len(truth) == 0:
        truth = None
    rows = [slice_row(ALL, ALL, users, labels, probs, truth, settings)]
    for dimension, (names, index) in assign(keys, settings).items():
        for i, name in enumerate(names):
            pick = index == i  # [M]
            rows.append(slice_row(
                dimension, name, users[pick], labels[pick], probs[pick],
                None if truth is None else truth[pick], settings))
    return rows


def _cell(row: dict, key: str, digits: int = 4) -> str:
    value = row.get(key)
    return "–" if value is None else f"{value:.{digits}f}"


def format_slices(rows: list[dict]) -> str:
    """The printed table: one line per slice; unmeasured slices say why."""
    bayes = any("bayes_auc" in r for r in rows)
    head = (f"{'dimension':<16} {'slice':<9} {'impr':>8} {'pos':>7} "
            f"{'AUC':>7} {'GAUC':>7} {'logloss':>7} {'pred/obs':>8}")
    if bayes:
        head += f" {'BayesAUC':>8}"
    lines = [head]
    for r in rows:
        line = (f"{r['dimension']:<16} {r['slice']:<9} "
                f"{r['impressions']:>8,} {r['positives']:>7,} ")
        if r["status"] != "ok":
            lines.append(line + r["status"])
            continue
        line += (f"{_cell(r, 'auc'):>7} {_cell(r, 'gauc'):>7} "
                 f"{_cell(r, 'log_loss'):>7} {_cell(r, 'calibration', 3):>8}")
        if bayes:
            line += f" {_cell(r, 'bayes_auc'):>8}"
        lines.append(line)
    return "\n".join(lines)
