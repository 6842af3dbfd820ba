"""`build_model(cfg, feature_spec, tables)`: where config meets the model.

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
from hisac_tf.layers.semantic_id_lookup import SemanticIdLookup
from hisac_tf.models.hisac_ranker import HiSACRanker

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
            routing_top_m=m.routing_top_m,
        )
    except ValueError as e:
        raise ConfigError(
            f"model.compressor {m.compressor!r} cannot be built from this "
            f"config: {e}"
        ) from e


def build_model(cfg: Config, feature_spec: FeatureSpec, tables) -> HiSACRanker:
    """Builds the ranker with the configured compressor (inside the
    caller's strategy scope)."""
    check_compatible(cfg, tables)
    m = cfg.model
    # Names and A >= 1 are checked by build_compressor and Config.validate.
    long_term = m.compressor != NO_COMPRESSOR
    compressor = (build_compressor(cfg, feature_spec, tables) if long_term
                  else None)
    return HiSACRanker(
        semantic_lookup=SemanticIdLookup.from_tables(tables),
        user_features=feature_spec.user_features,
        embedding_dim=m.embedding_dim,
        item_buckets=m.item_vocab_buckets,
        category_buckets=m.category_vocab_buckets,
        user_buckets=m.user_vocab_buckets,
        num_heads=m.num_heads,
        time_gap_buckets=m.time_gap_buckets,
        mlp_dims=m.mlp_dims,
        use_cross_layer=m.use_cross_layer,
        dropout=m.dropout,
        attention_mass=m.attention_mass,
        compressor=compressor,
        long_term=long_term,
        short_term_length=m.short_term_length,
        count_slots=m.count_slots,
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
