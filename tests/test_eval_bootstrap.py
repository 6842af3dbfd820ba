"""The paired user bootstrap: exact weighting, coverage, errors."""

import math

import numpy as np
import pytest

from hisac_tf import metrics
from hisac_tf.evaluation import bootstrap


def replicate(counts, users, labels, scores):
    """Impressions of a draw written out: user u copied counts[u] times,
    each copy a user of its own."""
    out_u, out_y, out_s = [], [], []
    for u, c in enumerate(counts):
        mine = users == u
        for copy in range(c):
            out_u.append(np.full(mine.sum(), 1000 * u + copy))
            out_y.append(labels[mine])
            out_s.append(scores[mine])
    return (np.concatenate(out_u), np.concatenate(out_y),
            np.concatenate(out_s))


@pytest.mark.parametrize("metric, reference", [
    pytest.param("auc", lambda u, y, s: metrics.auc(y, s), id="auc"),
    pytest.param("gauc", metrics.gauc, id="gauc"),
    pytest.param("log_loss", lambda u, y, s: metrics.log_loss(y, s),
                 id="log_loss"),
])
def test_each_draw_equals_the_metric_of_the_copied_impressions(metric,
                                                              reference):
    rng = np.random.default_rng(3)
    users = rng.integers(0, 6, 60)
    labels = (rng.random(60) < 0.4).astype(int)
    scores = np.round(rng.random(60), 1)  # ties
    counts = bootstrap.user_draws(6, 4, rng)  # [4, 6]
    draws = bootstrap.metric_draws(metric, users, labels, scores, counts)
    for r in range(4):
        u, y, s = replicate(counts[r], users, labels, scores)
        assert draws[r] == pytest.approx(reference(u, y, s)), r


def _phi(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_interval_covers_the_true_auc_difference_at_its_nominal_rate():
    """200 simulated eval sets of 40 users x 8 impressions: users differ
    in CTR and share a score offset (clustered impressions); model a
    scores mu_a · y + offset + noise, model b mu_b · y + offset + noise.
    Across users the score of a positive minus a negative is N(mu, 2 ·
    (1 + 1)), so the true AUC is Phi(mu / 2); the 90% interval must hold
    the true difference in about 90% of the sets (SE 2.1%)."""
    rng = np.random.default_rng(0)
    mu_a, mu_b, num_users, per_user = 0.5, 1.0, 40, 8
    truth = _phi(mu_b / 2) - _phi(mu_a / 2)
    users = np.repeat(np.arange(num_users), per_user)  # [n]
    covered = 0
    sims = 200
    for _ in range(sims):
        ctr = rng.beta(2, 5, num_users)  # [U]
        y = (rng.random(users.size) < ctr[users]).astype(int)
        offset = rng.normal(size=num_users)[users]
        a = mu_a * y + offset + rng.normal(size=users.size)
        b = mu_b * y + offset + rng.normal(size=users.size)
        counts = bootstrap.user_draws(num_users, 200, rng)
        draws = bootstrap.differences("auc", users, y, a, b, counts)
        low, high = bootstrap.interval(draws, 0.9)
        covered += low <= truth <= high
    assert 0.82 <= covered / sims <= 0.97


def test_interval_is_none_when_most_draws_are_undefined():
    draws = np.array([0.1, np.nan, np.nan, 0.2])
    assert bootstrap.interval(draws[:3]) is None
    assert bootstrap.interval(draws) == pytest.approx((0.1025, 0.1975))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: bootstrap.metric_draws(
        "ndcg", np.zeros(2, int), [0, 1], [.1, .2], np.ones((1, 1), int)),
        "metric must be one of", id="unknown_metric"),
    pytest.param(lambda: bootstrap.interval(np.zeros(3), 1.5),
                 "level must be in", id="bad_level"),
    pytest.param(lambda: bootstrap.user_draws(0, 5, None),
                 "need >= 1 user", id="no_users"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
