"""`declared(shape)`: a TensorProto that declares a shape with one value.

Proto semantics: a single value fills the whole declared shape, so a
request of a few hundred bytes can declare a tensor of gigabytes. The
serving hardening tests (tests/test_serving_hardening.py) and the
reliability probes (tools/reliability/probes.py) send such requests to
check that the server refuses them before allocating.
"""

from __future__ import annotations

from typing import Sequence

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2

# The value field of each dtype a request may carry.
_VALUE_FIELDS = {
    tf.int64: "int64_val",
    tf.int32: "int_val",
    tf.float32: "float_val",
}


def declared(shape: Sequence[int], dtype: tf.DType = tf.int64,
             value=1) -> tensor_pb2.TensorProto:
    """A TensorProto of `dtype` declaring `shape`, holding one `value`.

    Raises:
      ValueError: a dtype other than int64, int32 or float32, or a
        negative size, named.
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in _VALUE_FIELDS:
        raise ValueError(
            f"declared: dtype must be one of "
            f"{', '.join(d.name for d in _VALUE_FIELDS)}; got {dtype.name}")
    if any(int(size) < 0 for size in shape):
        raise ValueError(f"declared: sizes must be >= 0, got {list(shape)}")
    proto = tensor_pb2.TensorProto(dtype=dtype.as_datatype_enum)
    for size in shape:
        proto.tensor_shape.dim.add(size=int(size))
    getattr(proto, _VALUE_FIELDS[dtype]).append(value)
    return proto
