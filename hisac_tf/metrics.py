"""AUC, GAUC and log loss in plain numpy, exact and streaming
(docs/design.md §2.5).

Shared by the synthetic generator (Bayes-optimal figures from `true_ctr`),
the evaluation job and the benchmarks, so that every report computes its
metrics the same way.

* `auc(labels, scores)`: exact ROC AUC from ranks, ties counted one half
  (the Mann-Whitney U statistic divided by P·N).
* `gauc(user_ids, labels, scores)`: per-user AUC weighted by the user's
  impression count; users whose impressions are all one class are skipped.
* `log_loss(labels, probs)`: mean binary cross-entropy.
* `HistogramAUC`: streaming AUC over probabilities in [0, 1] with fixed
  bins (scores in one bin count as tied), for data too large to hold.
* `GroupedAUC`: streaming GAUC, fed one user's impressions at a time.
"""

from __future__ import annotations

import math

import numpy as np


def _check_binary(labels, scores, scores_name: str = "scores"):
    """Flattens and checks labels (0/1) and finite scores of equal size."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(
            f"labels has {y.size} entries but {scores_name} has {s.size}"
        )
    bad = (y != 0) & (y != 1)
    if np.any(bad):
        raise ValueError(f"labels must be 0 or 1, got {y[bad][0]!r}")
    finite = np.isfinite(s)
    if not np.all(finite):
        raise ValueError(
            f"{scores_name} must be finite, got {s[~finite][0]!r}"
        )
    return y.astype(bool), s


def _tied_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks of `scores` [n], tied values get their mean rank."""
    n = scores.size
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    new = np.ones(n, dtype=bool)
    new[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(new)  # first 0-based position of each tie group
    ends = np.append(starts[1:], n)  # one past the last position
    mean_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1..ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = mean_rank[np.cumsum(new) - 1]
    return ranks


def _auc_from_ranks(positive: np.ndarray, ranks: np.ndarray) -> float:
    num_pos = int(positive.sum())
    num_neg = positive.size - num_pos
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - num_pos * (num_pos + 1) / 2.0) / (num_pos * num_neg)


def auc(labels, scores) -> float:
    """Exact ROC AUC; a tie between a positive and a negative counts 1/2.

    Args:
      labels: 0/1 values [n].
      scores: finite scores [n], higher = more likely positive.
    Raises:
      ValueError: sizes differ, labels not 0/1, scores not finite, or only
        one class present (AUC undefined).
    """
    y, s = _check_binary(labels, scores)
    num_pos = int(y.sum())
    if num_pos == 0 or num_pos == y.size:
        raise ValueError(
            "AUC needs both classes in labels; got "
            f"{num_pos} positives and {y.size - num_pos} negatives"
        )
    return _auc_from_ranks(y, _tied_ranks(s))


def gauc(user_ids, labels, scores) -> float:
    """Impression-weighted mean of per-user AUC (docs/design.md §2.5).

    GAUC = Σ_u n_u · AUC_u / Σ_u n_u over users u having both a positive
    and a negative impression; n_u is the user's impression count.

    Args:
      user_ids: user of each impression [n] (any sortable ids).
      labels: 0/1 values [n].
      scores: finite scores [n].
    Returns:
      GAUC, or nan when no user has both classes.
    """
    y, s = _check_binary(labels, scores)
    users = np.asarray(user_ids).ravel()
    if users.shape != y.shape:
        raise ValueError(
            f"user_ids has {users.size} entries but labels has {y.size}"
        )
    n = y.size
    if n == 0:
        return math.nan
    order = np.lexsort((s, users))  # by user, then by score
    users, y, s = users[order], y[order], s[order]
    new_user = np.ones(n, dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    user_index = np.cumsum(new_user) - 1  # [n] 0-based user of each entry
    user_start = np.flatnonzero(new_user)  # [U] first position of users
    new_tie = new_user.copy()
    new_tie[1:] |= s[1:] != s[:-1]
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], n)
    tie_mean = (tie_start + 1 + tie_end) / 2.0  # mean global 1-based rank
    ranks = tie_mean[np.cumsum(new_tie) - 1] - user_start[user_index]
    counts = np.bincount(user_index).astype(np.float64)  # [U]
    pos = np.bincount(user_index, weights=y.astype(np.float64))  # [U]
    neg = counts - pos
    rank_sum = np.bincount(user_index, weights=ranks * y)  # [U]
    usable = (pos > 0) & (neg > 0)
    if not np.any(usable):
        return math.nan
    per_user = (
        rank_sum[usable] - pos[usable] * (pos[usable] + 1) / 2.0
    ) / (pos[usable] * neg[usable])
    weights = counts[usable]
    return float(np.sum(weights * per_user) / np.sum(weights))


