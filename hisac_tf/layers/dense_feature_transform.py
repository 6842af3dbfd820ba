"""`DenseFeatureTransform`: a raw dense feature's transform, in the graph
(docs/design.md §4.1)."""

from __future__ import annotations

import math
from typing import Optional

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf

_NAME = "DenseFeatureTransform"
TRANSFORMS = ("none", "log1p", "standardize", "log1p_standardize")


@tf.keras.utils.register_keras_serializable(package="hisac_tf")
class DenseFeatureTransform(tf.keras.layers.Layer):
    """Raw float values -> their transform (no weights).

    Serving gets raw values: the same transform runs in training and
    serving. In order: NaN -> `default` (when given), log1p (of max(x, 0))
    for the log transforms, (x - mean) / std for the standardising ones
    (statistics from the importer or hisac-inspect), then clipping to
    [clip_min, clip_max] where set.

    Args:
      transform: one of none, log1p, standardize, log1p_standardize.
      mean, std: statistics of the standardising transforms (of the
        log1p values for log1p_standardize); std > 0.
      clip_min, clip_max: bounds, or None.
      default: the value of a NaN entry, or None (NaN passes through:
        the input pipeline and the serving signatures refuse it first).

    References:
      - [HiSAC](https://arxiv.org/abs/2602.21009): Yuan et al., "HiSAC:
        Hierarchical Sparse Activation Compression for Ultra-long Sequence
        Modeling in Recommenders", Taobao 2026, arXiv 2602.21009, section
        "Experiments" (the ranking model's user, item and context
        features beside the compressed history).

    Example:

    ```python
    price = DenseFeatureTransform("log1p_standardize", mean=2.0, std=0.5)
    price(tf.constant([[10.0, 0.0]]))  # [1, 2] float32
    ```
    """

    def __init__(
        self,
        transform: str = "none",
        mean: Optional[float] = None,
        std: Optional[float] = None,
        clip_min: Optional[float] = None,
        clip_max: Optional[float] = None,
        default: Optional[float] = None,
        **kwargs,
    ):
        kwargs.setdefault("autocast", False)
        super().__init__(**kwargs)
        if transform not in TRANSFORMS:
            raise ValueError(
                f"{_NAME}: transform must be one of {list(TRANSFORMS)}; "
                f"received {transform!r}")
        for field, value in (("mean", mean), ("std", std),
                             ("clip_min", clip_min), ("clip_max", clip_max),
                             ("default", default)):
            if value is not None and (isinstance(value, bool) or not
                                      isinstance(value, (int, float)) or
                                      not math.isfinite(value)):
                raise ValueError(
                    f"{_NAME}: {field} must be a finite number or None; "
                    f"received {value!r}")
        if "standardize" in transform:
            if mean is None or std is None or not std > 0:
                raise ValueError(
                    f"{_NAME}: transform {transform!r} needs mean and std "
                    f"> 0 (the feature statistics); received mean={mean!r},"
                    f" std={std!r}")
        if (clip_min is not None and clip_max is not None
                and clip_min >= clip_max):
            raise ValueError(
                f"{_NAME}: clip_min must be < clip_max; received "
                f"{clip_min!r} >= {clip_max!r}")
        self.transform = transform
        self.mean = None if mean is None else float(mean)
        self.std = None if std is None else float(std)
        self.clip_min = None if clip_min is None else float(clip_min)
        self.clip_max = None if clip_max is None else float(clip_max)
        self.default = None if default is None else float(default)

    def call(self, values) -> tf.Tensor:
        """values [...] float -> [...] float32."""
        x = tf.cast(values, tf.float32)
        if self.default is not None:
            x = tf.where(tf.math.is_nan(x), self.default, x)
        if self.transform.startswith("log1p"):
            x = tf.math.log1p(tf.maximum(x, 0.0))
        if "standardize" in self.transform:
            x = (x - self.mean) / self.std
        if self.clip_min is not None:
            x = tf.maximum(x, self.clip_min)
        if self.clip_max is not None:
            x = tf.minimum(x, self.clip_max)
        return x

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self) -> dict:
        config = super().get_config()
        config.pop("autocast", None)
        return {
            **config,
            "transform": self.transform,
            "mean": self.mean,
            "std": self.std,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "default": self.default,
        }
