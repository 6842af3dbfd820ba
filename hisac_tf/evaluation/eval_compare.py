"""`hisac-evaluate --compare`: per-slice differences between evaluation
reports with bootstrap intervals over users (docs/design.md §2.5).

The first report is the baseline; every other is compared with it on the
same impressions (same eval split: users and labels must match one for
one). Slices are cut with the baseline's settings and keys (its
tokenizer decides `semantic_id`). For each measurable slice and metric
(AUC, GAUC, log loss) a row holds every report's value and, per other
report, the difference to the baseline with its percentile interval
from `num_draws` paired bootstrap draws of users (`bootstrap.py`).

Writes compare.json and compare_auc.png (the AUC differences) to the
output directory.
"""

from __future__ import annotations

import json
import os
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from hisac_tf import json_io, metrics
from hisac_tf.evaluation import bootstrap
from hisac_tf.evaluation.eval_figures import compare_png
from hisac_tf.evaluation.eval_predictions import load_predictions, slice_keys
from hisac_tf.evaluation.slices import ALL, SliceSettings, assign

# Bootstrap draws of users per difference (`hisac-evaluate
# --compare_draws` defaults to it too).
DEFAULT_DRAWS = 500


def load_report(path: str) -> tuple[dict, dict]:
    """(report, per-impression arrays) of an eval.json; ValueError naming
    the report when it has no predictions file (made before slices)."""
    with tf.io.gfile.GFile(path) as f:
        report = json.load(f)
    name = report.get("predictions_file")
    if not name or "slices" not in report:
        raise ValueError(
            f"{path}: no per-impression predictions (predictions_file): "
            "evaluate it again with this version of hisac-evaluate")
    return report, load_predictions(
        os.path.join(os.path.dirname(path), name))


def report_names(paths: Sequence[str]) -> list[str]:
    """Each report's directory name, or its path where names repeat."""
    names = [os.path.basename(os.path.dirname(os.path.abspath(p)))
             for p in paths]
    return names if len(set(names)) == len(names) else list(paths)


def _check_same_impressions(base: dict, other: dict, name: str,
                            base_name: str) -> None:
    for key in ("users", "labels"):
        a, b = base[key], other[key]
        if a.shape != b.shape:
            raise ValueError(
                f"{name} has {b.size} impressions but {base_name} has "
                f"{a.size}: compare reports of the same eval split")
        bad = np.flatnonzero(a != b)
        if bad.size:
            raise ValueError(
                f"{name} differs from {base_name} in {key} at impression "
                f"{int(bad[0])} ({b[bad[0]]} vs {a[bad[0]]}) and "
                f"{bad.size - 1} more: compare reports of the same eval "
                "split")
        if np.isnan(other["probs"]).any():
            raise ValueError(
                f"{name}: {int(np.isnan(other['probs']).sum())} "
                "predictions are NaN")


def _point(metric: str, users, labels, probs) -> Optional[float]:
    if metric == "auc":
        return metrics.auc(labels, probs)
    if metric == "gauc":
        value = metrics.gauc(users, labels, probs)
        return None if np.isnan(value) else value
    return metrics.log_loss(labels, probs)


