"""Vocabulary files of categorical features (one value a line)."""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

from hisac_tf.feature_config import FeatureConfig


class VocabularyError(ValueError):
    """A vocabulary file that is missing, empty or has duplicates."""


def read_vocabulary(feature: FeatureConfig) -> list:
    """The feature's vocabulary: str values, or int for int64 features.

    Raises VocabularyError naming the feature, the file and the line of a
    duplicate, an empty line or a non-integer value of an int64 feature.
    """
    path = feature.vocabulary_file
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise VocabularyError(
            f"feature {feature.name!r}: vocabulary_file {path!r} does not "
            "exist (or is a directory)")
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VocabularyError(
            f"feature {feature.name!r}: vocabulary_file {path!r} is not "
            f"UTF-8 ({e})") from None
    values, seen = [], {}
    for line_no, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value:
            raise VocabularyError(
                f"feature {feature.name!r}: {path}:{line_no} is empty")
        if feature.dtype == "int64":
            try:
                value = int(value)
            except ValueError:
                raise VocabularyError(
                    f"feature {feature.name!r}: {path}:{line_no} holds "
                    f"{value!r}, not an integer (the feature is int64)"
                ) from None
        if value in seen:
            raise VocabularyError(
                f"feature {feature.name!r}: {path}:{line_no} repeats "
                f"{value!r} (first on line {seen[value]})")
        seen[value] = line_no
        values.append(value)
    if not values:
        raise VocabularyError(
            f"feature {feature.name!r}: vocabulary_file {path!r} is empty")
    return values
