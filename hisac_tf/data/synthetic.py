"""Synthetic request-level data with a known optimum (docs/design.md §4, §5).

`generate(cfg)` builds a seeded world from `cfg.synthetic` and writes the
request-level TFRecord shards, the item table, `summary.json` and the
resolved `config.json` into `cfg.data.data_dir` (or `output_dir`).

The world:
* `num_topics` topics × `subtopics_per_topic` sub-topics (uneven sizes);
  item ids 1..num_items, each in one sub-topic; `category_id` = topic + 1,
  coarser than the sub-topic, so sub-topic affinity can only be learnt from
  fine-grained signals (item ids, or semantic IDs of the content).
* Zipf popularity (`zipf_exponent`) over the catalogue and a small random
  intrinsic quality per item.
* Content embeddings [content_dim]: a hierarchical latent (topic centre +
  sub-topic offset + item jitter) pushed through a fixed random 2-layer
  tanh MLP, standardised, plus Gaussian noise `content_noise`: a noisy,
  non-linear function of the sub-topic that a tokenizer has to learn.

Users (ids 1..num_users): gender 1..2 and age bucket 1..8, which shift the
topics a user likes; `dominant_interests` sub-topics with most of the
weight and `longtail_interests` with little (Dirichlet); interests drift
over time towards a new sub-topic that takes over a dominant one's weight;
a lognormal number of behaviours (mean `mean_history`, at least
`min_history`, capped at 1.5 × `data.max_history` so that the reader's
truncation to the newest N is exercised), in sessions spread over the
`span_days` request span and a lead-in of the same length before it (at
least `min_history` of them in the lead-in, as a real log has history
before its impression window); each behaviour has a type 1..4 (click,
cart, fav, buy) and an item drawn from a sub-topic picked by the interests
at that time and by popularity within the sub-topic, with some exploration
of globally popular items.

Requests: `requests_per_user` per user at increasing times uniform over
the span; a request's history is every behaviour strictly before it
(oldest first, written untruncated). Its `candidates_per_request`
distinct candidates mix items of the user's dominant and long-tail
sub-topics with popular and random items. The true click probability is
(weights: `WorldParams` defaults)

    true_ctr = sigmoid(b + user_bias + item_quality
                       + 2.5 · w_s(t) / max_s' w_s'(t)     sub-topic affinity
                       + 1.5 · (1 − 2^−n_s) · [s not dominant]   long tail
                       + 1.0 · exp(−Δt_s / 2 days)          recency
                       + 0.3 · standardised log popularity)

with s the candidate's sub-topic, w(t) the user's interest weights at the
request time t, n_s the user's behaviours in s before t and Δt_s the time
since the last of them; b is calibrated on the first users so that the
mean true CTR is `TARGET_CTR`. Labels are Bernoulli(true_ctr) and the
records carry `true_ctr`, so the Bayes-optimal AUC and GAUC are known.

Requests in the last `eval_fraction` of the span go to the eval shards,
the others to the train shards; users are dealt to the `num_shards` shards
round robin. Generation streams user by user (each user has its own seeded
generator, so the output does not depend on the order): memory holds one
user at a time plus fixed-size accumulators.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Iterator

import numpy as np
import tensorflow as tf  # This module never touches tf.keras.

from hisac_tf import metrics
from hisac_tf.config import Config, ConfigError, write_resolved
from hisac_tf.data.feature_spec import FeatureSpec, item_example
from hisac_tf.data import filesystems
from hisac_tf.data.shard_writer import shard_name

DAY_S = 86_400
# 2017-11-25 00:00 UTC, the first day of the Taobao UserBehavior log.
START_TIME = 1_511_568_000
TARGET_CTR = 0.15
CALIBRATION_USERS = 500
ITEM_CHUNK = 8192
SUPPORTED_USER_FEATURES = ("gender", "age_bucket")
SUMMARY_FILE = "summary.json"


@dataclasses.dataclass(frozen=True)
class WorldParams:
    """Fixed shape parameters of the synthetic world and click model."""

    # Content embeddings: a low-dimensional latent (at least latent_dim,
    # log2 of the sub-topic count) mapped to content_dim by a random MLP.
    latent_dim: int = 8
    topic_scale: float = 1.0
    subtopic_scale: float = 0.6
    item_jitter: float = 0.2
    mlp_gain: float = 1.5
    # Items.
    subtopic_size_sigma: float = 0.75
    item_quality_std: float = 0.3
    # Users.
    history_sigma: float = 1.0
    history_cap_factor: float = 1.5
    # The behaviour log starts this many spans before the request span.
    history_lead: float = 1.0
    dominant_share: float = 0.8
    demographic_share: float = 0.5
    age_probs: tuple[float, ...] = (
        0.05, 0.15, 0.22, 0.2, 0.15, 0.11, 0.08, 0.04
    )
    user_bias_std: float = 0.4
    # Behaviours: click, cart, fav, buy.
    behavior_probs: tuple[float, ...] = (0.82, 0.07, 0.06, 0.05)
    explore_prob: float = 0.08
    session_length: float = 6.0
    session_gap_s: float = 90.0
    # Candidate sources: dominant, long-tail, popular, random.
    candidate_mix: tuple[float, ...] = (0.35, 0.25, 0.2, 0.2)
    # Click model.
    w_affinity: float = 2.5
    w_longtail: float = 1.5
    w_recency: float = 1.0
    recency_s: float = 2.0 * DAY_S
    w_popularity: float = 0.3


PARAMS = WorldParams()


@dataclasses.dataclass(frozen=True)
class World:
    """The item side of the synthetic world, shared by all users.

    Sub-topics are 0-based here (s = topic · subtopics_per_topic + j); the
    records carry `subtopic_id` = s + 1 and `category_id` = topic + 1.
    Arrays indexed by item id have an unused entry 0.
    """

    num_items: int
    num_topics: int
    subtopics_per_topic: int
    item_subtopic: np.ndarray  # [I + 1] int64, -1 at 0
    item_category: np.ndarray  # [I + 1] int64, 0 at 0
    pop_z: np.ndarray  # [I + 1] standardised log popularity
    item_quality: np.ndarray  # [I + 1]
    subtopic_items: np.ndarray  # [I] item ids ordered by sub-topic
    subtopic_keys: np.ndarray  # [I] s + cumulative popularity share in s
    popular_cdf: np.ndarray  # [I] cumulative popularity of items 1..I
    topic_pref: np.ndarray  # [2, 8, T] topic preference per demography
    topic_centres: np.ndarray  # [T, h]
    subtopic_offsets: np.ndarray  # [S, h]
    mlp: tuple[np.ndarray, ...]  # w1 [h, 2h], b1, w2 [2h, D], b2
    out_mean: np.ndarray  # [D]
    out_scale: float

    @property
    def num_subtopics(self) -> int:
        return self.num_topics * self.subtopics_per_topic

    @property
    def subtopic_topic(self) -> np.ndarray:
        return np.arange(self.num_subtopics) // self.subtopics_per_topic

    def sample_in_subtopics(self, subtopics: np.ndarray, u: np.ndarray):
        """Items of the given sub-topics [n], by popularity; u ~ U[0, 1)."""
        pos = np.searchsorted(self.subtopic_keys, subtopics + u, "right")
        return self.subtopic_items[np.minimum(pos, self.num_items - 1)]

    def sample_popular(self, u: np.ndarray) -> np.ndarray:
        """Items by global popularity [n]; u ~ U[0, 1)."""
        pos = np.searchsorted(self.popular_cdf, u, "right")
        return 1 + np.minimum(pos, self.num_items - 1)

    def content(self, latent: np.ndarray) -> np.ndarray:
        """The fixed non-linear map latent [n, h] -> [n, D], unscaled."""
        w1, b1, w2, b2 = self.mlp
        return np.tanh(np.tanh(latent @ w1 + b1) @ w2 + b2)


def build_world(syn, params: WorldParams = PARAMS) -> World:
    """The item side of the world, deterministic from `syn.seed`."""
    rng = np.random.default_rng([syn.seed, 0])
    num_t, spt = syn.num_topics, syn.subtopics_per_topic
    num_s, num_i = num_t * spt, syn.num_items
    if num_i < num_s:
        raise ConfigError(
            f"synthetic.num_items ({num_i}) must be >= synthetic.num_topics "
            f"x synthetic.subtopics_per_topic ({num_t} x {spt} = {num_s}): "
            "every sub-topic needs an item"
        )
    # Uneven sub-topic sizes, each >= 1; items get sub-topics at random.
    share = rng.lognormal(0.0, params.subtopic_size_sigma, num_s)
    sizes = 1 + rng.multinomial(num_i - num_s, share / share.sum())
    item_subtopic = np.full(num_i + 1, -1, np.int64)
    item_subtopic[1:] = rng.permutation(np.repeat(np.arange(num_s), sizes))
    item_category = np.zeros(num_i + 1, np.int64)
    item_category[1:] = item_subtopic[1:] // spt + 1
    # Zipf popularity over a random order of the catalogue.
    rank = 1 + rng.permutation(num_i)
    pop = rank.astype(np.float64) ** -syn.zipf_exponent  # [I]
    log_pop = np.log(pop)
    pop_z = np.zeros(num_i + 1)
    pop_z[1:] = (log_pop - log_pop.mean()) / max(log_pop.std(), 1e-12)
    item_quality = np.zeros(num_i + 1)
    item_quality[1:] = rng.normal(0.0, params.item_quality_std, num_i)
    popular_cdf = np.cumsum(pop) / pop.sum()
    popular_cdf[-1] = 1.0
    # Items ordered by sub-topic with cumulative popularity inside each.
    order = np.argsort(item_subtopic[1:], kind="stable")  # [I]
    ordered_sub = item_subtopic[1:][order]
    ordered_pop = pop[order]
    csum = np.cumsum(ordered_pop)
    first = np.searchsorted(ordered_sub, ordered_sub, "left")
    start_sum = csum[first] - ordered_pop[first]
    totals = np.bincount(ordered_sub, weights=ordered_pop, minlength=num_s)
    within = (csum - start_sum) / totals[ordered_sub]
    last = np.append(ordered_sub[1:] != ordered_sub[:-1], True)
    within[last] = 1.0
    # Demography (gender x age) -> preferred topics.
    topic_pref = rng.dirichlet(np.full(num_t, 0.5), size=(2, 8))
    # Content: hierarchical latent -> random 2-layer tanh MLP.
    # The item manifold's dimension grows slowly with the sub-topic count.
    h = max(params.latent_dim, math.ceil(math.log2(num_s)))
    dim = syn.content_dim
    centres = rng.normal(0.0, params.topic_scale, (num_t, h))
    offsets = rng.normal(0.0, params.subtopic_scale, (num_s, h))
    w1 = rng.normal(0.0, params.mlp_gain / math.sqrt(h), (h, 2 * h))
    b1 = rng.normal(0.0, 0.5, 2 * h)
    w2 = rng.normal(0.0, params.mlp_gain / math.sqrt(2 * h), (2 * h, dim))
    b2 = rng.normal(0.0, 0.5, dim)
    world = World(
        num_items=num_i,
        num_topics=num_t,
        subtopics_per_topic=spt,
        item_subtopic=item_subtopic,
        item_category=item_category,
        pop_z=pop_z,
        item_quality=item_quality,
        subtopic_items=1 + order,
        subtopic_keys=ordered_sub + within,
        popular_cdf=popular_cdf,
        topic_pref=topic_pref,
        topic_centres=centres,
        subtopic_offsets=offsets,
        mlp=(w1, b1, w2, b2),
        out_mean=np.zeros(dim),
        out_scale=1.0,
    )
    # Standardise the MLP output on a sample of 32 items per sub-topic.
    sample_sub = np.repeat(np.arange(num_s), 32)
    sample = world.content(_latent(world, sample_sub, rng, params))
    centred = sample - sample.mean(0)
    return dataclasses.replace(
        world,
        out_mean=sample.mean(0),
        out_scale=float(max(np.sqrt(np.mean(centred**2)), 1e-12)),
    )


def _latent(world: World, subtopics: np.ndarray, rng, params) -> np.ndarray:
    """Pre-MLP latents [n, h] of items of the given 0-based sub-topics."""
    topics = subtopics // world.subtopics_per_topic
    jitter = rng.normal(0.0, params.item_jitter,
                        (subtopics.size, world.topic_centres.shape[1]))
    return world.topic_centres[topics] + world.subtopic_offsets[subtopics] \
        + jitter


def item_embeddings(world: World, syn, first: int, stop: int,
                    params: WorldParams = PARAMS) -> np.ndarray:
    """Content embeddings [stop - first, D] of item ids first..stop-1.

    Deterministic per chunk of `ITEM_CHUNK` ids; `first` must start a
    chunk.
    """
    if (first - 1) % ITEM_CHUNK:
        raise ValueError(f"first must start a chunk of {ITEM_CHUNK}, got "
                         f"{first}")
    rng = np.random.default_rng([syn.seed, 2, (first - 1) // ITEM_CHUNK])
    subtopics = world.item_subtopic[first:stop]
    out = world.content(_latent(world, subtopics, rng, params))
    out = (out - world.out_mean) / world.out_scale
    out += rng.normal(0.0, syn.content_noise, out.shape)
    return out.astype(np.float32)


@dataclasses.dataclass
class UserSample:
    """One simulated user: the full behaviour log and its requests."""

    user_id: int
    features: dict  # gender, age_bucket
    hist_item_ids: np.ndarray  # [L]
    hist_category_ids: np.ndarray  # [L]
    hist_behaviors: np.ndarray  # [L]
    hist_timestamps: np.ndarray  # [L] strictly increasing
    request_time: np.ndarray  # [R] strictly increasing
    hist_end: np.ndarray  # [R] behaviours strictly before each request
    cand_item_ids: np.ndarray  # [R, C]
    cand_category_ids: np.ndarray  # [R, C]
    logits: np.ndarray  # [R, C] true logit without the global bias
    uniforms: np.ndarray  # [R, C] U[0, 1) draws for the labels


def _strictly_increasing(t: np.ndarray) -> np.ndarray:
    """Sorted ints made strictly increasing by the smallest shifts up."""
    steps = np.arange(t.size)
    return np.maximum.accumulate(np.sort(t) - steps) + steps


def _session_times(rng, n: int, low: int, high: int,
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


def _pick(weights: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draws: weights [R, m], u [R, K] -> idx [R, K]."""
    cum = np.cumsum(weights, axis=1)  # [R, m]
    target = u * cum[:, -1:]  # [R, K]
    idx = (cum[:, None, :] <= target[:, :, None]).sum(-1)  # [R, K]
    return np.minimum(idx, weights.shape[1] - 1)


