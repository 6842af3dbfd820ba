"""What the importer says: its settings first, its counts and warnings last.

The warnings (`lossy_warnings`) fire when a setting loses more than
`importer.warn_share` of the candidates, histories, requests, rows or
negatives, or leaves a split with fewer than `importer.warn_min_requests`
requests (`importer.warn_min_impressions` impressions) or with one label
only; each names the option that changes it.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from hisac_tf.config import Config


def format_settings(cfg: Config) -> str:
    """The resolved settings, printed before the import starts."""
    imp, data = cfg.importer, cfg.data
    valid = (f"valid_start_ts={imp.valid_start_ts}"
             if imp.valid_start_ts is not None
             else f"valid_days={imp.valid_days}")
    test = (f"eval_start_ts={imp.eval_start_ts}"
            if imp.eval_start_ts is not None else f"eval_days={imp.eval_days}")
    return "\n".join([
        f"import settings (config {cfg.name!r}):",
        f"  N = data.max_history = {data.max_history}, C = "
        f"data.max_candidates = {data.max_candidates}, user features "
        f"{list(data.user_features)}",
        f"  request window {imp.request_window_s} s, label 1 for an item "
        f"with a behaviour in {list(imp.positive_behaviors)} in the window "
        f"(else 0), min_history {imp.min_history}",
        f"  negatives per request {imp.negatives_per_request} (history "
        f"excluded: {imp.exclude_history_from_negatives}, seed {imp.seed})",
        f"  splits by time: {valid}, {test}; {imp.num_shards} shard(s) "
        f"each into {data.data_dir}",
    ])


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def lossy_warnings(summary: Mapping[str, Any], cfg: Config) -> list[str]:
    """Warnings about losses above `warn_share` and thin splits."""
    imp, data = cfg.importer, cfg.data
    limit = imp.warn_share
    out = []

    def lossy(part: int, whole: int, text: str) -> None:
        share = _share(part, whole)
        if share > limit:
            out.append(f"{100 * share:.1f}% {text} ({part} of {whole}; "
                       f"warns above importer.warn_share={limit})")

    lossy(summary["skipped_rows"], summary["rows_read"],
          "of the log's rows were bad and skipped (importer.skip_bad_rows)")
    lossy(summary["truncated_candidates"], summary["window_candidates"],
          f"of the windows' candidates were dropped: more than "
          f"data.max_candidates={data.max_candidates} items in a "
          f"{imp.request_window_s} s window (raise --max_candidates or "
          "shorten --request_window_s)")
    lossy(summary["histories_truncated"], summary["requests"],
          f"of the requests' histories were cut to the newest "
          f"data.max_history={data.max_history} events (--max_history)")
    lossy(summary["requests_dropped_short_history"],
          summary["requests"] + summary["requests_dropped_short_history"],
          f"of the requests were dropped with fewer than "
          f"importer.min_history={imp.min_history} history events")
    wanted = imp.negatives_per_request * summary["requests"]
    lossy(summary["negatives_short"], wanted,
          "of the wanted negatives could not be sampled (too few other "
          "items seen before the request; importer.negatives_per_request, "
          "importer.exclude_history_from_negatives)")
    lossy(summary["negatives_truncated"], wanted,
          f"of the wanted negatives found no room under "
          f"data.max_candidates={data.max_candidates}")
    bounds = {"train": True,
              "valid": summary["valid_start_ts"] is not None,
              "eval": summary["eval_start_ts"] is not None}
    option = {"train": "importer.eval_days / importer.valid_days",
              "valid": "importer.valid_days / importer.valid_start_ts",
              "eval": "importer.eval_days / importer.eval_start_ts"}
    for split, configured in bounds.items():
        if not configured:
            continue
        s = summary["splits"].get(split, {})
        requests = s.get("requests", 0)
        if requests < imp.warn_min_requests:
            out.append(
                f"split {split} has {requests} requests, fewer than "
                f"importer.warn_min_requests={imp.warn_min_requests} (time "
                f"range {summary['time_range']}; {option[split]})")
        positives, impressions = s.get("positives", 0), s.get(
            "impressions", 0)
        if impressions < imp.warn_min_impressions:
            out.append(
                f"split {split} has {impressions} impressions, fewer than "
                f"importer.warn_min_impressions={imp.warn_min_impressions} "
                f"({option[split]}; importer.negatives_per_request, "
                "data.max_candidates)")
        if impressions and positives in (0, impressions):
            out.append(
                f"split {split} holds only label {int(positives > 0)} "
                f"({impressions} impressions; importer.positive_behaviors="
                f"{list(imp.positive_behaviors)}, "
                "importer.negatives_per_request)")
    return out


def format_summary(summary: Mapping[str, Any]) -> str:
    """The closing lines: counts per split, losses, then the warnings."""
    lines = [
        f"imported {summary['events']} events of {summary['users']} users "
        f"({summary['rows_read']} rows, skipped {summary['skipped_rows']} "
        "bad rows)",
        f"  split starts: valid {summary['valid_start_ts']}, eval "
        f"{summary['eval_start_ts']} (time range {summary['time_range']})",
    ]
    if "timestamp_unit" in summary:
        lines.append(
            f"  timestamps in {summary['timestamp_unit']}; dropped "
            f"{summary['timestamps_out_of_range']} out of range "
            f"{summary['timestamps_out_of_range_examples']}; duplicate "
            f"events {summary['duplicate_events']} (dropped "
            f"{summary['duplicate_events_dropped']}); split end "
            f"{summary['split_end_ts']} ({summary['events_after_split_end']}"
            " events after it)")
    for split, s in summary["splits"].items():
        lines.append(
            f"  {split}: {s.get('requests', 0)} requests, "
            f"{s.get('impressions', 0)} impressions, "
            f"{s.get('positives', 0)} positives")
    lines.append(
        f"  truncated candidates {summary['truncated_candidates']}, "
        f"truncated histories {summary['histories_truncated']}, "
        f"negatives sampled {summary['negatives_sampled']} "
        f"(short {summary['negatives_short']}, history draws rejected "
        f"{summary['negatives_history_rejected']}, from history "
        f"{summary['negatives_from_history']})")
    if summary.get("item_table"):
        t = summary["item_table"]
        lines.append(f"  items: {t['items']} (content_dim "
                     f"{t['content_dim']}, skipped {t['skipped_rows']} bad "
                     "rows)")
    if summary.get("warnings"):
        lines.append(f"WARNINGS ({len(summary['warnings'])}):")
        lines += [f"  warning: {w}" for w in summary["warnings"]]
    return "\n".join(lines)


def format_boundaries(valid_start: int | None, eval_start: int | None,
                      last_ts: int) -> str:
    """The split boundaries as timestamps and UTC times, once known."""
    def when(ts: int | None) -> str:
        if ts is None:
            return "none"
        return f"{ts} ({time.strftime('%Y-%m-%d %H:%M', time.gmtime(ts))} UTC)"

    return (f"split starts: valid {when(valid_start)}, eval "
            f"{when(eval_start)}; newest event {when(last_ts)}")
