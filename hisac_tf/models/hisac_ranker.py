"""`HiSACRanker`: the request-level HiSAC CTR model (docs/design.md §2, §3).

One forward pass scores B requests, each with a history of N items and C
candidates. Two branches read the history (docs/design.md §2.6): a
short-term branch, exact target attention over the newest S behaviours,
and a long-term branch, a compressor over all N; `HistoryMatchCounts`
adds how many behaviours match each candidate (category, each SID
prefix), which softmax attention normalises away. Either branch may be
off (S = 0, or `long_term=False`: the recent-window reference). The long
branch:

    user side, once per request                  candidate side
    ───────────────────────────                  ──────────────
    history ids ─ SemanticIdLookup ─ (SID, z)    cand ids ─ RankingEmbedding
        │                         │                   │      SidEmbedding
    RankingEmbedding h ── HistoryCompressor           ▼
                          (default HiSAC: voting +    queries [B, C, 3D]
                           soft routing) ─ G groups   │
    group SID embeddings ┘                            │
          AgentTargetAttention.encode ─ state ───── score ─ [B, C, D]
    user features ────────────────────────────────────┤
                                         Cross + MLP ─ logit [B, C]

The compressor (`hisac_tf.compressors`, docs/design.md §3) is the only
part of the long branch that differs between HiSAC and its baselines:
every compressor yields G group states, a mask, a log-weight prior and
optional group SIDs, and the same attention and head consume them.
`compress_user` returns the cacheable per-user state; `score` consumes
it; `call` chains both, so C candidates never repeat user-side work.
"""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from hisac_tf.compressors.hisac_compressor import (
    ROUTING_PLAN_KEYS,
    HiSACCompressor,
)
from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.sim_hard_compressor import (
    category_masked_attention,
)
from hisac_tf.compressors.recent_compressor import RecentCompressor
from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.history_match_counts import (
    COUNT_STATE_KEYS,
    HistoryMatchCounts,
)
from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.layers.ranking_embedding import RankingEmbedding
from hisac_tf.layers.routing_diagnostics import routing_diagnostics
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.layers.shape_checks import check_int
from hisac_tf.layers.sid_embedding import SidEmbedding

USER_FEATURE_BUCKETS = 128

# The per-user state that `encode_user` exports and callers may cache:
# the long-term branch's attention state and the user embedding. A ranker
# adds its short-term branch (`SHORT_STATE_KEYS`) and match counts
# (`COUNT_STATE_KEYS`) when it has them; `HiSACRanker.state_keys` lists
# the state of a given ranker.
STATE_KEYS = ("keys", "values", "bias", "mask", "user_embedding")
ATTENTION_STATE_KEYS = ("keys", "values", "bias", "mask")
SHORT_STATE_KEYS = tuple(f"short_{k}" for k in ATTENTION_STATE_KEYS)