def compare(paths: Sequence[str], num_draws: int = DEFAULT_DRAWS,
            level: float = 0.95, seed: int = 0,
            names: Optional[Sequence[str]] = None) -> dict:
    """{"reports", "baseline", "num_draws", "level", "rows"} (module doc).

    Unmeasurable slices (empty, one class, fewer impressions than the
    baseline's min_impressions, `all` aside) get one row with their
    status and no numbers.
    """
    if len(paths) < 2:
        raise ValueError(
            f"--compare needs at least two reports, got {len(paths)}")
    names = list(names or report_names(paths))
    loaded = [load_report(p) for p in paths]
    base_report, base = loaded[0]
    for name, (_, arrays) in zip(names[1:], loaded[1:]):
        _check_same_impressions(base, arrays, name, names[0])
    if np.isnan(base["probs"]).any():
        raise ValueError(f"{names[0]}: predictions are NaN")
    settings = SliceSettings.from_dict(base_report["slices"]["settings"])
    groups = [(ALL, [ALL], np.zeros(base["labels"].size, np.int64))]
    groups += [(d, n, i) for d, (n, i) in
               assign(slice_keys(base), settings).items()]
    _, user_index = np.unique(base["users"], return_inverse=True)
    counts = bootstrap.user_draws(int(user_index.max()) + 1, num_draws,
                                  np.random.default_rng(seed))
    labels = base["labels"].astype(np.int64)
    probs = [arrays["probs"].astype(np.float64) for _, arrays in loaded]
    rows = []
    for dimension, slice_names, index in groups:
        for i, slice_name in enumerate(slice_names):
            pick = np.flatnonzero(index == i)
            y, n = labels[pick], int(pick.size)
            head = {"dimension": dimension, "slice": slice_name,
                    "impressions": n, "positives": int(y.sum())}
            small = n < settings.min_impressions and dimension != ALL
            if n == 0 or y.min() == y.max() or small:
                rows.append({**head, "metric": None,
                             "status": "empty" if n == 0 else (
                                 "single_class" if y.min() == y.max()
                                 else "too_small")})
                continue
            for metric in bootstrap.BOOTSTRAP_METRICS:
                values = [_point(metric, user_index[pick], y, p[pick])
                          for p in probs]
                diffs = []
                for name, value, p in zip(names[1:], values[1:], probs[1:]):
                    draws = bootstrap.differences(
                        metric, user_index[pick], y, probs[0][pick],
                        p[pick], counts)
                    ci = bootstrap.interval(draws, level)
                    diff = (None if value is None or values[0] is None
                            else value - values[0])
                    diffs.append({"report": name, "diff": diff,
                                  "low": ci[0] if ci else None,
                                  "high": ci[1] if ci else None})
                rows.append({**head, "metric": metric, "status": "ok",
                             "values": dict(zip(names, values)),
                             "diffs": diffs})
    return {"reports": dict(zip(names, paths)), "baseline": names[0],
            "num_draws": num_draws, "level": level,
            "settings": settings.to_dict(), "rows": rows}


def _num(value, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def format_compare(result: dict) -> str:
    """The printed table: per slice and metric, each report's value and
    each difference to the baseline with its interval."""
    names = list(result["reports"])
    pct = f"{result['level'] * 100:g}%"
    head = f"{'dimension':<16} {'slice':<9} {'metric':<8} {'impr':>8} " + \
        " ".join(f"{n[:12]:>12}" for n in names)
    head += "".join(f"  {('Δ ' + n)[:14]:>14} [{pct} CI]" for n in names[1:])
    lines = [f"baseline: {result['baseline']}; bootstrap over users, "
             f"{result['num_draws']} draws", head]
    for r in result["rows"]:
        line = (f"{r['dimension']:<16} {r['slice']:<9} "
                f"{(r['metric'] or '–'):<8} {r['impressions']:>8,} ")
        if r["status"] != "ok":
            lines.append(line + r["status"])
            continue
        line += " ".join(f"{_num(r['values'][n]):>12}" for n in names)
        for d in r["diffs"]:
            line += (f"  {_num(d['diff'], sign=True):>14} "
                     f"[{_num(d['low'], sign=True)}, "
                     f"{_num(d['high'], sign=True)}]")
        lines.append(line)
    return "\n".join(lines)


def write_compare(result: dict, output_dir: str) -> dict:
    """compare.json and compare_auc.png (when matplotlib is there) under
    `output_dir`; returns the paths written."""
    tf.io.gfile.makedirs(output_dir)
    paths = {"json": os.path.join(output_dir, "compare.json")}
    json_io.write_json(paths["json"], result)
    png = compare_png(result["rows"], result["baseline"], "auc",
                      result["level"])
    if png is not None:
        paths["auc_png"] = os.path.join(output_dir, "compare_auc.png")
        with tf.io.gfile.GFile(paths["auc_png"], "wb") as f:
            f.write(png)
    return paths
