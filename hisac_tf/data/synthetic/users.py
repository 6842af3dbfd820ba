"""Synthetic users: interests and behaviour histories (docs/design.md §5).

A user has a demography (gender 1..2, age bucket 1..8) that shifts the
topics they like; `dominant_interests` sub-topics with most of the weight
and `longtail_interests` with little (Dirichlet); interests that drift over
the log towards a new sub-topic that takes over a dominant one's weight; a
lognormal number of behaviours in sessions over the request span and a
lead-in of `history_lead_spans` spans before it.

Long-range structure (off by default): `periodic_interests` dormant
sub-topics outside the others, each with its own cycle (lognormal around
`periodic_period_days`) and phase; during a burst of `periodic_burst_days`
it takes `periodic_burst_share` of the behaviours, between bursts it is
silent (re-purchase cycles, seasons). The periodic draws come from a
second generator, so that the default world is the original one.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hisac_tf.config import Config, SyntheticConfig
from hisac_tf.data.synthetic.world import (DAY_S, PARAMS, START_TIME, World,
                                           WorldParams)


@dataclasses.dataclass
class UserHistory:
    """One simulated user's latent interests and behaviour log.

    Sub-topics are 0-based; `support` holds the m sub-topics of the
    drifting interests (dominant first, then long-tail, then the drift
    target), whose weights move from `w0` to `w1` over the log.
    """

    user_id: int
    features: dict  # gender, age_bucket
    user_bias: float
    support: np.ndarray  # [m] sub-topics of the drifting interests
    w0: np.ndarray  # [m] interest weights at the start of the log
    w1: np.ndarray  # [m] ... and at its end
    num_dominant: int
    log_start: int  # time of the log's start (seconds)
    log_span: int  # seconds from the log's start to the span's end
    item_ids: np.ndarray  # [L]
    behaviors: np.ndarray  # [L] 1..4
    timestamps: np.ndarray  # [L] strictly increasing
    periodic_subtopics: np.ndarray  # [P] dormant interests' sub-topics
    burst_starts: list  # P arrays: start times of each interest's bursts

    def weights_at(self, times: np.ndarray) -> np.ndarray:
        """Drifting interest weights [n, m] at times [n]."""
        lam = np.clip((times - self.log_start) / self.log_span, 0.0, 1.0)
        return (1 - lam)[:, None] * self.w0 + lam[:, None] * self.w1


def strictly_increasing(t: np.ndarray) -> np.ndarray:
    """Sorted ints made strictly increasing by the smallest shifts up."""
    steps = np.arange(t.size)
    return np.maximum.accumulate(np.sort(t) - steps) + steps


def _session_times(rng: np.random.Generator, n: int, low: int, high: int,
                   params: WorldParams) -> np.ndarray:
    """n behaviour times [n] in sessions starting uniformly in [low, high)."""
    if n == 0:
        return np.zeros(0, np.int64)
    num_sessions = max(1, int(round(n / params.session_length)))
    starts = np.sort(rng.integers(low, high, num_sessions))
    session = np.sort(rng.integers(0, num_sessions, n))  # [n]
    gaps = 1.0 + rng.exponential(params.session_gap_s, n)  # [n]
    csum = np.cumsum(gaps)
    first = np.searchsorted(session, session, "left")
    offset = csum - (csum[first] - gaps[first])  # seconds into the session
    return np.minimum(starts[session] + offset.astype(np.int64), high - 1)


def pick(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draws: weights [R, m], u [R, K] -> idx [R, K]."""
    cum = np.cumsum(weights, axis=1)  # [R, m]
    target = u * cum[:, -1:]  # [R, K]
    idx = (cum[:, None, :] <= target[:, :, None]).sum(-1)  # [R, K]
    return np.minimum(idx, weights.shape[1] - 1)


def history_cap(cfg: Config, params: WorldParams = PARAMS) -> int:
    """The longest history a user can have (1.5 x data.max_history)."""
    return max(int(params.history_cap_factor * cfg.data.max_history),
               cfg.synthetic.min_history)


