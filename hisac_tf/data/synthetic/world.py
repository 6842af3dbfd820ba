"""The item side of the synthetic world (docs/design.md §5).

Topics and sub-topics, items with uneven sub-topic sizes, Zipf popularity,
a small intrinsic quality per item and content embeddings that are a noisy,
non-linear function of the sub-topic. Everything here is deterministic from
`synthetic.seed` and shared by all users.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from hisac_tf.config import ConfigError, SyntheticConfig

DAY_S = 86_400
# 2017-11-25 00:00 UTC, the first day of the Taobao UserBehavior log.
START_TIME = 1_511_568_000
ITEM_CHUNK = 8192


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
    # Long-range structure: share of a comeback request's lifetime
    # candidates drawn from the interest that comes back.
    comeback_focus: float = 0.5


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


def build_world(syn: SyntheticConfig, params: WorldParams = PARAMS) -> World:
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


def _latent(world: World, subtopics: np.ndarray, rng: np.random.Generator,
            params: WorldParams) -> np.ndarray:
    """Pre-MLP latents [n, h] of items of the given 0-based sub-topics."""
    topics = subtopics // world.subtopics_per_topic
    jitter = rng.normal(0.0, params.item_jitter,
                        (subtopics.size, world.topic_centres.shape[1]))
    return world.topic_centres[topics] + world.subtopic_offsets[subtopics] \
        + jitter


def item_embeddings(world: World, syn: SyntheticConfig, first: int, stop: int,
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