def simulate_user(world: World, cfg: Config, user_id: int,
                  params: WorldParams = PARAMS) -> UserSample:
    """Simulates one user, deterministic from (seed, user_id)."""
    syn = cfg.synthetic
    rng = np.random.default_rng([syn.seed, 1, user_id])
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
    cap = max(int(params.history_cap_factor * cfg.data.max_history),
              syn.min_history)
    mu = math.log(syn.mean_history) - params.history_sigma**2 / 2
    length = int(np.clip(round(rng.lognormal(mu, params.history_sigma)),
                         syn.min_history, cap))
    span = syn.span_days * DAY_S
    end = START_TIME + span
    log_start = START_TIME - int(params.history_lead * span)
    log_span = end - log_start
    # At least min_history behaviours (and a binomial share of the rest)
    # fall in the lead-in, so that every request in the span has a history.
    pre = syn.min_history + rng.binomial(
        length - syn.min_history, (log_span - span) / log_span)
    t = _strictly_increasing(np.concatenate([
        _session_times(rng, pre, log_start, START_TIME, params),
        _session_times(rng, length - pre, START_TIME, end, params),
    ]))  # [L]
    # Behaviour sub-topics from the drifting interests, then items.
    lam = np.clip((t - log_start) / log_span, 0.0, 1.0)  # [L]
    w_t = (1 - lam)[:, None] * w0 + lam[:, None] * w1  # [L, m]
    beh_sub = support[_pick(w_t, rng.random((length, 1)))[:, 0]]  # [L]
    items = world.sample_in_subtopics(beh_sub, rng.random(length))
    explore = rng.random(length) < params.explore_prob
    items = np.where(explore, world.sample_popular(rng.random(length)),
                     items)
    behaviors = 1 + rng.choice(4, size=length, p=params.behavior_probs)
    # Requests in the span, each after at least min_history behaviours.
    num_r = syn.requests_per_user
    low = max(START_TIME, int(t[syn.min_history - 1]) + 1)
    req_t = _strictly_increasing(
        rng.integers(low, max(end, low + num_r), num_r))  # [R]
    hist_end = np.searchsorted(t, req_t, "left")  # [R]
    # Interests at request time; dominant = top-nd weights.
    lam_r = np.clip((req_t - log_start) / log_span, 0.0, 1.0)
    w_r = (1 - lam_r)[:, None] * w0 + lam_r[:, None] * w1  # [R, m]
    rank = np.argsort(np.argsort(-w_r, axis=1, kind="stable"), axis=1)
    dominant = (rank < nd) & (w_r > 0)  # [R, m]
    cands = _candidates(world, syn, rng, support, w_r, dominant, params)
    # True logit of each candidate (without the calibrated bias).
    cand_sub = world.item_subtopic[cands]  # [R, C]
    slot = np.full(num_s, -1)
    slot[support] = np.arange(m)
    cand_slot = slot[cand_sub]  # [R, C], -1 outside the support
    rows = np.arange(num_r)[:, None]
    safe = np.maximum(cand_slot, 0)
    in_support = cand_slot >= 0
    affinity = np.where(in_support, w_r[rows, safe], 0.0) / w_r.max(
        1, keepdims=True)  # [R, C]
    is_dominant = in_support & dominant[rows, safe]
    hist_sub = world.item_subtopic[items]  # [L]
    keys = np.sort(hist_sub * (length + 1) + np.arange(length))  # [L]
    base = cand_sub * (length + 1)  # [R, C]
    lo = np.searchsorted(keys, base, "left")
    hi = np.searchsorted(keys, base + hist_end[:, None], "left")
    count = hi - lo  # [R, C] behaviours in s before the request
    last = keys[np.maximum(hi - 1, 0)] - base  # [R, C] index of the last
    gap = req_t[:, None] - t[np.clip(last, 0, length - 1)]
    recency = np.where(count > 0, np.exp(-gap / params.recency_s), 0.0)
    longtail = np.where((count > 0) & ~is_dominant, 1.0 - 0.5**count, 0.0)
    logits = (
        user_bias + world.item_quality[cands]
        + params.w_affinity * affinity
        + params.w_longtail * longtail
        + params.w_recency * recency
        + params.w_popularity * world.pop_z[cands]
    )
    return UserSample(
        user_id=user_id,
        features={"gender": gender, "age_bucket": age},
        hist_item_ids=items,
        hist_category_ids=world.item_category[items],
        hist_behaviors=behaviors,
        hist_timestamps=t,
        request_time=req_t,
        hist_end=hist_end,
        cand_item_ids=cands,
        cand_category_ids=world.item_category[cands],
        logits=logits,
        uniforms=rng.random(cands.shape),
    )


