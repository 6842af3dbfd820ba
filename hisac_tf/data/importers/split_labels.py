"""Refusing a split that holds one label only (or nothing at all).

AUC and log loss need both classes: a train split without positives
learns nothing, an eval or valid split without them cannot be scored. The
importer stops with an error naming the split, its counts and the options
that change it, unless `importer.allow_single_class_split` is set.

`window_labels` says before anything is written which requests surely
hold a positive and a negative candidate (from their window; positives
are kept first when the window has more than C items), so most such
splits are refused with the old outputs intact; whether sampled negatives
arrive is only known once written (`check_written`). The Beam pipeline
sums the per-user `split_plan`s (`merge_plans`) and applies the same
`check_plans`.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from hisac_tf.config import ImporterConfig
from hisac_tf.data.feature_spec import DataError

OPTIONS = {"train": "importer.eval_days / importer.valid_days",
           "valid": "importer.valid_days / importer.valid_start_ts",
           "eval": "importer.eval_days / importer.eval_start_ts"}


def _distinct_per_request(request: np.ndarray, item: np.ndarray,
                          num_requests: int) -> np.ndarray:
    """[R] distinct items per request from [M] (request, item) pairs."""
    if not len(request):
        return np.zeros(num_requests, np.int64)
    order = np.lexsort((item, request))
    r, i = request[order], item[order]
    new = np.ones(len(r), bool)
    new[1:] = (r[1:] != r[:-1]) | (i[1:] != i[:-1])
    return np.bincount(r[new], minlength=num_requests)


def window_labels(items: np.ndarray, behaviors: np.ndarray,
                  start: np.ndarray, end: np.ndarray,
                  positive: frozenset[int], max_candidates: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request r: (has a positive [R], has a window negative [R],
    room for sampled negatives [R]), over events [E] whose window of r is
    `[start[r], end[r])`."""
    num = len(start)
    lengths = end - start  # [R]
    request = np.repeat(np.arange(num), lengths)  # [M] windows' events.
    offsets = np.cumsum(lengths) - lengths  # [R] first slot of each window.
    idx = np.arange(len(request)) + np.repeat(start - offsets, lengths)
    item = items[idx]
    pos = np.isin(behaviors[idx], list(positive))  # [M]
    n_items = _distinct_per_request(request, item, num)  # [R]
    n_pos = _distinct_per_request(request[pos], item[pos], num)  # [R]
    kept = np.minimum(n_items, max_candidates)
    kept_pos = np.minimum(n_pos, max_candidates)
    return n_pos > 0, kept > kept_pos, kept < max_candidates


def _refuse(split: str, what: str, imp: ImporterConfig) -> DataError:
    return DataError(
        f"split {split} {what}: AUC and log loss need both labels. Change "
        f"the split ({OPTIONS[split]}), importer.positive_behaviors="
        f"{list(imp.positive_behaviors)} or importer.negatives_per_request"
        f"={imp.negatives_per_request}, or pass --allow_single_class_split "
        "(importer.allow_single_class_split=true) to write it anyway")


def split_plan(rows: np.ndarray, has_pos: np.ndarray, has_neg: np.ndarray,
               room: np.ndarray, time_of: np.ndarray) -> dict:
    """What the requests `rows` of a split surely hold, before writing:
    {requests, first, last (request times), has_pos, has_neg, room}."""
    if not len(rows):
        return {"requests": 0}
    return {"requests": int(len(rows)),
            "first": int(time_of[rows].min()),
            "last": int(time_of[rows].max()),
            "has_pos": bool(has_pos[rows].any()),
            "has_neg": bool(has_neg[rows].any()),
            "room": bool(room[rows].any())}


def merge_plans(a: Mapping[str, Mapping], b: Mapping[str, Mapping]
                ) -> dict[str, dict]:
    """{split: plan} of two disjoint sets of requests (`split_plan`)."""
    out = {k: dict(v) for k, v in a.items()}
    for split, plan in b.items():
        if not out.get(split, {}).get("requests"):
            out[split] = dict(plan)
        elif plan.get("requests"):
            x = out[split]
            out[split] = {
                "requests": x["requests"] + plan["requests"],
                "first": min(x["first"], plan["first"]),
                "last": max(x["last"], plan["last"]),
                **{k: bool(x[k] or plan[k])
                   for k in ("has_pos", "has_neg", "room")}}
    return out


def check_plans(plans: Mapping[str, Mapping], written: list[str],
                configured: set[str], imp: ImporterConfig) -> None:
    """Raises DataError for the first configured split of `written` that
    is empty, surely has no positive, or surely no negative."""
    if imp.allow_single_class_split:
        return
    for split in written:
        plan = plans.get(split, {})
        if split not in configured:
            continue
        if not plan.get("requests"):
            raise _refuse(split, "would be empty (0 requests)", imp)
        span = (f"{plan['requests']} requests, request_time "
                f"{plan['first']}..{plan['last']}")
        if not plan["has_pos"]:
            raise _refuse(split, f"would hold no positive label ({span})",
                          imp)
        sample = imp.negatives_per_request > 0 and plan["room"]
        if not plan["has_neg"] and not sample:
            raise _refuse(split, f"would hold no negative label ({span})",
                          imp)


def check_planned(rows_of: Mapping[str, np.ndarray], configured: set[str],
                  has_pos: np.ndarray, has_neg: np.ndarray,
                  room: np.ndarray, imp: ImporterConfig,
                  time_of: np.ndarray) -> None:
    """Raises DataError for a configured split that is empty, surely has
    no positive, or surely no negative (before anything is written)."""
    plans = {split: split_plan(rows, has_pos, has_neg, room, time_of)
             for split, rows in rows_of.items()}
    check_plans(plans, list(rows_of), configured, imp)


def check_written(splits: Mapping[str, Mapping[str, int]],
                  configured: set[str], imp: ImporterConfig) -> None:
    """Raises DataError for a configured split written with one label."""
    if imp.allow_single_class_split:
        return
    for split, s in splits.items():
        impressions, positives = s.get("impressions", 0), s.get(
            "positives", 0)
        if split in configured and positives == impressions:
            raise _refuse(split, f"holds no negative label ({impressions} "
                          "impressions, all positive)", imp)
