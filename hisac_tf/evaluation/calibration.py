"""Calibration of predicted CTRs: ratio, expected calibration error, bins.

Teams check calibration first: a CTR that is right in ranking but off in
level breaks auctions and blending downstream (docs/design.md §2.5).

* `check_probabilities`: predictions must lie in [0, 1] (NaN aside, which
  the sliced report names per slice); an error gives the count.
* `reliability_bins`: impressions sorted by prediction and cut into
  `num_bins` bins of (nearly) equal size (`np.array_split`): CTRs are
  small, so equal-width bins on [0, 1] would put almost everything in the
  first bin. Each bin has its mean prediction and observed CTR.
* `calibration`: mean prediction / observed CTR (1 is calibrated, above 1
  over-predicts) and ECE = Σ_b (n_b / n) · |mean prediction_b −
  observed CTR_b| over the bins.
"""

from __future__ import annotations

import numpy as np


def check_probabilities(probs, name: str = "predictions") -> np.ndarray:
    """probs as float64 [n]; ValueError naming the count outside [0, 1]."""
    p = np.asarray(probs, dtype=np.float64).ravel()
    outside = (p < 0) | (p > 1)  # NaN compares False: reported per slice
    if np.any(outside):
        raise ValueError(
            f"{int(outside.sum())} of {p.size} {name} are outside [0, 1] "
            f"(min {np.nanmin(p):.6g}, max {np.nanmax(p):.6g})"
        )
    return p


def reliability_bins(labels, probs, num_bins: int) -> list[dict]:
    """Equal-count bins of the sorted predictions.

    Args:
      labels: 0/1 [n]; probs: finite predictions in [0, 1] [n].
      num_bins: bins wanted; fewer (one per impression) when n is smaller.
    Returns:
      [{"lower", "upper" (smallest and largest prediction), "impressions",
        "mean_prediction", "observed_ctr"}], ascending by prediction.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    y = np.asarray(labels, dtype=np.float64).ravel()
    p = check_probabilities(probs)
    if y.shape != p.shape:
        raise ValueError(
            f"labels has {y.size} entries but predictions has {p.size}")
    if np.isnan(p).any():
        raise ValueError(
            f"{int(np.isnan(p).sum())} of {p.size} predictions are NaN: "
            "no reliability bins")
    order = np.argsort(p, kind="mergesort")
    bins = []
    for part in np.array_split(order, min(num_bins, p.size)):
        bins.append({
            "lower": float(p[part].min()),
            "upper": float(p[part].max()),
            "impressions": int(part.size),
            "mean_prediction": float(p[part].mean()),
            "observed_ctr": float(y[part].mean()),
        })
    return bins


def calibration(labels, probs, num_bins: int) -> dict:
    """{"mean_prediction", "observed_ctr", "ratio" (None without clicks),
    "ece", "bins"} of the impressions (see the module doc)."""
    bins = reliability_bins(labels, probs, num_bins)
    n = sum(b["impressions"] for b in bins)
    if n == 0:
        raise ValueError("calibration needs at least one impression, got 0")
    mean = sum(b["mean_prediction"] * b["impressions"] for b in bins) / n
    ctr = sum(b["observed_ctr"] * b["impressions"] for b in bins) / n
    ece = sum(b["impressions"] / n
              * abs(b["mean_prediction"] - b["observed_ctr"]) for b in bins)
    return {"mean_prediction": float(mean), "observed_ctr": float(ctr),
            "ratio": float(mean / ctr) if ctr > 0 else None,
            "ece": float(ece), "bins": bins}