def _candidates(world, syn, rng, support, w_r, dominant, params):
    """Distinct candidates [R, C] from the four sources of the mix."""
    num_r, num_c = w_r.shape[0], syn.candidates_per_request
    k = 2 * num_c  # Oversample, then keep the first C distinct items.
    source = rng.choice(4, size=(num_r, k), p=params.candidate_mix)
    dom_w = np.where(dominant, w_r, 0.0)  # [R, m]
    tail_w = (~dominant & (w_r > 0)).astype(np.float64)  # [R, m]
    dom_sub = support[_pick(dom_w, rng.random((num_r, k)))]
    tail_sub = support[_pick(tail_w, rng.random((num_r, k)))]
    in_dom = world.sample_in_subtopics(dom_sub, rng.random((num_r, k)))
    in_tail = world.sample_in_subtopics(tail_sub, rng.random((num_r, k)))
    popular = world.sample_popular(rng.random((num_r, k)))
    uniform = rng.integers(1, world.num_items + 1, (num_r, k))
    # A source the user lacks (no dominant / no long tail) falls to random.
    source = np.where((source == 0) & (dom_w.sum(1) == 0)[:, None], 3,
                      source)
    source = np.where((source == 1) & (tail_w.sum(1) == 0)[:, None], 3,
                      source)
    drawn = np.choose(source, [in_dom, in_tail, popular, uniform])  # [R, K]
    out = np.empty((num_r, num_c), np.int64)
    for r in range(num_r):
        _, idx = np.unique(drawn[r], return_index=True)
        chosen = list(drawn[r][np.sort(idx)][:num_c])
        seen = set(chosen)
        while len(chosen) < num_c:  # Fill up with random unseen items.
            item = int(rng.integers(1, world.num_items + 1))
            if item not in seen:
                seen.add(item)
                chosen.append(item)
        out[r] = chosen
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def calibrate_bias(world: World, cfg: Config,
                   target: float = TARGET_CTR) -> float:
    """Global bias b with mean sigmoid(logit + b) = target on first users."""
    users = range(1, min(cfg.synthetic.num_users, CALIBRATION_USERS) + 1)
    logits = np.concatenate(
        [simulate_user(world, cfg, u).logits.ravel() for u in users])
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if _sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _request_dicts(sample: UserSample, bias: float
                   ) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Yields (request record, labels [C], true ctr [C]) per request."""
    ctr = _sigmoid(sample.logits + bias).astype(np.float32)  # [R, C]
    labels = (sample.uniforms < ctr).astype(np.int64)  # [R, C]
    for r, end in enumerate(sample.hist_end):
        record = {
            "user_id": sample.user_id,
            "request_time": int(sample.request_time[r]),
            "hist_item_ids": sample.hist_item_ids[:end],
            "hist_category_ids": sample.hist_category_ids[:end],
            "hist_behaviors": sample.hist_behaviors[:end],
            "hist_timestamps": sample.hist_timestamps[:end],
            "cand_item_ids": sample.cand_item_ids[r],
            "cand_category_ids": sample.cand_category_ids[r],
            "labels": labels[r],
            "true_ctr": ctr[r],
        }
        record.update(sample.features)
        yield record, labels[r], ctr[r]


class _SplitStats:
    """Fixed-size accumulators of one split (train or eval)."""

    def __init__(self, max_len: int):
        self.requests = 0
        self.impressions = 0
        self.clicks = 0
        self.ctr_sum = 0.0
        self.log_loss_sum = 0.0
        self.auc = metrics.HistogramAUC()
        self.gauc = metrics.GroupedAUC()
        self.history_counts = np.zeros(max_len + 1, np.int64)

    def add_request(self, labels, ctr, history_length: int) -> None:
        self.requests += 1
        self.impressions += labels.size
        self.clicks += int(labels.sum())
        self.ctr_sum += float(ctr.astype(np.float64).sum())
        p = np.clip(ctr.astype(np.float64), 1e-7, 1 - 1e-7)
        self.log_loss_sum -= float(
            np.sum(np.where(labels == 1, np.log(p), np.log1p(-p))))
        self.auc.update(labels, ctr)
        self.history_counts[history_length] += 1

    def summary(self, max_history: int) -> dict:
        try:
            bayes_auc = self.auc.result()
        except ValueError:  # One class only (or no impressions).
            bayes_auc = None
        gauc = self.gauc.result()
        n = max(self.impressions, 1)
        out = {
            "requests": self.requests,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr": self.clicks / n,
            "mean_true_ctr": self.ctr_sum / n,
            "bayes_auc": bayes_auc,
            "bayes_gauc": None if math.isnan(gauc) else gauc,
            "gauc_users": self.gauc.num_used_users,
            "bayes_log_loss": self.log_loss_sum / n,
        }
        out.update(_length_stats(self.history_counts, max_history))
        return out


def _length_stats(counts: np.ndarray, max_history: int) -> dict:
    """Mean/median/max of history lengths from their count array."""
    total = int(counts.sum())
    if total == 0:
        return {"history_mean": None, "history_median": None,
                "history_max": None, "histories_over_max_history": 0}
    lengths = np.arange(counts.size)
    cum = np.cumsum(counts)
    lower = int(np.searchsorted(cum, (total + 1) // 2))
    upper = int(np.searchsorted(cum, total // 2 + 1))
    return {
        "history_mean": float((lengths * counts).sum() / total),
        "history_median": 0.5 * (lower + upper),
        "history_max": int(lengths[counts > 0].max()),
        "histories_over_max_history": int(counts[max_history + 1:].sum()),
    }


class _Progress:
    """Line-based progress on stderr every ~5% of the users."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.every = max(1, min(1000, math.ceil(total / 20)))
        self.start = time.time()
        self.done = 0

    def step(self, requests: int) -> None:
        self.done += 1
        if self.enabled and (self.done % self.every == 0
                             or self.done == self.total):
            elapsed = max(time.time() - self.start, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate
            print(
                f"synthetic: {self.done}/{self.total} users "
                f"({100 * self.done / self.total:.0f}%), {rate:.0f} users/s, "
                f"{requests} requests, eta {eta:.0f}s",
                file=sys.stderr, flush=True,
            )


def _check_config(cfg: Config) -> None:
    syn, data = cfg.synthetic, cfg.data
    if syn.candidates_per_request > data.max_candidates:
        raise ConfigError(
            f"synthetic.candidates_per_request ({syn.candidates_per_request})"
            f" must be <= data.max_candidates ({data.max_candidates})"
        )
    if syn.candidates_per_request > syn.num_items:
        raise ConfigError(
            f"synthetic.candidates_per_request ({syn.candidates_per_request})"
            f" must be <= synthetic.num_items ({syn.num_items})"
        )
    unknown = [f for f in data.user_features
               if f not in SUPPORTED_USER_FEATURES]
    if unknown:
        raise ConfigError(
            f"data.user_features holds {unknown[0]!r}, which the synthetic "
            f"generator does not make (it makes {SUPPORTED_USER_FEATURES})"
        )
    if syn.dominant_interests + syn.longtail_interests < 1:
        raise ConfigError(
            "synthetic.dominant_interests + synthetic.longtail_interests "
            f"must be >= 1, got {syn.dominant_interests} + "
            f"{syn.longtail_interests}"
        )


def _remove_stale(directory: str, pattern: str, keep: list[str],
                  progress: bool) -> None:
    """Deletes files of `pattern` in `directory` that this run won't write."""
    for path in tf.io.gfile.glob(os.path.join(directory, pattern)):
        if path not in keep:
            if progress:
                print(f"synthetic: removing stale {path}", file=sys.stderr)
            tf.io.gfile.remove(path)


def _write_items(world: World, cfg: Config, path: str) -> None:
    options = tf.io.TFRecordOptions(compression_type=cfg.data.compression)
    with tf.io.TFRecordWriter(path, options) as writer:
        for first in range(1, world.num_items + 1, ITEM_CHUNK):
            stop = min(first + ITEM_CHUNK, world.num_items + 1)
            emb = item_embeddings(world, cfg.synthetic, first, stop)
            for k, item in enumerate(range(first, stop)):
                writer.write(item_example(
                    item, int(world.item_category[item]), emb[k],
                    int(world.item_subtopic[item]) + 1,
                ).SerializeToString())


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def generate(cfg: Config, output_dir: str | None = None,
             progress: bool = True) -> dict:
    """Writes the synthetic data set of `cfg` and returns its summary.

    Args:
      cfg: the resolved config; `cfg.synthetic` shapes the world, `cfg.data`
        gives N, C, the user features, file patterns and compression.
      output_dir: where to write; default `cfg.data.data_dir`.
      progress: print a progress line on stderr every ~5% of the users.
    Returns:
      the summary also written to `<output_dir>/summary.json`.
    Raises:
      ConfigError (a ValueError): a setting the generator cannot honour,
        e.g. synthetic.candidates_per_request > data.max_candidates.
    """
    _check_config(cfg)
    syn, data = cfg.synthetic, cfg.data
    out_dir = filesystems.ensure_filesystem(output_dir or data.data_dir)
    start = time.time()
    spec = FeatureSpec(
        max_history=data.max_history,
        max_candidates=data.max_candidates,
        user_features=tuple(data.user_features),
        with_true_ctr=True,
    )
    num_shards = syn.num_shards
    files = {
        split: [
            os.path.join(out_dir, shard_name(pattern, k, num_shards))
            for k in range(num_shards)
        ]
        for split, pattern in (("train", data.train_pattern),
                               ("eval", data.eval_pattern))
    }
    files["items"] = [
        os.path.join(out_dir, shard_name(data.item_table_pattern, 0, 1))
    ]
    world = build_world(syn)
    tf.io.gfile.makedirs(out_dir)
    for split, pattern in (("train", data.train_pattern),
                           ("eval", data.eval_pattern),
                           ("items", data.item_table_pattern)):
        _remove_stale(out_dir, pattern, files[split], progress)
    write_resolved(cfg, out_dir)
    _write_items(world, cfg, files["items"][0])
    bias = calibrate_bias(world, cfg)
    cap = max(int(PARAMS.history_cap_factor * data.max_history),
              syn.min_history)
    split_time = START_TIME + int(
        round((1.0 - syn.eval_fraction) * syn.span_days * DAY_S))
    stats = {"train": _SplitStats(cap), "eval": _SplitStats(cap)}
    behaviours_sum, behaviours_max = 0, 0
    options = tf.io.TFRecordOptions(compression_type=data.compression)
    bar = _Progress(syn.num_users, progress)
    for shard in range(num_shards):
        with tf.io.TFRecordWriter(files["train"][shard], options) as train, \
                tf.io.TFRecordWriter(files["eval"][shard], options) as ev:
            writers = {"train": train, "eval": ev}
            for user_id in range(shard + 1, syn.num_users + 1, num_shards):
                sample = simulate_user(world, cfg, user_id)
                behaviours_sum += sample.hist_item_ids.size
                behaviours_max = max(behaviours_max,
                                     sample.hist_item_ids.size)
                per_split = {"train": ([], []), "eval": ([], [])}
                for record, labels, ctr in _request_dicts(sample, bias):
                    split = ("eval" if record["request_time"] >= split_time
                             else "train")
                    writers[split].write(
                        spec.to_example(record).SerializeToString())
                    stats[split].add_request(
                        labels, ctr, record["hist_item_ids"].size)
                    per_split[split][0].append(labels)
                    per_split[split][1].append(ctr)
                for split, (labels, ctr) in per_split.items():
                    if labels:
                        stats[split].gauc.add_user(
                            np.concatenate(labels), np.concatenate(ctr))
                bar.step(stats["train"].requests + stats["eval"].requests)
    all_counts = (stats["train"].history_counts
                  + stats["eval"].history_counts)
    summary = {
        "output_dir": out_dir,
        "seconds": time.time() - start,
        "users": syn.num_users,
        "items": syn.num_items,
        "topics": syn.num_topics,
        "subtopics": world.num_subtopics,
        "categories": syn.num_topics,
        "max_history": data.max_history,
        "history_cap": cap,
        "behaviours_per_user_mean": behaviours_sum / syn.num_users,
        "behaviours_per_user_max": behaviours_max,
        "requests": stats["train"].requests + stats["eval"].requests,
        "impressions": (stats["train"].impressions
                        + stats["eval"].impressions),
        "eval_split_time": split_time,
        "calibrated_bias": bias,
        "target_ctr": TARGET_CTR,
        **_length_stats(all_counts, data.max_history),
        "train": stats["train"].summary(data.max_history),
        "eval": stats["eval"].summary(data.max_history),
        "files": {k: [os.path.basename(p) for p in v]
                  for k, v in files.items()},
        "world_params": dataclasses.asdict(PARAMS),
        "config": cfg.to_dict(),
    }
    summary = _jsonable(summary)
    with tf.io.gfile.GFile(os.path.join(out_dir, SUMMARY_FILE), "w") as f:
        f.write(json.dumps(summary, indent=2) + "\n")
    return summary
