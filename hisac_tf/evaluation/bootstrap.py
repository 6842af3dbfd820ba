"""Paired bootstrap over users of a metric difference between two models.

Impressions of one user are correlated (one history, one taste), so the
bootstrap resamples users, not impressions: a draw takes U users with
replacement, every impression of a user drawn k times counts k times,
and both models are scored on the same draw (paired). The interval is
the percentile interval of the differences (docs/design.md §2.5).

* `user_draws`: the draws as counts per user [R, U].
* `differences`: metric(b) − metric(a) on each draw, for "auc" (weighted
  Mann-Whitney, `metrics.weighted_aucs`), "gauc" (per-user AUCs weighted
  by count × impressions) and "log_loss".
* `interval`: the percentile interval of the finite differences.
"""

from __future__ import annotations

import numpy as np

from hisac_tf import metrics

BOOTSTRAP_METRICS = ("auc", "gauc", "log_loss")
_CHUNK = 2**22  # weights held at once in `weighted_aucs` (R × n)


def user_draws(num_users: int, num_draws: int,
               rng: np.random.Generator) -> np.ndarray:
    """Counts [R, U]: how often each user is taken by each of R draws."""
    if num_users < 1 or num_draws < 1:
        raise ValueError(
            f"need >= 1 user and draw, got {num_users} and {num_draws}")
    return rng.multinomial(num_users, np.full(num_users, 1.0 / num_users),
                           size=num_draws)


def _log_losses(labels, probs, eps: float = 1e-7) -> np.ndarray:
    p = np.clip(np.asarray(probs, np.float64), eps, 1.0 - eps)
    return -np.where(np.asarray(labels) > 0, np.log(p), np.log1p(-p))


def metric_draws(metric: str, user_index: np.ndarray, labels, scores,
                 counts: np.ndarray) -> np.ndarray:
    """The metric of one model on each draw [R].

    Args:
      metric: one of BOOTSTRAP_METRICS.
      user_index: the user (0..U-1, the columns of counts) of each
        impression [n].
      labels: 0/1 [n]; scores: predictions [n].
      counts: draws [R, U] (`user_draws`).
    Returns:
      values [R]; nan on a draw where the metric is undefined.
    """
    labels = np.asarray(labels)
    if metric == "auc":
        ranked = metrics.SortedAUC(labels, scores)
        users = np.asarray(user_index)[ranked.order]  # [n] score order
        step = max(1, _CHUNK // max(len(labels), 1))
        return np.concatenate([
            ranked.aucs(counts[lo:lo + step][:, users].astype(np.float64))
            for lo in range(0, counts.shape[0], step)])
    num_users = counts.shape[1]
    if metric == "gauc":
        users, n, auc = metrics.user_aucs(user_index, labels, scores)
        ok = ~np.isnan(auc)  # users with both classes
        w = counts[:, users[ok]] * n[ok]  # [R, U_ok]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ auc[ok]) / w.sum(axis=1)
    if metric == "log_loss":
        loss = np.bincount(user_index, weights=_log_losses(labels, scores),
                           minlength=num_users)  # [U]
        n = np.bincount(user_index, minlength=num_users)  # [U]
        with np.errstate(invalid="ignore", divide="ignore"):
            return (counts @ loss) / (counts @ n)
    raise ValueError(
        f"metric must be one of {BOOTSTRAP_METRICS}, got {metric!r}")


def differences(metric: str, user_index, labels, scores_a, scores_b,
                counts) -> np.ndarray:
    """metric(b) − metric(a) on each draw [R] (paired: same users)."""
    return (metric_draws(metric, user_index, labels, scores_b, counts)
            - metric_draws(metric, user_index, labels, scores_a, counts))


def interval(draws: np.ndarray, level: float = 0.95
             ) -> tuple[float, float] | None:
    """Percentile interval of the finite draws; None when under half of
    them are finite (the metric is undefined on most draws)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    finite = draws[np.isfinite(draws)]
    if finite.size * 2 < draws.size or finite.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
