"""`HiSACRanker`: the request-level HiSAC CTR model (DESIGN §2.2-2.5, §3).

One forward pass scores B requests, each with a history of N items and C
candidates:

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

The compressor (`hisac_tf.compressors`, DESIGN §3) is the only part that
differs between HiSAC and its baselines: every compressor yields G group
states, a mask, a log-weight prior and optional group SIDs, and the same
attention and head consume them. `compress_user` returns the cacheable
per-user state; `score` consumes it; `call` chains both, so C candidates
never repeat user-side work.
"""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from hisac_tf.compressors.hisac_compressor import HiSACCompressor
from hisac_tf.compressors.history_compressor import HistoryCompressor
from hisac_tf.compressors.sim_hard_compressor import (
    category_masked_attention,
)
from hisac_tf.layers.agent_target_attention import AgentTargetAttention
from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.layers.ranking_embedding import RankingEmbedding
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.layers.sid_embedding import SidEmbedding

USER_FEATURE_BUCKETS = 128

# The per-user state that `encode_user` exports and callers may cache.
STATE_KEYS = ("keys", "values", "bias", "mask", "user_embedding")


class HiSACRanker(tfrs.models.Model):
    """HiSAC ranker over request-level batches.

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
      num_heads: H of the target attention.
      time_gap_buckets: buckets of the time-gap embedding.
      mlp_dims: hidden widths of the ranking MLP.
      use_cross_layer: a DCN cross layer before the MLP.
      dropout: dropout rate of the MLP.
      attention_mass: the target attention also returns its per-head
        log-partition (how much of the state matches the candidate, which
        the softmax normalises away; `AgentTargetAttention`).
      compressor: the history compressor (`hisac_tf.compressors`); None
        builds HiSAC's (`HiSACCompressor` from num_agents, top_k, the
        temperatures and hard_routing, which are then its only users).

    Attributes:
      num_groups: G of the state (A, or N for `full` / `sim_hard`).
      state_keys: the keys `score` needs: `STATE_KEYS`, plus
        `group_categories` for a candidate-dependent compressor
        (`sim_hard`), which the STATE_KEYS-only cache cannot serve.
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
        **kwargs,
    ):
        super().__init__(**kwargs)
        codebook_sizes = semantic_lookup.codebook_sizes
        self.user_feature_names = tuple(user_features)
        self.embedding_dim = embedding_dim
        self.semantic_lookup = semantic_lookup
        self.ranking_embedding = RankingEmbedding(
            item_buckets, category_buckets, time_gap_buckets, embedding_dim
        )
        self.sid_embedding = SidEmbedding(codebook_sizes, embedding_dim)
        if compressor is None:
            if len(top_k) != len(codebook_sizes):
                raise ValueError(
                    f"top_k has {len(top_k)} levels but the semantic tables "
                    f"have {len(codebook_sizes)} (codebook_sizes "
                    f"{list(codebook_sizes)})"
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
        self.num_groups = compressor.num_groups
        self.state_keys = STATE_KEYS + (
            ("group_categories",) if compressor.candidate_dependent else ()
        )
        self.attention = AgentTargetAttention(
            num_heads=num_heads,
            key_dim=max(1, embedding_dim // num_heads),
            output_dim=embedding_dim,
            attention_mass=attention_mass,
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
        self.logit = tf.keras.layers.Dense(1, name="logit")
        self.task = tfrs.tasks.Ranking(
            loss=tf.keras.losses.BinaryCrossentropy(from_logits=True),
            metrics=[
                tf.keras.metrics.AUC(name="auc_approx", from_logits=True),
                tf.keras.metrics.BinaryCrossentropy(
                    name="log_loss", from_logits=True
                ),
            ],
        )

    # ------------------------------------------------------------ user side
    def compress_user(self, features: dict, training=None) -> dict:
        """User-side work, once per request.

        Args:
          features: user_id, request_time, user features [B]; hist_* [B, N];
            hist_length [B].
        Returns:
          the cacheable state (`STATE_KEYS`): keys, values [B, H, G, dk],
          bias [B, G], mask [B, G], user_embedding [B, Du]; plus the
          diagnostics agent_mask [B, G] and num_active [B] (groups in
          use), and group_categories [B, G] for `sim_hard`. G = A, or N
          for the `full` and `sim_hard` compressors.
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
        )
        mask = groups["group_mask"]  # [B, G]
        group_sid_emb = self.sid_embedding(
            groups["group_sids"], groups["group_sid_mask"]
        )  # [B, G, D]
        group_states = tf.concat(
            [groups["group_states"], group_sid_emb], axis=-1
        )  # [B, G, 2D]
        prior = groups["group_prior"]  # [B, G] log-weights
        state = self.attention.encode(
            group_states, tf.ones_like(prior), mask
        )  # keys, values [B, H, G, dk]; mask [B, G]
        # The compressor's log-weight prior is the attention bias.
        state["bias"] = tf.where(mask, prior, tf.float32.min)  # [B, G]
        out = {
            **state,
            "user_embedding": self.embed_user(features),
            "agent_mask": mask,
            "num_active": groups["num_active"],
        }
        if self.compressor.candidate_dependent:
            out["group_categories"] = groups["group_categories"]  # [B, G]
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
          state: output of `compress_user` (keys, values, bias, mask,
            user_embedding; group_categories for `sim_hard`).
          features: cand_item_ids, cand_category_ids [B, C].
        Returns:
          logits [B, C] (padded candidates get a logit too; mask them).
        """
        cand_items = features["cand_item_ids"]  # [B, C]
        items, cats = self.ranking_embedding.embed_candidates(
            cand_items, features["cand_category_ids"]
        )  # [B, C, D] each
        semantic = self.semantic_lookup(cand_items)
        sid = self.sid_embedding(
            semantic["sids"], semantic["has_sid"]
        )  # [B, C, D]
        queries = tf.concat([items, cats, sid], axis=-1)  # [B, C, 3D]
        if self.compressor.candidate_dependent:
            # sim_hard: each candidate sees the items of its category.
            attended = category_masked_attention(
                self.attention, state, queries,
                features["cand_category_ids"], training=training,
            )  # [B, C, D]
        else:
            attended = self.attention.score(
                {k: state[k] for k in ("keys", "values", "bias", "mask")},
                queries,
                training=training,
            )  # [B, C, D]
        c = tf.shape(cand_items)[1]
        user = tf.repeat(
            state["user_embedding"][:, None, :], c, axis=1
        )  # [B, C, Du]
        x = tf.concat([user, queries, attended], axis=-1)  # [B, C, F]
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
        labels = tf.boolean_mask(features["labels"], valid)  # [M]
        preds = tf.boolean_mask(logits, valid)  # [M]
        return self.task(
            labels=labels, predictions=preds, training=training
        )

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