def log_loss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probs are clipped to [eps, 1 - eps]."""
    y, p = _check_binary(labels, probs, "probs")
    if y.size == 0:
        raise ValueError("log_loss needs at least one impression, got 0")
    if np.any((p < 0) | (p > 1)):
        bad = p[(p < 0) | (p > 1)][0]
        raise ValueError(f"probs must be in [0, 1], got {bad!r}")
    p = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(np.where(y, np.log(p), np.log1p(-p))))


class HistogramAUC:
    """Streaming AUC of probabilities in [0, 1] with `num_bins` fixed bins.

    Memory is two count arrays [num_bins] whatever the data size. Scores in
    one bin count as tied, so the result differs from the exact AUC by at
    most the share of positive/negative pairs that share a bin (tiny with
    2**16 bins unless the scores take few distinct values).
    """

    def __init__(self, num_bins: int = 2**16):
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self.num_bins = num_bins
        self._pos = np.zeros(num_bins, dtype=np.int64)
        self._neg = np.zeros(num_bins, dtype=np.int64)

    @property
    def num_positives(self) -> int:
        return int(self._pos.sum())

    @property
    def num_negatives(self) -> int:
        return int(self._neg.sum())

    def update(self, labels, probs) -> None:
        """Adds impressions: labels 0/1 [n], probs in [0, 1] [n]."""
        y, p = _check_binary(labels, probs, "probs")
        outside = (p < 0) | (p > 1)
        if np.any(outside):
            raise ValueError(
                f"HistogramAUC needs probs in [0, 1], got {p[outside][0]!r}"
            )
        bins = np.minimum((p * self.num_bins).astype(np.int64),
                          self.num_bins - 1)
        if bins.size * 64 < self.num_bins:  # Few values: skip full passes.
            np.add.at(self._pos, bins[y], 1)
            np.add.at(self._neg, bins[~y], 1)
        else:
            self._pos += np.bincount(bins[y], minlength=self.num_bins)
            self._neg += np.bincount(bins[~y], minlength=self.num_bins)

    def merge(self, other: "HistogramAUC") -> None:
        """Adds the counts of another accumulator with the same bins."""
        if other.num_bins != self.num_bins:
            raise ValueError(
                f"cannot merge HistogramAUC with {other.num_bins} bins "
                f"into one with {self.num_bins}"
            )
        self._pos += other._pos
        self._neg += other._neg

    def result(self) -> float:
        """AUC so far; ValueError while only one class has been seen."""
        num_pos, num_neg = self.num_positives, self.num_negatives
        if num_pos == 0 or num_neg == 0:
            raise ValueError(
                "AUC needs both classes; HistogramAUC has seen "
                f"{num_pos} positives and {num_neg} negatives"
            )
        pos = self._pos.astype(np.float64)
        neg = self._neg.astype(np.float64)
        neg_below = np.cumsum(neg) - neg  # negatives in lower bins
        wins = np.sum(pos * neg_below) + 0.5 * np.sum(pos * neg)
        return float(wins / (float(num_pos) * float(num_neg)))


class GroupedAUC:
    """Streaming GAUC: `add_user` once per user with all its impressions.

    Keeps two sums and two counters; users whose impressions are all one
    class (or who have none) are counted but take no part, as in `gauc`.
    """

    def __init__(self):
        self._weighted_sum = 0.0
        self._weight = 0
        self.num_users = 0
        self.num_used_users = 0

    def add_user(self, labels, scores) -> None:
        """Adds one user's impressions: labels 0/1 [n], scores [n]."""
        y, s = _check_binary(labels, scores)
        if y.size == 0:
            return
        self.num_users += 1
        num_pos = int(y.sum())
        if num_pos == 0 or num_pos == y.size:
            return
        self._weighted_sum += y.size * _auc_from_ranks(y, _tied_ranks(s))
        self._weight += y.size
        self.num_used_users += 1

    def merge(self, other: "GroupedAUC") -> None:
        self._weighted_sum += other._weighted_sum
        self._weight += other._weight
        self.num_users += other.num_users
        self.num_used_users += other.num_used_users

    @property
    def num_impressions(self) -> int:
        """Impressions of the users that take part."""
        return self._weight

    def result(self) -> float:
        """GAUC so far, nan while no user has both classes."""
        if self._weight == 0:
            return math.nan
        return self._weighted_sum / self._weight


