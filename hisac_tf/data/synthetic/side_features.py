"""Side features of the synthetic world and their click-model terms.

docs/design.md §5 and §4.1. Beside ids, categories and the history, the
click logit of a candidate j in request r of user u gets (weights in
`SyntheticConfig`, all 0 by default so that other presets are unchanged):

    + brand_weight    · A[g(u), brand_j]            brand affinity
    − price_weight    · σ[g(u)] · z(log price_j)    price sensitivity
    + hour_weight     · cos(2π (hour_r − peak[category_j]) / 24)
    + content_weight  · ⟨p_u, style_j⟩              content preference

g(u) is the user's segment (gender × age bucket); A [G, brands] ~ N(0, 1)
and σ [G] ~ U(0.25, 1.75) are per segment, so the head learns them from
the user features and the candidate's item features. hour_r is the
request's hour of day (UTC), peak one random hour per category. The
`tags` (1..3 per item, mostly from a per-category pool) and the request's
`device` (a user's main device 80% of the time) are features without a
term of their own.

Content preference (`content_weight`, `content_engagements`): each item
has a style vector style_i ~ N(0, I_k), k = `SideParams.style_dim`, that
is added to its content embedding through a fixed random orthonormal
map M [content_dim, k] (content_i + style_scale · M style_i). Each user
has a unit direction p_u; `content_engagements` of every 50 history
events, spread over the whole log and over all categories, are replaced
by the best-matching item of a uniform draw of `engagement_pool` items.
The preference therefore lives only in the content vectors of what the
user engaged with: category and sub-topic counts do not carry it, and a
window of W events holds about W · content_engagements / 50 of them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hisac_tf.config import SyntheticConfig
from hisac_tf.data.synthetic.world import DAY_S, World

# Names of the features the generator can write (`features` section).
ITEM_SIDE_FEATURES = ("brand", "price", "tags", "content")
CONTEXT_SIDE_FEATURES = ("hour", "device")
DEVICES = (b"ios", b"android", b"web")


@dataclasses.dataclass(frozen=True)
class SideParams:
    """Fixed shape parameters of the side features."""

    num_brands: int = 40
    num_tags: int = 24
    max_tags: int = 3
    price_log_mean: float = 3.0
    price_log_std: float = 0.8
    main_device_share: float = 0.8
    style_dim: int = 4
    style_scale: float = 1.0
    engagement_pool: int = 64


SIDE_PARAMS = SideParams()


@dataclasses.dataclass(frozen=True)
class SideWorld:
    """Per-item side features and the per-segment click-model tables."""

    brand: np.ndarray  # [I + 1] int64 0-based brand index
    price: np.ndarray  # [I + 1] float32 raw price (> 0)
    price_z: np.ndarray  # [I + 1] standardised log price
    tags: np.ndarray  # [I + 1, max_tags] int64 tag ids 1..T, 0 = none
    brand_affinity: np.ndarray  # [G, brands]
    price_sensitivity: np.ndarray  # [G]
    peak_hour: np.ndarray  # [categories + 1]
    style: np.ndarray  # [I + 1, k]
    style_map: np.ndarray  # [content_dim, k] orthonormal columns

    def brand_name(self, item: int) -> bytes:
        return b"brand_%03d" % int(self.brand[item])

    def content_offset(self, items: np.ndarray) -> np.ndarray:
        """What the style adds to the content embeddings [n, content_dim]."""
        return SIDE_PARAMS.style_scale * (
            self.style[items] @ self.style_map.T)


def segment(features: dict) -> int:
    """The user's segment: (gender − 1) · 8 + age_bucket − 1, in [0, 16)."""
    return (int(features["gender"]) - 1) * 8 + int(features["age_bucket"]) - 1


def build_side_world(world: World, syn: SyntheticConfig,
                     params: SideParams = SIDE_PARAMS) -> SideWorld:
    """Deterministic from `synthetic.seed` (its own random stream)."""
    rng = np.random.default_rng([syn.seed, 7])
    n = world.num_items + 1
    brand = rng.integers(0, params.num_brands, n)
    log_price = rng.normal(params.price_log_mean, params.price_log_std, n)
    price = np.exp(log_price).astype(np.float32)
    price_z = (log_price - params.price_log_mean) / params.price_log_std
    # Tags: each category has a pool of 4 tags; an item takes 1..max_tags,
    # each from its category's pool with probability 0.8, else any tag.
    pools = rng.integers(1, params.num_tags + 1,
                         (world.num_topics + 1, 4))
    count = rng.integers(1, params.max_tags + 1, n)
    from_pool = pools[world.item_category[:, None],
                      rng.integers(0, 4, (n, params.max_tags))]
    anywhere = rng.integers(1, params.num_tags + 1, (n, params.max_tags))
    tags = np.where(rng.random((n, params.max_tags)) < 0.8, from_pool,
                    anywhere)
    tags = np.where(np.arange(params.max_tags)[None, :] < count[:, None],
                    tags, 0)
    tags[0] = 0
    style = rng.normal(0.0, 1.0, (n, params.style_dim))
    style[0] = 0.0
    q, _ = np.linalg.qr(rng.normal(0.0, 1.0, (syn.content_dim,
                                              params.style_dim)))
    return SideWorld(
        brand=brand.astype(np.int64), price=price, price_z=price_z,
        tags=tags.astype(np.int64),
        brand_affinity=rng.normal(0.0, 1.0, (16, params.num_brands)),
        price_sensitivity=rng.uniform(0.25, 1.75, 16),
        peak_hour=rng.uniform(0.0, 24.0, world.num_topics + 1),
        style=style, style_map=q[:, :params.style_dim],
    )


