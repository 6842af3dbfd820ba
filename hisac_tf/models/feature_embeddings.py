"""`FeatureEmbeddings`: the declared features' tables, transforms and
projections, and how they join h_i, the candidates and the head
(docs/design.md §4.1).

    location  kind                 goes to
    user      categorical (multi)  the head, through the cached user
              dense / vector       embedding (`user_parts`)
    context   any                  the head, per request (`context_parts`)
    item      any                  h_i of history items and the candidate
                                   embedding (`item_parts`, values from
                                   `ItemFeatureLookup`)
    event     categorical / dense  h_i of history items (`event_parts`)
              / vector

Widths: a categorical feature embeds to its table's dimension; a dense
one is its transformed scalar in the head and a Dense(D) projection in
h_i; a vector one (e.g. the item's frozen content embedding) goes through
a learned Dense(D) projection everywhere. In h_i, a categorical part of
width other than D is projected to D too.

h_i and the candidates (`feature_combiner`):
    sum     h_i = core_i + sum of the item's and event's parts;
            candidate part = sum of its item parts
    concat  h_i = Dense(D)([core_i, parts...]); candidate part =
            Dense(D)([item parts...])
where core_i is today's `RankingEmbedding` (id, category, behaviour, time
gap). Without item or event features h_i is core_i, as before.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.config import FEATURE_COMBINERS
from hisac_tf.feature_config import FeatureConfig
from hisac_tf.layers.categorical_feature_embedding import (
    CategoricalFeatureEmbedding,
)
from hisac_tf.layers.dense_feature_transform import DenseFeatureTransform



def _features(values) -> tuple[FeatureConfig, ...]:
    return tuple(f if isinstance(f, FeatureConfig) else FeatureConfig(**f)
                 for f in values)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class FeatureEmbeddings(tf.keras.layers.Layer):
    """Every declared feature's embedding path (see the module docstring).

    Args:
      features: the declared features (`FeatureConfig`), default user
        features included; dense statistics resolved.
      embedding_dim: D, the width of h_i.
      feature_combiner: "sum" or "concat" (how parts join h_i).
      vocabularies: table name -> the values of its vocabulary file, for
        every table with a vocabulary_file.

    Example:

    ```python
    brand = FeatureConfig("brand", "item", dtype="string", hash_buckets=64)
    hour = FeatureConfig("hour", "context", hash_buckets=32)
    emb = FeatureEmbeddings([brand, hour], embedding_dim=8)
    emb.context_parts({"hour": tf.constant([9])})  # [[1, 8]]
    emb.item_parts({"brand": tf.constant([[b"acme", b""]])},
                   mask=tf.constant([[True, False]]))  # [[1, 2, 8]]
    ```
    """

    def __init__(
        self,
        features: Sequence = (),
        embedding_dim: int = 16,
        feature_combiner: str = "sum",
        vocabularies: Optional[Mapping[str, Sequence]] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if feature_combiner not in FEATURE_COMBINERS:
            raise ValueError(
                "FeatureEmbeddings: feature_combiner must be one of "
                f"{list(FEATURE_COMBINERS)}; received {feature_combiner!r}")
        self.features = _features(features)
        self.embedding_dim = int(embedding_dim)
        self.feature_combiner = feature_combiner
        self.vocabularies = {k: list(v)
                             for k, v in (vocabularies or {}).items()}
        d = self.embedding_dim
        self.tables = {}
        self.transforms = {}
        self.projections = {}
        for f in self.features:
            if f.is_categorical:
                name = f.table_name
                if name not in self.tables:
                    vocab = None
                    if f.vocabulary_file:
                        if name not in self.vocabularies:
                            raise ValueError(
                                f"FeatureEmbeddings: feature {f.name!r} "
                                f"reads vocabulary_file "
                                f"{f.vocabulary_file!r} but no vocabulary "
                                f"was given for table {name!r}")
                        vocab = self.vocabularies[name]
                    self.tables[name] = CategoricalFeatureEmbedding(
                        embedding_dim=f.embedding_dim or d,
                        value_dtype=f.dtype, hash_buckets=f.hash_buckets,
                        vocabulary=vocab, name=f"{name}_embedding")
            elif f.kind == "dense":
                if f.uses_statistics and (f.mean is None or f.std is None):
                    raise ValueError(
                        f"FeatureEmbeddings: dense feature {f.name!r} "
                        f"(transform {f.transform!r}) has no mean/std: "
                        "compute the feature statistics (hisac-import or "
                        "hisac-inspect) or set features[...].mean and std")
                self.transforms[f.name] = DenseFeatureTransform(
                    f.transform, mean=f.mean, std=f.std,
                    clip_min=f.clip_min, clip_max=f.clip_max,
                    default=f.default, name=f"{f.name}_transform")
            in_item = f.location in ("item", "event")
            width = (f.embedding_dim or d) if f.is_categorical else None
            if f.kind == "vector" or (in_item and width != d):
                self.projections[f.name] = tf.keras.layers.Dense(
                    d, use_bias=not f.is_categorical,
                    name=f"{f.name}_projection")
        self.history_projection = None
        self.candidate_projection = None
        if feature_combiner == "concat" and self.item_features + \
                self.event_features:
            self.history_projection = tf.keras.layers.Dense(
                d, name="history_feature_projection")
            if self.item_features:
                self.candidate_projection = tf.keras.layers.Dense(
                    d, name="candidate_feature_projection")

    # -------------------------------------------------------------- names
    def _at(self, *locations) -> tuple[FeatureConfig, ...]:
        return tuple(f for f in self.features if f.location in locations)

    @property
    def user_features(self) -> tuple[FeatureConfig, ...]:
        return self._at("user")

    @property
    def context_features(self) -> tuple[FeatureConfig, ...]:
        return self._at("context")

    @property
    def item_features(self) -> tuple[FeatureConfig, ...]:
        return self._at("item")

    @property
    def event_features(self) -> tuple[FeatureConfig, ...]:
        return self._at("event")

    def head_width(self, location: str) -> int:
        """Width of `user_parts` / `context_parts` concatenated."""
        width = 0
        for f in self._at(location):
            if f.is_categorical:
                width += f.embedding_dim or self.embedding_dim
            else:
                width += 1 if f.kind == "dense" else self.embedding_dim
        return width

    # -------------------------------------------------------------- parts
    def _embed(self, f: FeatureConfig, values) -> tf.Tensor:
        """One feature's raw values -> its embedding [..., E]."""
        if f.is_categorical:
            combiner = f.combiner if f.kind == "multi_categorical" else None
            return self.tables[f.table_name](values, combiner=combiner)
        if f.kind == "dense":
            x = self.transforms[f.name](values)[..., None]  # [..., 1]
            if f.name in self.projections:
                return self.projections[f.name](x)
            return x
        return self.projections[f.name](
            tf.cast(values, tf.float32))  # vector [..., dim] -> [..., D]

    def _head_parts(self, features: Mapping, location: str) -> list:
        out = []
        for f in self._at(location):
            emb = self._embed(f, features[f.batch_key])  # [B, E]
            out.append(tf.cast(emb, self.compute_dtype))
        return out

    def user_parts(self, features: Mapping) -> list:
        """User features -> [[B, E_f], ...] for the cached user embedding."""
        return self._head_parts(features, "user")

    def context_parts(self, features: Mapping) -> list:
        """Context features -> [[B, E_f], ...] for the head."""
        return self._head_parts(features, "context")

    def _item_part(self, f: FeatureConfig, values, mask) -> tf.Tensor:
        emb = self._embed(f, values)  # [..., E]
        if f.is_categorical and f.name in self.projections:
            emb = self.projections[f.name](emb)  # [..., D]
        emb = tf.cast(emb, self.compute_dtype)
        return emb * tf.cast(mask, emb.dtype)[..., None]  # zeros at padding

    def item_parts(self, values: Mapping, mask) -> list:
        """Item features (values from `ItemFeatureLookup`, [...] per item)
        -> [[..., D], ...], zeros where `mask` [...] is False."""
        return [self._item_part(f, values[f.name], mask)
                for f in self.item_features]

    def event_parts(self, features: Mapping, valid) -> list:
        """Event features (hist_<name> [B, N]) -> [[B, N, D], ...]."""
        return [self._item_part(f, features[f.batch_key], valid)
                for f in self.event_features]

    def combine_history(self, core, parts: Sequence) -> tf.Tensor:
        """core h_i [B, N, D] and parts [[B, N, D], ...] -> h_i."""
        if not parts:
            return core
        if self.history_projection is None:
            return tf.add_n([core] + [tf.cast(p, core.dtype)
                                      for p in parts])  # [B, N, D]
        return self.history_projection(tf.concat(
            [core] + [tf.cast(p, core.dtype) for p in parts],
            axis=-1))  # [B, N, (1 + P) D] -> [B, N, D]

    def combine_candidates(self, parts: Sequence) -> Optional[tf.Tensor]:
        """Item parts of the candidates [[B, C, D], ...] -> [B, C, D]."""
        if not parts:
            return None
        if self.candidate_projection is None:
            return tf.add_n(list(parts))  # [B, C, D]
        return self.candidate_projection(
            tf.concat(list(parts), axis=-1))  # [B, C, P D] -> [B, C, D]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "features": [dataclasses.asdict(f) for f in self.features],
            "embedding_dim": self.embedding_dim,
            "feature_combiner": self.feature_combiner,
            "vocabularies": self.vocabularies,
        }
