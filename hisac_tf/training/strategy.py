"""The `tf.distribute` strategy named by `training.strategy`."""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The distribution strategy named by `training.strategy`."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"training.strategy {name!r} is not supported")
