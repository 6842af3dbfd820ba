"""Synthetic requests: candidates, the true click model and labels.

The true click logit of a candidate of sub-topic s at request time t
(docs/design.md §5; weights in `SyntheticConfig`, defaults in brackets):

    user_bias + item_quality
    + affinity_weight [2.5]     · w_s(t) / max_s' w_s'(t)
    + longtail_weight [1.5]     · (1 − 2^−n_s) · [s not dominant]
    + recency_weight [1.0]      · exp(−Δt_s / recency_days [2])
    + popularity_weight [0.3]   · standardised log popularity
    + count_weight [0]          · log1p(n_s · count_reference / L)
    + recent_share_weight [0]   · Σ_j 2^−a_j [s_j = s] / Σ_j 2^−a_j

with w(t) the user's drifting interest weights, "dominant" the top
`dominant_interests` of them, n_s the behaviours in s before t (the whole
history), Δt_s the time since the newest of them and a_j = (age of
behaviour j in behaviours, 0 for the newest) / `recent_half_life`. The
affinity term and the long-tail term's dominance read latent interests;
everything else reads only the history (`history_features`), so the
history-window oracle can re-estimate it from the newest W behaviours.
L is the number of behaviours read; with `count_reference` = 0 [default]
the count term is log1p(n_s), with a reference length it is the lifetime
rate of s scaled to that length, so that a longer history does not raise
every affinity. Either way it never saturates: only the count over the
whole history shows a rarely expressed interest's strength.

Candidates: `candidates_per_request` distinct items from the user's
dominant and long-tail sub-topics, popular and random items
(`WorldParams.candidate_mix`); with `lifetime_candidate_share` > 0 that
share of the slots is re-drawn from sub-topics in proportion to the
lifetime counts n_s, as a long-term-profile retrieval would. With
`comeback_request_share` > 0, that share of the requests is moved to the
start of a dormant interest's burst (the interest comes back, the newest
behaviours do not show it yet) and half of its lifetime candidates
(`WorldParams.comeback_focus`) come from that interest.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from hisac_tf.config import Config, SyntheticConfig
from hisac_tf.data.synthetic.side_features import (SideWorld,
                                                   build_side_world, engage,
                                                   side_logits,
                                                   uses_side_world)
from hisac_tf.data.synthetic.users import (UserHistory, pick,
                                           simulate_history,
                                           strictly_increasing)
from hisac_tf.data.synthetic.world import (DAY_S, PARAMS, START_TIME, World,
                                           WorldParams)

TARGET_CTR = 0.15
CALIBRATION_USERS = 500


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
    user_bias: float = 0.0
    comeback_subtopic: np.ndarray | None = None  # [R] 0-based, -1: none
    # [R, C] the side-feature terms inside `logits` (side_features.py).
    side_logits: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class HistoryFeatures:
    """What the click model reads from a history, per candidate [R, C]."""

    count: np.ndarray  # n_s: behaviours in the candidate's sub-topic
    gap: np.ndarray  # seconds since the newest of them (where count > 0)
    recent_share: np.ndarray | None  # decayed share; None when unused
    length: np.ndarray  # [R, 1] behaviours read before each request


def history_features(world: World, hist_items: np.ndarray,
                     hist_t: np.ndarray, request_time: np.ndarray,
                     hist_end: np.ndarray, cands: np.ndarray,
                     window: int | None, half_life: float | None
                     ) -> HistoryFeatures:
    """History terms of the click model from the newest `window` behaviours.

    Args:
      hist_items, hist_t: the user's whole log [L], oldest first.
      request_time, hist_end: [R]; request r sees hist[:hist_end[r]].
      cands: candidate item ids [R, C].
      window: read only hist[max(0, end - window):end]; None: all.
      half_life: the recent share's half-life in behaviours; None skips it.
    """
    length = hist_items.size
    hist_sub = world.item_subtopic[hist_items]  # [L]
    cand_sub = world.item_subtopic[cands]  # [R, C]
    keys = np.sort(hist_sub * (length + 1) + np.arange(length))  # [L]
    base = cand_sub * (length + 1)  # [R, C]
    first = (np.zeros_like(hist_end) if window is None
             else np.maximum(hist_end - window, 0))  # [R]
    lo = np.searchsorted(keys, base + first[:, None], "left")
    hi = np.searchsorted(keys, base + hist_end[:, None], "left")
    count = hi - lo  # [R, C]
    last = keys[np.maximum(hi - 1, 0)] - base  # [R, C] index of the newest
    gap = request_time[:, None] - hist_t[np.clip(last, 0, length - 1)]
    share = None
    if half_life is not None:
        share = np.zeros(cands.shape)
        num_s = world.num_subtopics
        for r, (a, b) in enumerate(zip(first, hist_end)):
            if b > a:
                decay = np.exp2(-np.arange(b - a)[::-1] / half_life)  # [b-a]
                mass = np.bincount(hist_sub[a:b], decay, minlength=num_s)
                share[r] = mass[cand_sub[r]] / decay.sum()
    return HistoryFeatures(count=count, gap=gap, recent_share=share,
                           length=(hist_end - first)[:, None])


def click_logits(world: World, syn: SyntheticConfig, cands: np.ndarray,
                 user_bias: float, affinity: np.ndarray,
                 dominant: np.ndarray, feats: HistoryFeatures) -> np.ndarray:
    """The click model's logit [R, C] without the global bias.

    `affinity` [R, C] is w_s(t) / max w(t) and `dominant` [R, C] whether s
    is a dominant interest (latent, or the oracle's estimates of them).
    """
    recency = np.where(feats.count > 0,
                       np.exp(-feats.gap / (syn.recency_days * DAY_S)), 0.0)
    longtail = np.where((feats.count > 0) & ~dominant,
                        1.0 - 0.5**feats.count, 0.0)
    logits = (
        user_bias + world.item_quality[cands]
        + syn.affinity_weight * affinity
        + syn.longtail_weight * longtail
        + syn.recency_weight * recency
        + syn.popularity_weight * world.pop_z[cands]
    )
    if syn.count_weight:
        count = feats.count
        if syn.count_reference:  # A rate, scaled to a reference length.
            count = count * (syn.count_reference
                             / np.maximum(feats.length, 1))
        logits = logits + syn.count_weight * np.log1p(count)
    if syn.recent_share_weight:
        logits = logits + syn.recent_share_weight * feats.recent_share
    return logits


def share_half_life(syn: SyntheticConfig) -> float | None:
    """The recent share's half-life, None when its weight is 0."""
    return syn.recent_half_life if syn.recent_share_weight else None


def simulate_user(world: World, cfg: Config, user_id: int,
                  params: WorldParams = PARAMS) -> UserSample:
    """Simulates one user, deterministic from (seed, user_id)."""
    syn = cfg.synthetic
    rng = np.random.default_rng([syn.seed, 1, user_id])
    rng_long = np.random.default_rng([syn.seed, 3, user_id])
    user = simulate_history(world, cfg, user_id, rng, rng_long, params)
    side = side_world_for(world, syn) if uses_side_world(syn, False) else (
        None)
    if side is not None and syn.content_engagements:
        user = dataclasses.replace(
            user, item_ids=engage(side, syn, user_id, user.item_ids))
    t = user.timestamps
    # Requests in the span, each after at least min_history behaviours.
    num_r = syn.requests_per_user
    end = START_TIME + syn.span_days * DAY_S
    low = max(START_TIME, int(t[syn.min_history - 1]) + 1)
    req_t = strictly_increasing(
        rng.integers(low, max(end, low + num_r), num_r))  # [R]
    comeback = np.full(num_r, -1)
    if syn.comeback_request_share and user.periodic_subtopics.size:
        req_t, comeback = _comeback_requests(syn, rng_long, user, req_t,
                                             low, end)
    hist_end = np.searchsorted(t, req_t, "left")  # [R]
    # Interests at request time; dominant = top-nd weights.
    w_r = user.weights_at(req_t)  # [R, m]
    rank = np.argsort(np.argsort(-w_r, axis=1, kind="stable"), axis=1)
    dominant = (rank < user.num_dominant) & (w_r > 0)  # [R, m]
    cands = _candidates(world, syn, rng, user.support, w_r, dominant,
                        params)
    if syn.lifetime_candidate_share:
        cands = _lifetime_candidates(world, syn, rng_long, user, hist_end,
                                     comeback, cands, params)
    # The latent terms of the click model at each candidate.
    num_s = world.num_subtopics
    slot = np.full(num_s, -1)
    slot[user.support] = np.arange(user.support.size)
    cand_slot = slot[world.item_subtopic[cands]]  # [R, C], -1: not in it
    rows = np.arange(num_r)[:, None]
    safe = np.maximum(cand_slot, 0)
    in_support = cand_slot >= 0
    affinity = np.where(in_support, w_r[rows, safe], 0.0) / w_r.max(
        1, keepdims=True)  # [R, C]
    is_dominant = in_support & dominant[rows, safe]
    feats = history_features(world, user.item_ids, t, req_t, hist_end,
                             cands, None, share_half_life(syn))
    logits = click_logits(world, syn, cands, user.user_bias, affinity,
                          is_dominant, feats)
    side_part = np.zeros(logits.shape)
    if side is not None:
        side_part = side_logits(side, world, syn, user.features, user_id,
                                cands, req_t)
        logits = logits + side_part
    return UserSample(
        user_id=user_id,
        features=user.features,
        hist_item_ids=user.item_ids,
        hist_category_ids=world.item_category[user.item_ids],
        hist_behaviors=user.behaviors,
        hist_timestamps=t,
        request_time=req_t,
        hist_end=hist_end,
        cand_item_ids=cands,
        cand_category_ids=world.item_category[cands],
        logits=logits,
        uniforms=rng.random(cands.shape),
        user_bias=user.user_bias,
        comeback_subtopic=comeback,
        side_logits=side_part,
    )


_SIDE_CACHE: list = []


def side_world_for(world: World, syn: SyntheticConfig) -> SideWorld:
    """The side world of `world` (built once per world and seed)."""
    for cached_world, key, side in _SIDE_CACHE:
        if cached_world is world and key == (syn.seed, syn.content_dim):
            return side
    side = build_side_world(world, syn)
    _SIDE_CACHE[:] = [(world, (syn.seed, syn.content_dim), side)]
    return side


def _comeback_requests(syn: SyntheticConfig, rng: np.random.Generator,
                       user: UserHistory, req_t: np.ndarray, low: int,
                       end: int) -> tuple[np.ndarray, np.ndarray]:
    """Moves a share of the requests [R] to the start of a burst.

    Returns the new request times [R] (strictly increasing) and the
    sub-topic coming back at each [R] (-1 for the others).
    """
    starts = np.concatenate(user.burst_starts)
    subs = np.concatenate([np.full(s.size, sub) for sub, s in
                           zip(user.periodic_subtopics, user.burst_starts)])
    ok = (starts >= low) & (starts < end)
    starts, subs = starts[ok], subs[ok]
    times, back = req_t.copy(), np.full(req_t.size, -1)
    moved = rng.random(req_t.size) < syn.comeback_request_share
    if starts.size == 0 or not moved.any():
        return req_t, back
    pick_k = rng.choice(starts.size, size=int(moved.sum()),
                        replace=starts.size < moved.sum())
    times[moved] = starts[pick_k]
    back[moved] = subs[pick_k]
    order = np.argsort(times, kind="stable")
    return strictly_increasing(times[order]), back[order]


def _lifetime_candidates(world: World, syn: SyntheticConfig,
                         rng: np.random.Generator, user: UserHistory,
                         hist_end: np.ndarray, comeback: np.ndarray,
                         cands: np.ndarray, params: WorldParams
                         ) -> np.ndarray:
    """Candidates [R, C] with a share of the slots re-drawn from sub-topics
    in proportion to the lifetime counts (the comeback interest first)."""
    out = cands.copy()
    hist_sub = world.item_subtopic[user.item_ids]  # [L]
    num_c = cands.shape[1]
    for r, end in enumerate(hist_end):
        k = int(rng.binomial(num_c, syn.lifetime_candidate_share))
        if k == 0 or end == 0:
            continue
        counts = np.bincount(hist_sub[:end], minlength=world.num_subtopics)
        subs = rng.choice(counts.size, size=k, p=counts / counts.sum())
        if comeback[r] >= 0:
            focus = rng.random(k) < params.comeback_focus
            subs = np.where(focus, comeback[r], subs)
        drawn = world.sample_in_subtopics(subs, rng.random(k))  # [k]
        keep = list(out[r, :num_c - k])
        seen = set(keep)
        fresh = [int(i) for i in dict.fromkeys(drawn) if i not in seen]
        # Slots whose draw collided keep their original candidates.
        tail = [int(i) for i in out[r, num_c - k:] if i not in fresh]
        out[r] = (keep + fresh + tail)[:num_c]
    return out


def _candidates(world: World, syn: SyntheticConfig, rng: np.random.Generator,
                support: np.ndarray, w_r: np.ndarray, dominant: np.ndarray,
                params: WorldParams) -> np.ndarray:
    """Distinct candidates [R, C] from the four sources of the mix."""
    num_r, num_c = w_r.shape[0], syn.candidates_per_request
    k = 2 * num_c  # Oversample, then keep the first C distinct items.
    source = rng.choice(4, size=(num_r, k), p=params.candidate_mix)
    dom_w = np.where(dominant, w_r, 0.0)  # [R, m]
    tail_w = (~dominant & (w_r > 0)).astype(np.float64)  # [R, m]
    dom_sub = support[pick(dom_w, rng.random((num_r, k)))]
    tail_sub = support[pick(tail_w, rng.random((num_r, k)))]
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


def sigmoid(x: np.ndarray) -> np.ndarray:
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
        if sigmoid(logits + mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def true_ctr(sample: UserSample, bias: float) -> np.ndarray:
    """The written true click probabilities [R, C] (float32)."""
    return sigmoid(sample.logits + bias).astype(np.float32)


def request_dicts(sample: UserSample, bias: float
                  ) -> Iterator[tuple[dict, np.ndarray, np.ndarray]]:
    """Yields (request record, labels [C], true ctr [C]) per request."""
    ctr = true_ctr(sample, bias)  # [R, C]
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
