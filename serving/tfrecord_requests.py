"""Requests from request-level TFRecord files, for the serving client.

The first requests of a training-format file (docs/design.md §4), parsed,
checked and padded by the training input pipeline, as model inputs. Kept
apart from `serving.request_loading` because it needs tf.data and the
data config's `FeatureSpec` (the records' layout); JSON requests need
neither.
"""

from __future__ import annotations

import hisac_tf  # noqa: F401  (Keras 2 before TensorFlow)
import numpy as np

from hisac_tf.data import input_pipeline
from hisac_tf.data.feature_spec import FeatureSpec


def requests_from_tfrecord(path: str, spec: FeatureSpec,
                           max_requests: int = 1,
                           compression: str | None = None
                           ) -> dict[str, np.ndarray]:
    """The first `max_requests` requests of a request-level TFRecord file,
    parsed, checked and padded by the training input pipeline (model
    inputs only: no labels).

    Raises:
      ValueError: the file holds no request.
    """
    if compression is None:
        compression = "GZIP" if path.endswith(".gz") else ""
    ds = input_pipeline.request_dataset(
        path, spec, max_requests, compression=compression,
        deterministic=True, num_parallel_reads=1,
    )
    for batch in ds.take(1):
        names = spec.input_signature()
        return {k: v.numpy() for k, v in batch.items() if k in names}
    raise ValueError(f"{path} holds no request")
