"""Checks that the pinned TensorFlow stack really works together.

Run by `make install`: TensorFlow with Keras 2 (tf-keras), TensorFlow
Recommenders, TensorFlow Serving API, and tensorflow-io's kernels (which
fail to load on mismatched TensorFlow versions) reading a Parquet file.
Exits non-zero with the failing part named.
"""

from __future__ import annotations

import os
import sys
import tempfile

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)


def check() -> dict:
    import numpy as np
    import tensorflow as tf

    found = {"tensorflow": tf.__version__, "numpy": np.__version__}
    keras_module = tf.keras.layers.Dense.__module__
    if not keras_module.startswith("tf_keras"):
        raise RuntimeError(
            f"tf.keras resolves to {keras_module}, not tf_keras (Keras 2)"
        )
    import tensorflow_recommenders as tfrs

    found["tensorflow_recommenders"] = tfrs.__version__
    from tensorflow_serving.apis import predict_pb2  # noqa: F401

    import tensorflow_io as tfio

    found["tensorflow_io"] = tfio.__version__
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # Runtime installs without the test extra.
        found["parquet"] = "not checked (pyarrow absent)"
        return found
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "check.parquet")
        pq.write_table(pa.table({"x": pa.array([1, 2, 3], pa.int64())}), path)
        ds = tfio.IODataset.from_parquet(path, {"x": tf.int64})
        values = [int(row["x"]) for row in ds]
    if values != [1, 2, 3]:
        raise RuntimeError(f"tensorflow-io read {values} from Parquet")
    found["parquet"] = "ok"
    return found


if __name__ == "__main__":
    try:
        print("stack:", check())
    except Exception as e:  # noqa: BLE001  (report any failure by name)
        print(f"TensorFlow stack check failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        sys.exit(1)
