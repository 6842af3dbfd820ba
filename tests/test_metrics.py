"""Tests of hisac_tf.metrics: golden values, ties, references, errors."""

import itertools
import math

import numpy as np
import pytest

from hisac_tf import metrics


def pairwise_auc(labels, scores):
    """Independent reference: the share of (pos, neg) pairs won, ties 1/2."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, np.float64)
    pos = scores[labels == 1]
    neg = scores[labels == 0]
    wins = 0.0
    for p, n in itertools.product(pos, neg):
        wins += 1.0 if p > n else 0.5 if p == n else 0.0
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize(
    "labels, scores, expected",
    [
        pytest.param([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75, id="basic"),
        # pos .5 ties neg .5 (1/2) and beats .2; pos .9 beats both: 3.5/4.
        pytest.param([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9], 0.875, id="ties"),
        pytest.param([1, 0, 1, 0], [0.3] * 4, 0.5, id="all_tied"),
        pytest.param([1, 1, 0], [0.1, 0.2, 0.9], 0.0, id="inverted"),
        pytest.param([0, 1], [-3.0, 7.0], 1.0, id="unbounded_scores"),
    ],
)
def test_auc_golden(labels, scores, expected):
    assert metrics.auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_auc_matches_pairwise_reference_with_many_ties():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) + 0.3 * labels, 1)  # many ties
    assert metrics.auc(labels, scores) == pytest.approx(
        pairwise_auc(labels, scores), abs=1e-12
    )


@pytest.mark.parametrize(
    "labels, scores, message",
    [
        pytest.param([1, 1, 1], [0.1, 0.2, 0.3], "both classes",
                     id="only_positives"),
        pytest.param([0, 0], [0.1, 0.2], "both classes", id="only_negatives"),
        pytest.param([], [], "both classes", id="empty"),
        pytest.param([0, 1], [0.1], "labels has 2 entries but scores has 1",
                     id="size_mismatch"),
        pytest.param([0, 2], [0.1, 0.2], "labels must be 0 or 1, got 2",
                     id="bad_label"),
        pytest.param([0, 1], [0.1, np.nan], "scores must be finite",
                     id="nan_score"),
    ],
)
def test_auc_errors(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        metrics.auc(labels, scores)


def test_gauc_golden_skips_single_class_users():
    # user 7: labels 1,0,0 / scores .9,.3,.5 -> AUC 1, 3 impressions.
    # user 3: labels 0,1,1,0 / scores .8,.4,.6,.2 -> each positive beats
    #   .2 and loses to .8 -> AUC 2/4 = 0.5, 4 impressions.
    # user 5: two positives only, user 9: one negative only -> skipped.
    # GAUC = (3 * 1 + 4 * 0.5) / 7 = 5/7.
    users = [7, 3, 5, 7, 3, 3, 9, 7, 5, 3]
    labels = [1, 0, 1, 0, 1, 1, 0, 0, 1, 0]
    scores = [.9, .8, .1, .3, .4, .6, .7, .5, .2, .2]
    assert metrics.gauc(users, labels, scores) == pytest.approx(5 / 7)


def test_gauc_ties_within_user_and_across_users():
    # user 1: pos .5 ties neg .5 -> AUC 0.5 (2 impressions).
    # user 2: pos .5 beats neg .1 -> AUC 1 (2 impressions). The equal .5
    # scores of different users must not be treated as one tie group.
    users = [1, 1, 2, 2]
    labels = [1, 0, 1, 0]
    scores = [0.5, 0.5, 0.5, 0.1]
    assert metrics.gauc(users, labels, scores) == pytest.approx(0.75)


def test_gauc_matches_per_user_loop_and_grouped_auc():
    rng = np.random.default_rng(2)
    users = rng.integers(0, 40, 2000)
    labels = (rng.random(2000) < 0.2).astype(int)
    scores = np.round(rng.random(2000) + 0.2 * labels, 2)
    grouped = metrics.GroupedAUC()
    num, den = 0.0, 0
    for u in np.unique(users):
        sel = users == u
        grouped.add_user(labels[sel], scores[sel])
        if 0 < labels[sel].sum() < sel.sum():
            num += sel.sum() * pairwise_auc(labels[sel], scores[sel])
            den += sel.sum()
    assert metrics.gauc(users, labels, scores) == pytest.approx(num / den)
    assert grouped.result() == pytest.approx(num / den)
    assert grouped.num_impressions == den
    assert grouped.num_users == 40


def test_gauc_nan_when_no_user_qualifies():
    assert math.isnan(metrics.gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3]))
    grouped = metrics.GroupedAUC()
    grouped.add_user([1, 1], [0.2, 0.3])
    grouped.add_user([], [])
    assert math.isnan(grouped.result())
    assert grouped.num_users == 1 and grouped.num_used_users == 0


def test_gauc_errors_name_the_problem():
    with pytest.raises(ValueError, match="user_ids has 2 entries"):
        metrics.gauc([1, 2], [0, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="labels must be 0 or 1, got -1"):
        metrics.GroupedAUC().add_user([-1, 1], [0.1, 0.2])


def test_grouped_auc_merge():
    a, b, both = (metrics.GroupedAUC() for _ in range(3))
    a.add_user([1, 0, 0], [0.9, 0.3, 0.5])
    b.add_user([0, 1, 1, 0], [0.8, 0.4, 0.6, 0.2])
    for labels, scores in (([1, 0, 0], [0.9, 0.3, 0.5]),
                           ([0, 1, 1, 0], [0.8, 0.4, 0.6, 0.2])):
        both.add_user(labels, scores)
    a.merge(b)
    assert a.result() == pytest.approx(both.result())
    assert a.result() == pytest.approx(5 / 7)


def test_log_loss_golden_and_clipping():
    expected = -(math.log(0.8) + math.log(0.6)) / 2
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(expected)
    # p = 0 for a positive is clipped to eps instead of giving inf.
    assert metrics.log_loss([1], [0.0], eps=1e-3) == pytest.approx(
        -math.log(1e-3)
    )
    with pytest.raises(ValueError, match="probs must be in"):
        metrics.log_loss([1], [1.5])
    with pytest.raises(ValueError, match="at least one impression"):
        metrics.log_loss([], [])


def test_histogram_auc_close_to_exact_streamed_in_chunks():
    rng = np.random.default_rng(3)
    n = 50_000
    labels = (rng.random(n) < 0.15).astype(int)
    probs = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.2 * labels - 2)))
    hist = metrics.HistogramAUC()
    for start in range(0, n, 7_000):
        hist.update(labels[start:start + 7_000], probs[start:start + 7_000])
    exact = metrics.auc(labels, probs)
    assert 0.7 < exact < 0.9
    assert abs(hist.result() - exact) < 1e-3
    assert hist.num_positives == labels.sum()
    assert hist.num_negatives == n - labels.sum()


def test_histogram_auc_golden_with_bin_ties_and_merge():
    # 4 bins: .1 -> bin 0, .35 and .4 -> bin 1 (tied), .8 -> bin 3.
    # pos .35 beats .1 and ties .4 (1/2); pos .8 beats both: 3.5/4 (the
    # exact AUC, where .35 loses to .4, is 0.75).
    a, b = metrics.HistogramAUC(4), metrics.HistogramAUC(4)
    a.update([0, 0], [0.1, 0.4])
    b.update([1, 1], [0.35, 0.8])
    a.merge(b)
    assert a.result() == pytest.approx(0.875)
    edge = metrics.HistogramAUC(4)
    edge.update([0, 1], [0.0, 1.0])  # both ends of [0, 1] are valid.
    assert edge.result() == 1.0


@pytest.mark.parametrize(
    "labels, probs, message",
    [
        pytest.param([0, 1], [0.2, 1.2], "probs in \\[0, 1\\], got 1.2",
                     id="above_one"),
        pytest.param([0, 1], [-0.1, 0.5], "got -0.1", id="negative"),
        pytest.param([0, 1], [0.2], "probs has 1", id="size_mismatch"),
    ],
)
def test_histogram_auc_update_errors(labels, probs, message):
    with pytest.raises(ValueError, match=message):
        metrics.HistogramAUC().update(labels, probs)


def test_histogram_auc_errors_one_class_and_bins():
    hist = metrics.HistogramAUC()
    hist.update([1, 1], [0.3, 0.4])
    with pytest.raises(ValueError, match="2 positives and 0 negatives"):
        hist.result()
    with pytest.raises(ValueError, match="num_bins must be >= 1, got 0"):
        metrics.HistogramAUC(0)
    with pytest.raises(ValueError, match="cannot merge"):
        hist.merge(metrics.HistogramAUC(8))
