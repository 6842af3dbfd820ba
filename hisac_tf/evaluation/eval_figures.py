"""Evaluation figures as PNG bytes: the reliability diagram and the
per-slice differences of `--compare` (matplotlib, the `plots` extra).

Without matplotlib both return None and the callers write no figure.
"""

from __future__ import annotations

import io
from typing import Optional, Sequence

try:  # Optional (the `plots` extra): without it no figure is made.
    from matplotlib.figure import Figure
except ImportError:  # pragma: no cover
    Figure = None


def _png(fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def reliability_png(calibration: dict, title: str = "",
                    bayes: Optional[dict] = None) -> Optional[bytes]:
    """Observed CTR against mean prediction per bin (`calibration.bins`),
    with the diagonal; `bayes` (the true CTR's calibration) as reference."""
    if Figure is None:
        return None
    fig = Figure(figsize=(4.8, 4.4))
    ax = fig.subplots()
    series = [("model", calibration, "tab:blue")]
    if bayes is not None:
        series.append(("true CTR (Bayes)", bayes, "tab:gray"))
    top = 0.0
    for name, cal, color in series:
        x = [b["mean_prediction"] for b in cal["bins"]]
        y = [b["observed_ctr"] for b in cal["bins"]]
        top = max(top, *x, *y)
        ax.plot(x, y, marker="o", color=color,
                label=f"{name}: ECE {cal['ece']:.4f}")
    top = min(1.0, top * 1.05 + 1e-3)
    ax.plot([0, top], [0, top], color="black", linestyle=":",
            linewidth=1, label="calibrated")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted CTR (equal-count bins)")
    ax.set_ylabel("observed CTR")
    ratio = calibration.get("ratio")
    ax.set_title(title + (f"  pred/obs {ratio:.3f}" if ratio else ""),
                 fontsize="small")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="upper left")
    return _png(fig)


def compare_png(rows: Sequence[dict], baseline: str, metric: str = "auc",
                level: float = 0.95) -> Optional[bytes]:
    """Horizontal bars: metric difference vs `baseline` per slice, with
    the bootstrap interval, one colour per compared report.

    rows: `eval_compare.compare` rows of one metric ({"dimension",
    "slice", "diffs": [{"report", "diff", "low", "high"}]}).
    """
    if Figure is None:
        return None
    mine = [r for r in rows if r.get("metric") == metric]
    if not mine:
        return None
    reports = list(dict.fromkeys(d["report"] for r in mine
                                 for d in r["diffs"]))
    fig = Figure(figsize=(6.4, 1.2 + 0.32 * len(mine) * len(reports)))
    ax = fig.subplots()
    height = 0.8 / max(len(reports), 1)
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red",
              "tab:purple")
    for k, report in enumerate(reports):
        ys, xs, lows, highs = [], [], [], []
        for i, r in enumerate(mine):
            for d in r["diffs"]:
                if d["report"] != report or d.get("diff") is None:
                    continue
                ys.append(i + (k - (len(reports) - 1) / 2) * height)
                xs.append(d["diff"])
                lo = d.get("low", d["diff"])
                hi = d.get("high", d["diff"])
                lows.append(d["diff"] - (d["diff"] if lo is None else lo))
                highs.append((d["diff"] if hi is None else hi) - d["diff"])
        ax.barh(ys, xs, height=height, xerr=[lows, highs],
                color=colors[k % len(colors)], alpha=0.8, capsize=2,
                label=f"{report} − {baseline}")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(mine)))
    ax.set_yticklabels([f"{r['dimension']}={r['slice']}" for r in mine],
                       fontsize="small")
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} difference ({level * 100:g}% bootstrap "
                  "interval over users)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)
