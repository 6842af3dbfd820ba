"""Request statistics of a raw log for a few windows and C values.

`raw_log_stats(cfg)` reads the log of `cfg.importer.input` as the importer
does (`read_events`), forms its requests (`form_requests`) for each request
window of `windows` and reports, so that `importer.request_window_s` and
`data.max_candidates` (C) can be chosen from facts before importing
(`hisac-inspect --raw`):

* requests, and those kept (history >= `importer.min_history`);
* per split (the importer's time split, `time_split`), the kept requests;
* the window candidates (distinct items of a window) and, for each C of
  `candidates`, how many of them a C-slot request keeps and truncates;
* the kept requests whose history is longer than N (`data.max_history`).

Sampled negatives are not simulated: they only fill the slots the window
leaves under C.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from hisac_tf.config import Config
from hisac_tf.data.importers.log_reader import read_events
from hisac_tf.data.importers.request_formation import form_requests
from hisac_tf.data.importers.time_split import (SPLITS, assign_splits,
                                                split_boundaries)

# Request windows tried besides importer.request_window_s: 10 min, 1 h, 1 d.
DEFAULT_WINDOWS = (600, 3600, 86400)


def default_candidates(c: int) -> list[int]:
    """C values tried: C and a few around it (C // 2, 2 C, 4 C)."""
    return sorted({max(1, c // 2), c, 2 * c, 4 * c})


def window_stats(events: Mapping[str, np.ndarray], window_s: int,
                 cfg: Config, candidates: Sequence[int]) -> dict[str, Any]:
    """The statistics of one request window (see the module docstring)."""
    imp, data = cfg.importer, cfg.data
    ev, req = form_requests(events, window_s)
    n_req = len(req.start)
    sizes = req.end - req.start  # [R] events per window
    request_of = np.repeat(np.arange(n_req), sizes)  # [E]
    items = ev["item_id"]
    positive = np.isin(ev["behavior_type"], list(imp.positive_ids))  # [E]
    # Distinct (request, item) pairs and whether any event is positive.
    pair = request_of * (int(items.max()) + 1) + items  # [E]
    keys, inverse = np.unique(pair, return_inverse=True)  # [P]
    pair_positive = np.zeros(len(keys), bool)
    np.logical_or.at(pair_positive, inverse, positive)
    pair_request = keys // (int(items.max()) + 1)  # [P]
    distinct = np.bincount(pair_request, minlength=n_req)  # [R]
    positives = np.bincount(pair_request, weights=pair_positive,
                            minlength=n_req).astype(np.int64)  # [R]
    hist_len = req.start - req.user_start  # [R]
    kept = hist_len >= imp.min_history  # [R]
    bounds = split_boundaries(imp, int(ev["timestamp"].max()))
    split = assign_splits(req.time, bounds)  # [R]
    splits = {}
    for k, name in enumerate(SPLITS):
        if name == "valid" and bounds.valid_start is None:
            continue
        if name == "eval" and bounds.eval_start is None:
            continue
        rows = kept & (split == k)
        splits[name] = {"requests": int(rows.sum()),
                        "window_candidates": int(distinct[rows].sum()),
                        "positive_candidates": int(positives[rows].sum())}
    total = int(distinct[kept].sum())
    by_c = []
    for c in candidates:
        truncated = int(np.maximum(distinct[kept] - c, 0).sum())
        by_c.append({"max_candidates": int(c), "kept": total - truncated,
                     "truncated": truncated,
                     "truncated_share": truncated / total if total else 0.0,
                     "requests_over": int((distinct[kept] > c).sum())})
    return {
        "window_s": int(window_s),
        "requests": n_req,
        "requests_kept": int(kept.sum()),
        "events_in_kept_requests": int(sizes[kept].sum()),
        "window_candidates": total,
        "candidates_per_request_mean": (
            float(distinct[kept].mean()) if kept.any() else 0.0),
        "candidates_per_request_max": (
            int(distinct[kept].max()) if kept.any() else 0),
        "histories_over_max_history": int(
            (hist_len[kept] > data.max_history).sum()),
        "splits": splits,
        "by_max_candidates": by_c,
    }


def raw_log_stats(cfg: Config, windows: Sequence[int] | None = None,
                  candidates: Sequence[int] | None = None) -> dict[str, Any]:
    """Reads `cfg.importer.input` once; the statistics of each window.

    Args:
      cfg: the importer's config (input, format, split, min_history,
        positive behaviours) and data.max_history / max_candidates.
      windows: request windows in seconds; default `DEFAULT_WINDOWS` and
        importer.request_window_s.
      candidates: C values; default `default_candidates(data.max_candidates)`.
    Raises:
      FileNotFoundError: an input that does not exist; DataError: bad rows
        (as the importer) or no valid events.
    """
    imp, data = cfg.importer, cfg.data
    windows = sorted(set(windows or DEFAULT_WINDOWS) | (
        set() if windows else {imp.request_window_s}))
    candidates = sorted(set(candidates or default_candidates(
        data.max_candidates)))
    for name, values in (("windows", windows), ("candidates", candidates)):
        if any(int(v) < 1 for v in values):
            raise ValueError(f"{name} must be integers >= 1, got {values}")
    events, counts = read_events(imp)
    if not len(events["user_id"]):
        raise ValueError(f"no valid events in importer.input={imp.input!r}")
    ts = events["timestamp"]
    return {
        "input": imp.input,
        **counts,
        "users": int(len(np.unique(events["user_id"]))),
        "items": int(len(np.unique(events["item_id"]))),
        "time_range": [int(ts.min()), int(ts.max())],
        "max_history": data.max_history,
        "min_history": imp.min_history,
        "request_window_s": imp.request_window_s,
        "max_candidates": data.max_candidates,
        "windows": [window_stats(events, w, cfg, candidates)
                    for w in windows],
    }


def format_raw_log_stats(stats: Mapping[str, Any]) -> str:
    """A table per window: requests per split and candidates kept per C."""
    days = (stats["time_range"][1] - stats["time_range"][0]) / 86400
    lines = [
        f"raw log {stats['input']}: {stats['events']} events of "
        f"{stats['users']} users, {stats['items']} items, {days:.1f} days "
        f"{stats['time_range']} (skipped {stats['skipped_rows']} bad rows)",
        f"  now: importer.request_window_s={stats['request_window_s']}, "
        f"data.max_candidates (C)={stats['max_candidates']}, "
        f"data.max_history (N)={stats['max_history']}, "
        f"importer.min_history={stats['min_history']}",
    ]
    for w in stats["windows"]:
        per_split = ", ".join(
            f"{name} {s['requests']} ({s['positive_candidates']} positive "
            f"of {s['window_candidates']} candidates)"
            for name, s in w["splits"].items())
        lines += [
            f"window {w['window_s']} s: {w['requests_kept']} requests kept "
            f"of {w['requests']} (events in them "
            f"{w['events_in_kept_requests']}); {per_split}",
            f"  candidates per request mean "
            f"{w['candidates_per_request_mean']:.1f}, max "
            f"{w['candidates_per_request_max']}; histories longer than N: "
            f"{w['histories_over_max_history']}",
        ]
        for c in w["by_max_candidates"]:
            lines.append(
                f"  C={c['max_candidates']:<5d} keeps {c['kept']} "
                f"candidates, truncates {c['truncated']} "
                f"({100 * c['truncated_share']:.1f}%) in "
                f"{c['requests_over']} requests")
    return "\n".join(lines)