def uses_side_world(syn: SyntheticConfig, declared: bool) -> bool:
    """Whether the generator needs the side world at all."""
    return declared or any((syn.brand_weight, syn.price_weight,
                            syn.hour_weight, syn.content_weight,
                            syn.content_engagements))


def preference(syn: SyntheticConfig, user_id: int,
               params: SideParams = SIDE_PARAMS) -> np.ndarray:
    """The user's unit preference direction p_u [k] in style space."""
    rng = np.random.default_rng([syn.seed, 8, user_id])
    p = rng.normal(0.0, 1.0, params.style_dim)
    return p / np.linalg.norm(p)


def engage(side: SideWorld, syn: SyntheticConfig, user_id: int,
           item_ids: np.ndarray, params: SideParams = SIDE_PARAMS
           ) -> np.ndarray:
    """The log [L] with `content_engagements` per 50 events replaced by
    items that match p_u (uniform draws of the pool, best match kept)."""
    if not syn.content_engagements or not item_ids.size:
        return item_ids
    rng = np.random.default_rng([syn.seed, 9, user_id])
    p = preference(syn, user_id, params)
    hit = rng.random(item_ids.size) < syn.content_engagements / 50.0
    k = int(hit.sum())
    if not k:
        return item_ids
    pool = rng.integers(1, side.style.shape[0], (k, params.engagement_pool))
    score = side.style[pool] @ p  # [k, pool]
    out = item_ids.copy()
    out[hit] = pool[np.arange(k), np.argmax(score, axis=1)]
    return out


def context(syn: SyntheticConfig, user_id: int, request_time: np.ndarray,
            params: SideParams = SIDE_PARAMS) -> dict:
    """Request context [R]: hour of day (1..24: hour + 1, 0 stays
    padding) and device (bytes)."""
    rng = np.random.default_rng([syn.seed, 10, user_id])
    main = int(rng.integers(0, len(DEVICES)))
    other = rng.integers(0, len(DEVICES), request_time.size)
    device = np.where(rng.random(request_time.size)
                      < params.main_device_share, main, other)
    hour = (request_time % DAY_S) // 3600
    return {"hour": hour.astype(np.int64) + 1,
            "device": np.asarray([DEVICES[d] for d in device], object)}


def side_logits(side: SideWorld, world: World, syn: SyntheticConfig,
                features: dict, user_id: int, cands: np.ndarray,
                request_time: np.ndarray,
                preference_estimate: np.ndarray | None = None
                ) -> np.ndarray:
    """The side-feature terms [R, C] of the click logit (module doc).

    `preference_estimate` [R, k] replaces p_u (the history-window oracle's
    estimate from the newest W events); None: the true p_u.
    """
    g = segment(features)
    out = np.zeros(cands.shape)
    if syn.brand_weight:
        out += syn.brand_weight * side.brand_affinity[g, side.brand[cands]]
    if syn.price_weight:
        out -= (syn.price_weight * side.price_sensitivity[g]
                * side.price_z[cands])
    if syn.hour_weight:
        hour = (request_time % DAY_S) / 3600.0  # [R]
        peak = side.peak_hour[world.item_category[cands]]  # [R, C]
        out += syn.hour_weight * np.cos(
            2.0 * math.pi * (hour[:, None] - peak) / 24.0)
    if syn.content_weight:
        if preference_estimate is None:
            p = preference(syn, user_id)[None, :]  # [1, k]
        else:
            p = preference_estimate  # [R, k]
        out += syn.content_weight * np.einsum(
            "rck,rk->rc", side.style[cands],  # [R, C, k]
            np.broadcast_to(p, (cands.shape[0], p.shape[1])))
    return out


def preference_estimates(side: SideWorld, hist_items: np.ndarray,
                         hist_end: np.ndarray, window: int | None
                         ) -> np.ndarray:
    """The oracle's p̂ [R, k] from the newest `window` events before each
    request (None: all): the normalised sum of the style vectors of the
    distinct items there (a popular item seen many times would otherwise
    outweigh the engagements), then one re-weighting of each item by
    exp(1.5 ⟨style_i, p̂⟩) towards the items that match it."""
    out = np.zeros((hist_end.size, side.style.shape[1]))
    for r, end in enumerate(hist_end):
        lo = 0 if window is None else max(0, end - window)
        styles = side.style[np.unique(hist_items[lo:end])]  # [n, k]
        estimate = styles.sum(axis=0)  # [k]
        for step in range(2):
            norm = np.linalg.norm(estimate)
            if norm == 0:
                break
            estimate = estimate / norm
            if step == 0:
                weight = np.exp(1.5 * (styles @ estimate))  # [n]
                estimate = (styles * weight[:, None]).sum(axis=0)
        out[r] = estimate
    return out
