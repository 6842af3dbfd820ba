"""`HiSACRanker`: the request-level HiSAC CTR model (docs/design.md §2, §3).

One forward pass scores B requests, each with a history of N items and C
candidates. The ranker is embeddings, a list of branches and a head:

    user side, once per request                  candidate side
    ───────────────────────────                  ──────────────
    history ids ─ SemanticIdLookup ─ (SID, z)    cand ids ─ RankingEmbedding
        │         ItemFeatureLookup ─ features        │      SidEmbedding
    RankingEmbedding + item/event features = h_i       │      item features
        │                                             ▼
        ├─ LongTermBranch (any compressor) ─ state ── score ─ [B, C, D]
        ├─ ShortTermBranch (newest S)      ─ state ── score ─ [B, C, D]
        └─ MatchCountsBranch               ─ state ── score ─ [B, C, 4T+1]
    user id + user + context features ─ user_embedding ┤
                                         Cross + MLP ─ logit [B, C]

Each branch (`hisac_tf.models.branch.Branch`) encodes the shared
embedded history once into a namespaced, cacheable state and scores
candidates against it; `compress_user` returns the state of every branch
plus `user_embedding`, `score` consumes it, and `call` chains both, so C
candidates never repeat user-side work. `state_spec()` describes the
state for the serving signatures.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from hisac_tf.compressors.history_compressor import ROUTING_PLAN_KEYS
from hisac_tf.data.feature_spec import HISTORY_FEATURES
from hisac_tf.feature_config import FeatureConfig
from hisac_tf.layers.categorical_feature_embedding import (
    CategoricalFeatureEmbedding,
)
from hisac_tf.layers.id_hashing import IdHashing
from hisac_tf.layers.item_feature_lookup import ItemFeatureLookup
from hisac_tf.layers.ranking_embedding import RankingEmbedding
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.layers.sid_embedding import SidEmbedding
from hisac_tf.models.branch import DIAGNOSTIC_KEYS, Branch
from hisac_tf.models.embedded_history import EmbeddedHistory
from hisac_tf.models.feature_embeddings import FeatureEmbeddings
from hisac_tf.models.long_term_branch import LongTermBranch
from hisac_tf.models.match_counts_branch import MatchCountsBranch
from hisac_tf.models.short_term_branch import ShortTermBranch

USER_EMBEDDING = "user_embedding"
# The state of the default ranker (a long-term branch only): what exports
# made before branches hold.
STATE_KEYS = ("keys", "values", "bias", "mask", USER_EMBEDDING)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class HiSACRanker(tfrs.models.Model):
    """HiSAC ranker over request-level batches: embeddings, branches, head.

    Args:
      semantic_lookup: the frozen tokenizer tables (`SemanticIdLookup`).
      branches: the history branches (`LongTermBranch`,
        `ShortTermBranch`, `MatchCountsBranch`; at least one attention
        branch), with distinct state names.
      features: the declared features (`FeatureConfig`), default user
        features included (`FeatureEmbeddings`).
      item_feature_lookup: the item table's features
        (`ItemFeatureLookup`), or None without item features.
      vocabularies: table name -> vocabulary values, for tables read
        from a vocabulary_file.
      feature_combiner: how item and event features join h_i and the
        candidate embedding: "sum" or "concat" (+ projection).
      embedding_dim: D.
      item_buckets, category_buckets, user_buckets: hash buckets.
      time_gap_buckets: buckets of the time-gap embedding.
      mlp_dims: hidden widths of the ranking MLP.
      use_cross_layer: a DCN cross layer before the MLP.
      dropout: dropout rate of the MLP.

    Attributes:
      state_keys: the cacheable state's names: each branch's, in order,
        then `user_embedding`.
      num_groups: G of the first attention branch.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009.
      - [DCN V2](https://arxiv.org/abs/2008.13535): Wang et al., WWW 2021
        (the head's cross layer).

    Example:

    ```python
    lookup = SemanticIdLookup.from_tables(tables)
    d, h = 16, 2
    ranker = HiSACRanker(
        lookup,
        branches=[
            LongTermBranch(HiSACCompressor((256, 256), (8, 4), 32),
                           num_heads=h, key_dim=d // h, output_dim=d),
            ShortTermBranch(50, num_heads=h, key_dim=d // h, output_dim=d),
            MatchCountsBranch(256, codebook_sizes=(256, 256)),
        ],
        features=default_features(("gender", "age_bucket")),
        embedding_dim=d)
    logits = ranker(batch)  # [B, C]
    state = ranker.compress_user(batch)  # once per request, cacheable
    ranker.score(state, batch)  # the same logits
    ```
    """

    def __init__(
        self,
        semantic_lookup: SemanticIdLookup,
        branches: Sequence[Branch],
        features: Sequence[FeatureConfig] = (),
        item_feature_lookup: Optional[ItemFeatureLookup] = None,
        vocabularies: Optional[Mapping[str, Sequence]] = None,
        feature_combiner: str = "sum",
        embedding_dim: int = 16,
        item_buckets: int = 100_000,
        category_buckets: int = 1_000,
        user_buckets: int = 100_000,
        time_gap_buckets: int = 16,
        mlp_dims: Sequence[int] = (64, 32),
        use_cross_layer: bool = True,
        dropout: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        branches = list(branches)
        if not branches or not all(isinstance(b, Branch) for b in branches):
            raise ValueError(
                "HiSACRanker: branches must be a non-empty list of "
                "hisac_tf.models.branch.Branch; received "
                f"{[type(b).__name__ for b in branches]}")
        attention = [b for b in branches
                     if isinstance(b, (LongTermBranch, ShortTermBranch))]
        if not attention:
            raise ValueError(
                "HiSACRanker needs a history branch (LongTermBranch or "
                "ShortTermBranch); received only "
                f"{[type(b).__name__ for b in branches]}")
        names = {USER_EMBEDDING: "the ranker"}
        for branch in branches:
            for name in branch.state_names:
                if name in names:
                    raise ValueError(
                        f"HiSACRanker: state name {name!r} of "
                        f"{type(branch).__name__} is also used by "
                        f"{names[name]}; give the branches distinct "
                        "state_prefix")
                names[name] = type(branch).__name__
        self.codebook_sizes = tuple(semantic_lookup.codebook_sizes)
        self.embedding_dim = embedding_dim
        self.item_buckets = item_buckets
        self.category_buckets = category_buckets
        self.user_buckets = user_buckets
        self.time_gap_buckets = time_gap_buckets
        self.mlp_dims = tuple(mlp_dims)
        self.use_cross_layer = use_cross_layer
        self.dropout_rate = dropout
        # -------------------------------------------------- embeddings
        self.semantic_lookup = semantic_lookup
        self.ranking_embedding = RankingEmbedding(
            item_buckets, category_buckets, time_gap_buckets, embedding_dim
        )
        self.sid_embedding = SidEmbedding(self.codebook_sizes, embedding_dim)
        self.feature_embeddings = FeatureEmbeddings(
            features, embedding_dim=embedding_dim,
            feature_combiner=feature_combiner, vocabularies=vocabularies,
            name="feature_embeddings")
        item_features = self.feature_embeddings.item_features
        if item_features and item_feature_lookup is None:
            raise ValueError(
                "HiSACRanker: item features "
                f"{[f.name for f in item_features]} need an "
                "item_feature_lookup (the item table's values)")
        if item_feature_lookup is not None:
            held = {f.name for f in item_feature_lookup.features}
            missing = [f.name for f in item_features if f.name not in held]
            if missing:
                raise ValueError(
                    f"HiSACRanker: item features {missing} are not in the "
                    f"item_feature_lookup (it holds {sorted(held)})")
        self.item_feature_lookup = item_feature_lookup
        self.user_hash = IdHashing(user_buckets)
        self.user_table = tf.keras.layers.Embedding(
            user_buckets, embedding_dim, name="user_embedding"
        )
        # ---------------------------------------------------- branches
        self.branches = branches
        # The layers at their paths before branches existed, so that
        # checkpoints written then restore (tests/test_pre_branches_export).
        long = [b for b in branches if isinstance(b, LongTermBranch)]
        short = [b for b in branches if isinstance(b, ShortTermBranch)]
        counts = [b for b in branches if isinstance(b, MatchCountsBranch)]
        self.compressor = long[0].compressor if long else None
        self.attention = long[0].attention if long else None
        self.short_attention = short[0].attention if short else None
        self.match_counts = counts[0].match_counts if counts else None
        self.user_feature_tables = [
            self.feature_embeddings.tables[f.table_name]
            for f in self.feature_embeddings.user_features
            if f.is_categorical
        ]
        first = attention[0]
        self.num_groups = (first.num_groups if isinstance(
            first, LongTermBranch) else first.length)
        # -------------------------------------------------------- head
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

    # -------------------------------------------------------------- config
    @property
    def features(self) -> tuple[FeatureConfig, ...]:
        return self.feature_embeddings.features

    def get_config(self) -> dict:
        """Plain constructor values; the lookups and branches are
        serialised Keras layers (their tables are weights, not config)."""
        lookup = self.item_feature_lookup
        return {
            "semantic_lookup": tf.keras.layers.serialize(
                self.semantic_lookup),
            "branches": [tf.keras.layers.serialize(b)
                         for b in self.branches],
            "features": [dataclasses.asdict(f) for f in self.features],
            "item_feature_lookup": (None if lookup is None else
                                    tf.keras.layers.serialize(lookup)),
            "vocabularies": self.feature_embeddings.vocabularies,
            "feature_combiner": self.feature_embeddings.feature_combiner,
            "embedding_dim": self.embedding_dim,
            "item_buckets": self.item_buckets,
            "category_buckets": self.category_buckets,
            "user_buckets": self.user_buckets,
            "time_gap_buckets": self.time_gap_buckets,
            "mlp_dims": list(self.mlp_dims),
            "use_cross_layer": self.use_cross_layer,
            "dropout": self.dropout_rate,
        }

    @classmethod
    def from_config(cls, config: dict) -> "HiSACRanker":
        config = dict(config)
        for key in ("semantic_lookup", "item_feature_lookup"):
            if config.get(key) is not None:
                config[key] = tf.keras.layers.deserialize(config[key])
        config["branches"] = [tf.keras.layers.deserialize(b)
                              for b in config["branches"]]
        config["features"] = [FeatureConfig(**f)
                              for f in config.get("features", ())]
        return cls(**config)

    # --------------------------------------------------------------- state
    @property
    def state_keys(self) -> tuple[str, ...]:
        """The names `score` needs, in order (branches, then the user)."""
        names: tuple[str, ...] = ()
        for branch in self.branches:
            names += branch.state_names
        return names + (USER_EMBEDDING,)

    def state_spec(self) -> dict:
        """State name -> `tf.TensorSpec` of `compress_user`'s cacheable
        state ([None, ...]; floats float32, masks bool)."""
        spec = {}
        for branch in self.branches:
            for local, s in branch.state_spec().items():
                spec[branch.state_prefix + local] = s
        width = (self.embedding_dim
                 + self.feature_embeddings.head_width("user")
                 + self.feature_embeddings.head_width("context"))
        spec[USER_EMBEDDING] = tf.TensorSpec([None, width], tf.float32)
        return spec

    # ----------------------------------------------------------- user side
    def item_feature_values(self, item_ids) -> dict:
        """item ids [...] -> item feature name -> raw values [...]."""
        if self.item_feature_lookup is None:
            return {}
        return self.item_feature_lookup(item_ids)

    def embed_history(self, features: dict,
                      training=None) -> EmbeddedHistory:
        """The history every branch reads (`hisac_tf.models.branch`),
        each per-item field computed when a branch first reads it
        (`EmbeddedHistory`)."""
        item_ids = features["hist_item_ids"]  # [B, N]
        valid = tf.sequence_mask(features["hist_length"],
                                 tf.shape(item_ids)[1])  # [B, N]
        # The per-item inputs: the core history lists, then the event
        # features' (each [B, N, ...]).
        item_keys = HISTORY_FEATURES + tuple(
            f.batch_key for f in self.feature_embeddings.event_features)
        return EmbeddedHistory(
            features, valid, item_keys,
            embed_items=lambda f, v: self._embed_items(f, v, training),
            semantic_lookup=self.semantic_lookup,
            shared={
                "request_time": features["request_time"],  # [B]
                "codebooks": tf.concat(
                    self.semantic_lookup.codebooks,
                    axis=0),  # [sum_l K_l, Ds]
                "sid_embedding": self.sid_embedding,
                # HiSAC's routing when the input pipeline computed it
                # (models/routing_plan.py), else None.
                "routing_plan": {k: features[k] for k in ROUTING_PLAN_KEYS
                                 if k in features} or None,
            })

    def _embed_items(self, features: Mapping, valid,
                     training=None) -> tf.Tensor:
        """h_i of the hist_* items of `features` ([B, K] each, K = N or
        the positions a branch chose), valid [B, K] -> [B, K, D]: the
        ranking embedding plus the item's and the event's features."""
        item_ids = features["hist_item_ids"]  # [B, K]
        h = self.ranking_embedding(
            item_ids,
            features["hist_category_ids"],
            features["hist_behaviors"],
            features["hist_timestamps"],
            features["request_time"],
            training=training,
        )  # [B, K, D]
        embeddings = self.feature_embeddings
        parts = embeddings.item_parts(
            self.item_feature_values(item_ids), mask=valid)  # [B, K, D] each
        parts += embeddings.event_parts(features, valid)  # [B, K, D] each
        return embeddings.combine_history(h, parts)  # [B, K, D]

    def compress_user(self, features: dict, training=None,
                      diagnostics: bool = False) -> dict:
        """User-side work, once per request.

        Args:
          features: user_id, request_time, user and context features
            [B] (or [B, M], [B, dim]); hist_* [B, N] (event features
            included); hist_length [B].
          diagnostics: also return the routing diagnostics of a routing
            compressor (`hisac` and its ablations):
            effective_items_per_agent, off_sid_mass, agents_per_user [B].
        Returns:
          the cacheable state (`state_keys`, shapes in `state_spec`),
          plus agent_mask [B, G] and num_active [B] (groups in use) of
          the first attention branch.
        """
        history = self.embed_history(features, training=training)
        out = {USER_EMBEDDING: self.embed_user(features)}
        for branch in self.branches:
            state, extra = branch.namespaced(branch.encode(
                history, training=training, diagnostics=diagnostics))
            out.update(state)
            for key, value in extra.items():
                if key in DIAGNOSTIC_KEYS:
                    out.setdefault(key, value)  # the first branch's
                else:
                    out[key] = value
        return out

    def embed_user(self, features: dict) -> tf.Tensor:
        """user_id, user and context features [B] -> [B, Du] (the
        request's context is part of the cached state: one state per
        request)."""
        parts = [self.user_table(self.user_hash(features["user_id"]))]
        parts += self.feature_embeddings.user_parts(features)
        parts += self.feature_embeddings.context_parts(features)
        return tf.concat(
            [tf.cast(p, parts[0].dtype) for p in parts], axis=-1)  # [B, Du]

    # ------------------------------------------------------ candidate side
    def embed_candidates(self, features: dict) -> dict:
        """The candidates every branch scores: queries [B, C, Dq] (item,
        category, SID and item-feature embeddings), categories [B, C],
        sids [B, C, L], has_sid [B, C]."""
        cand_items = features["cand_item_ids"]  # [B, C]
        cand_cats = features["cand_category_ids"]  # [B, C]
        items, cats = self.ranking_embedding.embed_candidates(
            cand_items, cand_cats
        )  # [B, C, D] each
        semantic = self.semantic_lookup(cand_items)
        sid = self.sid_embedding(
            semantic["sids"], semantic["has_sid"]
        )  # [B, C, D]
        parts = [items, cats, sid]
        embeddings = self.feature_embeddings
        extra = embeddings.combine_candidates(embeddings.item_parts(
            self.item_feature_values(cand_items),
            mask=cand_items > 0))  # [B, C, D] or None
        if extra is not None:
            parts.append(tf.cast(extra, items.dtype))
        return {
            "queries": tf.concat(parts, axis=-1),  # [B, C, (3|4) D]
            "categories": cand_cats,
            "sids": semantic["sids"],  # [B, C, L]
            "has_sid": semantic["has_sid"],  # [B, C]
        }

    def score(self, state: dict, features: dict, training=None) -> tf.Tensor:
        """Candidate logits from a user's state.

        Args:
          state: output of `compress_user` (at least `state_keys`).
          features: cand_item_ids, cand_category_ids [B, C].
        Returns:
          logits [B, C] (padded candidates get a logit too; mask them).
        """
        candidates = self.embed_candidates(features)
        queries = candidates["queries"]  # [B, C, Dq]
        c = tf.shape(queries)[1]
        rows = tf.shape(queries)[0]

        def per_candidate(x):  # [B, F] -> [B, C, F]
            # broadcast: one op, where tf.repeat builds ~30
            return tf.broadcast_to(x[:, None, :], [rows, c, tf.shape(x)[1]])

        parts = [per_candidate(state[USER_EMBEDDING]), queries]
        for branch in self.branches:
            parts.append(branch.score(
                branch.local_state(state), candidates, training=training,
            ))  # [B, C, D']
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
        return tf.reshape(logits, tf.shape(features["cand_item_ids"]))

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
            if isinstance(module, (tf.keras.layers.Embedding,
                                   CategoricalFeatureEmbedding)):
                for var in module.trainable_weights:
                    if id(var) not in seen:
                        seen.add(id(var))
                        out.append(var)
        return out

    def dense_variables(self) -> list[tf.Variable]:
        """Every other trainable variable (Adam, as the paper)."""
        emb = {id(v) for v in self.embedding_variables()}
        return [v for v in self.trainable_variables if id(v) not in emb]