def simulate_history(world: World, cfg: Config, user_id: int,
                     rng: np.random.Generator,
                     rng_long: np.random.Generator,
                     params: WorldParams = PARAMS) -> UserHistory:
    """One user's interests and behaviour log.

    `rng` draws the original model (and goes on to draw the requests);
    `rng_long` draws only the long-range structure.
    """
    syn = cfg.synthetic
    num_s = world.num_subtopics
    gender = int(rng.integers(1, 3))
    age = int(1 + rng.choice(8, p=params.age_probs))
    # Interests: dominant, long-tail and one drift target sub-topic.
    pref = world.topic_pref[gender - 1, age - 1][world.subtopic_topic]
    p_sub = (params.demographic_share * pref / world.subtopics_per_topic
             + (1 - params.demographic_share) / num_s)
    nd = min(syn.dominant_interests, num_s)
    nt = min(syn.longtail_interests, num_s - nd)
    m = min(nd + nt + 1, num_s)
    support = rng.choice(num_s, size=m, replace=False, p=p_sub / p_sub.sum())
    share_d = params.dominant_share if nt else 1.0
    w0 = np.zeros(m)
    if nd:
        w0[:nd] = share_d * rng.dirichlet(np.full(nd, 2.0))
    if nt:
        w0[nd:nd + nt] = (1.0 - share_d if nd else 1.0) * rng.dirichlet(
            np.ones(nt))
    w1 = w0.copy()
    if nd and m > nd + nt:  # The new sub-topic takes a dominant's weight.
        d = rng.integers(nd)
        w1[-1] = w0[d]
        w1[d] = w0[nd:nd + nt].mean() if nt else 0.0
        w1 /= w1.sum()
    rho = rng.random()
    w1 = (1.0 - rho) * w0 + rho * w1
    user_bias = rng.normal(0.0, params.user_bias_std)
    # History length and behaviour times: sessions over the request span
    # and a lead-in period before it.
    cap = history_cap(cfg, params)
    mu = math.log(syn.mean_history) - params.history_sigma**2 / 2
    length = int(np.clip(round(rng.lognormal(mu, params.history_sigma)),
                         syn.min_history, cap))
    span = syn.span_days * DAY_S
    end = START_TIME + span
    log_start = START_TIME - int(syn.history_lead_spans * span)
    log_span = end - log_start
    # At least min_history behaviours (and a binomial share of the rest)
    # fall in the lead-in, so that every request in the span has a history.
    pre = syn.min_history + rng.binomial(
        length - syn.min_history, (log_span - span) / log_span)
    t = strictly_increasing(np.concatenate([
        _session_times(rng, pre, log_start, START_TIME, params),
        _session_times(rng, length - pre, START_TIME, end, params),
    ]))  # [L]
    # Behaviour sub-topics from the drifting interests, then items.
    lam = np.clip((t - log_start) / log_span, 0.0, 1.0)  # [L]
    w_t = (1 - lam)[:, None] * w0 + lam[:, None] * w1  # [L, m]
    beh_sub = support[pick(w_t, rng.random((length, 1)))[:, 0]]  # [L]
    items = world.sample_in_subtopics(beh_sub, rng.random(length))
    explore = rng.random(length) < params.explore_prob
    items = np.where(explore, world.sample_popular(rng.random(length)),
                     items)
    behaviors = 1 + rng.choice(4, size=length, p=params.behavior_probs)
    periodic, bursts = _periodic_interests(
        rng_long, syn, p_sub, support, log_start, end)
    if periodic.size:
        items = _burst_behaviours(world, syn, rng_long, t, items, periodic,
                                  bursts)
    return UserHistory(
        user_id=user_id,
        features={"gender": gender, "age_bucket": age},
        user_bias=float(user_bias),
        support=support,
        w0=w0,
        w1=w1,
        num_dominant=nd,
        log_start=log_start,
        log_span=log_span,
        item_ids=items,
        behaviors=behaviors,
        timestamps=t,
        periodic_subtopics=periodic,
        burst_starts=bursts,
    )


def _periodic_interests(rng: np.random.Generator, syn: SyntheticConfig,
                        p_sub: np.ndarray, support: np.ndarray,
                        log_start: int, end: int
                        ) -> tuple[np.ndarray, list]:
    """Dormant sub-topics [P] (outside `support`) and their burst starts.

    Each interest recurs every `period` seconds (lognormal around
    `periodic_period_days`) from a random phase; a burst starting before the
    log but still running inside it counts.
    """
    free = np.setdiff1d(np.arange(p_sub.size), support)
    num_p = min(syn.periodic_interests, free.size)
    if num_p == 0:
        return np.zeros(0, np.int64), []
    p = p_sub[free] / p_sub[free].sum()
    periodic = rng.choice(free, size=num_p, replace=False, p=p)
    burst_s = syn.periodic_burst_days * DAY_S
    bursts = []
    for _ in range(num_p):
        period = syn.periodic_period_days * DAY_S * rng.lognormal(
            0.0, syn.periodic_period_sigma)
        period = max(period, 2.0 * burst_s)  # Bursts never overlap.
        first = log_start - rng.uniform(0.0, period)
        count = int(math.ceil((end - first) / period)) + 1
        starts = (first + period * np.arange(count)).astype(np.int64)
        bursts.append(starts[(starts + burst_s > log_start) & (starts < end)])
    return periodic, bursts


def _burst_behaviours(world: World, syn: SyntheticConfig,
                      rng: np.random.Generator, t: np.ndarray,
                      items: np.ndarray, periodic: np.ndarray,
                      bursts: list) -> np.ndarray:
    """Items [L] with a share of each burst's behaviours moved to its
    dormant sub-topic (by popularity within it)."""
    items = items.copy()
    burst_s = syn.periodic_burst_days * DAY_S
    for sub, starts in zip(periodic, bursts):
        if starts.size == 0:
            continue
        k = np.searchsorted(starts, t, "right") - 1  # [L] latest start <= t
        active = (k >= 0) & (t - starts[np.maximum(k, 0)] < burst_s)
        take = active & (rng.random(t.size) < syn.periodic_burst_share)
        n = int(take.sum())
        items[take] = world.sample_in_subtopics(np.full(n, sub),
                                                rng.random(n))
    return items
