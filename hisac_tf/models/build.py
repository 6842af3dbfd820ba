"""`build_model(cfg, feature_spec, tables, item_features)`: where config
meets the model.

Config stops here: layers take plain values. Configurations that cannot
work fail at build time with a message naming the field and the value.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
import tensorflow_recommenders as tfrs

from hisac_tf.compressors.factory import COMPRESSOR_NAMES, make_compressor
from hisac_tf.config import Config, ConfigError
from hisac_tf.data.feature_spec import FeatureSpec
from hisac_tf.data.item_feature_values import (
    ItemFeatureError,
    ItemFeatureValues,
)
from hisac_tf.data.vocabulary import VocabularyError, read_vocabulary
from hisac_tf.layers.item_feature_lookup import ItemFeatureLookup
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.models.branch import Branch
from hisac_tf.models.hisac_ranker import HiSACRanker
from hisac_tf.models.long_term_branch import LongTermBranch
from hisac_tf.models.match_counts_branch import MatchCountsBranch
from hisac_tf.models.short_term_branch import ShortTermBranch

# Every `model.compressor` value (docs/design.md §3), see
# hisac_tf.compressors; "none" drops the long-term branch (the short-term
# branch alone is the recent-window reference).
NO_COMPRESSOR = "none"
SUPPORTED_COMPRESSORS = COMPRESSOR_NAMES + (NO_COMPRESSOR,)


def check_compatible(cfg: Config, tables) -> None:
    """Raises ConfigError when the tokenizer output and config disagree."""
    sizes = tuple(tables.codebook_sizes)
    if sizes != tuple(cfg.tokenizer.codebook_sizes):
        raise ConfigError(
            f"tokenizer.codebook_sizes is {list(cfg.tokenizer.codebook_sizes)}"
            f" but the semantic tables were trained with {list(sizes)}"
        )
    if len(cfg.model.top_k) != len(sizes):
        raise ConfigError(
            f"model.top_k {list(cfg.model.top_k)} needs one k per level of "
            f"the semantic tables ({len(sizes)} levels)"
        )
    if tables.latent_dim != cfg.tokenizer.latent_dim:
        raise ConfigError(
            f"tokenizer.latent_dim is {cfg.tokenizer.latent_dim} but the "
            f"semantic tables hold latents of width {tables.latent_dim}"
        )


def build_compressor(cfg: Config, feature_spec: FeatureSpec, tables):
    """The history compressor named by `model.compressor`."""
    m = cfg.model
    if m.compressor not in COMPRESSOR_NAMES:
        raise ConfigError(
            f"model.compressor {m.compressor!r} is not a compressor "
            f"(choose from {', '.join(COMPRESSOR_NAMES)})"
        )
    try:
        return make_compressor(
            m.compressor,
            num_groups=m.num_agents,
            codebook_sizes=tuple(tables.codebook_sizes),
            top_k=tuple(m.top_k),
            latent_dim=int(tables.latent_dim),
            max_history=feature_spec.max_history,
            vote_temperature=m.vote_temperature,
            routing_temperature=m.routing_temperature,
            num_heads=m.num_heads,
            kmeans_iterations=m.kmeans_iterations,
            lsh_bits=m.lsh_bits,
            seed=cfg.training.seed,
        )
    except ValueError as e:
        raise ConfigError(
            f"model.compressor {m.compressor!r} cannot be built from this "
            f"config: {e}"
        ) from e


def build_branches(cfg: Config, feature_spec: FeatureSpec,
                   tables) -> list[Branch]:
    """The history branches of `model`: the long-term compressor (unless
    `compressor` is "none"), the short-term window (S > 0) and the match
    counts (M > 0), which count the short-term window when there is no
    long-term branch."""
    m = cfg.model
    attention = dict(
        num_heads=m.num_heads,
        key_dim=max(1, m.embedding_dim // m.num_heads),
        output_dim=m.embedding_dim,
        attention_mass=m.attention_mass,
    )
    long_term = m.compressor != NO_COMPRESSOR
    branches: list[Branch] = []
    if long_term:
        branches.append(LongTermBranch(
            build_compressor(cfg, feature_spec, tables), **attention))
    if m.short_term_length:
        branches.append(ShortTermBranch(m.short_term_length, **attention))
    if m.count_slots:
        branches.append(MatchCountsBranch(
            m.count_slots, codebook_sizes=tuple(tables.codebook_sizes),
            window=0 if long_term else m.short_term_length))
    return branches


def build_model(cfg: Config, feature_spec: FeatureSpec, tables,
                item_features: ItemFeatureValues | None = None
                ) -> HiSACRanker:
    """Builds the ranker (inside the caller's strategy scope).

    Args:
      cfg: the config (`model` section).
      feature_spec: the data contract; its `features` are the declared
        features (default user features included, statistics resolved).
      tables: the tokenizer's `SemanticTables`.
      item_features: the item table's features (`ItemFeatureValues`);
        None or empty when no feature is declared at location "item".
    Raises:
      ConfigError: a configuration that cannot work, naming the field
        (a declared item feature without values, a bad vocabulary file).
    """
    check_compatible(cfg, tables)
    m = cfg.model
    features = tuple(feature_spec.features)
    item = [f for f in features if f.location == "item"]
    lookup = None
    if item:
        if item_features is None or not len(item_features.item_ids):
            raise ConfigError(
                f"features {[f.name for f in item]} are item features but "
                "no item feature values were given (the item table's "
                f"columns {[f.record_key for f in item]})")
        try:
            lookup = ItemFeatureLookup.from_values(item_features, item)
        except ItemFeatureError as e:
            raise ConfigError(str(e)) from None
    vocabularies = {}
    for f in features:
        if f.is_categorical and f.vocabulary_file and \
                f.table_name not in vocabularies:
            try:
                vocabularies[f.table_name] = read_vocabulary(f)
            except VocabularyError as e:
                raise ConfigError(str(e)) from None
    return HiSACRanker(
        semantic_lookup=SemanticIdLookup.from_tables(tables),
        branches=build_branches(cfg, feature_spec, tables),
        features=features,
        item_feature_lookup=lookup,
        vocabularies=vocabularies,
        feature_combiner=m.feature_combiner,
        embedding_dim=m.embedding_dim,
        item_buckets=m.item_vocab_buckets,
        category_buckets=m.category_vocab_buckets,
        user_buckets=m.user_vocab_buckets,
        time_gap_buckets=m.time_gap_buckets,
        mlp_dims=m.mlp_dims,
        use_cross_layer=m.use_cross_layer,
        dropout=m.dropout,
    )


def build_optimizer(cfg: Config, model: HiSACRanker):
    """Adagrad for embedding tables, Adam for dense weights (the paper's)."""
    t = cfg.training
    return tfrs.experimental.optimizers.CompositeOptimizer([
        (
            tf.keras.optimizers.legacy.Adagrad(t.embedding_learning_rate),
            model.embedding_variables,
        ),
        (
            tf.keras.optimizers.legacy.Adam(t.dense_learning_rate),
            model.dense_variables,
        ),
    ])
