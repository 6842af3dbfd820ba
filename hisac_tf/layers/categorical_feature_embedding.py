"""`CategoricalFeatureEmbedding`: one embedding table of declared
categorical features (docs/design.md §4.1)."""

from __future__ import annotations

from typing import Optional, Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np
import tensorflow as tf

from hisac_tf.layers.id_hashing import IdHashing

_NAME = "CategoricalFeatureEmbedding"
VALUE_DTYPES = ("int64", "string")
COMBINERS = ("mean", "sum")
# Strings of a vocabulary are found by their 62-bit fingerprint
# (tf.strings.to_hash_bucket_fast), binary-searched in the sorted keys.
_FINGERPRINT_BUCKETS = 2**62
PADDING_ROW = 0
OOV_ROW = 1  # Vocabulary tables: every value not in the file.


def string_fingerprints(values) -> tf.Tensor:
    """strings [...] -> int64 fingerprints [...] (the vocabulary keys)."""
    return tf.strings.to_hash_bucket_fast(values, _FINGERPRINT_BUCKETS)


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class CategoricalFeatureEmbedding(tf.keras.layers.Layer):
    """Raw categorical values (int64 or strings) -> embeddings.

    Values map to rows in the graph, with core ops only:
      * `hash_buckets` B: int64 ids through `IdHashing` (rows 1..B-1),
        strings through `tf.strings.to_hash_bucket_fast` (+1);
      * `vocabulary`: the value on line i of the file gets row i + 2,
        any other value row 1 (out of vocabulary), found by binary search
        in the sorted keys (int64 values, or the strings' fingerprints).
    Padding (an id <= 0 or the empty string) is row 0 and embeds as
    zeros. A multi-valued feature [..., M] is pooled over its non-padding
    values (`combiner`). Features that share a table share one layer.

    Args:
      embedding_dim: width of the table.
      value_dtype: "int64" or "string".
      hash_buckets: rows of a hashed table (>= 2), or 0 with a vocabulary.
      vocabulary: the vocabulary file's values (ints for int64, strings),
        or None with hash_buckets.

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (the ranking model's user, item and context
        features beside the compressed history).
      - [keras-rs](https://keras.io/keras_rs/): `FeatureConfig` /
        `TableConfig`, one table shared by several features.

    Example:

    ```python
    brand = CategoricalFeatureEmbedding(
        embedding_dim=8, value_dtype="string", vocabulary=["acme", "zeta"])
    brand(tf.constant([["acme", "other", ""]]))  # [1, 3, 8]: rows 2, 1, 0
    tags = CategoricalFeatureEmbedding(embedding_dim=8, hash_buckets=100)
    tags(tf.constant([[3, 9, 0]]), combiner="mean")  # [1, 8]: mean of two
    ```
    """

    def __init__(
        self,
        embedding_dim: int,
        value_dtype: str = "int64",
        hash_buckets: int = 0,
        vocabulary: Optional[Sequence] = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(embedding_dim, bool) or not isinstance(
                embedding_dim, (int, np.integer)) or embedding_dim < 1:
            raise ValueError(
                f"{_NAME}: embedding_dim must be an int >= 1; received "
                f"{embedding_dim!r}")
        if value_dtype not in VALUE_DTYPES:
            raise ValueError(
                f"{_NAME}: value_dtype must be one of {list(VALUE_DTYPES)};"
                f" received {value_dtype!r}")
        if (vocabulary is None) == (not hash_buckets):
            size = None if vocabulary is None else len(vocabulary)
            raise ValueError(
                f"{_NAME}: give exactly one of hash_buckets (>= 2) or "
                f"vocabulary; received hash_buckets={hash_buckets!r}, "
                f"vocabulary of {size} values")
        if hash_buckets and hash_buckets < 2:
            raise ValueError(
                f"{_NAME}: hash_buckets must be >= 2 (row 0 is padding); "
                f"received {hash_buckets!r}")
        self.embedding_dim = int(embedding_dim)
        self.value_dtype = value_dtype
        self.hash_buckets = int(hash_buckets)
        self.vocabulary = None if vocabulary is None else list(vocabulary)
        self.vocabulary_keys = None
        if self.vocabulary is not None:
            keys = self._vocabulary_keys(self.vocabulary)
            order = np.argsort(keys, kind="stable")
            if np.any(np.diff(keys[order]) == 0):
                raise ValueError(
                    f"{_NAME}: vocabulary holds a value twice (or two "
                    "strings with one fingerprint)")
            self.num_rows = len(self.vocabulary) + 2
            self.vocabulary_keys = self.add_weight(
                name="vocabulary_keys", shape=[len(keys)], dtype=tf.int64,
                initializer=tf.keras.initializers.Constant(keys[order]),
                trainable=False)  # [V] sorted
            self.vocabulary_rows = self.add_weight(
                name="vocabulary_rows", shape=[len(keys)], dtype=tf.int64,
                initializer=tf.keras.initializers.Constant(
                    (order + 2).astype(np.int64)),
                trainable=False)  # [V] row of each sorted key
        else:
            self.num_rows = self.hash_buckets
            self.id_hashing = IdHashing(self.hash_buckets)
        self.embeddings = self.add_weight(
            name="embeddings", shape=[self.num_rows, self.embedding_dim],
            initializer="uniform", trainable=True)

    def _vocabulary_keys(self, vocabulary) -> np.ndarray:
        if self.value_dtype == "string":
            values = [v.decode() if isinstance(v, bytes) else v
                      for v in vocabulary]
            if not all(isinstance(v, str) and v for v in values):
                raise ValueError(
                    f"{_NAME}: a string vocabulary holds non-empty strings; "
                    f"received {vocabulary[:5]!r}...")
            return string_fingerprints(
                tf.constant(values, tf.string)).numpy().astype(np.int64)
        if not all(isinstance(v, (int, np.integer)) and not isinstance(
                v, bool) and v > 0 for v in vocabulary):
            raise ValueError(
                f"{_NAME}: an int64 vocabulary holds ids >= 1 (0 is "
                f"padding); received {vocabulary[:5]!r}...")
        return np.asarray(vocabulary, np.int64)

    def rows(self, values) -> tf.Tensor:
        """Raw values [...] -> int64 rows [...] (0 = padding)."""
        if self.value_dtype == "string":
            values = tf.convert_to_tensor(values, tf.string)
            pad = tf.equal(values, "")  # [...]
        else:
            values = tf.cast(values, tf.int64)
            pad = values <= 0  # [...]
        if self.vocabulary_keys is None:
            if self.value_dtype == "string":
                rows = tf.strings.to_hash_bucket_fast(
                    values, self.hash_buckets - 1) + 1  # [...]
            else:
                rows = self.id_hashing(values)  # [...]
        else:
            keys = (string_fingerprints(values)
                    if self.value_dtype == "string" else values)
            flat = tf.reshape(keys, [-1])  # [M]
            pos = tf.searchsorted(
                self.vocabulary_keys, flat, side="left")  # [M]
            pos = tf.minimum(pos, len(self.vocabulary) - 1)
            found = tf.equal(tf.gather(self.vocabulary_keys, pos), flat)
            rows = tf.where(found, tf.gather(self.vocabulary_rows, pos),
                            tf.constant(OOV_ROW, tf.int64))  # [M]
            rows = tf.reshape(rows, tf.shape(keys))  # [...]
        return tf.where(pad, tf.zeros_like(rows), rows)

    def call(self, values, combiner: Optional[str] = None) -> tf.Tensor:
        """values [...] -> [..., E]; with a combiner, values [..., M] ->
        [..., E] pooled over the non-padding values (zeros if none)."""
        rows = self.rows(values)  # [...]
        emb = tf.gather(self.embeddings, rows)  # [..., E]
        present = tf.cast(rows > 0, emb.dtype)[..., None]  # [..., 1]
        emb = emb * present
        if combiner is not None:
            if combiner not in COMBINERS:
                raise ValueError(
                    f"{_NAME}: combiner must be one of {list(COMBINERS)}; "
                    f"received {combiner!r}")
            emb = tf.reduce_sum(emb, axis=-2)  # [..., E]
            if combiner == "mean":
                count = tf.reduce_sum(present, axis=-2)  # [..., 1]
                emb = tf.math.divide_no_nan(emb, count)
        return tf.cast(emb, self.compute_dtype)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "embedding_dim": self.embedding_dim,
            "value_dtype": self.value_dtype,
            "hash_buckets": self.hash_buckets,
            "vocabulary": self.vocabulary,
        }