class HiSACRanker(tfrs.models.Model):
    """HiSAC ranker over request-level batches, long and short branches.

    Args:
      semantic_lookup: the frozen tokenizer tables (`SemanticIdLookup`).
      user_features: names of the categorical user features besides
        `user_id` (each hashed into 128 buckets).
      embedding_dim: D.
      item_buckets, category_buckets, user_buckets: hash buckets.
      num_agents: A.
      top_k: k_l per semantic-ID level.
      vote_temperature: T of the agent weights v^(1/T).
      routing_temperature: τ of soft routing.
      hard_routing: the `hisac_hard` ablation (α = 1[SID_i = SID_a] / v_a).
      num_heads: H of the target attentions.
      time_gap_buckets: buckets of the time-gap embedding.
      mlp_dims: hidden widths of the ranking MLP.
      use_cross_layer: a DCN cross layer before the MLP.
      dropout: dropout rate of the MLP.
      attention_mass: the target attentions also return their per-head
        log-partition relative to the prior (`AgentTargetAttention`).
      compressor: the long-term history compressor
        (`hisac_tf.compressors`); None builds HiSAC's (`HiSACCompressor`
        from num_agents, top_k, the temperatures and hard_routing, which
        are then its only users).
      long_term: False drops the long-term branch (the compressor).
      short_term_length: S, the newest behaviours of the short-term
        branch (exact target attention with its own weights); 0: none.
      count_slots: M of `HistoryMatchCounts` (keys kept per type); 0: no
        match counts. The counts run over the long-term branch's history
        (all N), or over the newest S without a long-term branch.

    Attributes:
      num_groups: G of the long-term state (A, or N for `full` /
        `sim_hard`); S without a long-term branch.
      state_keys: the keys `score` needs, in order: the long-term
        attention state (`ATTENTION_STATE_KEYS`, plus `group_categories`
        for a candidate-dependent compressor, `sim_hard`), the short-term
        one (`SHORT_STATE_KEYS`), the counts (`COUNT_STATE_KEYS`) and
        `user_embedding`, each only when the ranker has that part.
    """

    def __init__(
        self,
        semantic_lookup: SemanticIdLookup,
        user_features: Sequence[str] = ("gender", "age_bucket"),
        embedding_dim: int = 16,
        item_buckets: int = 100_000,
        category_buckets: int = 1_000,
        user_buckets: int = 100_000,
        num_agents: int = 32,
        top_k: Sequence[int] = (8, 4),
        vote_temperature: float = 1.0,
        routing_temperature: float = 1.0,
        hard_routing: bool = False,
        num_heads: int = 2,
        time_gap_buckets: int = 16,
        mlp_dims: Sequence[int] = (64, 32),
        use_cross_layer: bool = True,
        dropout: float = 0.0,
        attention_mass: bool = True,
        compressor: HistoryCompressor | None = None,
        long_term: bool = True,
        short_term_length: int = 0,
        count_slots: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        codebook_sizes = tuple(semantic_lookup.codebook_sizes)
        self.codebook_sizes = codebook_sizes
        self.user_feature_names = tuple(user_features)
        self.embedding_dim = embedding_dim
        self.item_buckets = item_buckets
        self.category_buckets = category_buckets
        self.user_buckets = user_buckets
        self.num_heads = num_heads
        self.time_gap_buckets = time_gap_buckets
        self.mlp_dims = tuple(mlp_dims)
        self.use_cross_layer = use_cross_layer
        self.dropout_rate = dropout
        self.attention_mass = attention_mass
        if not isinstance(long_term, bool):
            raise ValueError(
                f"HiSACRanker: long_term must be a bool; received "
                f"{long_term!r}"
            )
        self.long_term = long_term
        self.short_term_length = check_int(
            "HiSACRanker", "short_term_length", short_term_length, 0)
        self.count_slots = check_int(
            "HiSACRanker", "count_slots", count_slots, 0)
        if not long_term and not self.short_term_length:
            raise ValueError(
                "HiSACRanker needs a history branch: long_term=False "
                "with short_term_length=0 leaves none"
            )
        self.semantic_lookup = semantic_lookup
        self.ranking_embedding = RankingEmbedding(
            item_buckets, category_buckets, time_gap_buckets, embedding_dim
        )
        self.sid_embedding = SidEmbedding(codebook_sizes, embedding_dim)

        def attention(name):
            return AgentTargetAttention(
                num_heads=num_heads,
                key_dim=max(1, embedding_dim // num_heads),
                output_dim=embedding_dim,
                attention_mass=attention_mass,
                name=name,
            )

        state_keys: tuple[str, ...] = ()
        self.compressor = None
        self.attention = None
        if long_term:
            if compressor is None:
                if len(top_k) != len(codebook_sizes):
                    raise ValueError(
                        f"top_k has {len(top_k)} levels but the semantic "
                        f"tables have {len(codebook_sizes)} "
                        f"(codebook_sizes {list(codebook_sizes)})"
                    )
                compressor = HiSACCompressor(
                    codebook_sizes, top_k, num_agents,
                    vote_temperature=vote_temperature,
                    routing_temperature=routing_temperature,
                    hard_routing=hard_routing,
                )
            if not isinstance(compressor, HistoryCompressor):
                raise ValueError(
                    "compressor must be a hisac_tf.compressors."
                    f"HistoryCompressor, got {type(compressor).__name__}"
                )
            self.compressor = compressor
            self.attention = attention("long_term_attention")
            state_keys += ATTENTION_STATE_KEYS
            if compressor.candidate_dependent:
                state_keys += ("group_categories",)
        self.short_term = None
        self.short_attention = None
        if self.short_term_length:
            self.short_term = RecentCompressor(self.short_term_length)
            self.short_attention = attention("short_term_attention")
            state_keys += SHORT_STATE_KEYS
        self.match_counts = None
        if self.count_slots:
            # The SID prefix types (one per level) share one sort.
            self.match_counts = HistoryMatchCounts(
                self.count_slots, nested_types=len(codebook_sizes))
            state_keys += COUNT_STATE_KEYS
        self.state_keys = state_keys + ("user_embedding",)
        self.num_groups = (
            compressor.num_groups if long_term else self.short_term_length
        )
        self.user_hash = IdHashing(user_buckets)
        self.user_table = tf.keras.layers.Embedding(
            user_buckets, embedding_dim, name="user_embedding"
        )
        self.user_feature_hash = IdHashing(USER_FEATURE_BUCKETS)
        self.user_feature_tables = [
            tf.keras.layers.Embedding(
                USER_FEATURE_BUCKETS, embedding_dim, name=f"{name}_embedding"
            )
            for name in self.user_feature_names
        ]
        self.cross = tfrs.layers.dcn.Cross() if use_cross_layer else None
        self.mlp = [
            tf.keras.layers.Dense(width, activation="relu")
            for width in mlp_dims
        ]
        self.dropout = tf.keras.layers.Dropout(dropout) if dropout else None
        # float32 logits under mixed precision too: the loss, the metrics
        # and the serving probabilities stay float32.
        self.logit = tf.keras.layers.Dense(1, name="logit", dtype="float32")
        # Per-candidate losses, averaged in `compute_loss` over the global
        # batch (a Keras loss with AUTO reduction raises under a
        # distribution strategy).
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(
                from_logits=True, reduction=tf.keras.losses.Reduction.NONE),
            metrics=[
                tf.keras.metrics.AUC(name="auc_approx", from_logits=True),
                tf.keras.metrics.BinaryCrossentropy(
                    name="log_loss", from_logits=True
                ),
            ],
        )

    def get_config(self) -> dict:
        """Plain constructor values; the lookup and the compressor are
        serialised Keras layers (their tables are weights, not config)."""
        return {
            "semantic_lookup": tf.keras.layers.serialize(
                self.semantic_lookup),
            "user_features": list(self.user_feature_names),
            "embedding_dim": self.embedding_dim,
            "item_buckets": self.item_buckets,
            "category_buckets": self.category_buckets,
            "user_buckets": self.user_buckets,
            "num_heads": self.num_heads,
            "time_gap_buckets": self.time_gap_buckets,
            "mlp_dims": list(self.mlp_dims),
            "use_cross_layer": self.use_cross_layer,
            "dropout": self.dropout_rate,
            "attention_mass": self.attention_mass,
            "compressor": (tf.keras.layers.serialize(self.compressor)
                           if self.compressor is not None else None),
            "long_term": self.long_term,
            "short_term_length": self.short_term_length,
            "count_slots": self.count_slots,
        }

    @classmethod
    def from_config(cls, config: dict) -> "HiSACRanker":
        config = dict(config)
        config["semantic_lookup"] = tf.keras.layers.deserialize(
            config["semantic_lookup"])
        if config.get("compressor") is not None:
            config["compressor"] = tf.keras.layers.deserialize(
                config["compressor"])
        return cls(**config)

    # ------------------------------------------------------------ user side
    def _encode_groups(self, groups: dict, attention) -> dict:
        """A compressor's groups -> an attention state (keys, values, bias,
        mask); group states get their SID embeddings appended."""
        mask = groups["group_mask"]  # [B, G]
        group_sid_emb = self.sid_embedding(
            groups["group_sids"], groups["group_sid_mask"]
        )  # [B, G, D]
        group_states = tf.concat(
            [groups["group_states"], group_sid_emb], axis=-1
        )  # [B, G, 2D]
        prior = groups["group_prior"]  # [B, G] log-weights
        state = attention.encode(
            group_states, tf.ones_like(prior), mask
        )  # keys, values [B, H, G, dk]; mask [B, G]
        # The compressor's log-weight prior is the attention bias.
        state["bias"] = tf.where(mask, prior, tf.float32.min)  # [B, G]
        return state

    def _count_keys(self, category_ids, sids, has_sid):
        """Keys of the count types: category, then SID prefix per level.

        category_ids [B, X]; sids [B, X, L]; has_sid [B, X] -> (keys
        [B, X, T = 1 + L] int64, type_ok [B, X, T] bool: every item has a
        category key, only items with a SID have prefix keys). A prefix
        key encodes
        (c_1, .., c_l) as a mixed-radix number, >= 1. Item ids are not a
        count type: with negatives sampled outside the user's history (the
        importer's default) "the candidate is in the history" would read
        as "clicked"; exact repeats stay visible to the attention branches
        through the item embedding.
        """
        sids = tf.cast(sids, tf.int64)
        parts = [tf.cast(category_ids, tf.int64)]
        prefix = tf.zeros_like(parts[0])
        for level, size in enumerate(self.codebook_sizes):
            prefix = prefix * (size + 1) + sids[..., level] + 1
            parts.append(prefix)
        has_sid = tf.cast(has_sid, tf.bool)[..., None]  # [B, X, 1]
        type_ok = tf.concat([
            tf.ones_like(has_sid),
            tf.repeat(has_sid, len(self.codebook_sizes), axis=-1),
        ], axis=-1)  # [B, X, T]
        return tf.stack(parts, axis=-1), type_ok

    def compress_user(self, features: dict, training=None,
                      diagnostics: bool = False) -> dict:
        """User-side work, once per request.

        Args:
          features: user_id, request_time, user features [B]; hist_* [B, N];
            hist_length [B].
        Returns:
          the cacheable state (`state_keys`): per attention branch keys,
          values [B, H, G, dk], bias [B, G], mask [B, G] (short-term ones
          prefixed `short_`, G = S); count_keys, count_values, count_gaps
          [B, 1 + L, M'] and count_lengths [B, 1 + L]; user_embedding
          [B, Du]; plus the diagnostics agent_mask [B, G] and num_active
          [B] (groups in use), and group_categories [B, G] for `sim_hard`.
          G = A, or N for the `full` and `sim_hard` compressors. With
          `diagnostics` and a routing compressor (`hisac` and its
          ablations): effective_items_per_agent, off_sid_mass and
          agents_per_user [B] (`routing_diagnostics`).
        """
        item_ids = features["hist_item_ids"]  # [B, N]
        n = tf.shape(item_ids)[1]
        valid = tf.sequence_mask(features["hist_length"], n)  # [B, N]
        semantic = self.semantic_lookup(item_ids)
        h = self.ranking_embedding(
            item_ids,
            features["hist_category_ids"],
            features["hist_behaviors"],
            features["hist_timestamps"],
            features["request_time"],
            training=training,
        )  # [B, N, D]
        out = {"user_embedding": self.embed_user(features)}
        if self.compressor is not None:
            groups = self.compressor(
                h,
                valid=valid,
                latents=semantic["latents"],  # [B, N, Ds]
                sids=semantic["sids"],  # [B, N, L]
                has_sid=semantic["has_sid"],  # [B, N]
                timestamps=features["hist_timestamps"],
                categories=features["hist_category_ids"],
                codebooks=tf.concat(
                    self.semantic_lookup.codebooks, axis=0
                ),  # [sum_l K_l, Ds]
                training=training,
                # Routing precomputed off the step (models/routing_plan.py).
                routing_plan={k: features[k] for k in ROUTING_PLAN_KEYS
                              if k in features} or None,
            )
            out.update(self._encode_groups(groups, self.attention))
            out["agent_mask"] = groups["group_mask"]
            out["num_active"] = groups["num_active"]
            if diagnostics and "routing" in groups:
                out.update(routing_diagnostics(
                    groups["routing"], groups["group_sids"],
                    semantic["sids"], groups["group_mask"],
                    tf.logical_and(valid, semantic["has_sid"]),
                ))  # [B] each
            if self.compressor.candidate_dependent:
                out["group_categories"] = groups["group_categories"]
        if self.short_term is not None:
            recent = self.short_term(
                h, valid=valid, sids=semantic["sids"],
                has_sid=semantic["has_sid"], training=training,
            )  # the newest S items, [B, S, ...]
            short = self._encode_groups(recent, self.short_attention)
            out.update({f"short_{k}": v for k, v in short.items()})
            if self.compressor is None:
                out["agent_mask"] = recent["group_mask"]
                out["num_active"] = recent["num_active"]
        if self.match_counts is not None:
            window = valid
            if self.compressor is None:  # The recent window's own counts.
                rank = tf.cumsum(tf.cast(valid, tf.int32), axis=1)  # [B, N]
                total = tf.reduce_sum(tf.cast(valid, tf.int32), axis=1)
                window = tf.logical_and(
                    valid, rank > (total - self.short_term_length)[:, None]
                )  # [B, N] the newest S valid
            keys, type_ok = self._count_keys(
                features["hist_category_ids"], semantic["sids"],
                semantic["has_sid"],
            )  # [B, N, T] each
            out.update(self.match_counts.encode(
                keys, tf.logical_and(window[..., None], type_ok),
                features["hist_timestamps"], features["request_time"],
            ))
        return out

    def embed_user(self, features: dict) -> tf.Tensor:
        """user_id and user features [B] -> [B, (1 + F) * D]."""
        parts = [self.user_table(self.user_hash(features["user_id"]))]
        for name, table in zip(
            self.user_feature_names, self.user_feature_tables
        ):
            parts.append(table(self.user_feature_hash(features[name])))
        return tf.concat(parts, axis=-1)  # [B, (1 + F) * D]

    # ------------------------------------------------------- candidate side
    def score(self, state: dict, features: dict, training=None) -> tf.Tensor:
        """Candidate logits from a user's state.

        Args:
          state: output of `compress_user` (at least `state_keys`).
          features: cand_item_ids, cand_category_ids [B, C].
        Returns:
          logits [B, C] (padded candidates get a logit too; mask them).
        """
        cand_items = features["cand_item_ids"]  # [B, C]
        cand_cats = features["cand_category_ids"]  # [B, C]
        items, cats = self.ranking_embedding.embed_candidates(
            cand_items, cand_cats
        )  # [B, C, D] each
        semantic = self.semantic_lookup(cand_items)
        sid = self.sid_embedding(
            semantic["sids"], semantic["has_sid"]
        )  # [B, C, D]
        queries = tf.concat([items, cats, sid], axis=-1)  # [B, C, 3D]
        c = tf.shape(cand_items)[1]
        user = state["user_embedding"]  # [B, Du]
        user = tf.broadcast_to(
            user[:, None, :], [tf.shape(user)[0], c, tf.shape(user)[1]]
        )  # [B, C, Du] (broadcast: one op, where tf.repeat builds ~30)
        parts = [user, queries]
        if self.compressor is not None:
            if self.compressor.candidate_dependent:
                # sim_hard: each candidate sees the items of its category.
                parts.append(category_masked_attention(
                    self.attention, state, queries, cand_cats,
                    training=training,
                ))  # [B, C, D]
            else:
                parts.append(self.attention.score(
                    {k: state[k] for k in ATTENTION_STATE_KEYS},
                    queries, training=training,
                ))  # [B, C, D]
        if self.short_attention is not None:
            parts.append(self.short_attention.score(
                {k: state[f"short_{k}"] for k in ATTENTION_STATE_KEYS},
                queries, training=training,
            ))  # [B, C, D]
        if self.match_counts is not None:
            keys, type_ok = self._count_keys(
                cand_cats, semantic["sids"], semantic["has_sid"]
            )  # [B, C, T] each
            # A key a candidate lacks never matches (history keys are >= 1).
            keys = tf.where(type_ok, keys, tf.constant(-1, tf.int64))
            parts.append(self.match_counts.score(
                {k: state[k] for k in COUNT_STATE_KEYS}, keys
            ))  # [B, C, 4T + 1]
        # One dtype for the head: the state arrives float32 from
        # score_with_state, the counts are float32, the embeddings follow
        # the policy (bfloat16 under mixed_bfloat16).
        parts = [tf.cast(p, self.compute_dtype) for p in parts]
        x = tf.concat(parts, axis=-1)  # [B, C, F]
        width = x.shape[-1]
        x = tf.reshape(x, [-1, width])  # [B*C, F]
        if self.cross is not None:
            x = self.cross(x)
        for dense in self.mlp:
            x = dense(x)
            if self.dropout is not None:
                x = self.dropout(x, training=training)
        logits = self.logit(x)  # [B*C, 1]
        return tf.reshape(logits, tf.shape(cand_items))  # [B, C]

    def call(self, features: dict, training=None) -> tf.Tensor:
        """Request-level logits [B, C]."""
        return self.score(
            self.compress_user(features, training=training),
            features,
            training=training,
        )

    # ----------------------------------------------------------------- loss
    def compute_loss(self, features: dict, training=False) -> tf.Tensor:
        logits = self(features, training=training)  # [B, C]
        valid = tf.sequence_mask(
            features["cand_count"], tf.shape(logits)[1]
        )  # [B, C]
        labels = tf.boolean_mask(features["labels"], valid)[:, None]  # [M, 1]
        preds = tf.boolean_mask(logits, valid)[:, None]  # [M, 1]
        per_candidate = self.task(
            labels=labels, predictions=preds, training=training
        )  # [M]
        # sum / (M x replicas in sync): the mean over the M valid candidates
        # in one process, each replica's share of it under a strategy
        # whose gradients are summed across replicas.
        return tf.nn.compute_average_loss(per_candidate)

    # ----------------------------------------------------------- variables
    def embedding_variables(self) -> list[tf.Variable]:
        """Trainable variables of embedding tables (Adagrad, as the paper)."""
        seen, out = set(), []
        for module in self._flatten_layers(include_self=False):
            if isinstance(module, tf.keras.layers.Embedding):
                for var in module.trainable_weights:
                    if id(var) not in seen:
                        seen.add(id(var))
                        out.append(var)
        return out

    def dense_variables(self) -> list[tf.Variable]:
        """Every other trainable variable (Adam, as the paper)."""
        emb = {id(v) for v in self.embedding_variables()}
        return [v for v in self.trainable_variables if id(v) not in emb]