def user_aucs(user_ids, labels, scores):
    """Per-user AUC, the terms of `gauc`.

    Args:
      user_ids: user of each impression [n]; labels: 0/1 [n]; scores [n].
    Returns:
      (users [U] sorted, impressions [U], auc [U]); auc is nan for a user
      whose impressions are all one class.
    """
    y, s = _check_binary(labels, scores)
    users = np.asarray(user_ids).ravel()
    if users.shape != y.shape:
        raise ValueError(
            f"user_ids has {users.size} entries but labels has {y.size}"
        )
    uniq, index = np.unique(users, return_inverse=True)  # [U], [n]
    counts = np.bincount(index, minlength=uniq.size).astype(np.int64)
    out = np.full(uniq.size, np.nan)
    order = np.lexsort((s, index))  # by user, then by score
    y, s, index = y[order], s[order], index[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # [U]
    new_tie = np.ones(y.size, dtype=bool)
    new_tie[1:] = (index[1:] != index[:-1]) | (s[1:] != s[:-1])
    tie_start = np.flatnonzero(new_tie)
    tie_end = np.append(tie_start[1:], y.size)
    tie_mean = (tie_start + 1 + tie_end) / 2.0  # mean global 1-based rank
    ranks = tie_mean[np.cumsum(new_tie) - 1] - starts[index]  # [n]
    pos = np.bincount(index, weights=y.astype(np.float64),
                      minlength=uniq.size)
    neg = counts - pos
    rank_sum = np.bincount(index, weights=ranks * y, minlength=uniq.size)
    usable = (pos > 0) & (neg > 0)
    out[usable] = (rank_sum[usable] - pos[usable] * (pos[usable] + 1) / 2.0
                   ) / (pos[usable] * neg[usable])
    return uniq, counts, out


def weighted_aucs(labels, scores, weights) -> np.ndarray:
    """AUC under each row of impression weights (e.g. bootstrap counts).

    An impression of weight w counts as w copies; ties count one half, as
    in `auc`. One sort serves every row (`SortedAUC`).

    Args:
      labels: 0/1 values [n]; scores: finite scores [n].
      weights: non-negative weights [R, n].
    Returns:
      AUC per row [R]; nan where a row weighs only one class.
    """
    w = np.asarray(weights, dtype=np.float64)
    ranked = SortedAUC(labels, scores)
    if w.ndim != 2 or w.shape[1] != ranked.order.size:
        raise ValueError(
            f"weights must be [R, {ranked.order.size}], got {list(w.shape)}"
        )
    return ranked.aucs(w[:, ranked.order])


class SortedAUC:
    """Impressions sorted once by score, for AUCs under many weightings.

    `order` [n] sorts the impressions by score; `aucs(w)` takes weights
    [R, n] already in that order (gather them with `order`).
    """

    def __init__(self, labels, scores):
        y, s = _check_binary(labels, scores)
        self.order = np.argsort(s, kind="mergesort")  # [n]
        self.positive = y[self.order]  # [n] in score order
        s = s[self.order]
        new = np.ones(s.size, dtype=bool)
        new[1:] = s[1:] != s[:-1]
        # Tie groups' first positions [G]; None when all scores differ.
        self.starts = None if new.all() else np.flatnonzero(new)

    def aucs(self, w: np.ndarray) -> np.ndarray:
        """AUC per row of sorted weights w [R, n]; nan for one class."""
        pos = np.where(self.positive, w, 0.0)  # [R, n]
        neg = w - pos  # [R, n]
        if self.starts is None:  # No ties: negatives strictly below.
            wins = np.einsum("rn,rn->r", pos, np.cumsum(neg, axis=1))
        else:
            pos = np.add.reduceat(pos, self.starts, axis=1)  # [R, G]
            neg = np.add.reduceat(neg, self.starts, axis=1)  # [R, G]
            below = np.cumsum(neg, axis=1) - neg  # [R, G]
            wins = np.einsum("rg,rg->r", pos, below + 0.5 * neg)
        total = pos.sum(axis=1) * neg.sum(axis=1)  # [R]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(total > 0, wins / total, np.nan)
